//! `exporter`: thin command-line front over the `exporter` library.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use models::cli::Verbosity;

mod cmd_export;

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
        /// The ONNX file to write.
        #[arg(long)]
        out: PathBuf,
        /// ONNX opset.
        #[arg(long, default_value_t = exporter::lower::DEFAULT_OPSET)]
        opset: i64,
        /// Also output the logits.
        #[arg(long)]
        logits: bool,
        /// Largest accepted difference of a class probability between ONNX Runtime and libtorch.
        #[arg(long, default_value_t = 1e-4)]
        tolerance: f32,
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

fn main() -> std::process::ExitCode {
    models::cli::exit(run(Cli::parse()))
}

fn run(cli: Cli) -> Result<()> {
    cli.verbosity.init_logging();
    match cli.command {
        Command::Export { run, epoch, out, opset, logits, tolerance } => {
            cmd_export::run(&cmd_export::ExportArgs { run, epoch, out, opset, logits, tolerance })?
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
