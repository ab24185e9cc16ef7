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
        let opts = LoaderOptions { batch_size, shuffle, seed, shard: part.shard, even_shards: part.even, workers: part.workers, ..LoaderOptions::default() };
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
        self.loader.epoch_from(epoch, start).map(move |b| {
            let b = b.map_err(|source| BatchError::Read { path: self.records.clone(), source })?;
            for (key, why) in &b.skipped {
                tracing::warn!("{}: skipped {key}: {why}", self.records.display());
            }
            let [c, h, w] = b.shape;
            let x = Tensor::from_slice(&b.data).view([b.n as i64, c as i64, h as i64, w as i64]).to_device(device);
            Ok((x, Tensor::from_slice(&b.labels).to_device(device)))
        })
    }
}
