//! `runtime`: thin command-line front over the `runtime` library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use models::cli::Verbosity;
use runtime::detect::Opened;
use runtime::eval::{self, EvalOptions};
use runtime::{Model, PreprocessArgs, Provider, SessionOptions};

/// Run ONNX models with ONNX Runtime on CPU or CUDA: evaluate, predict, benchmark, serve.
///
/// Our own exports carry their preprocessing and labels; for a model made elsewhere give them with
/// --size WxH --layout nchw|nhwc --gray --mean M[,M,M] --std S[,S,S] --labels FILE
/// (e.g. edge-demo/assets/fer_emotion.onnx: --size 64x64 --layout nhwc --gray --mean 127.5 --std 127.5).
#[derive(Parser, Debug)]
#[command(name = "runtime", version, about, long_about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    verbosity: Verbosity,
    #[command(subcommand)]
    command: Command,
}

/// The model and where it runs.
#[derive(Args, Debug)]
struct ModelArgs {
    /// The ONNX file.
    #[arg(long, short = 'm')]
    model: PathBuf,
    /// Execution provider: cpu, cuda or cuda:N. A provider that cannot register is an error, never a
    /// silent fallback to the CPU.
    #[arg(long, default_value = "cpu")]
    provider: Provider,
    /// ONNX Runtime intra-op threads [default: every core].
    #[arg(long)]
    threads: Option<usize>,
    #[command(flatten)]
    preprocess: PreprocessArgs,
}

impl ModelArgs {
    /// Opens the model once, as a detector when its metadata says so and as a classifier otherwise.
    fn open_any(&self, share_cores: bool) -> Result<Opened> {
        Ok(runtime::detect::open_any(&self.model, &SessionOptions { provider: self.provider, threads: self.threads, share_cores }, &self.preprocess)?)
    }

    /// Opens the model; `share_cores` when our decoding threads run alongside it (see `SessionOptions`).
    fn open(&self, share_cores: bool) -> Result<Model> {
        Ok(Model::open(&self.model, &SessionOptions { provider: self.provider, threads: self.threads, share_cores }, &self.preprocess)?)
    }
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
    /// Evaluate on a record file (`trainer prepare` output) or a folder with one sub-folder per class:
    /// rank-1, rank-5, one-off, per-class precision/recall/F1, confusion matrix, images/s.
    Eval {
        #[command(flatten)]
        model: ModelArgs,
        /// A .rec file, or a folder of class folders named by label (or 0..K-1).
        #[arg(long)]
        data: PathBuf,
        /// Images per inference batch.
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// The book's 10-crop oversampling: corners + centre and their mirrors, probabilities averaged.
        #[arg(long)]
        ten_crop: bool,
        /// Also report one-off accuracy (ordinal labels such as age bins; on when the model says so).
        #[arg(long)]
        one_off: bool,
        /// Decode/preprocess threads [default: the cores].
        #[arg(long)]
        workers: Option<usize>,
        /// Also write the full report as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// mAP@0.5 (and COCO AP) of detections made by any tool, given as JSON lines, on a record file with
    /// boxes: `runtime predict --json` output, `edge-demo detect|faces --json` output (e.g. the Haar
    /// cascade's faces), or your own. Each line: {"image": PATH, "detections": [{"label": NAME,
    /// "score": S, "box": [x0, y0, x1, y1]}]} in the image's pixels; records are matched by file name
    /// (their key's, or trainer dump's NNNNNN.jpg), labels by name to the data's labels.txt.
    EvalDetections {
        /// The JSON lines file (one line per image, also those where nothing was found).
        #[arg(long)]
        detections: PathBuf,
        /// The .rec file with the ground-truth boxes (labels.txt beside it).
        #[arg(long)]
        data: PathBuf,
        /// Also write the report as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Top-k labels with probabilities for each image (or every image of a folder).
    Predict {
        #[command(flatten)]
        model: ModelArgs,
        /// Image files or folders.
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// How many labels per image.
        #[arg(long, default_value_t = 5)]
        top: usize,
        /// The book's 10-crop oversampling.
        #[arg(long)]
        ten_crop: bool,
        /// Images per inference batch.
        #[arg(long, default_value_t = 8)]
        batch: usize,
        /// Decode/preprocess threads [default: the cores].
        #[arg(long)]
        workers: Option<usize>,
        /// Print JSON lines (one object per image) instead of text.
        #[arg(long)]
        json: bool,
        /// Detectors: report boxes scoring at least this (the book's --confidence).
        #[arg(long, default_value_t = 0.5)]
        min_score: f32,
        /// Detectors: also write each image with its boxes drawn (one colour per class) into this folder.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Latency (p50/p90/p99) and throughput per batch size of the model alone, and with --images the
    /// end-to-end rate (decode + preprocess + inference) over a folder.
    Bench {
        #[command(flatten)]
        model: ModelArgs,
        /// Batch sizes, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
        batch: Vec<usize>,
        /// Untimed runs before timing each batch size.
        #[arg(long, default_value_t = 5)]
        warmup: usize,
        /// At least this many timed runs per batch size…
        #[arg(long, default_value_t = 20)]
        iters: usize,
        /// …and at least this many seconds.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// A folder of images for the end-to-end measurement.
        #[arg(long)]
        images: Option<PathBuf>,
        /// Decode/preprocess threads for --images [default: the cores].
        #[arg(long)]
        workers: Option<usize>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Serve models over the Open Inference Protocol (KServe v2 / Triton): HTTP/REST and gRPC, with
    /// dynamic batching, Triton's statistics, classification and binary-tensor extensions, encoded images
    /// in, and Prometheus metrics. Stops on SIGTERM or Ctrl-C after answering the requests in flight.
    ///
    /// The repository is Triton's layout (DIR/NAME/config.pbtxt, DIR/NAME/VERSION/model.onnx, labels
    /// beside the config), as `exporter triton` writes it; a folder without config.pbtxt is
    /// auto-configured from its ONNX file. Listens on loopback unless told otherwise.
    ///
    /// Example: runtime serve --model-repository models/ ; curl localhost:8000/v2/models/NAME
    Serve {
        /// A Triton model repository.
        #[arg(long, value_name = "DIR")]
        model_repository: Option<PathBuf>,
        /// A model outside any repository, auto-configured from the file (repeatable).
        #[arg(long = "model", value_name = "NAME=FILE.onnx", value_parser = parse_model_flag)]
        models: Vec<(String, PathBuf)>,
        /// HTTP/REST address ("off": none). Port 0 picks a free port (printed at start).
        #[arg(long, default_value = "127.0.0.1:8000")]
        http: Addr,
        /// gRPC address ("off": none).
        #[arg(long, default_value = "127.0.0.1:8001")]
        grpc: Addr,
        /// Prometheus metrics address, served at /metrics ("off": none).
        #[arg(long, default_value = "127.0.0.1:8002")]
        metrics: Addr,
        /// Execution provider for every instance: cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu")]
        provider: Provider,
        /// ONNX Runtime intra-op threads per model instance [default: the cores divided among a model's instances].
        #[arg(long)]
        threads: Option<usize>,
        /// Largest request body (HTTP) or message (gRPC), in MiB.
        #[arg(long, default_value_t = 64)]
        max_body_mib: usize,
        /// Seconds a client has to send a request's headers (also the idle keep-alive limit).
        #[arg(long, default_value_t = 10.0)]
        header_timeout: f64,
        /// Seconds within which a request must be answered (HTTP 408 / gRPC DEADLINE_EXCEEDED).
        #[arg(long, default_value_t = 60.0)]
        request_timeout: f64,
        /// Requests that may wait per model before new ones get 503 (a config's max_queue_size wins).
        #[arg(long, default_value_t = 1024)]
        max_queue: usize,
        /// Seconds shutdown waits for requests in flight.
        #[arg(long, default_value_t = 30.0)]
        shutdown_grace: f64,
    },
}

/// `runtime predict` with a detector: boxes per image (text or JSON lines), drawn into `out`.
fn predict_boxes(mut d: runtime::detect::Detector, images: &[PathBuf], min_score: f32, out: Option<&std::path::Path>, json: bool) -> Result<()> {
    let mut files = vec![];
    for p in images {
        if p.is_dir() {
            let mut inside: Vec<PathBuf> =
                std::fs::read_dir(p).with_context(|| format!("cannot read {}", p.display()))?.flatten().map(|e| e.path()).filter(|f| f.is_file()).collect();
            inside.sort();
            files.extend(inside);
        } else {
            files.push(p.clone());
        }
    }
    if let Some(dir) = out {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let (mut done, mut skipped) = (0, 0);
    for f in &files {
        let img = match data::image::open(f) {
            Ok(img) => img,
            Err(e) => {
                eprintln!("skipped {}: {e}", f.display());
                skipped += 1;
                continue;
            }
        };
        let found = runtime::detect::detect_image(&mut d, &img, min_score).with_context(|| format!("detecting in {}", f.display()))?;
        let answer = runtime::detect::ImageDetections { image: f.display().to_string(), width: img.width(), height: img.height(), detections: found };
        if json {
            println!("{}", serde_json::to_string(&answer)?);
        } else {
            let list: Vec<String> = answer
                .detections
                .iter()
                .map(|x| format!("{} {:.2} [{:.0}, {:.0}, {:.0}, {:.0}]", x.label, x.score, x.bbox[0], x.bbox[1], x.bbox[2], x.bbox[3]))
                .collect();
            println!("{}: {}", answer.image, if list.is_empty() { "nothing".into() } else { list.join(", ") });
        }
        if let Some(dir) = out {
            let mut rgb = img.to_rgb8();
            runtime::detect::draw(&mut rgb, &answer.detections);
            let name = dir.join(f.file_name().unwrap_or_default()).with_extension("png");
            rgb.save(&name).with_context(|| format!("cannot write {}", name.display()))?;
        }
        done += 1;
    }
    anyhow::ensure!(done > 0, "no image could be read ({skipped} skipped)");
    Ok(())
}

fn parse_model_flag(s: &str) -> Result<(String, PathBuf), String> {
    runtime::serve::repository::parse_model_flag(s).map_err(|e| e.to_string())
}

/// A listening address, or "off" for none.
#[derive(Debug, Clone, Copy)]
struct Addr(Option<SocketAddr>);

impl std::str::FromStr for Addr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "off" {
            return Ok(Self(None));
        }
        s.parse().map(|a| Self(Some(a))).map_err(|e| format!("'{s}': {e} (expected HOST:PORT such as 127.0.0.1:8000, or off)"))
    }
}

fn seconds(what: &str, s: f64) -> Result<Duration> {
    anyhow::ensure!(s.is_finite() && s > 0.0, "--{what} {s}: must be a positive number of seconds");
    Ok(Duration::from_secs_f64(s))
}

fn main() -> std::process::ExitCode {
    models::cli::exit(run(Cli::parse()))
}

fn run(cli: Cli) -> Result<()> {
    cli.verbosity.init_logging();
    let progress = !cli.verbosity.quiet;
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
        Command::Eval { model, data, batch, ten_crop, one_off, workers, json } => {
            let mut m = match model.open_any(true)? {
                Opened::Classifier(m) => m,
                Opened::Detector(mut d) => {
                    let workers = workers.unwrap_or_else(runtime::images::default_workers);
                    let report = runtime::detect::evaluate(&mut d, &data, batch, workers, progress)?;
                    println!("{report}");
                    if let Some(path) = json {
                        std::fs::write(&path, serde_json::to_string_pretty(&report)?).with_context(|| format!("cannot write {}", path.display()))?;
                    }
                    return Ok(());
                }
            };
            let workers = workers.unwrap_or_else(runtime::images::default_workers);
            let report = eval::evaluate(&mut m, &data, &EvalOptions { batch, ten_crop, one_off, workers, progress })?;
            println!("{report}");
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&report)?).with_context(|| format!("cannot write {}", path.display()))?;
            }
        }
        Command::EvalDetections { detections, data, json } => {
            let report = runtime::detect::evaluate_detections(&detections, &data)?;
            println!("{report}");
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&report)?).with_context(|| format!("cannot write {}", path.display()))?;
            }
        }
        Command::Predict { model, images, top, ten_crop, batch, workers, json, min_score, out } => {
            let mut m = match model.open_any(true)? {
                Opened::Classifier(m) => m,
                Opened::Detector(d) => return predict_boxes(*d, &images, min_score, out.as_deref(), json),
            };
            let workers = workers.unwrap_or_else(runtime::images::default_workers);
            let (preds, skipped) = eval::predict(&mut m, &images, top.max(1), ten_crop, batch, workers)?;
            for p in &preds {
                if json {
                    println!("{}", serde_json::to_string(p)?);
                } else {
                    let tops: Vec<String> = p.top.iter().map(|(l, pr)| format!("{l} {:.2}%", 100.0 * pr)).collect();
                    println!("{}: {}", p.image, tops.join(", "));
                }
            }
            for (name, why) in &skipped {
                eprintln!("skipped {name}: {why}");
            }
            if preds.is_empty() {
                anyhow::bail!("no image could be read ({} skipped)", skipped.len());
            }
        }
        Command::Bench { model, batch, warmup, iters, seconds, images, workers, json } => {
            // The model alone with ONNX Runtime's defaults; end to end with a session that leaves the
            // cores to the decoding threads between runs, as `eval` and `predict` open it.
            let mut m = match model.open_any(false)? {
                Opened::Classifier(m) => m,
                Opened::Detector(mut d) => {
                    let ([h, w], c) = (d.image_size(), d.channels());
                    let (tfod, face) =
                        (matches!(d.contract, runtime::detect::Contract::Tfod { .. }), matches!(d.contract, runtime::detect::Contract::Face { .. }));
                    if !json {
                        let kind = match (tfod, face) {
                            (true, _) => "TFOD-contract detector, uint8",
                            (_, true) => "BlazeFace face detector, batch 1",
                            _ => "detector",
                        };
                        println!("{} on {} ({kind}, {c}x{h}x{w})", d.path.display(), d.provider);
                        println!("batch  iters   p50 ms   p90 ms   p99 ms   images/s");
                    }
                    let mut rows = vec![];
                    // a face detector's input is fixed at one image: one row, whatever --batch says
                    let sizes: Vec<usize> = if face { vec![1] } else { batch.iter().map(|&b| b.max(1)).collect() };
                    for b in sizes {
                        let min_time = Duration::from_secs_f64(seconds.max(0.0));
                        let r = if face {
                            eval::bench_runs(1, d.sample_len(), warmup, iters.max(1), min_time, |x| {
                                d.run_faces(x, 0.5).map(drop).map_err(eval::EvalError::from)
                            })?
                        } else if tfod {
                            // seeded noise as bytes, made once: the timed runs convert nothing
                            let mut g = data::rng::Xorshift64::seeded(b as u64);
                            let bytes: Vec<u8> = (0..b * d.sample_len()).map(|_| g.below(256) as u8).collect();
                            eval::bench_runs(b, d.sample_len(), warmup, iters.max(1), min_time, |_| {
                                d.run_rgb8(&bytes, b, [h, w]).map(drop).map_err(eval::EvalError::from)
                            })?
                        } else {
                            eval::bench_runs(b, d.sample_len(), warmup, iters.max(1), min_time, |x| d.run(x, b).map(drop).map_err(eval::EvalError::from))?
                        };
                        if !json {
                            println!("{:>5}  {:>5}  {:>7.3}  {:>7.3}  {:>7.3}  {:>9.1}", r.batch, r.iterations, r.p50_ms, r.p90_ms, r.p99_ms, r.images_per_sec);
                        }
                        rows.push(r);
                    }
                    if json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&serde_json::json!({"model": d.path, "provider": d.provider.to_string(), "model_alone": rows}))?
                        );
                    }
                    return Ok(());
                }
            };
            let mut pipelined = images.as_ref().map(|_| model.open(true)).transpose()?;
            let min_time = Duration::from_secs_f64(seconds.max(0.0));
            let mut rows = vec![];
            let mut e2e = vec![];
            for &b in &batch {
                rows.push(eval::bench_model(&mut m, b.max(1), warmup, iters.max(1), min_time)?);
                if let (Some(dir), Some(p)) = (&images, pipelined.as_mut()) {
                    e2e.push(eval::bench_end_to_end(p, dir, b.max(1), workers.unwrap_or_else(runtime::images::default_workers))?);
                }
            }
            if json {
                let v = serde_json::json!({"model": m.path, "provider": m.provider.to_string(), "model_alone": rows, "end_to_end": e2e});
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("{} on {} ({})", m.path.display(), m.provider, m.preprocess);
                println!("batch  iters   p50 ms   p90 ms   p99 ms   images/s");
                for r in &rows {
                    println!("{:>5}  {:>5}  {:>7.3}  {:>7.3}  {:>7.3}  {:>9.1}", r.batch, r.iterations, r.p50_ms, r.p90_ms, r.p99_ms, r.images_per_sec);
                }
                for r in &e2e {
                    println!(
                        "end to end, batch {}: {} images in {:.2} s, {:.1} images/s ({} skipped)",
                        r.batch, r.images, r.seconds, r.images_per_sec, r.skipped
                    );
                }
            }
        }
        Command::Serve {
            model_repository,
            models,
            http,
            grpc,
            metrics,
            provider,
            threads,
            max_body_mib,
            header_timeout,
            request_timeout,
            max_queue,
            shutdown_grace,
        } => {
            anyhow::ensure!(max_body_mib > 0, "--max-body-mib must be at least 1");
            anyhow::ensure!(max_queue > 0, "--max-queue must be at least 1");
            let (http, grpc, metrics) = (http.0, grpc.0, metrics.0);
            anyhow::ensure!(http.is_some() || grpc.is_some(), "--http off and --grpc off: nothing would answer");
            let limits = runtime::serve::Limits {
                max_body: max_body_mib << 20,
                header_timeout: seconds("header-timeout", header_timeout)?,
                request_timeout: seconds("request-timeout", request_timeout)?,
                shutdown_grace: seconds("shutdown-grace", shutdown_grace)?,
                max_queue,
            };
            runtime::serve::serve(runtime::serve::ServeOptions { repository: model_repository, models, http, grpc, metrics, provider, threads, limits })?;
        }
    }
    Ok(())
}
