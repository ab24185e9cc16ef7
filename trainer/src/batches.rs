//! What training and evaluation read: record files streamed by the loader (data::loader), behind one
//! batch iterator. An IDX prefix is packed into records first, once (crate::idx_records).

use std::path::{Path, PathBuf};

use data::folder::{DatasetDir, FolderError};
use data::records::{RecordError, RecordFile};
use data::{Loader, LoaderOptions, Transform};
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::config::Config;
use crate::idx_records::IdxRecordsError;
use crate::streams::{DeviceEvent, SideStream};

/// Data that cannot be read as batches; each names its file.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error(transparent)]
    Records(#[from] RecordError),
    #[error(transparent)]
    Folder(#[from] FolderError),
    #[error(transparent)]
    Idx(#[from] IdxRecordsError),
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: RecordError },
    #[error("copying a batch to the device on a side stream: {0}")]
    Stream(String),
}

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
pub fn means_from_file(path: &Path) -> Result<Vec<f64>, FolderError> {
    Ok(data::folder::read_means(path)?.values())
}

/// How `c` turns stored images into inputs of a network with input `[C, H, W]`.
pub fn batch_spec(c: &Config, input: [usize; 3], train: bool) -> Result<BatchSpec, BatchError> {
    let channels = input[0];
    let mean = match &c.data.mean_file {
        Some(f) => PerChannel::Each(means_from_file(f)?),
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

/// How batches are normalised and augmented.
#[derive(Debug, Clone)]
pub struct BatchSpec {
    /// `[C, H, W]` of the network input.
    pub input: [usize; 3],
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// Random crop, flips, rotation and shear; with `shift`, IDX sets are packed with a border of that
    /// many pixels, which the random crop turns into a random translation.
    pub train: bool,
    pub flip: bool,
    pub shift: usize,
    pub rotate: f32,
    pub shear: f32,
}

/// Which part of a record file one process reads, and with how many threads.
#[derive(Debug, Clone, Default)]
pub struct Part {
    /// (rank, world): the rank's share of each epoch's order (see `data::LoaderOptions::shard`).
    pub shard: Option<(usize, usize)>,
    /// Every rank the same number of samples (training); the remainder is left out, counted.
    pub even: bool,
    /// Decode threads (0: one per core).
    pub workers: usize,
    /// Deliver bytes, normalised by [`Normalise`] after the copy (`train.transfer`).
    pub pixels: bool,
}

/// How the training loop moves batches to its device (`train.transfer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transfer {
    /// `u8` on a GPU, `f32` on the CPU.
    #[default]
    Auto,
    /// The augmented images as bytes (a quarter of the floats' size), normalised on the device.
    U8,
    /// Normalised floats, as the loader writes them.
    F32,
}

impl Transfer {
    /// Whether batches travel as bytes to `device`.
    pub fn bytes(self, device: Device) -> bool {
        match self {
            Transfer::Auto => device != Device::Cpu,
            Transfer::U8 => true,
            Transfer::F32 => false,
        }
    }
}

/// A batch's normalisation on its device: `(pixel - mean) * (1 / std)`, the loader's own arithmetic
/// in the same float32 operations, so a plain crop normalised here equals the loader's floats bit for bit.
pub struct Normalise {
    mean: Tensor,
    inv_std: Tensor,
}

impl Normalise {
    pub fn new(spec: &BatchSpec, device: Device) -> Self {
        let c = spec.input[0] as i64;
        let inv: Vec<f32> = spec.std.iter().map(|s| 1.0 / s).collect();
        Self {
            mean: Tensor::from_slice(&spec.mean).view([1, c, 1, 1]).to_device(device),
            inv_std: Tensor::from_slice(&inv).view([1, c, 1, 1]).to_device(device),
        }
    }

    /// `t` on `device`: a non-blocking copy from pinned memory on a GPU; bytes are then normalised there.
    pub fn to_device(&self, t: &Tensor, device: Device) -> Tensor {
        let t = if device == Device::Cpu { t.shallow_clone() } else { t.to_device_(device, t.kind(), true, false) };
        if t.kind() == tch::Kind::Uint8 {
            (t.to_kind(tch::Kind::Float) - &self.mean) * &self.inv_std
        } else {
            t
        }
    }
}

/// The training loop's batches on their device, one step ahead: while step b computes, batch b + 1
/// is already taken from the loader and its copy queued; on a CUDA device the copy (and the bytes'
/// normalisation) run on a side stream, so they overlap step b's kernels instead of waiting behind
/// them, as a PyTorch loop with a CUDA-stream prefetcher does (NVIDIA's DALI and Apex examples).
/// The step's stream waits for the copy on the device ([`Queued::ready`]), never the host. The
/// batches are the loader's either way: reading ahead changes when, not what.
pub struct DeviceBatches<'a, I> {
    host: I,
    normalise: &'a Normalise,
    device: Device,
    ahead: bool,
    /// The side stream of a CUDA device (and its index).
    side: Option<(usize, SideStream)>,
    queued: Option<Result<Queued, BatchError>>,
}

/// A batch whose copy to the device is queued.
pub struct Queued {
    x: Tensor,
    y: Tensor,
    /// Where the side stream's copy ends, for the step's stream to wait for.
    copied: Option<DeviceEvent>,
}

impl<'a, I: Iterator<Item = Result<(Tensor, Tensor), BatchError>>> DeviceBatches<'a, I> {
    /// `host` batches (from `host_batches`) onto `device`, `ahead` one step when asked.
    pub fn new(host: I, normalise: &'a Normalise, device: Device, ahead: bool) -> Self {
        let side = match device {
            Device::Cuda(i) if ahead => match SideStream::new(i) {
                Ok(s) => Some((i, s)),
                Err(e) => {
                    tracing::warn!("no side stream on cuda:{i}; batches are copied on the step's stream: {e}");
                    None
                }
            },
            Device::Cuda(_) | Device::Cpu | Device::Mps | Device::Vulkan => None,
        };
        Self { host, normalise, device, ahead, side, queued: None }
    }

    /// The next batch, its copy queued; with `ahead`, the one after it is taken and queued too.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<Result<Queued, BatchError>> {
        let current = match self.queued.take() {
            Some(q) => q,
            None => self.queue_next()?,
        };
        if self.ahead {
            self.queued = self.queue_next();
        }
        Some(current)
    }

    fn queue_next(&mut self) -> Option<Result<Queued, BatchError>> {
        let b = self.host.next()?;
        Some(b.and_then(|(x, y)| self.queue(&x, &y)))
    }

    /// Queues the copy (on the side stream when there is one, and then an event where it ends).
    fn queue(&self, x: &Tensor, y: &Tensor) -> Result<Queued, BatchError> {
        let scope = self.side.as_ref().map(|(_, side)| side.enter()).transpose().map_err(BatchError::Stream)?;
        let (x, y) = (self.normalise.to_device(x, self.device), self.normalise.to_device(y, self.device));
        let copied = self.side.as_ref().map(|(i, _)| DeviceEvent::record(*i, false)).transpose().map_err(BatchError::Stream)?;
        drop(scope);
        Ok(Queued { x, y, copied })
    }
}

impl<I> Drop for DeviceBatches<'_, I> {
    /// A batch still queued when the loop stops early (an interrupt, an error) is waited for by the
    /// step's stream like any other, on the device: the side stream's kernels read tensors of the
    /// step's stream (the normalisation's mean and scale) that may be freed next.
    fn drop(&mut self) {
        if let Some(Ok(q)) = self.queued.take() {
            if let Err(e) = q.ready() {
                tracing::warn!("{e}");
            }
        }
    }
}

impl Queued {
    /// The batch for the step's (current) stream, which waits on the device for the copy; the
    /// tensors' memory, allocated on the side stream, is marked as in use on this one too.
    pub fn ready(self) -> Result<(Tensor, Tensor), BatchError> {
        if let (Some(copied), Device::Cuda(i)) = (&self.copied, self.x.device()) {
            copied.block_current(i).map_err(BatchError::Stream)?;
            for t in [&self.x, &self.y] {
                crate::streams::record_stream(t).map_err(BatchError::Stream)?;
            }
        }
        Ok((self.x, self.y))
    }
}

/// A record file read in batches: a `.rec` from `trainer prepare`, or an IDX set packed into one.
pub struct RecordBatches {
    loader: Loader,
    num_classes: usize,
    /// The record file read.
    records: PathBuf,
    /// What the config named (the record file, or the IDX prefix it was packed from).
    source: PathBuf,
}

/// The class names in the `labels.txt` that `trainer prepare` wrote beside the record file `rec`, or
/// `None` when there is none (a damaged one is an error).
pub fn labels_beside(rec: &Path) -> Result<Option<Vec<String>>, FolderError> {
    DatasetDir::of_records(rec).labels()
}

/// The shorter side of the `report.json` that `trainer prepare` wrote beside the record file `rec`.
pub fn short_side_beside(rec: &Path) -> Result<Option<u32>, FolderError> {
    DatasetDir::of_records(rec).short_side()
}

/// Whether `path` names a record file (else an IDX prefix).
pub fn is_records(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "rec")
}

impl RecordBatches {
    /// Opens a `.rec` file or an IDX prefix (packed into the cache on first use, see
    /// [`crate::idx_records`]); `limit` keeps the first N records (0 = all). Batches of `batch_size`,
    /// shuffled per epoch when `shuffle`, every random draw from (`seed`, epoch, batch).
    pub fn open(path: &Path, limit: usize, spec: &BatchSpec, batch_size: usize, seed: u64, shuffle: bool) -> Result<Self, BatchError> {
        Self::open_part(path, limit, spec, batch_size, seed, shuffle, &Part::default())
    }

    /// As [`RecordBatches::open`], reading one rank's part of the file with `part.workers` decode threads.
    pub fn open_part(path: &Path, limit: usize, spec: &BatchSpec, batch_size: usize, seed: u64, shuffle: bool, part: &Part) -> Result<Self, BatchError> {
        let records = if is_records(path) {
            if spec.train && spec.shift > 0 {
                tracing::warn!("augment.shift borders IDX sets only; {} is a record file, its random crops are its shifts", path.display());
            }
            path.to_path_buf()
        } else {
            let border = if spec.train { spec.shift as u32 } else { 0 };
            let root = crate::idx_records::cache_root();
            let packed = crate::idx_records::packed_records(path, border, &root)?;
            if packed.reused {
                tracing::info!("{}: reading the records packed by an earlier run, {}", path.display(), packed.records.display());
            } else {
                tracing::info!(
                    "{}: packed into {} (later runs reuse it; ${} moves the cache)",
                    path.display(),
                    packed.records.display(),
                    crate::idx_records::CACHE_ENV
                );
            }
            packed.records
        };
        let mut file = RecordFile::open(&records)?;
        if limit > 0 {
            file.index.truncate(limit);
        }
        let num_classes = match labels_beside(&records)? {
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
        let opts = LoaderOptions {
            batch_size,
            shuffle,
            seed,
            shard: part.shard,
            even_shards: part.even,
            workers: part.workers,
            pixels: part.pixels,
            ..LoaderOptions::default()
        };
        Ok(RecordBatches { loader: Loader::new(file, transform, opts), num_classes, records, source: path.to_path_buf() })
    }

    pub fn len(&self) -> usize {
        self.loader.len()
    }

    /// Records in the file, over all ranks' shares.
    pub fn total(&self) -> usize {
        self.loader.records()
    }

    /// Samples no rank reads in an epoch (even shards over a world that does not divide the file).
    pub fn left_out(&self) -> usize {
        self.loader.left_out()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// The record file read (for an IDX set: its packed copy).
    pub fn records(&self) -> &Path {
        &self.records
    }

    /// What the config named.
    pub fn source(&self) -> &Path {
        &self.source
    }

    pub fn batches_per_epoch(&self) -> usize {
        self.loader.batches_per_epoch()
    }

    /// The batches of `epoch` from batch `start` on, as (normalised input, labels) on `device`. The
    /// shuffle and every augmentation draw come from the loader's (seed, epoch, batch) streams, so a
    /// resumed epoch gets the batches an uninterrupted one gets.
    pub fn batches(&self, epoch: usize, start: usize, device: Device) -> impl Iterator<Item = Result<(Tensor, Tensor), BatchError>> + '_ {
        self.host_batches(epoch, start, Device::Cpu).map(move |b| b.map(|(x, y)| (x.to_device(device), y.to_device(device))))
    }

    /// As [`RecordBatches::batches`] (bytes when opened with [`Part::pixels`]), left on the host for
    /// the caller to copy ([`Normalise::to_device`]): in page-locked
    /// (pinned) memory when `device` is a GPU, so that the copy can be asynchronous
    /// (`non_blocking`), as PyTorch's `DataLoader(pin_memory=True)` does.
    pub fn host_batches(&self, epoch: usize, start: usize, device: Device) -> impl Iterator<Item = Result<(Tensor, Tensor), BatchError>> + '_ {
        self.loader.epoch_from(epoch, start).map(move |b| {
            let b = b.map_err(|source| BatchError::Read { path: self.records.clone(), source })?;
            for (key, why) in &b.skipped {
                tracing::warn!("{}: skipped {key}: {why}", self.records.display());
            }
            let [c, h, w] = b.shape;
            let x = if b.pixels.is_empty() { Tensor::from_slice(&b.data) } else { Tensor::from_slice(&b.pixels) };
            let x = x.view([b.n as i64, c as i64, h as i64, w as i64]);
            let y = Tensor::from_slice(&b.labels);
            // copied out: the loader writes a later batch into the buffer
            self.loader.recycle(b.data);
            Ok((pinned(x, device), pinned(y, device)))
        })
    }
}

/// `t` in page-locked memory when it is bound for a CUDA device (an asynchronous copy needs it); as
/// it is where pinning fails (no CUDA host allocator), with a warning once.
fn pinned(t: Tensor, device: Device) -> Tensor {
    match device {
        Device::Cuda(_) => crate::fused::pin_memory(&t).unwrap_or_else(|e| {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| tracing::warn!("batches stay in pageable memory (the copy to {device:?} waits for them): {e}"));
            t
        }),
        Device::Cpu | Device::Mps | Device::Vulkan => t,
    }
}

/// `data.synthetic`: the same random batch every step, made once on the host (pinned for a GPU), so
/// that a benchmark times the step without decoding.
pub struct SyntheticBatches {
    x: Tensor,
    y: Tensor,
    samples: usize,
    batch_size: usize,
    classes: usize,
}

impl SyntheticBatches {
    /// `samples` images an epoch of `spec.input`, uniform 0-255 pixels (as bytes with `bytes`, for
    /// [`Normalise`] to normalise after the copy, else normalised by `spec`), labels uniform in
    /// `0..classes`; drawn from `seed`.
    pub fn new(spec: &BatchSpec, samples: usize, batch_size: usize, classes: usize, seed: u64, device: Device, bytes: bool) -> Self {
        let [c, h, w] = spec.input.map(|v| v as i64);
        let n = batch_size.min(samples).max(1) as i64;
        tch::manual_seed(seed as i64);
        let pixels = Tensor::randint(256, [n, c, h, w], (tch::Kind::Float, Device::Cpu));
        let x = if bytes {
            pixels.to_kind(tch::Kind::Uint8)
        } else {
            (pixels - Tensor::from_slice(&spec.mean).view([1, c, 1, 1])) / Tensor::from_slice(&spec.std).view([1, c, 1, 1])
        };
        let y = Tensor::randint(classes.max(1) as i64, [n], (tch::Kind::Int64, Device::Cpu));
        let (x, y) = (pinned(x, device), pinned(y, device));
        Self { x, y, samples, batch_size: batch_size.max(1), classes: classes.max(1) }
    }
}

/// What a classifier trains on: a record file, or synthetic batches.
pub enum TrainSet {
    Records(RecordBatches),
    Synthetic(SyntheticBatches),
}

impl TrainSet {
    /// Samples this rank reads an epoch.
    pub fn len(&self) -> usize {
        match self {
            TrainSet::Records(r) => r.len(),
            TrainSet::Synthetic(s) => s.samples,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn total(&self) -> usize {
        match self {
            TrainSet::Records(r) => r.total(),
            TrainSet::Synthetic(s) => s.samples,
        }
    }

    pub fn left_out(&self) -> usize {
        match self {
            TrainSet::Records(r) => r.left_out(),
            TrainSet::Synthetic(_) => 0,
        }
    }

    pub fn num_classes(&self) -> usize {
        match self {
            TrainSet::Records(r) => r.num_classes(),
            TrainSet::Synthetic(s) => s.classes,
        }
    }

    pub fn batches_per_epoch(&self) -> usize {
        match self {
            TrainSet::Records(r) => r.batches_per_epoch(),
            TrainSet::Synthetic(s) => s.samples.div_ceil(s.batch_size),
        }
    }

    /// The batches of `epoch` from batch `start` on, on the host ([`RecordBatches::host_batches`]).
    pub fn host_batches(&self, epoch: usize, start: usize, device: Device) -> Box<dyn Iterator<Item = Result<(Tensor, Tensor), BatchError>> + '_> {
        match self {
            TrainSet::Records(r) => Box::new(r.host_batches(epoch, start, device)),
            TrainSet::Synthetic(s) => {
                let full = s.x.size()[0] as usize;
                Box::new((start..self.batches_per_epoch()).map(move |b| {
                    let n = (s.samples - b * s.batch_size).min(s.batch_size).min(full) as i64;
                    Ok(if n as usize == full { (s.x.shallow_clone(), s.y.shallow_clone()) } else { (s.x.narrow(0, 0, n), s.y.narrow(0, 0, n)) })
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn spec() -> BatchSpec {
        BatchSpec { input: [1, 2, 2], mean: vec![10.0], std: vec![2.0], train: false, flip: false, shift: 0, rotate: 0.0, shear: 0.0 }
    }

    #[test]
    fn batches_are_taken_a_step_ahead_in_order_and_a_read_error_arrives_at_its_own_step() {
        let pulled = Cell::new(0);
        let host = (0..4u8).map(|b| {
            pulled.set(pulled.get() + 1);
            if b == 2 {
                return Err(BatchError::Stream("batch 2 is unreadable".into()));
            }
            Ok((Tensor::from_slice(&[b, b, b, b]).view([1, 1, 2, 2]), Tensor::from_slice(&[b as i64])))
        });
        let normalise = Normalise::new(&spec(), Device::Cpu);
        let mut batches = DeviceBatches::new(host, &normalise, Device::Cpu, true);
        let first = batches.next().unwrap().unwrap().ready().unwrap();
        assert_eq!(pulled.get(), 2, "the next batch is taken with the current one");
        // bytes are normalised: (0 - 10) / 2
        assert_eq!(Vec::<f32>::try_from(first.0.flatten(0, -1)).unwrap(), vec![-5.0; 4]);
        assert_eq!(first.1.int64_value(&[0]), 0);
        assert_eq!(batches.next().unwrap().unwrap().ready().unwrap().1.int64_value(&[0]), 1);
        assert_eq!(pulled.get(), 3);
        let err = batches.next().unwrap().err().expect("batch 2 fails at its own step");
        assert!(err.to_string().contains("batch 2 is unreadable"), "{err}");
        assert_eq!(batches.next().unwrap().unwrap().ready().unwrap().1.int64_value(&[0]), 3);
        assert!(batches.next().is_none());
        assert_eq!(pulled.get(), 4);
        // without reading ahead, one batch is taken per step
        let pulled_now = Cell::new(0);
        let host = (0..3u8).map(|b| {
            pulled_now.set(pulled_now.get() + 1);
            Ok((Tensor::from_slice(&[b; 4]).view([1, 1, 2, 2]), Tensor::from_slice(&[b as i64])))
        });
        let mut in_step = DeviceBatches::new(host, &normalise, Device::Cpu, false);
        assert_eq!(in_step.next().unwrap().unwrap().ready().unwrap().1.int64_value(&[0]), 0);
        assert_eq!(pulled_now.get(), 1);
    }
}
