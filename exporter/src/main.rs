//! `exporter`: thin command-line front over the `exporter` library.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use models::cli::Verbosity;

/// Export trained models to self-describing ONNX files, and inspect ONNX files.
#[derive(Parser, Debug)]
#[command(name = "exporter", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    verbosity: Verbosity,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Export a run's checkpoint to ONNX with its labels and preprocessing, checked against libtorch.
    Export {
        /// The run directory (from `trainer train`).
        #[arg(long)]
        run: PathBuf,
        /// The checkpoint's epoch (default: the latest).
        #[arg(long)]
        epoch: Option<usize>,
        #[command(flatten)]
        file: OnnxFile,
        /// Largest accepted difference of a class probability between ONNX Runtime and libtorch
        /// [default: 1e-4; 1e-3 with --fold-bn; 1e-2 with --fp16].
        #[arg(long)]
        tolerance: Option<f32>,
        /// Float16 weights and compute; the file's input and outputs stay float32.
        #[arg(long)]
        fp16: bool,
        /// Fold each BatchNorm that directly follows a convolution or linear layer into its weights.
        #[arg(long)]
        fold_bn: bool,
        /// Also compare on this many samples of the run's data (validation set, else training set),
        /// when it is on this machine; 0 skips it.
        #[arg(long, default_value_t = 32)]
        samples: usize,
        /// After the export, also write the file as an entry of this Triton model repository, with
        /// the defaults of `exporter triton` (named after the file's stem).
        #[arg(long, value_name = "DIR")]
        triton: Option<PathBuf>,
    },
    /// Export a `trainer logreg` model with the frozen network of its features as one ONNX file.
    ///
    /// The file is the network of the model's run and epoch cut at its feature layer, then Flatten,
    /// the fitted linear head with the standardisation folded in, and the softmax: `probabilities`
    /// over the model's labels, with the run's preprocessing in its metadata, checked against libtorch
    /// features through the logistic model. `runtime predict` and `edge-demo orientation` serve it
    /// like any export (the book's orientation case study, ch. 11).
    #[command(name = "export-head")]
    ExportHead {
        /// The model from `trainer logreg fit` (its features' record says which run, epoch and layer).
        #[arg(long, value_name = "MODEL.json")]
        logreg: PathBuf,
        #[command(flatten)]
        file: OnnxFile,
        /// The run of the frozen network [default: the one the model's features came from].
        #[arg(long)]
        run: Option<PathBuf>,
        /// Its checkpoint [default: the model's, when --run is its run; else the latest].
        #[arg(long)]
        epoch: Option<usize>,
        /// Largest accepted difference of a class probability between ONNX Runtime and libtorch
        /// features through the logistic model [default: 1e-4].
        #[arg(long)]
        tolerance: Option<f32>,
        /// Also compare on this many records of the training features' record file, when it is on
        /// this machine; 0 skips it.
        #[arg(long, default_value_t = 32)]
        samples: usize,
        /// The shorter side images are resized to before the centre crop, written into the file
        /// [default: as recorded with the model's features (trainer prepare --short-side), else 256].
        #[arg(long)]
        short_side: Option<u32>,
    },
    /// Write an ONNX file as one model of a Triton model repository (also served by `runtime serve`).
    ///
    /// Writes DIR/NAME/config.pbtxt (Triton's ModelConfig for the ONNX Runtime backend: the file's
    /// inputs and outputs with their types and dims, dynamic batching, the instance group, and every
    /// metadata entry of the file as a string parameter), DIR/NAME/VERSION/model.onnx (a copy) and,
    /// when the file's metadata has labels or --labels is given, DIR/NAME/labels.txt, referenced by
    /// the classification output (`probabilities`, else the first 2-D output). The config and labels
    /// are replaced; a different model.onnx already in the version folder is refused.
    // `--version` is the model's version here, not the program's (`exporter --version` prints that).
    #[command(disable_version_flag = true)]
    Triton {
        /// The ONNX file.
        #[arg(long, value_name = "FILE.onnx")]
        model: PathBuf,
        /// The model repository (created when missing); the entry is its folder NAME.
        #[arg(long, value_name = "DIR")]
        repository: PathBuf,
        /// The model's name and folder, of letters, digits, '_', '.' and '-' [default: the file's stem,
        /// other characters replaced by '_'].
        #[arg(long)]
        name: Option<String>,
        /// The version folder (1 or more).
        #[arg(long, default_value_t = exporter::triton::DEFAULT_VERSION)]
        version: u64,
        /// Triton's max_batch_size: the largest batch Triton forms; every input and output must have
        /// a dynamic first dimension. 0: no batching, the dims are the files' full shapes.
        #[arg(long, default_value_t = exporter::triton::DEFAULT_MAX_BATCH)]
        max_batch: u32,
        /// Model instances (instance_group count, kind KIND_AUTO: GPU where there is one, else CPU).
        #[arg(long, default_value_t = exporter::triton::DEFAULT_INSTANCES)]
        instances: u32,
        /// How long dynamic batching waits to fill a batch, in microseconds.
        #[arg(long, default_value_t = exporter::triton::DEFAULT_QUEUE_DELAY_US)]
        queue_delay_us: u64,
        /// A batch size dynamic batching prefers to form, at most --max-batch (repeatable).
        #[arg(long, value_name = "SIZE")]
        preferred_batch: Vec<u32>,
        /// Labels, one per line, one per class, for a file made elsewhere [default: the file's own].
        #[arg(long, value_name = "FILE")]
        labels: Option<PathBuf>,
    },
    /// Show an ONNX file's inputs, outputs, opsets, operators, parameter count and metadata.
    Inspect {
        /// The ONNX file.
        file: PathBuf,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// What both export commands write: the file, its opset and whether the logits are an output too.
#[derive(Args, Debug)]
struct OnnxFile {
    /// The ONNX file to write.
    #[arg(long)]
    out: PathBuf,
    /// ONNX opset.
    #[arg(long, default_value_t = exporter::lower::DEFAULT_OPSET)]
    opset: i64,
    /// Also output the logits.
    #[arg(long)]
    logits: bool,
}

fn main() -> std::process::ExitCode {
    models::cli::exit(run(Cli::parse()))
}

fn run(cli: Cli) -> Result<()> {
    cli.verbosity.init_logging();
    match cli.command {
        Command::Export { run, epoch, file: OnnxFile { out, opset, logits }, tolerance, fp16, fold_bn, samples, triton } => {
            let o = exporter::pipeline::ExportOptions { run, epoch, out, opset, logits, tolerance, fp16, fold_bn, samples };
            let report = exporter::pipeline::export(&o)?;
            println!("{report}");
            // the entry of the file just written and verified
            if let Some(repository) = triton {
                println!("{}", exporter::triton::write(&exporter::triton::TritonOptions::new(o.out, repository))?);
            }
        }
        Command::ExportHead { logreg, file: OnnxFile { out, opset, logits }, run, epoch, tolerance, samples, short_side } => {
            let report =
                exporter::logreg::export(&exporter::logreg::HeadExportOptions { logreg, out, run, epoch, opset, logits, tolerance, samples, short_side })?;
            println!("{report}");
        }
        Command::Triton { model, repository, name, version, max_batch, instances, queue_delay_us, preferred_batch, labels } => {
            let o = exporter::triton::TritonOptions { model, repository, name, version, max_batch, instances, queue_delay_us, preferred_batch, labels };
            println!("{}", exporter::triton::write(&o)?);
        }
        Command::Inspect { file, json } => {
            let summary = exporter::inspect::inspect(&file)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                println!("{summary}");
            }
        }
    }
    Ok(())
}
