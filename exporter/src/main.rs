//! `exporter`: thin command-line front over the `exporter` library.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
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
