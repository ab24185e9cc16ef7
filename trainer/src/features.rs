//! `trainer features`: a frozen network as a feature extractor (book ch. 11, `extract_features.py`).
//!
//! The network of a run directory (a `trainer init` run, a trained one, or imported pretrained weights)
//! runs in eval mode over a record file; for every record the activations of one node, by default the
//! last pooling layer (what Keras' `VGG16(include_top=False)` returns: pool5, 512x7x7 = 25,088 values),
//! are flattened C-major and stored with the record's label and key.
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

use std::path::{Path, PathBuf};

use data::folder::FolderError;
use data::records::{RecordError, RecordFile};
use data::{Loader, LoaderOptions, Transform};
use models::graph::{Graph, Network, NodeId};
use tch::{Device, Kind, Tensor};

use crate::batches::{batch_spec, labels_beside, short_side_beside, BatchError};
use crate::device::DeviceSpec;
use crate::net::{Net, NetError, Precision};
use crate::run_dir::{RunDir, RunError};
use crate::run_files::{load_checkpoint_info, RunFilesError};
use crate::train::BuildError;

pub use experiment::features::{FeatureInfo, FeatureSet, FeatureWriter, FORMAT};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why features could not be extracted; each names the run, node or file it is about.
#[derive(Debug, thiserror::Error)]
pub enum FeaturesError {
    #[error("{model}: no node '{name}' (its pooling layers: {pools})")]
    NoNode { model: String, name: String, pools: String },
    #[error("{model}: no pooling layer before the output; pick a node with --layer")]
    NoPool { model: String },
    #[error(transparent)]
    RunDir(#[from] RunError),
    #[error(transparent)]
    RunFiles(#[from] RunFilesError),
    #[error(transparent)]
    Batches(#[from] BatchError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Folder(#[from] FolderError),
    #[error(transparent)]
    Records(#[from] RecordError),
    #[error("loading {path}: {source}")]
    Load { path: PathBuf, source: NetError },
    #[error("{values} values for a batch of shape {shape:?}")]
    BatchShape { values: usize, shape: [usize; 4] },
    #[error("reading the features of node {node}: {source}")]
    Tensor { node: String, source: tch::TchError },
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: RecordError },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    File { path: PathBuf, source: BoxError },
    #[error("features of {rec}: {source}")]
    Sink { rec: PathBuf, source: BoxError },
    #[error("{path}: no record could be read ({skipped} skipped)")]
    NothingRead { path: PathBuf, skipped: usize },
}

/// The node `trainer features` reads: `layer` by name, or else the last pooling layer before the
/// output, found by walking back from the output along first inputs (classifier <- dropout <- ... <-
/// flatten <- pool). That is VGG16's pool5 (the book's `include_top=False` output), mini-vgg's
/// `block2.pool`, and the global average pool of ResNet and GoogLeNet.
pub fn feature_node(g: &Graph, layer: Option<&str>) -> Result<NodeId, FeaturesError> {
    let pools = || g.nodes.iter().filter(|n| n.op.is_pool()).map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ");
    if let Some(name) = layer {
        return g.node(name).map(|(id, _)| id).ok_or_else(|| FeaturesError::NoNode { model: g.name.clone(), name: name.into(), pools: pools() });
    }
    let mut id = g.output;
    loop {
        let node = &g.nodes[id];
        if node.op.is_pool() {
            return Ok(id);
        }
        match node.inputs.first() {
            Some(&i) => id = i,
            None => return Err(FeaturesError::NoPool { model: g.name.clone() }),
        }
    }
}

/// What one extraction read.
#[derive(Debug, Clone)]
pub struct Extracted {
    pub info: FeatureInfo,
    pub label_names: Vec<String>,
    /// Rows produced.
    pub samples: usize,
    /// Records whose image could not be decoded: (key, reason).
    pub skipped: Vec<(String, String)>,
}

/// A run's network, frozen, reading one node.
pub struct Extractor {
    net: Net,
    node: NodeId,
    info: FeatureInfo,
}

impl Extractor {
    /// Loads the checkpoint of `epoch` (default: the latest) of `run` on `device`, reading `layer`
    /// (default: the last pooling layer, [`feature_node`]).
    pub fn open(run: &Path, epoch: Option<usize>, layer: Option<&str>, device: DeviceSpec) -> Result<Self, FeaturesError> {
        let dir = RunDir::new(run);
        let epoch = dir.epoch_or_latest(epoch)?;
        let mut c = load_checkpoint_info(run, epoch)?.config;
        let weights = dir.checkpoint(epoch).0;
        let graph = dir.graph(&c.model.name, c.model.in_channels, epoch)?;
        let input = graph.input_shape();
        let spec = batch_spec(&c, input, false)?;
        c.train.device = device;
        c.train.devices.clear();
        c.train.precision = Precision::Fp32;
        c.train.channels_last = false;
        let mut net = crate::train::net_for(&c, graph)?;
        net.load(&weights).map_err(|source| FeaturesError::Load { path: weights.clone(), source })?;
        let node = feature_node(&net.graph, layer)?;
        let layer_shape = net.graph.shape(node).clone();
        let info = FeatureInfo {
            run: run.to_path_buf(),
            epoch,
            model: c.model.name.clone(),
            layer: net.graph.nodes[node].name.clone(),
            layer_shape,
            input,
            mean: spec.mean,
            std: spec.std,
            source: PathBuf::new(),
            short_side: None,
            stored_as: None,
        };
        Ok(Self { net, node, info })
    }

    /// What this extractor reads and how (source fields empty until an extraction fills them).
    pub fn info(&self) -> &FeatureInfo {
        &self.info
    }

    /// The network as it runs here (the node read is [`Extractor::node`]); the exporter lowers this
    /// graph, cut at that node, with the checkpoint's weights.
    pub fn graph(&self) -> &Network {
        &self.net.graph
    }

    /// The node read.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// [`Extractor::features`] of a float32 batch given as `[N, C, H, W]` values (for parity checks).
    pub fn features_f32(&self, data: &[f32], shape: [usize; 4]) -> Result<Vec<f32>, FeaturesError> {
        if data.len() != shape.iter().product::<usize>() {
            return Err(FeaturesError::BatchShape { values: data.len(), shape });
        }
        self.features(&Tensor::from_slice(data).view(shape.map(|d| d as i64)))
    }

    /// Flattened activations of a normalised batch `[N, C, H, W]`, row-major `[N, dim]`.
    pub fn features(&self, x: &Tensor) -> Result<Vec<f32>, FeaturesError> {
        let _guard = tch::no_grad_guard();
        let y = self.net.forward_to(&x.to_device(self.net.device), false, self.node);
        Vec::<f32>::try_from(y.flatten(0, -1).to_kind(Kind::Float).to_device(Device::Cpu))
            .map_err(|source| FeaturesError::Tensor { node: self.info.layer.clone(), source })
    }

    /// Streams `rec` through the network `batch` records at a time, in record order, with the
    /// evaluation preprocessing (centre crop to the input, the run's mean and std), and hands every
    /// batch's rows, labels and keys to `sink` (whose error is reported as one about `rec`).
    pub fn extract<E: Into<BoxError>>(
        &self,
        rec: &Path,
        batch: usize,
        progress: bool,
        mut sink: impl FnMut(&[f32], &[i64], &[String]) -> Result<(), E>,
    ) -> Result<Extracted, FeaturesError> {
        let file = RecordFile::open(rec)?;
        let total = file.len();
        let [c, h, w] = self.info.input;
        let mut info = self.info.clone();
        info.source = rec.to_path_buf();
        info.short_side = short_side_beside(rec)?;
        if total > 0 {
            let first = file.read(0)?;
            info.stored_as = Some(if first.image.starts_with(b"\x89PNG") { "png" } else { "jpeg" }.into());
        }
        let label_names = label_names(rec, &file)?;
        let transform = Transform::eval([h as u32, w as u32], c as u32, info.mean.clone(), info.std.clone());
        let bs = batch.max(1);
        let loader = Loader::new(file, transform, LoaderOptions { batch_size: bs, shuffle: false, ..LoaderOptions::default() });
        let bar = data::progress::bar(loader.batches_per_epoch() as u64, "features", progress);
        let (mut samples, mut skipped) = (0, vec![]);
        for batch in loader.epoch(0) {
            let batch = batch.map_err(|source| FeaturesError::Read { path: rec.to_path_buf(), source })?;
            for (key, why) in &batch.skipped {
                tracing::warn!("{}: skipped {key}: {why}", rec.display());
            }
            skipped.extend(batch.skipped.iter().cloned());
            if batch.n > 0 {
                let x = Tensor::from_slice(&batch.data).view([batch.n as i64, c as i64, h as i64, w as i64]);
                sink(&self.features(&x)?, &batch.labels, &batch.keys).map_err(|e| FeaturesError::Sink { rec: rec.to_path_buf(), source: e.into() })?;
                samples += batch.n;
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        Ok(Extracted { info, label_names, samples, skipped })
    }
}

fn file_error<E: Into<BoxError>>(path: &Path) -> impl FnOnce(E) -> FeaturesError + '_ {
    move |e| FeaturesError::File { path: path.to_path_buf(), source: e.into() }
}

/// The class names: `labels.txt` beside the record file, or the label numbers.
fn label_names(rec: &Path, file: &RecordFile) -> Result<Vec<String>, FolderError> {
    Ok(labels_beside(rec)?.unwrap_or_else(|| {
        let k = file.index.iter().map(|e| e.label).max().map_or(0, |m| m.max(-1) + 1);
        (0..k).map(|i| i.to_string()).collect()
    }))
}

/// `trainer features`: extracts `rec` with the network of `run` and writes a features file at `out`.
pub fn extract_to_file(x: &Extractor, rec: &Path, out: &Path, batch: usize) -> Result<Extracted, FeaturesError> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| FeaturesError::Io { path: dir.to_path_buf(), source })?;
    }
    let mut w = FeatureWriter::create(out).map_err(file_error(out))?;
    let done = x.extract(rec, batch, true, |rows, labels, keys| w.push(rows, labels, keys))?;
    if w.is_empty() {
        return Err(FeaturesError::NothingRead { path: rec.to_path_buf(), skipped: done.skipped.len() });
    }
    w.finish(&done.label_names, Some(&done.info)).map_err(file_error(out))?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn features_file_round_trips_and_is_plain_safetensors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.features");
        let set = FeatureSet {
            data: vec![1.5, -2.0, 0.25, 3.0, f32::MIN_POSITIVE, 7.0],
            n: 3,
            dim: 2,
            labels: vec![0, 2, -1],
            keys: vec!["a.png@0".into(), "b \"q\".png@180".into(), "c.png@90".into()],
            label_names: vec!["0".into(), "90".into(), "180".into()],
            info: None,
        };
        set.save(&path).unwrap();
        assert!(!PathBuf::from(format!("{}.rows.tmp", path.display())).exists(), "the temporary rows file is removed");
        assert_eq!(FeatureSet::load(&path).unwrap(), set);
        // the tensors are where any safetensors reader (here: libtorch's) looks for them
        let named: BTreeMap<String, Tensor> = Tensor::read_safetensors(&path).unwrap().into_iter().collect();
        assert_eq!(named["features"].size(), [3, 2]);
        assert_eq!(named["features"].double_value(&[1, 1]), 3.0);
        assert_eq!(Vec::<i64>::try_from(&named["labels"]).unwrap(), [0, 2, -1]);
        std::fs::write(&path, b"\x08\0\0\0\0\0\0\0{}      ").unwrap();
        let err = FeatureSet::load(&path).unwrap_err().to_string();
        assert!(err.contains("f.features") && err.contains("not a features file"), "{err}");
    }

    #[test]
    fn the_default_layer_is_the_last_pooling_layer_and_forward_to_stops_there() {
        let name = |m: &str| {
            let g = models::zoo::build(m, Some(4), None).unwrap();
            g.nodes[feature_node(&g, None).unwrap()].name.clone()
        };
        let shape = |m: &str| {
            let g = models::zoo::build(m, Some(4), None).unwrap();
            g.shape(feature_node(&g, None).unwrap()).clone()
        };
        assert_eq!((name("mini-vgg").as_str(), shape("mini-vgg")), ("block2.pool", vec![64, 7, 7]));
        // torchvision's VGG16 gives the book's 512x7x7 = 25,088 values; ResNet-50 its pooled 2,048
        assert_eq!(shape("tv-vgg16"), [512, 7, 7]);
        assert_eq!(shape("tv-resnet50"), [2048, 1, 1]);
        let g = models::zoo::build("mini-vgg", Some(4), None).unwrap();
        let err = feature_node(&g, Some("nope")).unwrap_err().to_string();
        assert!(err.contains("'nope'") && err.contains("block1.pool, block2.pool"), "{err}");
        // in eval mode the flatten after the pool (and its dropout) copies it: the same 3,136 values
        let net = Net::new_cpu(g, 3).unwrap();
        let x = Tensor::randn([2, 1, 28, 28], (Kind::Float, Device::Cpu));
        let pool = net.forward_to(&x, false, net.graph.node("block2.pool").unwrap().0);
        let flat = net.forward_to(&x, false, net.graph.node("flatten").unwrap().0);
        assert_eq!(pool.size(), [2, 64, 7, 7]);
        assert_eq!(pool.flatten(1, -1), flat);
        assert_eq!(net.forward_to(&x, false, net.graph.output), net.forward(&x, false));
    }
}
