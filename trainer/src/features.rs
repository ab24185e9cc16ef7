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

use std::collections::BTreeMap;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use data::records::RecordFile;
use data::{Loader, LoaderOptions, Transform};
use models::graph::{Graph, NodeId, Op};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::dataset::{labels_beside, short_side_beside};
use crate::device::DeviceSpec;
use crate::net::{Net, Precision};
use crate::run_dir::RunDir;
use crate::train::{batch_spec, load_checkpoint_info};

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
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let bad = |why: String| anyhow::anyhow!("{}: not a features file: {why}", path.display());
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
        let file = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        Ok(Self { path: path.to_path_buf(), tmp, rows: BufWriter::new(file), dim: None, labels: vec![], keys: vec![] })
    }

    /// Appends `labels.len()` rows (`rows` is row-major).
    pub fn push(&mut self, rows: &[f32], labels: &[i64], keys: &[String]) -> Result<()> {
        if labels.len() != keys.len() || (!labels.is_empty() && rows.len() % labels.len() != 0) {
            bail!("{} values, {} labels and {} keys do not make rows", rows.len(), labels.len(), keys.len());
        }
        if labels.is_empty() {
            return Ok(());
        }
        let dim = rows.len() / labels.len();
        if *self.dim.get_or_insert(dim) != dim {
            bail!("rows of {dim} values after rows of {}", self.dim.unwrap_or_default());
        }
        for v in rows {
            self.rows.write_all(&v.to_le_bytes())?;
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
        drop(rows.into_inner().map_err(|e| anyhow::anyhow!("writing {}: {e}", tmp.display()))?);
        let (n, dim) = (labels.len(), dim.unwrap_or(0));
        let fbytes = n * dim * 4;
        let json = |v: serde_json::Value| v.to_string();
        let meta: BTreeMap<&str, String> = [
            ("format", json(FORMAT.into())),
            ("label_names", json(serde_json::to_value(label_names)?)),
            ("keys", json(serde_json::to_value(&keys)?)),
            ("info", json(serde_json::to_value(info)?)),
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
        let mut out = BufWriter::new(std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?);
        out.write_all(&(header.len() as u64).to_le_bytes())?;
        out.write_all(&header)?;
        let copied = std::io::copy(&mut BufReader::new(std::fs::File::open(&tmp)?), &mut out)?;
        if copied != fbytes as u64 {
            bail!("{}: {copied} bytes of rows, expected {fbytes}", tmp.display());
        }
        for l in &labels {
            out.write_all(&l.to_le_bytes())?;
        }
        out.into_inner().map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?.sync_all()?;
        std::fs::remove_file(&tmp)?;
        Ok(())
    }
}

/// Whether `op` pools (exhaustive, so a new op has to say whether it does).
fn is_pool(op: &Op) -> bool {
    match op {
        Op::MaxPool { .. } | Op::AvgPool { .. } | Op::GlobalAvgPool => true,
        Op::Input { .. }
        | Op::Conv2d { .. }
        | Op::BatchNorm { .. }
        | Op::Relu
        | Op::Elu { .. }
        | Op::Prelu { .. }
        | Op::LeakyRelu { .. }
        | Op::Lrn { .. }
        | Op::Linear { .. }
        | Op::Dropout { .. }
        | Op::Flatten
        | Op::Concat
        | Op::Add
        | Op::Softmax => false,
    }
}

/// The node `trainer features` reads: `layer` by name, or else the last pooling layer before the
/// output, found by walking back from the output along first inputs (classifier <- dropout <- ... <-
/// flatten <- pool). That is VGG16's pool5 (the book's `include_top=False` output), mini-vgg's
/// `block2.pool`, and the global average pool of ResNet and GoogLeNet.
pub fn feature_node(g: &Graph, layer: Option<&str>) -> Result<NodeId> {
    let pools = || g.nodes.iter().filter(|n| is_pool(&n.op)).map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ");
    if let Some(name) = layer {
        return g.node(name).map(|(id, _)| id).with_context(|| format!("{}: no node '{name}' (its pooling layers: {})", g.name, pools()));
    }
    let mut id = g.output;
    loop {
        let node = &g.nodes[id];
        if is_pool(&node.op) {
            return Ok(id);
        }
        match node.inputs.first() {
            Some(&i) => id = i,
            None => bail!("{}: no pooling layer before the output; pick a node with --layer", g.name),
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
    pub fn open(run: &Path, epoch: Option<usize>, layer: Option<&str>, device: DeviceSpec) -> Result<Self> {
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
        net.load(&weights).with_context(|| format!("loading {}", weights.display()))?;
        let node = feature_node(&net.graph, layer)?;
        let layer_shape = net.graph.shapes()?[node].clone();
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
    pub fn graph(&self) -> &Graph {
        &self.net.graph
    }

    /// The node read.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// [`Extractor::features`] of a float32 batch given as `[N, C, H, W]` values (for parity checks).
    pub fn features_f32(&self, data: &[f32], shape: [usize; 4]) -> Result<Vec<f32>> {
        if data.len() != shape.iter().product::<usize>() {
            bail!("{} values for a batch of shape {shape:?}", data.len());
        }
        self.features(&Tensor::from_slice(data).view(shape.map(|d| d as i64)))
    }

    /// Flattened activations of a normalised batch `[N, C, H, W]`, row-major `[N, dim]`.
    pub fn features(&self, x: &Tensor) -> Result<Vec<f32>> {
        let _guard = tch::no_grad_guard();
        let y = self.net.forward_to(&x.to_device(self.net.device), false, self.node);
        Ok(Vec::<f32>::try_from(y.flatten(0, -1).to_kind(Kind::Float).to_device(Device::Cpu))?)
    }

    /// Streams `rec` through the network `batch` records at a time, in record order, with the
    /// evaluation preprocessing (centre crop to the input, the run's mean and std), and hands every
    /// batch's rows, labels and keys to `sink`.
    pub fn extract(&self, rec: &Path, batch: usize, progress: bool, mut sink: impl FnMut(&[f32], &[i64], &[String]) -> Result<()>) -> Result<Extracted> {
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
            let batch = batch.with_context(|| format!("reading {}", rec.display()))?;
            for (key, why) in &batch.skipped {
                tracing::warn!("{}: skipped {key}: {why}", rec.display());
            }
            skipped.extend(batch.skipped.iter().cloned());
            if batch.n > 0 {
                let x = Tensor::from_slice(&batch.data).view([batch.n as i64, c as i64, h as i64, w as i64]);
                sink(&self.features(&x)?, &batch.labels, &batch.keys)?;
                samples += batch.n;
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        Ok(Extracted { info, label_names, samples, skipped })
    }
}

/// The class names: `labels.txt` beside the record file, or the label numbers.
fn label_names(rec: &Path, file: &RecordFile) -> Result<Vec<String>> {
    Ok(labels_beside(rec)?.unwrap_or_else(|| {
        let k = file.index.iter().map(|e| e.label).max().map_or(0, |m| m.max(-1) + 1);
        (0..k).map(|i| i.to_string()).collect()
    }))
}

/// `trainer features`: extracts `rec` with the network of `run` and writes a features file at `out`.
pub fn extract_to_file(x: &Extractor, rec: &Path, out: &Path, batch: usize) -> Result<Extracted> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut w = FeatureWriter::create(out)?;
    let done = x.extract(rec, batch, true, |rows, labels, keys| w.push(rows, labels, keys))?;
    if w.is_empty() {
        bail!("{}: no record could be read ({} skipped)", rec.display(), done.skipped.len());
    }
    w.finish(&done.label_names, Some(&done.info))?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_file_round_trips_and_is_plain_safetensors() {
        let dir = std::env::temp_dir().join(format!("dlcv-features-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.features");
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
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_default_layer_is_the_last_pooling_layer_and_forward_to_stops_there() {
        let name = |m: &str| {
            let g = models::zoo::build(m, Some(4), None).unwrap();
            g.nodes[feature_node(&g, None).unwrap()].name.clone()
        };
        let shape = |m: &str| {
            let g = models::zoo::build(m, Some(4), None).unwrap();
            g.shapes().unwrap()[feature_node(&g, None).unwrap()].clone()
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
