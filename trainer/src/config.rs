//! The experiment config: one TOML file per experiment (`configs/`), every field documented with its
//! default, `--set section.field=value` assignments, and the command-line overrides of `trainer train`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::batches::PerChannel;
use crate::device::DeviceSpec;
use crate::optim::{OptimizerConfig, Schedule};

/// A config that cannot be read, or a `--set` that cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: not valid TOML: {reason}")]
    Toml { path: PathBuf, reason: Box<toml::de::Error> },
    #[error("--set {set}: {reason}")]
    Set { set: String, reason: String },
    /// `sets` is empty or " (with --set a=1, b=2)".
    #[error("{path}{sets}: invalid experiment config: {reason}")]
    Invalid { path: PathBuf, sets: String, reason: Box<toml::de::Error> },
}

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
    /// A detector's settings over the model's defaults, by the spec's own field names
    /// (`models::detect::DetectorSpec::with_overrides`): `match_iou`, `[model.detector.postprocess]`
    /// (score_threshold, iou_threshold, max_per_class, max_detections), `[model.detector.rcnn]`
    /// (rpn_fg_iou, rpn_bg_iou, rpn_batch, pre_nms_top_n, post_nms_top_n, rpn_nms_iou, min_size,
    /// rois_per_image, roi_positive_fraction, …). The run's graph.json records the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detector: Option<toml::Table>,
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
    /// Build the data on first use when `train` does not exist: `"fashion-detect"` writes the
    /// Fashion-MNIST detection composites (`trainer prepare fashion-detect` with its defaults) into
    /// `train`'s folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepare: Option<String>,
    /// Benchmarks: train on N random images an epoch, made once in memory, instead of reading
    /// `train` (no decoding, no augmentation: the compute path alone, as `bench/` compares it with
    /// PyTorch); `model.num_classes` sets the labels' range (default 10).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub synthetic: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

pub(crate) fn d_mean() -> PerChannel {
    PerChannel::All(0.0)
}
pub(crate) fn d_std() -> PerChannel {
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
    /// Data-parallel training on several devices of this machine, one process each (`[0, 1]` = cuda:0
    /// and cuda:1; `["cpu", "cpu"]` = two CPU processes): `trainer train` starts them as `--nproc`
    /// does, and under torchrun rank r uses entry LOCAL_RANK. Empty: the single `device`.
    /// `batch_size` is per process, so the global batch is `batch_size` times the processes.
    #[serde(default)]
    pub devices: Vec<DeviceSpec>,
    /// SyncBatchNorm (PyTorch's `nn.SyncBatchNorm`): in a multi-process run every BatchNorm layer
    /// normalises with the mean and variance of the global batch, not of its rank's share, at the
    /// cost of two small all-reduces per layer and step; the running statistics then agree on every
    /// rank. For small per-process batches (detection, big images). No effect on one process.
    #[serde(default)]
    pub sync_bn: bool,
    /// Seconds a multi-process run waits for a rank (to join, or at a collective) before failing.
    #[serde(default = "d_dist_timeout")]
    pub dist_timeout: u64,
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
    /// Keep only the newest N epoch checkpoints, deleting older ones as new ones are saved (a VGG16
    /// checkpoint with its momentum is over 1 GB); epoch 0 (`trainer init`, `import-weights`) is kept.
    /// 0, the default, keeps all: the book's workflow resumes from any saved epoch.
    #[serde(default)]
    pub keep_checkpoints: usize,
    /// The optimizer's update on libtorch's fused multi-tensor kernels (`torch.optim`'s `fused=True`),
    /// a few kernels per step; false runs the per-tensor loop (the reference, 2-4 kernels a parameter).
    #[serde(default = "d_true")]
    pub fused_optimizer: bool,
    /// How batches reach the device: "u8" (the augmented images as bytes, normalised on the
    /// device: a quarter of the copy), "f32" (normalised by the loader) or "auto" (u8 on a GPU, f32
    /// on the CPU). A plain crop and flip give the same inputs either way; rotated or sheared samples
    /// are rounded to a byte with u8.
    #[serde(default)]
    pub transfer: crate::batches::Transfer,
    /// Take the next batch from the loader while the current step runs: on a CUDA device its copy
    /// (and normalisation) is queued on a side stream, overlapping the step's kernels. The batches
    /// and results are the same either way; false copies each batch when its step starts.
    #[serde(default = "d_true")]
    pub prefetch: bool,
    #[serde(default = "d_run")]
    pub run: PathBuf,
}

fn d_dist_timeout() -> u64 {
    600
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
fn d_true() -> bool {
    true
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
    /// Detectors: SSD's random crop with IoU constraints (boxes move with it).
    #[serde(default)]
    pub crop: bool,
    /// Detectors: zoom out onto a canvas up to this many times the image (SSD: 4; 0 or 1: never).
    #[serde(default)]
    pub expand: f32,
    /// Detectors: random brightness, contrast and (RGB) saturation.
    #[serde(default)]
    pub photometric: bool,
}

impl Config {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Self::from_file_with(path, &[])
    }

    /// Reads a config and applies `section.field=value` assignments (TOML values: `train.lr=0.1`,
    /// `augment.flip=true`, `train.devices=[0,1]`, `optimizer.name="adam"`; a bare word is a string).
    pub fn from_file_with(path: &Path, sets: &[String]) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let mut doc: toml::Table = toml::from_str(&text).map_err(|reason| ConfigError::Toml { path: path.to_path_buf(), reason: Box::new(reason) })?;
        let bad_set = |set: &String, reason: String| ConfigError::Set { set: set.clone(), reason };
        for set in sets {
            let (key, raw) = set.split_once('=').ok_or_else(|| bad_set(set, "expected section.field=value".into()))?;
            let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
                .map(|mut t| t.remove("v").expect("parsed key"))
                .unwrap_or_else(|_| toml::Value::String(raw.to_string()));
            let mut parts: Vec<&str> = key.trim().split('.').collect();
            let leaf = parts.pop().filter(|l| !l.is_empty()).ok_or_else(|| bad_set(set, "empty field name".into()))?;
            let mut table = &mut doc;
            for part in parts {
                table = table
                    .entry(part)
                    .or_insert_with(|| toml::Value::Table(Default::default()))
                    .as_table_mut()
                    .ok_or_else(|| bad_set(set, format!("'{part}' is not a section")))?;
            }
            if raw.trim().is_empty() {
                // `--set data.val=`: the field goes back to its default (no validation set, say)
                table.remove(leaf);
            } else {
                table.insert(leaf.to_string(), value);
            }
        }
        let what = if sets.is_empty() { String::new() } else { format!(" (with --set {})", sets.join(", ")) };
        Config::deserialize(toml::Value::Table(doc)).map_err(|reason| ConfigError::Invalid { path: path.to_path_buf(), sets: what, reason: Box::new(reason) })
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
    /// Time each phase of every step (device-synchronised) and print where the time went after
    /// each epoch (crate::step::Profile).
    pub profile: bool,
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
