//! The book's experiment workflow: one TOML config per experiment ([`crate::config`]), a run directory
//! with checkpoints every epoch ([`crate::run_files`]), stop, change the learning rate, resume at epoch N.
//! This module is the training loop; the config, the run files and evaluation are re-exported here under
//! their old paths (`trainer::train::Config`, `trainer::train::checkpoint_paths`, …).
//!
//! Several processes (torchrun, `--nproc`, `devices = [..]`) train one model data-parallel through
//! [`crate::dist`]: every rank steps on its share of the global batch and they agree on every update.
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

use crate::batches::{BatchError, DeviceBatches, Normalise, Part, RecordBatches, SyntheticBatches, TrainSet};
use crate::config::{d_mean, d_std};
use crate::device::DeviceError;
use crate::dist::{Dist, DistError, Env, GradBuckets, BUCKET_BYTES};
use crate::net::{Net, NetError};
use crate::optim::{Optimizer, OptimizerConfig, Schedule};
use crate::run_dir::RunDir;
use crate::run_files::{restore_from, RunFilesError, RunLog};
use crate::step::{read_back, DeviceSums, Phase, Profile, Read};

/// A network that cannot be built from a config.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Zoo(#[from] models::zoo::ZooError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error("building {model}: {source}")]
    Net { model: String, source: NetError },
    #[error("model.detector of '{model}': {reason}")]
    Detector { model: String, reason: String },
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
    #[error(transparent)]
    Dist(#[from] DistError),
    #[error("{run}: epoch {epoch} was interrupted while {was} process(es) trained it and this run has {now}: an epoch in progress continues only with the same number (each rank's share of it depends on it); resume with {was}, or restart the epoch at any number with --start-epoch {}", epoch - 1)]
    ResumeWorld { run: PathBuf, was: usize, now: usize, epoch: usize },
    #[error("epoch {epoch}, batch {batch}: the loss is {loss}; lower the learning rate (now {lr})")]
    Diverged { epoch: usize, batch: i64, loss: f64, lr: f64 },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Detection(#[from] crate::detection::DetectionError),
    #[error(transparent)]
    Optim(#[from] crate::optim::OptimError),
}

/// Builds the network of `c` on its device, with freshly initialised weights from `seed`.
pub fn build_net(c: &Config, num_classes: usize) -> Result<Net, BuildError> {
    net_for(c, model_graph(c, Some(c.model.num_classes.unwrap_or(num_classes)))?)
}

/// The registry model of `c` with `classes`, a detector's `[model.detector]` settings put over its
/// spec (validated again with them).
pub fn model_graph(c: &Config, classes: Option<usize>) -> Result<models::graph::Network, BuildError> {
    let graph = models::zoo::build(&c.model.name, classes, c.model.in_channels)?;
    let Some(patch) = &c.model.detector else { return Ok(graph) };
    let bad = |reason: String| BuildError::Detector { model: c.model.name.clone(), reason };
    if patch.contains_key("labels") {
        return Err(bad("labels come from the training data (labels.txt beside the records), not the config".into()));
    }
    let mut g = graph.into_graph();
    let spec = g.detector.as_ref().ok_or_else(|| bad("the model is not a detector".into()))?;
    let patch = serde_json::to_value(patch).map_err(|e| bad(e.to_string()))?;
    g.detector = Some(spec.with_overrides(&patch).map_err(|e| bad(e.to_string()))?);
    g.validate().map_err(|e| bad(e.to_string()))
}

/// The network of `graph` on `c`'s device, freshly initialised from `c`'s seed.
pub fn net_for(c: &Config, graph: models::graph::Network) -> Result<Net, BuildError> {
    net_on(c, graph, rank_device(c, None)?)
}

fn net_on(c: &Config, graph: models::graph::Network, device: tch::Device) -> Result<Net, BuildError> {
    tch::manual_seed(c.train.seed as i64);
    let model = graph.name.clone();
    let mut net = Net::new(graph, device).map_err(|source| BuildError::Net { model, source })?;
    net.set_compute(c.train.precision, c.train.channels_last);
    Ok(net)
}

/// The device of one rank: entry LOCAL_RANK of `devices` when the config lists them, else `device`,
/// a CUDA one moved to `cuda:LOCAL_RANK` when several ranks share the machine (torchrun's habit).
pub fn rank_device(c: &Config, env: Option<&Env>) -> Result<tch::Device, DeviceError> {
    let local = env.map_or((0, 1), |e| (e.local_rank, e.local_world));
    let spec = match (&c.train.devices[..], c.train.device) {
        ([], crate::device::DeviceSpec::Cuda(i)) if local.1 > 1 => crate::device::DeviceSpec::Cuda(i + local.0),
        ([], d) => d,
        (list, _) => list[local.0 % list.len()],
    };
    spec.resolve()
}

/// How many processes `c` asks this machine to train on (`devices = [..]`), when not launched by torchrun.
pub fn processes_of(c: &Config) -> usize {
    c.train.devices.len().max(1)
}

/// The libtorch seed of one training step (its dropout masks).
pub fn step_seed(seed: u64, epoch: usize, step: usize) -> i64 {
    (seed as i64).wrapping_mul(1_000_003).wrapping_add(epoch as i64).wrapping_mul(1_000_033).wrapping_add(step as i64)
}

/// How often a training epoch reports its progress when no terminal shows the progress bar.
const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(20);

/// Sums of an epoch's training so far: loss × samples, rank-1 hits, rank-5 hits, samples.
type Sums = [f64; 4];

/// This rank's sums, or the whole job's.
fn job_sums(dist: Option<&Dist>, local: Sums) -> Result<Sums, DistError> {
    match dist {
        None => Ok(local),
        Some(d) => Ok(d.sum(&local, "the training metrics")?.try_into().expect("four sums")),
    }
}

/// The sums of a read, or the error naming the first step whose loss went non-finite.
fn finite(r: Read, epoch: usize, lr: f64) -> Result<Sums, TrainError> {
    match r.first_bad {
        Some(batch) => Err(TrainError::Diverged { epoch, batch, loss: r.sums[0], lr }),
        None => Ok(r.sums),
    }
}

/// Validation metrics over every rank's share of the set.
fn job_eval(dist: Option<&Dist>, m: EvalMetrics) -> Result<EvalMetrics, DistError> {
    let Some(d) = dist else { return Ok(m) };
    let n = m.samples as f64;
    let s = d.sum(&[m.loss * n, m.rank1 * n, m.rank5 * n, m.one_off.unwrap_or(0.0) * n, n], "the validation metrics")?;
    let total = s[4].max(1.0);
    Ok(EvalMetrics {
        samples: s[4].round() as usize,
        loss: s[0] / total,
        rank1: s[1] / total,
        rank5: s[2] / total,
        one_off: m.one_off.map(|_| s[3] / total),
        map: m.map,
        coco_ap: m.coco_ap,
        ap: m.ap,
    })
}

/// Restores the state a run (re)starts from: where it was interrupted (`--resume`), or the
/// checkpoint of epoch `start` (also epoch 0 when `trainer init` wrote one); nothing for a fresh run.
pub(crate) fn restore_start(run: &Path, start: usize, interrupted: bool, net: &mut Net, opt: &mut Optimizer) -> Result<(), TrainError> {
    if interrupted {
        restore_from(&interrupted_paths(run).0, net, Some(opt)).map_err(|source| TrainError::Resume {
            run: run.to_path_buf(),
            at: "where it was interrupted".into(),
            source: Box::new(source),
        })?;
    } else if start > 0 || checkpoint_paths(run, 0).0.is_file() {
        let have = saved_epochs(run);
        if !have.contains(&start) {
            return Err(TrainError::NoCheckpoint { run: run.to_path_buf(), epoch: start, saved: have });
        }
        restore(run, start, net, Some(opt)).map_err(|source| TrainError::Resume {
            run: run.to_path_buf(),
            at: format!("at epoch {start}"),
            source: Box::new(source),
        })?;
    }
    Ok(())
}

/// Removes the interrupted state once an epoch's checkpoint supersedes it.
pub(crate) fn remove_interrupted(run: &Path) -> Result<(), TrainError> {
    for stale in <[PathBuf; 2]>::from(interrupted_paths(run)) {
        if stale.exists() {
            std::fs::remove_file(&stale).map_err(|source| TrainError::Io { path: stale.clone(), source })?;
        }
    }
    Ok(())
}

/// After `epoch`'s checkpoint is saved: the interrupted state it supersedes goes, and with
/// `keep_checkpoints` set, the older epochs but the newest N ([`crate::run_dir::RunDir::prune`]).
pub(crate) fn checkpoint_saved(run: &Path, epoch: usize, keep: usize) -> Result<(), TrainError> {
    remove_interrupted(run)?;
    let pruned = crate::run_dir::RunDir::new(run).prune(epoch, keep).map_err(RunFilesError::from)?;
    if !pruned.is_empty() {
        tracing::info!("keep_checkpoints = {keep}: removed the checkpoints of epochs {pruned:?}");
    }
    Ok(())
}

/// What a checkpoint records beside the weights: where in the run it was taken and what produced it.
pub(crate) fn checkpoint_info(c: &Config, world: usize, epoch: usize, lr: f64, metrics: Option<EpochMetrics>) -> CheckpointInfo {
    CheckpointInfo {
        epoch,
        lr,
        seed: c.train.seed,
        producer: format!("trainer {}", models::VERSION),
        config: c.clone(),
        metrics,
        step: 0,
        partial: None,
        world,
    }
}

/// The optimizer of `c`, on the fused kernels unless `train.fused_optimizer = false`.
pub(crate) fn optimizer_of(c: &Config) -> Optimizer {
    let kernel = if c.train.fused_optimizer { crate::optim::Kernel::Fused } else { crate::optim::Kernel::PerTensor };
    Optimizer::new(c.optimizer.clone()).with_kernel(kernel)
}

pub(crate) fn zero_grad(net: &Net) {
    for (_, p) in net.trainable() {
        let mut g = p.grad();
        if g.defined() {
            let _ = g.zero_();
        }
    }
}

/// `trainer train`: trains epochs `start_epoch + 1 ..= epochs`, resuming from the checkpoint of
/// `start_epoch` when it is above 0 (or when an epoch-0 checkpoint from `trainer init` exists).
/// Under torchrun (or `--nproc`) this process is one rank of a data-parallel job (see [`crate::dist`]).
pub fn train(mut config: Config, o: &Overrides) -> Result<Vec<EpochMetrics>, TrainError> {
    o.apply(&mut config);
    if models::zoo::info(&config.model.name).map_err(BuildError::from)?.task == models::meta::Task::Detection {
        return crate::detection::train_detector(config, o);
    }
    let c = config.clone();
    let run = c.train.run.clone();
    let env = Env::from_env()?;
    let device = rank_device(&c, env.as_ref()).map_err(BuildError::from)?;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let threads = env.as_ref().and_then(|e| e.threads(cores));
    if let Some(n) = threads {
        tch::set_num_threads(n as i32);
    }
    let dist = env.map(|e| Dist::init(e, device, std::time::Duration::from_secs(c.train.dist_timeout))).transpose()?;
    let (rank, world) = dist.as_ref().map_or((0, 1), |d| (d.rank(), d.world()));
    let main = dist.as_ref().is_none_or(Dist::is_main);
    // An interrupted run continues inside the epoch it stopped in.
    let interrupted = if o.resume { Some(load_interrupted(&run)?) } else { None };
    let start = interrupted.as_ref().map_or(o.start_epoch.unwrap_or(0), |i| i.epoch - 1);
    if let Some(i) = &interrupted {
        if i.world != world {
            return Err(TrainError::ResumeWorld { run, was: i.world, now: world, epoch: i.epoch });
        }
    }
    if c.train.epochs <= start {
        return Err(TrainError::Epochs { epochs: c.train.epochs, start });
    }
    if c.train.batch_size == 0 {
        return Err(TrainError::BatchSize);
    }
    let input = models::zoo::info(&c.model.name).map_err(BuildError::from)?.input;
    let input = [c.model.in_channels.unwrap_or(input[0]), input[1], input[2]];
    let (train_spec, val_spec) = (batch_spec(&c, input, true)?, batch_spec(&c, input, false)?);
    let bs = c.train.batch_size;
    let shard = dist.as_ref().map(|d| (d.rank(), d.world()));
    let workers = threads.unwrap_or(0);
    let bytes = c.train.transfer.bytes(device);
    let train_part = Part { shard, even: true, workers, pixels: bytes };
    let train_set = if c.data.synthetic > 0 {
        let classes = c.model.num_classes.unwrap_or(10);
        TrainSet::Synthetic(SyntheticBatches::new(&train_spec, c.data.synthetic, bs, classes, c.train.seed, device, bytes))
    } else {
        TrainSet::Records(RecordBatches::open_part(&c.data.train, c.data.limit_train, &train_spec, bs, c.train.seed, true, &train_part)?)
    };
    let val_part = Part { shard, even: false, workers, pixels: false };
    let val_set = c.data.val.as_ref().map(|v| RecordBatches::open_part(v, c.data.limit_val, &val_spec, 512, 0, false, &val_part)).transpose()?;
    let graph = model_graph(&c, Some(c.model.num_classes.unwrap_or(train_set.num_classes())))?;
    let mut net = net_on(&c, graph, device)?;
    let mut opt = optimizer_of(&c);
    if main {
        std::fs::create_dir_all(&run).map_err(|source| TrainError::RunDir { run: run.clone(), source })?;
    }
    if let (Some(src), None, 0) = (&c.model.init_from, &interrupted, start) {
        let n = net.load_except(src, &c.model.init_skip).map_err(|source| TrainError::InitFrom { path: src.clone(), source })?;
        tracing::info!("initialised {n} tensors from {} (kept fresh: {:?})", src.display(), c.model.init_skip);
    }
    // Every rank restores the same files (the run directory is shared, as in PyTorch's recipes); rank
    // 0's parameters are then broadcast, as DDP does when it wraps a model.
    restore_start(&run, start, interrupted.is_some(), &mut net, &mut opt)?;
    let buckets = match &dist {
        Some(d) => {
            d.broadcast_net(&net, false)?;
            if c.train.sync_bn {
                net.sync_bn = Some(d.bn_sync());
            }
            Some(GradBuckets::new(&net, BUCKET_BYTES))
        }
        None => {
            if c.train.sync_bn {
                tracing::info!("train.sync_bn: one process, so BatchNorm already sees the whole batch");
            }
            None
        }
    };
    let mut log = if main {
        record_run(&run, &c, &net.graph)?;
        RunLog::open(&run, start)?
    } else {
        RunLog::silent()
    };
    let on = match &dist {
        Some(d) => {
            format!(
                "{world} processes ({} backend, rank 0 on {device:?}, {} gradient buckets{})",
                d.backend.name(),
                buckets.as_ref().map_or(0, GradBuckets::len),
                if net.sync_bn.is_some() { ", SyncBatchNorm" } else { "" }
            )
        }
        None => format!("{device:?}"),
    };
    log.say(&format!(
        "{} {}: {} ({} train, {} val samples) on {}, batch {}, epochs {}..={}, lr {}",
        match (&interrupted, start) {
            (Some(i), _) => format!("resume at step {} of epoch {} of", i.step + 1, i.epoch),
            (None, 0) => "start".into(),
            (None, _) => "resume".into(),
        },
        run.display(),
        c.model.name,
        train_set.len() * world,
        val_set.as_ref().map_or(0, RecordBatches::total),
        on,
        bs * world,
        start + 1,
        c.train.epochs,
        c.train.lr
    ))?;
    if train_set.left_out() > 0 && main {
        tracing::info!(
            "{} of {} training samples are left out of each epoch so that the {world} ranks read equal shares (other ones every epoch)",
            train_set.left_out(),
            train_set.total()
        );
    }
    // what every checkpoint of this run records; an interrupted one adds its step and partial sums
    let checkpoint_info = |epoch, lr, metrics| checkpoint_info(&c, world, epoch, lr, metrics);
    let batches = train_set.batches_per_epoch() as i64;
    // bytes travel to the device and are normalised there (train.transfer)
    let normalise = Normalise::new(&train_spec, device);
    // only dropout draws from libtorch's generator during a step (augmentation is the loader's)
    let stochastic = net.graph.nodes.iter().any(|n| matches!(n.op, models::graph::Op::Dropout { .. }));
    let mut history = vec![];
    let mut interrupted = interrupted;
    for epoch in start + 1..=c.train.epochs {
        let lr = c.schedule.lr(c.train.lr, epoch - 1);
        let bar = if main { crate::progress::bar(batches as u64, &format!("epoch {epoch}/{}", c.train.epochs)) } else { indicatif::ProgressBar::hidden() };
        let t0 = Instant::now();
        // a resumed epoch's partial sums are the whole job's: rank 0 carries them
        let (skip, partial) = match interrupted.take() {
            Some(i) => (i.step, if main { i.partial.unwrap_or_default() } else { [0.0; 4] }),
            None => (0, [0.0; 4]),
        };
        // The epoch's sums live on the device and are read only at log points (crate::step).
        let mut sums = DeviceSums::new(device, partial);
        let mut prof = Profile::new(device, o.profile);
        bar.inc(skip as u64);
        let mut window = (Instant::now(), 0i64);
        // Without a terminal (a pipe, a log file, CI) the bar is hidden: a line every HEARTBEAT instead.
        let mut last_note = Instant::now();
        // The loader draws the shuffle from (seed, epoch) and each sample's augmentation from (seed,
        // epoch, record); libtorch (dropout) is seeded from (seed, epoch, step, rank) before each step
        // of a network that has dropout. A run resumed at any step draws what an uninterrupted one draws.
        let mut stream = DeviceBatches::new(train_set.host_batches(epoch, skip, device), &normalise, device, c.train.prefetch);
        prof.start();
        for b in skip as i64..batches {
            if stochastic {
                tch::manual_seed(step_seed(c.train.seed, epoch, b as usize + 1).wrapping_add(rank as i64 * 7_919));
            }
            // this batch's copy was queued a step ago (train.prefetch); the next one's is queued now
            let Some(batch) = stream.next() else { break };
            let batch = batch?;
            prof.mark(Phase::Data);
            let (x, y) = batch.ready()?;
            prof.mark(Phase::ToDevice);
            let len = y.size()[0];
            zero_grad(&net);
            let mut counted = None;
            let mut l = 0.0;
            if len < 2 && bs > 1 {
                // a last batch of one sample: batch statistics of one value are undefined (PyTorch
                // refuses them), and BatchNorm's running variance would turn NaN; it is left out (a
                // rank of a multi-process run still joins the step's all-reduce, with no gradient)
                tracing::warn!("epoch {epoch}: the last batch holds {len} sample(s); skipped (BatchNorm needs 2 or more)");
                if dist.is_none() {
                    prof.start(); // not a step: its time is nobody's
                    continue;
                }
            } else {
                let out = net.forward(&x, true);
                if let Some(e) = net.sync_bn.as_ref().and_then(|s| s.take_failure()) {
                    return Err(e.into());
                }
                let loss = out.cross_entropy_for_logits(&y);
                prof.mark(Phase::Forward);
                match &net.sync_bn {
                    // SyncBatchNorm's gradient all-reduces run inside the backward pass
                    Some(s) => loss.f_backward().map_err(|e| s.error("the backward pass's SyncBatchNorm all-reduce", e.to_string()))?,
                    None => loss.backward(),
                }
                prof.mark(Phase::Backward);
                if dist.is_some() {
                    // the ranks agree on the loss with the gradients' all-reduce (crate::dist)
                    l = read_back(&loss)[0];
                }
                counted = Some((loss, out.detach()));
            }
            let mut stop = crate::progress::interrupted();
            if let (Some(d), Some(bk)) = (&dist, &buckets) {
                // the loss and the stop flag travel with the gradients: every rank sees the same
                let agreed = bk.sync(d, &net, &[l, stop as u8 as f64])?;
                l = agreed[0] / world as f64;
                stop = agreed[1] > 0.0;
                if !l.is_finite() {
                    return Err(TrainError::Diverged { epoch, batch: b + 1, loss: l, lr });
                }
            }
            opt.step(&net.trainable(), lr)?;
            prof.mark(Phase::Optimizer);
            if let Some((loss, logits)) = &counted {
                sums.add(b + 1, loss, logits, &y);
            }
            if stop {
                bar.finish_and_clear();
                let partial = job_sums(dist.as_ref(), finite(sums.read(), epoch, lr)?)?;
                if main {
                    let info = CheckpointInfo { step: b as usize + 1, partial: Some(partial), ..checkpoint_info(epoch, lr, None) };
                    save_checkpoint(&run, &net, &opt, &info)?;
                    log.say(&format!(
                        "interrupted at step {}/{batches} of epoch {epoch}; saved {}; continue with `trainer train --config {} --resume`",
                        b + 1,
                        interrupted_paths(&run).0.display(),
                        RunDir::new(&run).config_path().display()
                    ))?;
                }
                if let Some(d) = &dist {
                    d.barrier("the interrupt checkpoint")?;
                }
                return Ok(history);
            }
            window.1 += len;
            bar.inc(1);
            if c.train.log_every > 0 && (b + 1) % c.train.log_every as i64 == 0 {
                let [gl, g1, g5, gs] = job_sums(dist.as_ref(), finite(sums.read(), epoch, lr)?)?;
                let gs = gs.max(1.0);
                let sps = window.1 as f64 * world as f64 / window.0.elapsed().as_secs_f64();
                window = (Instant::now(), 0);
                let msg = format!("loss {:.4} rank-1 {:.4} rank-5 {:.4} {:.0} samples/s", gl / gs, g1 / gs, g5 / gs, sps);
                bar.set_message(msg.clone());
                log.json(
                    &serde_json::json!({"epoch": epoch, "batch": b + 1, "loss": gl / gs, "rank1": g1 / gs, "rank5": g5 / gs, "samples_per_sec": sps, "lr": lr}),
                )?;
                if bar.is_hidden() && main {
                    tracing::info!("epoch {epoch} batch {}/{batches}: {msg}", b + 1);
                    last_note = Instant::now();
                }
            }
            if main && bar.is_hidden() && last_note.elapsed() >= HEARTBEAT && b + 1 < batches {
                last_note = Instant::now();
                let [loss_sum, r1, _, seen] = finite(sums.read(), epoch, lr)?;
                let done = (b + 1 - skip as i64) as f64;
                let eta = t0.elapsed().as_secs_f64() / done.max(1.0) * (batches - b - 1) as f64;
                tracing::info!(
                    "epoch {epoch}/{} batch {}/{batches}: loss {:.4} rank-1 {:.4} (rank 0), {eta:.0}s left in the epoch",
                    c.train.epochs,
                    b + 1,
                    loss_sum / seen.max(1.0),
                    r1 / seen.max(1.0)
                );
            }
            prof.mark(Phase::Bookkeeping);
            prof.step_done();
        }
        bar.finish_and_clear();
        let train_secs = t0.elapsed().as_secs_f64();
        drop(stream);
        let [gl, g1, g5, gs] = job_sums(dist.as_ref(), finite(sums.read(), epoch, lr)?)?;
        if let (Some(report), true) = (prof.report(), main) {
            log.say(&format!("epoch {epoch} {report}"))?;
            if let Some(j) = prof.json() {
                log.json(&serde_json::json!({"epoch": epoch, "profile": j}))?;
            }
        }
        if let Some(d) = &dist {
            // the trainable parameters must agree bit for bit (a rank that drifted is a bug, not
            // noise); BatchNorm statistics are per rank (with sync_bn: equal up to rounding), and
            // rank 0's are the model's (saved, evaluated)
            d.broadcast_net(&net, true)?;
            d.check_identical(&net, &format!("epoch {epoch}"))?;
        }
        let val = match val_set.as_ref() {
            Some(v) => Some(job_eval(dist.as_ref(), evaluate(&net, v, c.data.ordinal)?)?),
            None => None,
        };
        let m = EpochMetrics {
            epoch,
            lr,
            train_loss: gl / gs,
            train_rank1: g1 / gs,
            train_rank5: g5 / gs,
            val: val.clone(),
            seconds: t0.elapsed().as_secs_f64(),
            samples_per_sec: gs / train_secs,
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
        // the interrupted state stays until a checkpoint supersedes it: an epoch without one leaves
        // nothing else to resume from
        if main && (epoch % c.train.checkpoint_every.max(1) == 0 || epoch == c.train.epochs) {
            save_checkpoint(&run, &net, &opt, &checkpoint_info(epoch, lr, Some(m.clone())))?;
            checkpoint_saved(&run, epoch, c.train.keep_checkpoints)?;
        }
        history.push(m);
    }
    if let Some(d) = &dist {
        // rank 0 hosts the store: nobody leaves while another still needs it
        d.barrier("the end of training")?;
        if main && !history.is_empty() {
            tracing::info!("all {world} ranks hold identical parameters (compared after every epoch)");
        }
    }
    Ok(history)
}

/// `trainer init`: a run directory holding a config and epoch-0 weights.
pub fn init(model: &str, num_classes: usize, seed: u64, run: &Path, data_train: Option<PathBuf>) -> Result<PathBuf, TrainError> {
    let config = Config {
        model: ModelConfig { name: model.into(), num_classes: Some(num_classes), in_channels: None, init_from: None, init_skip: vec![], detector: None },
        data: DataConfig {
            train: data_train.unwrap_or_default(),
            val: None,
            limit_train: 0,
            limit_val: 0,
            mean: d_mean(),
            std: d_std(),
            mean_file: None,
            ordinal: false,
            prepare: None,
            synthetic: 0,
        },
        train: TrainConfig { seed, run: run.to_path_buf(), ..TrainConfig::default() },
        optimizer: OptimizerConfig::default(),
        schedule: Schedule::default(),
        augment: AugmentConfig::default(),
    };
    let net = build_net(&config, num_classes)?;
    record_run(run, &config, &net.graph)?;
    let info = CheckpointInfo {
        epoch: 0,
        lr: config.train.lr,
        seed,
        producer: format!("trainer {}", models::VERSION),
        config,
        metrics: None,
        step: 0,
        partial: None,
        world: 1,
    };
    save_checkpoint(run, &net, &Optimizer::new(OptimizerConfig::default()), &info)?;
    Ok(checkpoint_paths(run, 0).0)
}
