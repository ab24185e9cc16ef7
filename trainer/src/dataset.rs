//! What training and evaluation read: a small IDX set held in memory, or record files streamed by the
//! loader (data::loader), behind one batch iterator.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use data::folder::DatasetDir;
use data::records::RecordFile;
use data::{Loader, LoaderOptions, Transform};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::data::{load_idx, ImageSet};

/// A per-channel value written as one number (every channel) or a list (one per channel).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PerChannel {
    All(f64),
    Each(Vec<f64>),
}

impl PerChannel {
    pub fn values(&self, channels: usize) -> Vec<f32> {
        match self {
            PerChannel::All(v) => vec![*v as f32; channels],
            PerChannel::Each(v) => (0..channels).map(|c| v[c.min(v.len() - 1)] as f32).collect(),
        }
    }
}

/// The channel means a `trainer prepare` run measured (a `mean.json`, whatever the config names it).
pub fn means_from_file(path: &Path) -> Result<Vec<f64>> {
    Ok(data::folder::read_means(path)?.values())
}

/// How batches are normalised and augmented.
#[derive(Debug, Clone)]
pub struct BatchSpec {
    /// `[C, H, W]` of the network input.
    pub input: [usize; 3],
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// Random crop, flips, rotation and shear (records); flips and shifts (in-memory sets).
    pub train: bool,
    pub flip: bool,
    pub shift: usize,
    pub rotate: f32,
    pub shear: f32,
}

pub enum Dataset {
    Memory(ImageSet),
    Records { loader: Loader, num_classes: usize, path: PathBuf },
}

/// The class names in the `labels.txt` that `trainer prepare` wrote beside the record file `rec`, or
/// `None` when there is none (a damaged one is an error).
pub fn labels_beside(rec: &Path) -> Result<Option<Vec<String>>> {
    Ok(DatasetDir::of_records(rec).labels()?)
}

/// The shorter side of the `report.json` that `trainer prepare` wrote beside the record file `rec`.
pub fn short_side_beside(rec: &Path) -> Result<Option<u32>> {
    Ok(DatasetDir::of_records(rec).short_side()?)
}

/// The libtorch seed of one step (step 0: the epoch's shuffle).
pub fn step_seed(seed: u64, epoch: usize, step: usize) -> i64 {
    (seed as i64).wrapping_mul(1_000_003).wrapping_add(epoch as i64).wrapping_mul(1_000_033).wrapping_add(step as i64)
}

impl Dataset {
    /// Opens an IDX prefix or a `.rec` file; `limit` keeps the first N samples of an IDX set.
    pub fn open(path: &Path, limit: usize, spec: &BatchSpec, batch_size: usize, seed: u64, shuffle: bool) -> Result<Self> {
        if path.extension().is_some_and(|e| e == "rec") {
            let file = RecordFile::open(path)?;
            let num_classes = match labels_beside(path)? {
                Some(names) => names.len(),
                None => file.index.iter().map(|e| e.label).max().map_or(0, |m| m as usize + 1),
            };
            let [c, h, w] = spec.input;
            let transform = Transform {
                size: [h as u32, w as u32],
                channels: c as u32,
                random_crop: spec.train,
                flip: spec.train && spec.flip,
                rotate: if spec.train { spec.rotate } else { 0.0 },
                shear: if spec.train { spec.shear } else { 0.0 },
                mean: spec.mean.clone(),
                std: spec.std.clone(),
            };
            let opts = LoaderOptions { batch_size, shuffle, seed, ..LoaderOptions::default() };
            Ok(Dataset::Records { loader: Loader::new(file, transform, opts), num_classes, path: path.to_path_buf() })
        } else {
            Ok(Dataset::Memory(load_idx(path, limit)?))
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Dataset::Memory(s) => s.len(),
            Dataset::Records { loader, .. } => loader.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn num_classes(&self) -> usize {
        match self {
            Dataset::Memory(s) => s.num_classes,
            Dataset::Records { num_classes, .. } => *num_classes,
        }
    }

    pub fn batches_per_epoch(&self, batch_size: usize) -> usize {
        match self {
            Dataset::Memory(s) => s.len().div_ceil(batch_size.max(1)),
            Dataset::Records { loader, .. } => loader.batches_per_epoch(),
        }
    }

    /// The batches of `epoch` from batch `start` on, as (normalised input, labels) on `device`. For
    /// in-memory sets the shuffle comes from libtorch seeded by (seed, epoch) and augmentation from its
    /// generator as seeded by the caller before each step; record batches carry their own seeded draws.
    pub fn batches<'a>(
        &'a self,
        epoch: usize,
        start: usize,
        batch_size: usize,
        spec: &'a BatchSpec,
        seed: u64,
        device: Device,
    ) -> Box<dyn Iterator<Item = Result<(Tensor, Tensor)>> + 'a> {
        match self {
            Dataset::Memory(set) => {
                let n = set.len() as i64;
                let bs = batch_size.max(1) as i64;
                let order = if spec.train {
                    tch::manual_seed(step_seed(seed, epoch, 0));
                    Tensor::randperm(n, (Kind::Int64, Device::Cpu))
                } else {
                    Tensor::arange(n, (Kind::Int64, Device::Cpu))
                };
                let count = (n + bs - 1) / bs;
                Box::new((start as i64..count).map(move |b| {
                    let idx = order.narrow(0, b * bs, bs.min(n - b * bs));
                    let x = normalise(&set.images.index_select(0, &idx), spec, device);
                    let x = if spec.train { augment(x, spec) } else { x };
                    Ok((x, set.labels.index_select(0, &idx).to_device(device)))
                }))
            }
            Dataset::Records { loader, path, .. } => Box::new(loader.epoch_from(epoch, start).map(move |b| {
                let b = b.with_context(|| format!("reading {}", path.display()))?;
                for (key, why) in &b.skipped {
                    tracing::warn!("{}: skipped {key}: {why}", path.display());
                }
                let [c, h, w] = b.shape;
                let x = Tensor::from_slice(&b.data).view([b.n as i64, c as i64, h as i64, w as i64]).to_device(device);
                Ok((x, Tensor::from_slice(&b.labels).to_device(device)))
            })),
        }
    }
}

/// u8 `[N, C, H, W]` → float, (x - mean) / std per channel.
fn normalise(x: &Tensor, spec: &BatchSpec, device: Device) -> Tensor {
    let c = x.size()[1];
    let mean = Tensor::from_slice(&spec.mean[..c as usize]).view([1, c, 1, 1]).to_device(device);
    let std = Tensor::from_slice(&spec.std[..c as usize]).view([1, c, 1, 1]).to_device(device);
    (x.to_device(device).to_kind(Kind::Float) - mean) / std
}

fn augment(x: Tensor, spec: &BatchSpec) -> Tensor {
    let mut x = x;
    if spec.flip {
        let n = x.size()[0];
        let mask = Tensor::rand([n, 1, 1, 1], (Kind::Float, x.device())).lt(0.5);
        x = x.flip([3]).where_self(&mask, &x);
    }
    if spec.shift > 0 {
        let s = spec.shift as i64;
        let (h, w) = (x.size()[2], x.size()[3]);
        let padded = x.constant_pad_nd([s, s, s, s]);
        let dy = Tensor::randint(2 * s + 1, [1], (Kind::Int64, Device::Cpu)).int64_value(&[0]);
        let dx = Tensor::randint(2 * s + 1, [1], (Kind::Int64, Device::Cpu)).int64_value(&[0]);
        x = padded.narrow(2, dy, h).narrow(3, dx, w);
    }
    x
}
