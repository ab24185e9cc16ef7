//! `trainer`: thin command-line front over the `trainer` library. The clap types of the larger
//! subcommands and their printing live in `cli.rs`, a module of this binary, not of the library.

use std::path::PathBuf;

mod cli;

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
    /// Build a dataset into record files: lists, label map, train-set means, records, report.
    Prepare {
        #[command(subcommand)]
        kind: cli::PrepareKind,
        #[command(flatten)]
        common: cli::PrepareCommon,
    },
    /// Measure the data loader on a record file: decode + augment images/s and peak memory (JSON).
    LoaderBench {
        /// A record file from `trainer prepare`.
        rec: PathBuf,
        /// Output crop size (square).
        #[arg(long, default_value_t = 224)]
        size: u32,
        #[arg(long, default_value_t = 64)]
        batch_size: usize,
        /// Decode threads (0 = one per core).
        #[arg(long, default_value_t = 0)]
        workers: usize,
        /// The augmentation: "book" (random crop, flip, rotation within 15 degrees, shear 0.1),
        /// "crop-flip" (random crop and flip only) or "none" (centre crops).
        #[arg(long, value_enum, default_value_t = cli::BenchAugment::Book)]
        augment: cli::BenchAugment,
        /// Same as --augment none.
        #[arg(long, conflicts_with = "augment")]
        no_augment: bool,
    },
    /// Write a record file's images out as files, with their labels and boxes as JSON lines
    /// (`records.jsonl`; classes index the `labels.txt` copied beside), to look at them or to feed
    /// them to `runtime predict` or `edge-demo`.
    Dump {
        /// A record file from `trainer prepare`.
        rec: PathBuf,
        /// Output folder (created).
        #[arg(long)]
        out: PathBuf,
        /// At most this many records, from the first [default: all].
        #[arg(long)]
        max: Option<usize>,
    },
    /// Time all-reduces of f32 buffers across a job (run under torchrun, one rank per process):
    /// median ms, algorithm and bus bandwidth per size, as JSON lines from rank 0. See bench/dist_bench.sh.
    AllreduceBench {
        /// Buffer sizes in floats.
        #[arg(long, value_delimiter = ',', default_values_t = [1_000usize, 10_000, 100_000, 1_000_000, 10_000_000, 25_000_000])]
        sizes: Vec<usize>,
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        #[arg(long, default_value_t = 10)]
        iters: usize,
        /// cpu (Gloo) or cuda (NCCL; each rank on cuda:LOCAL_RANK).
        #[arg(long, default_value = "cpu")]
        device: DeviceSpec,
    },
    /// Create a run directory with a config and epoch-0 weights of a registry model.
    Init {
        /// A registry model name (see `trainer models`).
        #[arg(long)]
        model: String,
        #[arg(long)]
        num_classes: usize,
        /// Seed of the weight initialisation.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// The run directory to create.
        #[arg(long)]
        run: PathBuf,
    },
    /// A torchvision state_dict saved as safetensors -> a run directory with epoch-0 weights (tv-* models).
    ///
    /// Every key is checked by name and shape; --num-classes other than the file's gets a fresh head.
    ImportWeights {
        /// A torchvision-compatible registry model: tv-vgg16 or tv-resnet50.
        #[arg(long)]
        model: String,
        /// The file from `safetensors.torch.save_file(model.state_dict(), path)`.
        #[arg(long)]
        weights: PathBuf,
        /// The run directory to create.
        #[arg(long)]
        run: PathBuf,
        /// Classes of the written network (default: the file's); another count means surgery.
        #[arg(long)]
        num_classes: Option<usize>,
        /// Seed of a freshly initialised head.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Train from a TOML experiment config; resume with --start-epoch N, change the rate with --lr.
    ///
    /// As in the book, --epochs is the epoch to stop at: `--start-epoch 2 --epochs 4` trains epochs 3
    /// and 4 from the epoch-2 checkpoint.
    Train {
        /// The experiment config (see configs/).
        #[arg(long)]
        config: PathBuf,
        /// Run directory (overrides train.run).
        #[arg(long)]
        run: Option<PathBuf>,
        /// The epoch to stop at (overrides train.epochs).
        #[arg(long)]
        epochs: Option<usize>,
        /// Resume from this epoch's checkpoint in the run directory.
        #[arg(long)]
        start_epoch: Option<usize>,
        /// Learning rate (overrides train.lr): the book's "stop, lower the rate, resume".
        #[arg(long)]
        lr: Option<f64>,
        #[arg(long)]
        seed: Option<u64>,
        /// cpu, cuda or cuda:N (overrides train.device).
        #[arg(long)]
        device: Option<DeviceSpec>,
        /// Per-device batch size (overrides train.batch_size).
        #[arg(long)]
        batch_size: Option<usize>,
        /// Override any config field: --set train.lr=0.1 --set augment.flip=true (repeatable); an
        /// empty value puts a field back to its default: --set data.val= trains without a validation set.
        #[arg(long = "set", value_name = "SECTION.FIELD=VALUE")]
        sets: Vec<String>,
        /// Continue a run stopped with Ctrl-C at the step where it stopped.
        #[arg(long, conflicts_with = "start_epoch")]
        resume: bool,
        /// Print, after each epoch, where a step's time went: data wait, host-to-device copy,
        /// forward, backward, optimizer, bookkeeping (each phase ends with a device synchronisation,
        /// so the profiled run is slower; read the shares), and how many host reads the steps made.
        #[arg(long)]
        profile: bool,
        /// Train data-parallel in G processes of this machine (rank 0 hosts the rendezvous; the global
        /// batch is G times --batch-size). Default: the length of train.devices, else 1. Under
        /// torchrun, which starts the processes itself, leave it out: `torchrun --nproc-per-node=G
        /// --no-python -- trainer train --config C` (docs/distributed.md).
        #[arg(long, value_name = "G")]
        nproc: Option<usize>,
    },
    /// Evaluate a checkpoint (default: the latest) on a dataset: loss, rank-1, rank-5.
    Eval {
        #[arg(long)]
        run: PathBuf,
        #[arg(long)]
        epoch: Option<usize>,
        /// A record file from `trainer prepare`, or an IDX prefix (packed into records on first use), e.g.
        /// /usr/share/datasets/fashion-mnist/t10k.
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value_t = 512)]
        batch_size: usize,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Features of a frozen network for every record: its last pooling layer (or --layer), flattened.
    Features(cli::FeaturesArgs),
    /// Logistic regression on features: grid search over C with cross-validation, report, saved model.
    Logreg {
        #[command(subcommand)]
        action: cli::LogregAction,
    },
    /// Predict every image's rotation with a logreg model on a network's features; write it upright.
    OrientationCorrect(trainer::orientation::CorrectOptions),
    /// Draw a run's loss and accuracy curves across all its restarts (restart epochs marked).
    Plot {
        #[arg(long)]
        run: PathBuf,
        /// The PNG to write (default: RUN/plot.png).
        #[arg(long)]
        out: Option<PathBuf>,
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

/// The command line minus `--nproc G` / `--nproc=G` (what the launcher's ranks run).
fn without_nproc(args: impl Iterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut out = vec![];
    let mut skip_next = false;
    for a in args {
        if std::mem::take(&mut skip_next) {
            continue;
        }
        match a.to_str() {
            Some("--nproc") => skip_next = true,
            Some(s) if s.starts_with("--nproc=") => {}
            _ => out.push(a),
        }
    }
    out
}

fn main() -> std::process::ExitCode {
    models::cli::exit(run(Cli::parse()))
}

fn run(mut cli: Cli) -> Result<()> {
    // the ranks after 0 of a multi-process job say only warnings and errors (rank 0 speaks for all)
    if std::env::var("RANK").is_ok_and(|r| r.trim() != "0") && cli.verbosity.verbose == 0 {
        cli.verbosity.quiet = true;
    }
    cli.verbosity.init_logging();
    match cli.command {
        Command::Models { action: None, json } => cli::list_models(json)?,
        Command::Models { action: Some(ModelsAction::Describe { name, num_classes, in_channels, json }), .. } => {
            cli::describe_model(&name, num_classes, in_channels, json)?
        }
        Command::Prepare { kind, common } => cli::prepare(kind, &common)?,
        Command::Dump { rec, out, max } => dump(&rec, &out, max)?,
        Command::LoaderBench { rec, size, batch_size, workers, augment, no_augment } => {
            let augment = if no_augment { cli::BenchAugment::None } else { augment };
            println!("{}", cli::loader_bench(&rec, size, batch_size, workers, augment)?);
        }
        Command::AllreduceBench { sizes, warmup, iters, device } => {
            let env = trainer::dist::Env::from_env()?.ok_or_else(|| {
                anyhow::anyhow!("allreduce-bench is one rank of a job: start it with torchrun, e.g. `torchrun --standalone --nproc-per-node=2 --no-python -- trainer allreduce-bench`")
            })?;
            let device = match device {
                DeviceSpec::Cuda(i) => DeviceSpec::Cuda(i + env.local_rank),
                d => d,
            }
            .resolve()?;
            let main = env.rank == 0;
            let dist = trainer::dist::Dist::init(env, device, std::time::Duration::from_secs(300))?;
            for row in trainer::dist::allreduce_bench(&dist, &sizes, warmup, iters)? {
                if main {
                    println!("{}", serde_json::to_string(&row)?);
                }
            }
            dist.barrier("the end of the benchmark")?;
        }
        Command::Init { model, num_classes, seed, run } => {
            let path = trainer::train::init(&model, num_classes, seed, &run, None)?;
            println!("initialised {model} ({num_classes} classes, seed {seed}): {}", path.display());
        }
        Command::ImportWeights { model, weights, run, num_classes, seed } => {
            println!("{}", trainer::import::import_weights(&trainer::import::ImportOptions { model, weights, run, num_classes, seed })?);
        }
        Command::Train { config, run, epochs, start_epoch, lr, seed, device, batch_size, sets, resume, profile, nproc } => {
            let cfg = trainer::train::Config::from_file_with(&config, &sets)?;
            // torchrun (or our own launcher) already made this process one rank of a job
            let is_rank = std::env::var_os("WORLD_SIZE").is_some();
            let processes = nproc.unwrap_or_else(|| trainer::train::processes_of(&cfg));
            if is_rank && nproc.is_some() {
                tracing::warn!("--nproc is ignored: this process is already rank {} of a launched job", std::env::var("RANK").unwrap_or_default());
            }
            if !is_rank && (processes > 1 || nproc.is_some()) {
                trainer::dist::launch::launch(processes, &without_nproc(std::env::args_os().skip(1)))?;
                return Ok(());
            }
            trainer::progress::install_interrupt_handler();
            let o = trainer::train::Overrides { run, epochs, start_epoch, lr, seed, device, batch_size, resume, profile };
            let history = trainer::train::train(cfg, &o)?;
            let rank0 = std::env::var("RANK").ok().is_none_or(|r| r.trim() == "0");
            if let (Some(last), true) = (history.last(), rank0) {
                println!("{}", serde_json::to_string(last)?);
            }
        }
        Command::Eval { run, epoch, data, batch_size, json } => {
            let (epoch, m) = trainer::train::eval(&run, epoch, &data, batch_size)?;
            if json {
                println!("{}", serde_json::json!({"epoch": epoch, "metrics": m}));
            } else if let Some(map) = m.map {
                let coco = m.coco_ap.map_or(String::new(), |c| format!(", COCO AP@[.5:.95] {c:.4}"));
                println!("{} epoch {epoch} on {}: {} images, loss {:.4}, mAP@0.5 {map:.4}{coco}", run.display(), data.display(), m.samples, m.loss);
                println!("{}", models::detect::ap_table(&m.ap));
            } else {
                let off = m.one_off.map_or(String::new(), |o| format!(", one-off {:.2}%", 100.0 * o));
                println!(
                    "{} epoch {epoch} on {}: {} samples, loss {:.4}, rank-1 {:.2}%, rank-5 {:.2}%{off}",
                    run.display(),
                    data.display(),
                    m.samples,
                    m.loss,
                    100.0 * m.rank1,
                    100.0 * m.rank5
                );
            }
        }
        Command::Features(args) => cli::features(&args)?,
        Command::Logreg { action } => cli::logreg(action)?,
        Command::OrientationCorrect(args) => cli::orientation_correct(&args)?,
        Command::Plot { run, out } => {
            let out = out.unwrap_or_else(|| trainer::run_dir::RunDir::new(&run).plot_path());
            let h = trainer::plot::plot(&run, &out)?;
            println!("{}: {} epochs, restarts after epochs {:?}", out.display(), h.points.len(), h.restarts);
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

/// `trainer dump`: each record's image bytes as they are stored (PNG or JPEG), named by index, and
/// one JSON line per record with its key, label and boxes.
fn dump(rec: &std::path::Path, out: &std::path::Path, max: Option<usize>) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    let file = data::records::RecordFile::open(rec)?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let list = out.join("records.jsonl");
    let mut lines = std::io::BufWriter::new(std::fs::File::create(&list).with_context(|| format!("cannot create {}", list.display()))?);
    let n = max.map_or(file.len(), |m| m.min(file.len()));
    for i in 0..n {
        let r = file.read(i).with_context(|| format!("{}: record {i}", rec.display()))?;
        let ext = if r.image.starts_with(&[0x89, b'P', b'N', b'G']) { "png" } else { "jpg" };
        let name = format!("{i:06}.{ext}");
        std::fs::write(out.join(&name), &r.image).with_context(|| format!("cannot write {}", out.join(&name).display()))?;
        let line = serde_json::json!({"image": name, "key": r.key, "label": r.label, "boxes": r.boxes});
        writeln!(lines, "{line}").with_context(|| format!("cannot write {}", list.display()))?;
    }
    lines.flush().with_context(|| format!("cannot write {}", list.display()))?;
    // the boxes' classes index labels.txt: it goes with them
    let labels = data::folder::DatasetDir::of_records(rec).labels_path();
    if labels.is_file() {
        std::fs::copy(&labels, out.join("labels.txt")).with_context(|| format!("cannot copy {} into {}", labels.display(), out.display()))?;
    }
    println!("wrote {n} of {} records' images to {} (boxes in {})", file.len(), out.display(), list.display());
    Ok(())
}
