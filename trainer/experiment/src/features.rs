//! The features file that `trainer features` writes and `trainer logreg` reads (book ch. 11's HDF5
//! file, as safetensors). The extraction itself, which runs the network, is the trainer's.
//!
//! # The features file
//! A [safetensors](https://github.com/huggingface/safetensors) file, the format of our checkpoints:
//! ```text
//! features   F32 [N, D]   one row per record, in record order (undecodable records left out)
//! labels     I64 [N]      the record labels (-1: none)
//! __metadata__            every value is JSON text:
//!   format       "dlcv-features/1"
//!   label_names  ["0", "90", "180", "270"]         (labels.txt beside the record file)
//!   keys         ["img/a.jpg@90", ...]             one per row
//!   info         {run, epoch, model, layer, layer_shape, input, mean, std, source, short_side, stored_as}
//! ```
//! Python reads it with `safetensors.numpy.load_file(path)` and `safe_open(path, "np").metadata()`.
//! The book writes HDF5; safetensors needs no C library, is what the rest of the project already reads
//! and writes, and is memory-mappable. Rows stream to a temporary file beside the output while the
//! network runs (the header needs the final count), so memory stays at one batch.

use std::collections::BTreeMap;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why a features file cannot be read or written; every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum FeaturesError {
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a features file: {why}", path.display())]
    NotFeatures { path: PathBuf, why: String },
    #[error("{}: {values} values, {labels} labels and {keys} keys do not make rows", path.display())]
    NotRows { path: PathBuf, values: usize, labels: usize, keys: usize },
    #[error("{}: rows of {dim} values after rows of {before}", path.display())]
    RowLength { path: PathBuf, dim: usize, before: usize },
    #[error("{}: {copied} bytes of rows, expected {expected}", path.display())]
    Truncated { path: PathBuf, copied: u64, expected: usize },
    #[error("{}: the metadata cannot be written", path.display())]
    Metadata {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

type Result<T, E = FeaturesError> = std::result::Result<T, E>;

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> FeaturesError + 'a {
    move |source| FeaturesError::Io { what, path: path.to_path_buf(), source }
}

/// The `format` of the files this module writes.
pub const FORMAT: &str = "dlcv-features/1";

/// Where features came from and how images became network inputs. Stored in the features file and
/// carried into a `trainer logreg` model, so that `trainer orientation-correct` repeats the same steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureInfo {
    pub run: PathBuf,
    pub epoch: usize,
    /// The registry model of the run.
    pub model: String,
    /// The graph node read.
    pub layer: String,
    /// Its per-sample output shape (e.g. `[64, 7, 7]`); a feature vector is this flattened C-major.
    pub layer_shape: Vec<usize>,
    /// The network input `[C, H, W]`: a centre crop of the stored image.
    pub input: [usize; 3],
    /// Normalisation in 0–255 pixel units, from the run's config.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// The record file read.
    pub source: PathBuf,
    /// The shorter side `trainer prepare` resized the images to (its report.json), when known.
    pub short_side: Option<u32>,
    /// How the records store images: `png` (lossless, `--quality 0`) or `jpeg`.
    pub stored_as: Option<String>,
}

impl FeatureInfo {
    /// The feature vector length.
    pub fn dim(&self) -> usize {
        self.layer_shape.iter().product()
    }
}

/// Features held in memory: `data` is `n x dim`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureSet {
    pub data: Vec<f32>,
    pub n: usize,
    pub dim: usize,
    pub labels: Vec<i64>,
    pub keys: Vec<String>,
    pub label_names: Vec<String>,
    pub info: Option<FeatureInfo>,
}

impl FeatureSet {
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// Writes the set as a features file (see the module documentation).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut w = FeatureWriter::create(path)?;
        w.push(&self.data, &self.labels, &self.keys)?;
        if self.n == 0 {
            w.dim = Some(self.dim);
        }
        w.finish(&self.label_names, self.info.as_ref())
    }

    /// Reads a features file and checks it against its own header.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(io("reading", path))?;
        let bad = |why: String| FeaturesError::NotFeatures { path: path.to_path_buf(), why };
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(format!("{e:?}")))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(format!("{e:?}")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let field = |k: &str| -> Result<serde_json::Value> {
            let text = meta.get(k).ok_or_else(|| bad(format!("no '{k}' in the metadata")))?;
            serde_json::from_str(text).map_err(|e| bad(format!("metadata '{k}' is not JSON: {e}")))
        };
        if field("format")? != FORMAT {
            return Err(bad(format!("format {} is not {FORMAT}", meta["format"])));
        }
        let f = st.tensor("features").map_err(|e| bad(format!("{e:?}")))?;
        let l = st.tensor("labels").map_err(|e| bad(format!("{e:?}")))?;
        if f.dtype() != safetensors::Dtype::F32 || l.dtype() != safetensors::Dtype::I64 || f.shape().len() != 2 || l.shape().len() != 1 {
            return Err(bad(format!(
                "expected features F32 [N, D] and labels I64 [N], found {:?} {:?} and {:?} {:?}",
                f.dtype(),
                f.shape(),
                l.dtype(),
                l.shape()
            )));
        }
        let (n, dim) = (f.shape()[0], f.shape()[1]);
        let data: Vec<f32> = f.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let labels: Vec<i64> = l.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes"))).collect();
        let keys: Vec<String> = serde_json::from_value(field("keys")?).map_err(|e| bad(format!("keys: {e}")))?;
        let label_names: Vec<String> = serde_json::from_value(field("label_names")?).map_err(|e| bad(format!("label_names: {e}")))?;
        let info: Option<FeatureInfo> = serde_json::from_value(field("info")?).map_err(|e| bad(format!("info: {e}")))?;
        if labels.len() != n || keys.len() != n {
            return Err(bad(format!("{n} rows, {} labels, {} keys", labels.len(), keys.len())));
        }
        Ok(Self { data, n, dim, labels, keys, label_names, info })
    }
}

/// Streams rows into a features file: rows go to `PATH.rows.tmp`, and [`finish`](Self::finish)
/// writes the header (which needs the final count) and then the rows, labels and metadata.
pub struct FeatureWriter {
    path: PathBuf,
    tmp: PathBuf,
    rows: BufWriter<std::fs::File>,
    dim: Option<usize>,
    labels: Vec<i64>,
    keys: Vec<String>,
}

impl FeatureWriter {
    pub fn create(path: &Path) -> Result<Self> {
        let tmp = PathBuf::from(format!("{}.rows.tmp", path.display()));
        let file = std::fs::File::create(&tmp).map_err(io("creating", &tmp))?;
        Ok(Self { path: path.to_path_buf(), tmp, rows: BufWriter::new(file), dim: None, labels: vec![], keys: vec![] })
    }

    /// Appends `labels.len()` rows (`rows` is row-major).
    pub fn push(&mut self, rows: &[f32], labels: &[i64], keys: &[String]) -> Result<()> {
        if labels.len() != keys.len() || (!labels.is_empty() && !rows.len().is_multiple_of(labels.len())) {
            return Err(FeaturesError::NotRows { path: self.path.clone(), values: rows.len(), labels: labels.len(), keys: keys.len() });
        }
        if labels.is_empty() {
            return Ok(());
        }
        let dim = rows.len() / labels.len();
        if *self.dim.get_or_insert(dim) != dim {
            return Err(FeaturesError::RowLength { path: self.path.clone(), dim, before: self.dim.unwrap_or_default() });
        }
        for v in rows {
            self.rows.write_all(&v.to_le_bytes()).map_err(io("writing", &self.tmp))?;
        }
        self.labels.extend_from_slice(labels);
        self.keys.extend(keys.iter().cloned());
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn finish(self, label_names: &[String], info: Option<&FeatureInfo>) -> Result<()> {
        let Self { path, tmp, rows, dim, labels, keys } = self;
        drop(rows.into_inner().map_err(|e| io("writing", &tmp)(e.into_error()))?);
        let (n, dim) = (labels.len(), dim.unwrap_or(0));
        let fbytes = n * dim * 4;
        let json = |v: serde_json::Value| v.to_string();
        let value = |v: serde_json::Result<serde_json::Value>| v.map(json).map_err(|source| FeaturesError::Metadata { path: path.clone(), source });
        let meta: BTreeMap<&str, String> = [
            ("format", json(FORMAT.into())),
            ("label_names", value(serde_json::to_value(label_names))?),
            ("keys", value(serde_json::to_value(&keys))?),
            ("info", value(serde_json::to_value(info))?),
        ]
        .into_iter()
        .collect();
        let header = serde_json::json!({
            "__metadata__": meta,
            "features": {"dtype": "F32", "shape": [n, dim], "data_offsets": [0, fbytes]},
            "labels": {"dtype": "I64", "shape": [n], "data_offsets": [fbytes, fbytes + 8 * n]},
        });
        let mut header = header.to_string().into_bytes();
        // pad with spaces so the data starts 8-byte aligned (the format allows trailing whitespace)
        header.resize(header.len().next_multiple_of(8), b' ');
        let mut out = BufWriter::new(std::fs::File::create(&path).map_err(io("creating", &path))?);
        out.write_all(&(header.len() as u64).to_le_bytes()).map_err(io("writing", &path))?;
        out.write_all(&header).map_err(io("writing", &path))?;
        let rows = std::fs::File::open(&tmp).map_err(io("reading", &tmp))?;
        let copied = std::io::copy(&mut BufReader::new(rows), &mut out).map_err(io("writing", &path))?;
        if copied != fbytes as u64 {
            return Err(FeaturesError::Truncated { path: tmp, copied, expected: fbytes });
        }
        for l in &labels {
            out.write_all(&l.to_le_bytes()).map_err(io("writing", &path))?;
        }
        out.into_inner().map_err(|e| io("writing", &path)(e.into_error()))?.sync_all().map_err(io("writing", &path))?;
        std::fs::remove_file(&tmp).map_err(io("removing", &tmp))?;
        Ok(())
    }
}
