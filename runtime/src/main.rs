//! `runtime`: thin command-line front over the `runtime` library.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use models::cli::Verbosity;
use runtime::Provider;

/// Run ONNX models with ONNX Runtime on CPU or CUDA: evaluate, predict, benchmark.
#[derive(Parser, Debug)]
#[command(name = "runtime", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    verbosity: Verbosity,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check ONNX Runtime: which library is loaded, its providers, and one inference of --model.
    Doctor {
        /// Execution provider: cpu, cuda or cuda:N. A provider that cannot register is an error.
        #[arg(long, default_value = "cpu")]
        provider: Provider,
        /// An ONNX file to run once with zero-filled inputs on the provider.
        #[arg(long)]
        model: Option<PathBuf>,
        /// Print the report as JSON.
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
        Command::Doctor { provider, model, json } => {
            let report = runtime::doctor::run(provider, model.as_deref())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{report}");
            }
            if let Some(Err(e)) = report.model {
                anyhow::bail!("model check failed: {e}");
            }
        }
    }
    Ok(())
}
