//! `edge-demo`: thin command-line front over the `edge-demo` library.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use models::cli::Verbosity;

/// Real-time video inference: face detection, emotion, age/gender, orientation and classification on
/// video files, cameras and streams.
#[derive(Parser, Debug)]
#[command(name = "edge-demo", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    verbosity: Verbosity,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check OpenCV, the face detector, a video source and ONNX Runtime.
    Doctor {
        /// Haar cascade for face detection.
        #[arg(long, default_value = edge_demo::DEFAULT_FACE_CASCADE)]
        cascade: PathBuf,
        /// A video file or camera index to open, read one frame from and search for faces.
        #[arg(long)]
        source: Option<String>,
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
        Command::Doctor { cascade, source, json } => {
            let report = edge_demo::doctor::run(&cascade, source.as_deref())?;
            let ort = runtime::doctor::run(runtime::Provider::Cpu, None);
            if json {
                let ort = ort.as_ref().map_err(|e| e.to_string());
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "video": report, "onnxruntime": ort }))?);
            } else {
                println!("{report}");
                match &ort {
                    Ok(r) => println!("{r}"),
                    Err(e) => println!("onnxruntime     FAILED: {e}"),
                }
            }
            let failures: Vec<String> = [report.face_cascade.err(), report.source.and_then(|s| s.err()), ort.err().map(|e| e.to_string())]
                .into_iter()
                .flatten()
                .collect();
            if !failures.is_empty() {
                anyhow::bail!("{}", failures.join("; "));
            }
        }
    }
    Ok(())
}
