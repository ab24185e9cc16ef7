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
    /// List the registered architectures (name, task, input size, classes), or describe one.
    #[command(args_conflicts_with_subcommands = true)]
    Models {
        #[command(subcommand)]
        action: Option<ModelsAction>,
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
    },
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

#[derive(Subcommand, Debug)]
enum ModelsAction {
    /// Every layer's output shape, the parameter table (name, shape) and the totals of one model.
    Describe {
        /// A registered model name (see `trainer models`).
        name: String,
        /// Number of classes (default: the model's own, e.g. 1000 for the ImageNet networks).
        #[arg(long)]
        num_classes: Option<usize>,
        /// Number of input channels (default: the model's own, e.g. 3 or 1).
        #[arg(long)]
        in_channels: Option<usize>,
        /// Print the description as JSON.
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
        Command::Models { action: None, json } => trainer::cli::list_models(json)?,
        Command::Models { action: Some(ModelsAction::Describe { name, num_classes, in_channels, json }), .. } => {
            trainer::cli::describe_model(&name, num_classes, in_channels, json)?
        }
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
