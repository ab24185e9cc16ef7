//! `trainer`: thin command-line front over the `trainer` library.

use anyhow::Result;
use clap::{Parser, Subcommand};
use models::cli::Verbosity;
use trainer::device::DeviceSpec;

/// Train the book's networks with libtorch: prepare datasets, train, resume, evaluate, plot.
#[derive(Parser, Debug)]
#[command(name = "trainer", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    verbosity: Verbosity,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check libtorch and the devices: prints versions and runs a convolution on the chosen device.
    Doctor {
        /// Device to check: cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
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
        Command::Doctor { device, json } => {
            let report = trainer::doctor::run(device);
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{report}");
            }
            if let Err(e) = report.device_check {
                anyhow::bail!("device check failed: {e}");
            }
        }
    }
    Ok(())
}
