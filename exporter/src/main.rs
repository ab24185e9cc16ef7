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
        Command::Export { run, epoch, file: OnnxFile { out, opset, logits }, tolerance, fp16, fold_bn, samples } => {
            let report = exporter::pipeline::export(&exporter::pipeline::ExportOptions { run, epoch, out, opset, logits, tolerance, fp16, fold_bn, samples })?;
            println!("{report}");
        }
        Command::ExportHead { logreg, file: OnnxFile { out, opset, logits }, run, epoch, tolerance, samples, short_side } => {
            let report =
                exporter::logreg::export(&exporter::logreg::HeadExportOptions { logreg, out, run, epoch, opset, logits, tolerance, samples, short_side })?;
            println!("{report}");
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
