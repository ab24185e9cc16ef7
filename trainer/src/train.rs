//! The book's experiment workflow: one TOML config per experiment, a run directory with checkpoints
//! every epoch, stop, change the learning rate, resume at epoch N.
//!
//! The run directory's files are [`crate::run_dir::RunDir`]'s.
//! Resuming is exact: the loader draws the shuffle and the augmentation of epoch e from (seed, e, batch)
//! and every step reseeds libtorch (dropout) from (seed, e, step), so nothing of epoch e depends on
//! whether the run stopped before it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::dataset::{BatchSpec, Dataset, PerChannel};
use crate::device::DeviceSpec;
use crate::net::Net;
use crate::optim::{Optimizer, OptimizerConfig, Schedule};
use crate::parallel::Replicas;
use crate::run_dir::RunDir;

/// One experiment. Every field has a default except the model and the training data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub model: ModelConfig,
    pub data: DataConfig,
    #[serde(default)]
    pub train: TrainConfig,
    #[serde(default)]
    pub optimizer: OptimizerConfig,
    #[serde(default)]
    pub schedule: Schedule,
    #[serde(default)]
    pub augment: AugmentConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// A registry name (`trainer models`).
    pub name: String,
    /// Default: the number of classes found in the training data.
    pub num_classes: Option<usize>,
    /// Default: the model's own.
    pub in_channels: Option<usize>,
    /// Start from these weights (a safetensors file, e.g. a checkpoint of another run or imported
    /// ImageNet weights) instead of a fresh initialisation; the book's fine-tuning.
    #[serde(default)]
    pub init_from: Option<PathBuf>,
    /// Parameter prefixes not taken from `init_from` (the new head: `["classifier"]`).
    #[serde(default)]
    pub init_skip: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// The training set: a record file from `trainer prepare` (`…/train.rec`), or an IDX prefix
    /// (`…/fashion-mnist/train` reads `train-images-idx3-ubyte.gz` and `train-labels-idx1-ubyte.gz`),
    /// packed into record files on first use and read from the cache after (crate::idx_records).
    pub train: PathBuf,
    /// The validation set (same forms), evaluated after every epoch.
    pub val: Option<PathBuf>,
    /// Keep only the first N training records (0 = all); for quick experiments and tests. An IDX set's
    /// packed records are in a fixed class-stratified shuffle of the IDX order.
    #[serde(default)]
    pub limit_train: usize,
    #[serde(default)]
    pub limit_val: usize,
    /// Mean and standard deviation in 0–255 pixel units: x = (pixel - mean) / std; one number for
    /// every channel or one per channel (`[123.68, 116.78, 103.94]`).
    #[serde(default = "d_mean")]
    pub mean: PerChannel,
    #[serde(default = "d_std")]
    pub std: PerChannel,
    /// Take the means from a `mean.json` written by `trainer prepare` (the book's dataset means);
    /// overrides `mean`.
    #[serde(default)]
    pub mean_file: Option<PathBuf>,
    /// The classes are ordered bins (Adience's ages): evaluation also reports one-off accuracy, a
    /// prediction within one bin of the truth (book.md §6.3).
    #[serde(default)]
    pub ordinal: bool,
}

fn d_mean() -> PerChannel {
    PerChannel::All(0.0)
}
fn d_std() -> PerChannel {
    PerChannel::All(255.0)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    /// The epoch to stop at (as in the book: not a count to add).
    #[serde(default = "d_epochs")]
    pub epochs: usize,
    #[serde(default = "d_lr")]
    pub lr: f64,
    #[serde(default = "d_seed")]
    pub seed: u64,
    #[serde(default = "d_device")]
    pub device: DeviceSpec,
    /// Data-parallel training on several devices (`[0, 1]` = cuda:0 and cuda:1; `["cpu", "cpu"]` works
    /// too, for tests). Empty: the single `device`. `batch_size` is per device.
    #[serde(default)]
    pub devices: Vec<DeviceSpec>,
    /// `fp32`, or mixed precision `bf16` / `fp16` for convolutions and linear layers.
    #[serde(default)]
    pub precision: crate::net::Precision,
    /// NHWC memory order for feature maps and conv weights (faster convolutions on recent GPUs).
    #[serde(default)]
    pub channels_last: bool,
    /// Log samples/s, loss, rank-1 and rank-5 every K batches.
    #[serde(default = "d_log_every")]
    pub log_every: usize,
    /// Save a checkpoint every N epochs (the last epoch is always saved).
    #[serde(default = "d_one")]
    pub checkpoint_every: usize,
    #[serde(default = "d_run")]
    pub run: PathBuf,
}

fn d_batch() -> usize {
    128
}
fn d_epochs() -> usize {
    10
}
fn d_lr() -> f64 {
    0.01
}
fn d_seed() -> u64 {
    42
}
fn d_device() -> DeviceSpec {
    DeviceSpec::Cpu
}
fn d_log_every() -> usize {
    100
}
fn d_one() -> usize {
    1
}
fn d_run() -> PathBuf {
    PathBuf::from("runs/default")
}

impl Default for TrainConfig {
    fn default() -> Self {
        toml::from_str("").expect("defaults")
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AugmentConfig {
    /// Random horizontal flips with probability 0.5.
    #[serde(default)]
    pub flip: bool,
    /// Random translation by up to N pixels (IDX sets: packed with a black border of N pixels, then a
    /// random crop back to size; a record file's random crop is its own shift).
    #[serde(default)]
    pub shift: usize,
    /// Random rotation within ± degrees (record files).
    #[serde(default)]
    pub rotate: f32,
    /// Random shear within ± this ratio (record files).
    #[serde(default)]
    pub shear: f32,
}

impl Config {
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_file_with(path, &[])
    }

    /// Reads a config and applies `section.field=value` assignments (TOML values: `train.lr=0.1`,
    /// `augment.flip=true`, `train.devices=[0,1]`, `optimizer.name="adam"`; a bare word is a string).
    pub fn from_file_with(path: &Path, sets: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut doc: toml::Table = toml::from_str(&text).with_context(|| format!("{}: not valid TOML", path.display()))?;
        for set in sets {
            let (key, raw) = set.split_once('=').with_context(|| format!("--set {set}: expected section.field=value"))?;
            let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
                .map(|mut t| t.remove("v").expect("parsed key"))
                .unwrap_or_else(|_| toml::Value::String(raw.to_string()));
            let mut parts: Vec<&str> = key.trim().split('.').collect();
            let leaf = parts.pop().filter(|l| !l.is_empty()).with_context(|| format!("--set {set}: empty field name"))?;
            let mut table = &mut doc;
            for part in parts {
                table = table
                    .entry(part)
                    .or_insert_with(|| toml::Value::Table(Default::default()))
                    .as_table_mut()
                    .with_context(|| format!("--set {set}: '{part}' is not a section"))?;
            }
            table.insert(leaf.to_string(), value);
        }
        let what = if sets.is_empty() { String::new() } else { format!(" (with --set {})", sets.join(", ")) };
        Config::deserialize(toml::Value::Table(doc)).with_context(|| format!("{}{what}: invalid experiment config", path.display()))
    }
}

/// Command-line overrides of a config (`None` = keep the file's value).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub run: Option<PathBuf>,
    pub epochs: Option<usize>,
    pub start_epoch: Option<usize>,
    pub lr: Option<f64>,
    pub seed: Option<u64>,
    pub device: Option<DeviceSpec>,
    pub batch_size: Option<usize>,
    /// Continue an interrupted run (Ctrl-C) at the step where it stopped.
    pub resume: bool,
}

impl Overrides {
    pub fn apply(&self, c: &mut Config) {
        let t = &mut c.train;
        if let Some(v) = &self.run {
            t.run = v.clone();
        }
        if let Some(v) = self.epochs {
            t.epochs = v;
        }
        if let Some(v) = self.lr {
            t.lr = v;
        }
        if let Some(v) = self.seed {
            t.seed = v;
        }
        if let Some(v) = self.device {
            t.device = v;
        }
        if let Some(v) = self.batch_size {
            t.batch_size = v;
        }
    }
}

/// What a checkpoint's JSON side file records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointInfo {
    pub epoch: usize,
    pub lr: f64,
    pub seed: u64,
    pub producer: String,
    pub config: Config,
    pub metrics: Option<EpochMetrics>,
    /// Steps of `epoch` already done: 0 for an end-of-epoch checkpoint, k for an interrupted one.
    #[serde(default)]
    pub step: usize,
    /// The interrupted epoch's running sums so far: loss x samples, rank-1 hits, rank-5 hits, samples.
    #[serde(default)]
    pub partial: Option<[f64; 4]>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub lr: f64,
    #[serde(deserialize_with = "nan_from_null")]
    pub train_loss: f64,
    pub train_rank1: f64,
    pub train_rank5: f64,
    pub val: Option<EvalMetrics>,
    pub seconds: f64,
    pub samples_per_sec: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EvalMetrics {
    pub samples: usize,
    #[serde(deserialize_with = "nan_from_null")]
    pub loss: f64,
    pub rank1: f64,
    pub rank5: f64,
    /// For ordinal labels: predictions at most one class away from the truth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_off: Option<f64>,
}

/// A diverged loss (NaN or infinite) is written to JSON as `null`; it reads back as NaN, so the
/// checkpoint of an epoch that diverged still loads (to be resumed at a lower rate, say).
fn nan_from_null<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// The weights and side file of `epoch`'s checkpoint ([`RunDir::checkpoint`]).
pub fn checkpoint_paths(run: &Path, epoch: usize) -> (PathBuf, PathBuf) {
    RunDir::new(run).checkpoint(epoch)
}

/// Where Ctrl-C leaves the state of an epoch in progress ([`RunDir::interrupted`]).
pub fn interrupted_paths(run: &Path) -> (PathBuf, PathBuf) {
    RunDir::new(run).interrupted()
}

/// The epochs that have a complete checkpoint ([`RunDir::saved_epochs`]).
pub fn saved_epochs(run: &Path) -> Vec<usize> {
    RunDir::new(run).saved_epochs()
}

/// Writes the config of a (re)start and the network it built, side by side in the run directory.
pub fn record_run(run: &Path, c: &Config, graph: &models::graph::Graph) -> Result<()> {
    let dir = RunDir::new(run);
    dir.create()?;
    std::fs::write(dir.config_path(), toml::to_string_pretty(c)?).with_context(|| format!("writing {}", dir.config_path().display()))?;
    Ok(dir.write_graph(graph)?)
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, flushed, then renamed.
fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = path.with_extension(format!("{}.tmp", path.extension().and_then(|e| e.to_str()).unwrap_or("")));
    write(&tmp)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// Saves weights, buffers and optimizer state, then the side file; the side file is written last, so a
/// checkpoint is complete only when both exist (a crash in between leaves the previous one as the latest).
pub fn save_checkpoint(run: &Path, net: &Net, opt: &Optimizer, info: &CheckpointInfo) -> Result<()> {
    let (weights, side) = if info.step > 0 { interrupted_paths(run) } else { checkpoint_paths(run, info.epoch) };
    std::fs::create_dir_all(weights.parent().unwrap())?;
    // contiguous(): with channels-last compute the 4-d weights and their optimizer state are not in
    // the standard layout, which is the only one safetensors stores (a no-op copy otherwise).
    let mut named: Vec<(String, Tensor)> = net.params.iter().map(|(k, v)| (k.clone(), v.contiguous())).collect();
    named.extend(opt.to_named().into_iter().map(|(k, v)| (k, v.contiguous())));
    write_atomic(&weights, |tmp| Ok(Tensor::write_safetensors(&named, tmp)?))?;
    write_atomic(&side, |tmp| Ok(std::fs::write(tmp, serde_json::to_vec_pretty(info)?)?))
}

pub fn load_checkpoint_info(run: &Path, epoch: usize) -> Result<CheckpointInfo> {
    let (_, side) = checkpoint_paths(run, epoch);
    let text = std::fs::read_to_string(&side).with_context(|| format!("no checkpoint for epoch {epoch}: {}", side.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: damaged checkpoint side file", side.display()))
}

/// Builds the network of `c` on its device, with freshly initialised weights from `seed`.
pub fn build_net(c: &Config, num_classes: usize) -> Result<Net> {
    let graph = models::zoo::build(&c.model.name, Some(c.model.num_classes.unwrap_or(num_classes)), c.model.in_channels)?;
    net_for(c, graph)
}

/// The network of `graph` on `c`'s device, freshly initialised from `c`'s seed.
pub fn net_for(c: &Config, graph: models::graph::Graph) -> Result<Net> {
    let device = crate::parallel::resolve_devices(&c.train.devices, c.train.device)?[0];
    tch::manual_seed(c.train.seed as i64);
    let mut net = Net::new(graph, device)?;
    net.set_compute(c.train.precision, c.train.channels_last);
    Ok(net)
}

/// Loads a checkpoint's weights (and optimizer state into `opt` when given).
pub fn restore(run: &Path, epoch: usize, net: &mut Net, opt: Option<&mut Optimizer>) -> Result<()> {
    restore_from(&checkpoint_paths(run, epoch).0, net, opt)
}

fn restore_from(weights: &Path, net: &mut Net, opt: Option<&mut Optimizer>) -> Result<()> {
    net.load(weights)?;
    if let Some(opt) = opt {
        let named: BTreeMap<String, Tensor> = Tensor::read_safetensors(weights)?.into_iter().collect();
        opt.load_named(&named);
    }
    Ok(())
}

/// How `c` turns stored images into inputs of a network with input `[C, H, W]`.
pub fn batch_spec(c: &Config, input: [usize; 3], train: bool) -> Result<BatchSpec> {
    let channels = input[0];
    let mean = match &c.data.mean_file {
        Some(f) => PerChannel::Each(crate::dataset::means_from_file(f)?),
        None => c.data.mean.clone(),
    };
    Ok(BatchSpec {
        input,
        mean: mean.values(channels),
        std: c.data.std.values(channels),
        train,
        flip: c.augment.flip,
        shift: c.augment.shift,
        rotate: c.augment.rotate,
        shear: c.augment.shear,
    })
}

/// Correct rank-1 and rank-5 predictions in a batch.
fn rank_hits(logits: &Tensor, labels: &Tensor) -> (i64, i64) {
    let k = logits.size()[1].min(5);
    let (_, top) = logits.topk(k, 1, true, true);
    let hit = top.eq_tensor(&labels.unsqueeze(1));
    let r1 = hit.narrow(1, 0, 1).sum(Kind::Int64).int64_value(&[]);
    let r5 = hit.sum(Kind::Int64).int64_value(&[]);
    (r1, r5)
}

/// Loss, rank-1 and rank-5 of `net` on `set` in eval mode.
pub fn evaluate(net: &Net, set: &Dataset, ordinal: bool) -> Result<EvalMetrics> {
    let _guard = tch::no_grad_guard();
    let (mut loss, mut r1, mut r5, mut n, mut off) = (0.0, 0i64, 0i64, 0i64, 0i64);
    for b in set.batches(0, 0, net.device) {
        let (x, y) = b?;
        let len = y.size()[0];
        let logits = net.forward(&x, false);
        loss += logits.cross_entropy_for_logits(&y).double_value(&[]) * len as f64;
        let (a, bb) = rank_hits(&logits, &y);
        r1 += a;
        r5 += bb;
        n += len;
        if ordinal {
            off += (logits.argmax(1, false) - &y).abs().le(1).sum(Kind::Int64).int64_value(&[]);
        }
    }
    let n_f = n.max(1) as f64;
    let one_off = ordinal.then(|| off as f64 / n_f);
    Ok(EvalMetrics { samples: n as usize, loss: loss / n_f, rank1: r1 as f64 / n_f, rank5: r5 as f64 / n_f, one_off })
}

/// The libtorch seed of one training step (its dropout masks).
pub fn step_seed(seed: u64, epoch: usize, step: usize) -> i64 {
    (seed as i64).wrapping_mul(1_000_003).wrapping_add(epoch as i64).wrapping_mul(1_000_033).wrapping_add(step as i64)
}

/// How often a training epoch reports its progress when no terminal shows the progress bar.
const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(20);

struct RunLog {
    metrics: std::fs::File,
    human: std::fs::File,
}

impl RunLog {
    fn open(run: &Path, start: usize) -> Result<Self> {
        let dir = RunDir::new(run);
        let metrics = std::fs::File::create(dir.metrics_log(start)).with_context(|| format!("creating {}", dir.metrics_log(start).display()))?;
        let human =
            std::fs::OpenOptions::new().create(true).append(true).open(dir.human_log()).with_context(|| format!("opening {}", dir.human_log().display()))?;
        Ok(Self { metrics, human })
    }
    fn json(&mut self, v: &serde_json::Value) -> Result<()> {
        writeln!(self.metrics, "{v}")?;
        Ok(())
    }
    fn say(&mut self, line: &str) -> Result<()> {
        tracing::info!("{line}");
        writeln!(self.human, "{line}")?;
        Ok(())
    }
}

/// `trainer train`: trains epochs `start_epoch + 1 ..= epochs`, resuming from the checkpoint of
/// `start_epoch` when it is above 0 (or when an epoch-0 checkpoint from `trainer init` exists).
pub fn train(mut config: Config, o: &Overrides) -> Result<Vec<EpochMetrics>> {
    o.apply(&mut config);
    let c = config.clone();
    let run = c.train.run.clone();
    // An interrupted run continues inside the epoch it stopped in.
    let interrupted = if o.resume {
        let (_, side) = interrupted_paths(&run);
        let text = std::fs::read_to_string(&side).with_context(|| format!("--resume: {} has no interrupted state ({})", run.display(), side.display()))?;
        Some(serde_json::from_str::<CheckpointInfo>(&text).with_context(|| format!("{}: damaged", side.display()))?)
    } else {
        None
    };
    let start = interrupted.as_ref().map_or(o.start_epoch.unwrap_or(0), |i| i.epoch - 1);
    if c.train.epochs <= start {
        bail!("--epochs {} is the epoch to stop at and must be above --start-epoch {start}", c.train.epochs);
    }
    if c.train.batch_size == 0 {
        bail!("train.batch_size must be at least 1");
    }
    let input = models::zoo::info(&c.model.name)?.input;
    let input = [c.model.in_channels.unwrap_or(input[0]), input[1], input[2]];
    let (train_spec, val_spec) = (batch_spec(&c, input, true)?, batch_spec(&c, input, false)?);
    let devices = crate::parallel::resolve_devices(&c.train.devices, c.train.device)?;
    let bs = c.train.batch_size * devices.len();
    let train_set = Dataset::open(&c.data.train, c.data.limit_train, &train_spec, bs, c.train.seed, true)?;
    let val_set = c.data.val.as_ref().map(|v| Dataset::open(v, c.data.limit_val, &val_spec, 512, 0, false)).transpose()?;
    let mut net = build_net(&c, train_set.num_classes())?;
    let mut opt = Optimizer::new(c.optimizer.clone());
    std::fs::create_dir_all(&run).with_context(|| format!("creating run directory {}", run.display()))?;
    if let (Some(src), None, 0) = (&c.model.init_from, &interrupted, start) {
        let n = net.load_except(src, &c.model.init_skip).with_context(|| format!("model.init_from {}", src.display()))?;
        tracing::info!("initialised {n} tensors from {} (kept fresh: {:?})", src.display(), c.model.init_skip);
    }
    if interrupted.is_some() {
        restore_from(&interrupted_paths(&run).0, &mut net, Some(&mut opt)).with_context(|| format!("resuming {} where it was interrupted", run.display()))?;
    } else if start > 0 || checkpoint_paths(&run, 0).0.is_file() {
        let have = saved_epochs(&run);
        if !have.contains(&start) {
            bail!("{}: no checkpoint for epoch {start} to resume from (saved epochs: {have:?})", run.display());
        }
        restore(&run, start, &mut net, Some(&mut opt)).with_context(|| format!("resuming {} at epoch {start}", run.display()))?;
    }
    record_run(&run, &c, &net.graph)?;
    let reps = Replicas::new(net, &devices)?;
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
        val_set.as_ref().map_or(0, Dataset::len),
        devices.iter().map(|d| format!("{d:?}")).collect::<Vec<_>>().join("+"),
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
                bail!("epoch {epoch}, batch {}: the loss is {l}; lower the learning rate (now {lr})", b + 1);
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
        log.json(&serde_json::to_value(&m)?)?;
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
                std::fs::remove_file(&stale)?;
            }
        }
        history.push(m);
    }
    Ok(history)
}

/// `trainer init`: a run directory holding a config and epoch-0 weights.
pub fn init(model: &str, num_classes: usize, seed: u64, run: &Path, data_train: Option<PathBuf>) -> Result<PathBuf> {
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

/// `trainer eval`: a checkpoint (the latest when `epoch` is None) on a record file or an IDX set.
pub fn eval(run: &Path, epoch: Option<usize>, data: &Path, batch: usize) -> Result<(usize, EvalMetrics)> {
    let dir = RunDir::new(run);
    let epoch = dir.epoch_or_latest(epoch)?;
    let info = load_checkpoint_info(run, epoch)?;
    let c = &info.config;
    let graph = dir.graph(&c.model.name, c.model.in_channels, epoch)?;
    let spec = batch_spec(c, graph.input_shape(), false)?;
    let set = Dataset::open(data, 0, &spec, batch, 0, false)?;
    let mut net = net_for(c, graph)?;
    restore(run, epoch, &mut net, None)?;
    Ok((epoch, evaluate(&net, &set, c.data.ordinal)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diverged_losses_survive_the_side_file() {
        // serde_json writes NaN and infinities as null; reading them back used to fail the checkpoint
        let m = EpochMetrics {
            epoch: 1,
            lr: 0.1,
            train_loss: f64::INFINITY,
            train_rank1: 0.5,
            train_rank5: 1.0,
            val: Some(EvalMetrics { samples: 3, loss: f64::NAN, rank1: 0.0, rank5: 1.0, one_off: None }),
            seconds: 1.0,
            samples_per_sec: 2.0,
        };
        let text = serde_json::to_string(&m).unwrap();
        assert!(text.contains("\"train_loss\":null"), "{text}");
        let back: EpochMetrics = serde_json::from_str(&text).unwrap();
        assert!(back.train_loss.is_nan() && back.val.unwrap().loss.is_nan());
        assert_eq!(back.train_rank1, 0.5);
    }
}
