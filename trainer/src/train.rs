//! The book's experiment workflow: one TOML config per experiment ([`crate::config`]), a run directory
//! with checkpoints every epoch ([`crate::run_files`]), stop, change the learning rate, resume at epoch N.
//! This module is the training loop; the config, the run files and evaluation are re-exported here under
//! their old paths (`trainer::train::Config`, `trainer::train::checkpoint_paths`, …).
//!
//! Resuming is exact: the loader draws the shuffle and the augmentation of epoch e from (seed, e, batch)
//! and every step reseeds libtorch (dropout) from (seed, e, step), so nothing of epoch e depends on
//! whether the run stopped before it.

use std::path::{Path, PathBuf};
use std::time::Instant;

pub use crate::batches::batch_spec;
pub use crate::config::{AugmentConfig, Config, DataConfig, ModelConfig, Overrides, TrainConfig};
pub use crate::evaluation::{eval, evaluate, EpochMetrics, EvalMetrics};
pub use crate::run_files::{
    checkpoint_paths, interrupted_paths, load_checkpoint_info, load_interrupted, record_run, restore, save_checkpoint, saved_epochs, CheckpointInfo,
};

use crate::batches::{BatchError, RecordBatches};
use crate::config::{d_mean, d_std};
use crate::device::DeviceError;
use crate::evaluation::rank_hits;
use crate::net::{Net, NetError};
use crate::optim::{Optimizer, OptimizerConfig, Schedule};
use crate::parallel::Replicas;
use crate::run_dir::RunDir;
use crate::run_files::{restore_from, RunFilesError, RunLog};

/// A network that cannot be built from a config.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Zoo(#[from] models::zoo::ZooError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error("building {model}: {source}")]
    Net { model: String, source: NetError },
}

/// Why `trainer train` or `trainer init` stopped; each names the flag, file or step it is about.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("--epochs {epochs} is the epoch to stop at and must be above --start-epoch {start}")]
    Epochs { epochs: usize, start: usize },
    #[error("train.batch_size must be at least 1")]
    BatchSize,
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Batches(#[from] BatchError),
    #[error(transparent)]
    RunFiles(#[from] RunFilesError),
    #[error("creating run directory {run}: {source}")]
    RunDir { run: PathBuf, source: std::io::Error },
    #[error("model.init_from {path}: {source}")]
    InitFrom { path: PathBuf, source: NetError },
    #[error("{run}: no checkpoint for epoch {epoch} to resume from (saved epochs: {saved:?})")]
    NoCheckpoint { run: PathBuf, epoch: usize, saved: Vec<usize> },
    /// `at` is "where it was interrupted" or "at epoch N".
    #[error("resuming {run} {at}: {source}")]
    Resume { run: PathBuf, at: String, source: Box<RunFilesError> },
    #[error("replicating the network on {devices}: {source}")]
    Replicas { devices: String, source: NetError },
    #[error("epoch {epoch}, batch {batch}: the loss is {loss}; lower the learning rate (now {lr})")]
    Diverged { epoch: usize, batch: i64, loss: f64, lr: f64 },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Builds the network of `c` on its device, with freshly initialised weights from `seed`.
pub fn build_net(c: &Config, num_classes: usize) -> Result<Net, BuildError> {
    let graph = models::zoo::build(&c.model.name, Some(c.model.num_classes.unwrap_or(num_classes)), c.model.in_channels)?;
    net_for(c, graph)
}

/// The network of `graph` on `c`'s device, freshly initialised from `c`'s seed.
pub fn net_for(c: &Config, graph: models::graph::Network) -> Result<Net, BuildError> {
    let device = crate::parallel::resolve_devices(&c.train.devices, c.train.device)?[0];
    tch::manual_seed(c.train.seed as i64);
    let model = graph.name.clone();
    let mut net = Net::new(graph, device).map_err(|source| BuildError::Net { model, source })?;
    net.set_compute(c.train.precision, c.train.channels_last);
    Ok(net)
}

/// The libtorch seed of one training step (its dropout masks).
pub fn step_seed(seed: u64, epoch: usize, step: usize) -> i64 {
    (seed as i64).wrapping_mul(1_000_003).wrapping_add(epoch as i64).wrapping_mul(1_000_033).wrapping_add(step as i64)
}

/// How often a training epoch reports its progress when no terminal shows the progress bar.
const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(20);

/// `trainer train`: trains epochs `start_epoch + 1 ..= epochs`, resuming from the checkpoint of
/// `start_epoch` when it is above 0 (or when an epoch-0 checkpoint from `trainer init` exists).
pub fn train(mut config: Config, o: &Overrides) -> Result<Vec<EpochMetrics>, TrainError> {
    o.apply(&mut config);
    let c = config.clone();
    let run = c.train.run.clone();
    // An interrupted run continues inside the epoch it stopped in.
    let interrupted = if o.resume { Some(load_interrupted(&run)?) } else { None };
    let start = interrupted.as_ref().map_or(o.start_epoch.unwrap_or(0), |i| i.epoch - 1);
    if c.train.epochs <= start {
        return Err(TrainError::Epochs { epochs: c.train.epochs, start });
    }
    if c.train.batch_size == 0 {
        return Err(TrainError::BatchSize);
    }
    let input = models::zoo::info(&c.model.name).map_err(BuildError::from)?.input;
    let input = [c.model.in_channels.unwrap_or(input[0]), input[1], input[2]];
    let (train_spec, val_spec) = (batch_spec(&c, input, true)?, batch_spec(&c, input, false)?);
    let devices = crate::parallel::resolve_devices(&c.train.devices, c.train.device).map_err(BuildError::from)?;
    let bs = c.train.batch_size * devices.len();
    let train_set = RecordBatches::open(&c.data.train, c.data.limit_train, &train_spec, bs, c.train.seed, true)?;
    let val_set = c.data.val.as_ref().map(|v| RecordBatches::open(v, c.data.limit_val, &val_spec, 512, 0, false)).transpose()?;
    let mut net = build_net(&c, train_set.num_classes())?;
    let mut opt = Optimizer::new(c.optimizer.clone());
    std::fs::create_dir_all(&run).map_err(|source| TrainError::RunDir { run: run.clone(), source })?;
    if let (Some(src), None, 0) = (&c.model.init_from, &interrupted, start) {
        let n = net.load_except(src, &c.model.init_skip).map_err(|source| TrainError::InitFrom { path: src.clone(), source })?;
        tracing::info!("initialised {n} tensors from {} (kept fresh: {:?})", src.display(), c.model.init_skip);
    }
    if interrupted.is_some() {
        restore_from(&interrupted_paths(&run).0, &mut net, Some(&mut opt)).map_err(|source| TrainError::Resume {
            run: run.clone(),
            at: "where it was interrupted".into(),
            source: Box::new(source),
        })?;
    } else if start > 0 || checkpoint_paths(&run, 0).0.is_file() {
        let have = saved_epochs(&run);
        if !have.contains(&start) {
            return Err(TrainError::NoCheckpoint { run, epoch: start, saved: have });
        }
        restore(&run, start, &mut net, Some(&mut opt)).map_err(|source| TrainError::Resume {
            run: run.clone(),
            at: format!("at epoch {start}"),
            source: Box::new(source),
        })?;
    }
    record_run(&run, &c, &net.graph)?;
    let on = devices.iter().map(|d| format!("{d:?}")).collect::<Vec<_>>().join("+");
    let reps = Replicas::new(net, &devices).map_err(|source| TrainError::Replicas { devices: on.clone(), source })?;
    let mut log = RunLog::open(&run, start)?;
    log.say(&format!(
        "{} {}: {} ({} train, {} val samples) on {}, batch {}, epochs {}..={}, lr {}",
        match (&interrupted, start) {
            (Some(i), _) => format!("resume at step {} of epoch {} of", i.step + 1, i.epoch),
            (None, 0) => "start".into(),
            (None, _) => "resume".into(),
        },
        run.display(),
        c.model.name,
        train_set.len(),
        val_set.as_ref().map_or(0, RecordBatches::len),
        on,
        c.train.batch_size * devices.len(),
        start + 1,
        c.train.epochs,
        c.train.lr
    ))?;
    let batches = train_set.batches_per_epoch() as i64;
    let mut history = vec![];
    let mut interrupted = interrupted;
    for epoch in start + 1..=c.train.epochs {
        let lr = c.schedule.lr(c.train.lr, epoch - 1);
        let bar = crate::progress::bar(batches as u64, &format!("epoch {epoch}/{}", c.train.epochs));
        let t0 = Instant::now();
        let (skip, [l0, h1, h5, s0]) = match interrupted.take() {
            Some(i) => (i.step, i.partial.unwrap_or_default()),
            None => (0, [0.0; 4]),
        };
        let (mut loss_sum, mut r1, mut r5, mut seen) = (l0, h1 as i64, h5 as i64, s0 as i64);
        bar.inc(skip as u64);
        let mut window = (Instant::now(), 0i64);
        // Without a terminal (a pipe, a log file, CI) the bar is hidden: a line every HEARTBEAT instead.
        let mut last_note = Instant::now();
        // The loader draws the shuffle from (seed, epoch) and each batch's augmentation from (seed, epoch,
        // batch); libtorch (dropout) is seeded from (seed, epoch, step) before each step. A run resumed at
        // any step draws what an uninterrupted one draws.
        let mut stream = train_set.batches(epoch, skip, reps.main().device);
        for b in skip as i64..batches {
            tch::manual_seed(step_seed(c.train.seed, epoch, b as usize + 1));
            let Some(batch) = stream.next() else { break };
            let (x, y) = batch?;
            let len = y.size()[0];
            if len < 2 && bs > 1 {
                // a last batch of one sample: batch statistics of one value are undefined (PyTorch
                // refuses them), and BatchNorm's running variance would turn NaN; it is left out
                tracing::warn!("epoch {epoch}: the last batch holds 1 sample; skipped (BatchNorm needs 2 or more)");
                continue;
            }
            reps.zero_grad();
            let (l, logits) = reps.forward_backward(&x, &y);
            opt.step(&reps.main().trainable(), lr);
            reps.sync();
            if !l.is_finite() {
                return Err(TrainError::Diverged { epoch, batch: b + 1, loss: l, lr });
            }
            let (a, bb) = rank_hits(&logits.detach(), &y);
            loss_sum += l * len as f64;
            r1 += a;
            r5 += bb;
            seen += len;
            if crate::progress::interrupted() {
                bar.finish_and_clear();
                let info = CheckpointInfo {
                    epoch,
                    lr,
                    seed: c.train.seed,
                    producer: format!("trainer {}", models::VERSION),
                    config: c.clone(),
                    metrics: None,
                    step: b as usize + 1,
                    partial: Some([loss_sum, r1 as f64, r5 as f64, seen as f64]),
                };
                save_checkpoint(&run, reps.main(), &opt, &info)?;
                log.say(&format!(
                    "interrupted at step {}/{batches} of epoch {epoch}; saved {}; continue with `trainer train --config {} --resume`",
                    b + 1,
                    interrupted_paths(&run).0.display(),
                    RunDir::new(&run).config_path().display()
                ))?;
                return Ok(history);
            }
            window.1 += len;
            bar.inc(1);
            if c.train.log_every > 0 && (b + 1) % c.train.log_every as i64 == 0 {
                let sps = window.1 as f64 / window.0.elapsed().as_secs_f64();
                window = (Instant::now(), 0);
                let msg = format!(
                    "loss {:.4} rank-1 {:.4} rank-5 {:.4} {:.0} samples/s",
                    loss_sum / seen as f64,
                    r1 as f64 / seen as f64,
                    r5 as f64 / seen as f64,
                    sps
                );
                bar.set_message(msg.clone());
                log.json(&serde_json::json!({"epoch": epoch, "batch": b + 1, "loss": loss_sum / seen as f64, "rank1": r1 as f64 / seen as f64, "rank5": r5 as f64 / seen as f64, "samples_per_sec": sps, "lr": lr}))?;
                if bar.is_hidden() {
                    tracing::info!("epoch {epoch} batch {}/{batches}: {msg}", b + 1);
                    last_note = Instant::now();
                }
            }
            if bar.is_hidden() && last_note.elapsed() >= HEARTBEAT && b + 1 < batches {
                last_note = Instant::now();
                let done = (b + 1 - skip as i64) as f64;
                let eta = t0.elapsed().as_secs_f64() / done.max(1.0) * (batches - b - 1) as f64;
                tracing::info!(
                    "epoch {epoch}/{} batch {}/{batches}: loss {:.4} rank-1 {:.4}, {eta:.0}s left in the epoch",
                    c.train.epochs,
                    b + 1,
                    loss_sum / seen.max(1) as f64,
                    r1 as f64 / seen.max(1) as f64
                );
            }
        }
        bar.finish_and_clear();
        let train_secs = t0.elapsed().as_secs_f64();
        drop(stream);
        let val = val_set.as_ref().map(|v| evaluate(reps.main(), v, c.data.ordinal)).transpose()?;
        let m = EpochMetrics {
            epoch,
            lr,
            train_loss: loss_sum / seen as f64,
            train_rank1: r1 as f64 / seen as f64,
            train_rank5: r5 as f64 / seen as f64,
            val: val.clone(),
            seconds: t0.elapsed().as_secs_f64(),
            samples_per_sec: seen as f64 / train_secs,
        };
        log.json(&serde_json::to_value(&m).expect("epoch metrics are plain numbers"))?;
        let val_text = val.map_or(String::new(), |v| {
            let off = v.one_off.map_or(String::new(), |o| format!(" one-off {o:.4}"));
            format!(", val loss {:.4} rank-1 {:.4} rank-5 {:.4}{off}", v.loss, v.rank1, v.rank5)
        });
        log.say(&format!(
            "epoch {epoch}/{} lr {lr}: train loss {:.4} rank-1 {:.4}{val_text} ({:.1}s, {:.0} samples/s)",
            c.train.epochs, m.train_loss, m.train_rank1, m.seconds, m.samples_per_sec
        ))?;
        if epoch % c.train.checkpoint_every.max(1) == 0 || epoch == c.train.epochs {
            let info = CheckpointInfo {
                epoch,
                lr,
                seed: c.train.seed,
                producer: format!("trainer {}", models::VERSION),
                config: c.clone(),
                metrics: Some(m.clone()),
                step: 0,
                partial: None,
            };
            save_checkpoint(&run, reps.main(), &opt, &info)?;
        }
        for stale in <[PathBuf; 2]>::from(interrupted_paths(&run)) {
            if stale.exists() {
                std::fs::remove_file(&stale).map_err(|source| TrainError::Io { path: stale.clone(), source })?;
            }
        }
        history.push(m);
    }
    Ok(history)
}

/// `trainer init`: a run directory holding a config and epoch-0 weights.
pub fn init(model: &str, num_classes: usize, seed: u64, run: &Path, data_train: Option<PathBuf>) -> Result<PathBuf, TrainError> {
    let config = Config {
        model: ModelConfig { name: model.into(), num_classes: Some(num_classes), in_channels: None, init_from: None, init_skip: vec![] },
        data: DataConfig {
            train: data_train.unwrap_or_default(),
            val: None,
            limit_train: 0,
            limit_val: 0,
            mean: d_mean(),
            std: d_std(),
            mean_file: None,
            ordinal: false,
        },
        train: TrainConfig { seed, run: run.to_path_buf(), ..TrainConfig::default() },
        optimizer: OptimizerConfig::default(),
        schedule: Schedule::default(),
        augment: AugmentConfig::default(),
    };
    let net = build_net(&config, num_classes)?;
    record_run(run, &config, &net.graph)?;
    let info =
        CheckpointInfo { epoch: 0, lr: config.train.lr, seed, producer: format!("trainer {}", models::VERSION), config, metrics: None, step: 0, partial: None };
    save_checkpoint(run, &net, &Optimizer::new(OptimizerConfig::default()), &info)?;
    Ok(checkpoint_paths(run, 0).0)
}
