//! `trainer import-weights`: a torchvision `state_dict` saved as safetensors
//! (`safetensors.torch.save_file(model.state_dict(), path)`) becomes a run directory with an epoch-0
//! checkpoint and a config, as `trainer init` writes them, so that `trainer train` (directly, or through
//! `model.init_from` + `init_skip`), `trainer eval` and `exporter export` start from published weights.
//!
//! Names are translated by the model's [`Torchvision`] table (torchvision's `fc` / `classifier.6` is our
//! `classifier`); every other parameter and buffer must be in the file with its exact shape. The
//! `num_batches_tracked` counters are not part of our BatchNorm (its momentum is fixed) and are skipped
//! and counted. Anything else that does not match (missing keys, unexpected keys, wrong shapes or
//! non-float tensors) is refused with every name listed, in torchvision's naming, before anything is
//! written. A class count other than the file's keeps the head freshly initialised (network surgery).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use models::zoo::torchvision::{Torchvision, MEAN, STD, TORCHVISION};
use serde::Serialize;
use tch::{Kind, Tensor};

use crate::batches::PerChannel;
use crate::net::NetError;
use crate::optim::{Optimizer, OptimizerConfig};
use crate::run_files::RunFilesError;
use crate::train::{self, AugmentConfig, BuildError, CheckpointInfo, Config, DataConfig, ModelConfig, TrainConfig};

/// Why weights could not be imported; each names the model, file or run directory.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("model '{model}' has no torchvision counterpart; import-weights takes {known}")]
    NotTorchvision { model: String, known: String },
    #[error("{run} already holds checkpoints (up to epoch {epoch}); import into a new run directory")]
    NotEmpty { run: PathBuf, epoch: usize },
    #[error("reading {path} as safetensors: {source}")]
    Read { path: PathBuf, source: tch::TchError },
    #[error("{path} does not fit {model} (torchvision {constructor}): {mismatch}")]
    Mismatch { path: PathBuf, model: String, constructor: String, mismatch: Box<Mismatch> },
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    RunFiles(#[from] RunFilesError),
    #[error(transparent)]
    Zoo(#[from] models::zoo::ZooError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Weights { path: PathBuf, source: NetError },
    #[error("the logits of {run}: {source}")]
    Logits { run: PathBuf, source: tch::TchError },
}

/// What `trainer import-weights` is asked to do.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// A torchvision-compatible registry model (`tv-vgg16`, `tv-resnet50`).
    pub model: String,
    /// The safetensors file holding the `state_dict`.
    pub weights: PathBuf,
    /// The run directory to create.
    pub run: PathBuf,
    /// Classes of the network to write (default: the file's); another count gets a fresh head.
    pub num_classes: Option<usize>,
    /// Seed of the fresh head (and of the run's config).
    pub seed: u64,
}

/// What was imported (also written to `RUN/import.json`).
#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    pub model: String,
    pub torchvision: String,
    pub source: PathBuf,
    /// Tensors copied from the file into the network.
    pub loaded: usize,
    /// `num_batches_tracked` entries skipped.
    pub num_batches_tracked_ignored: usize,
    /// Classes of the file's head and of the written network.
    pub file_classes: usize,
    pub num_classes: usize,
    /// Parameters initialised afresh instead of loaded (the head, when the class counts differ).
    pub fresh: Vec<String>,
    pub seed: u64,
    pub checkpoint: PathBuf,
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "imported {} (torchvision {}) from {}: {} tensors, {} num_batches_tracked ignored, {} classes -> {}",
            self.model,
            self.torchvision,
            self.source.display(),
            self.loaded,
            self.num_batches_tracked_ignored,
            self.num_classes,
            self.checkpoint.display()
        )?;
        if !self.fresh.is_empty() {
            write!(
                f,
                "\nsurgery: the file's head has {} classes, the network {}: {} initialised afresh (seed {})",
                self.file_classes,
                self.num_classes,
                self.fresh.join(", "),
                self.seed
            )?;
        }
        Ok(())
    }
}

/// Everything in a file that does not fit the model, by torchvision's names.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub missing: Vec<String>,
    pub unexpected: Vec<String>,
    /// `key: file [..] vs expected [..]`, and non-float tensors.
    pub shapes: Vec<String>,
}

impl Mismatch {
    fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.shapes.is_empty()
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = vec![];
        for (what, list) in [("missing keys", &self.missing), ("unexpected keys", &self.unexpected), ("shape mismatches", &self.shapes)] {
            if !list.is_empty() {
                parts.push(format!("{what} ({}): {}", list.len(), list.join(", ")));
            }
        }
        f.write_str(&parts.join("; "))
    }
}

/// A checked plan: which file tensor goes to which parameter.
struct Plan {
    /// our parameter name -> the file's tensor
    tensors: BTreeMap<String, Tensor>,
    num_batches_tracked: usize,
    file_classes: usize,
    fresh: Vec<String>,
}

fn is_head(name: &str) -> bool {
    name.starts_with("classifier.")
}

/// Matches the file's tensors to the graph of `tv.model` with `num_classes` (default: the file's).
/// The head is left out of the match when the class counts differ.
fn plan(tv: &Torchvision, file: Vec<(String, Tensor)>, num_classes: Option<usize>) -> Result<(Plan, usize), Mismatch> {
    let mut m = Mismatch::default();
    let mut num_batches_tracked = 0;
    let mut ours: BTreeMap<String, (String, Tensor)> = BTreeMap::new();
    for (key, t) in file {
        if key.ends_with(".num_batches_tracked") {
            num_batches_tracked += 1;
            continue;
        }
        match tv.from_torchvision(&key) {
            Some(name) => {
                ours.insert(name, (key, t));
            }
            None => m.unexpected.push(key),
        }
    }
    let file_classes = ours.get("classifier.weight").and_then(|(_, t)| t.size().first().copied()).map(|c| c as usize);
    let classes = num_classes.or(file_classes).unwrap_or_else(|| models::zoo::info(tv.model).map_or(1000, |i| i.default_classes));
    let specs = models::zoo::build(tv.model, Some(classes), None).expect("a registry model builds with any class count").params().to_vec();
    let surgery = file_classes.is_some_and(|f| f != classes);
    let mut tensors = BTreeMap::new();
    let mut fresh = vec![];
    for spec in &specs {
        let key = tv.to_torchvision(&spec.name);
        let Some((_, t)) = ours.remove(&spec.name) else {
            m.missing.push(key);
            continue;
        };
        if surgery && is_head(&spec.name) {
            fresh.push(spec.name.clone());
            continue;
        }
        let want: Vec<i64> = spec.shape.iter().map(|&d| d as i64).collect();
        if !matches!(t.kind(), Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16) {
            m.shapes.push(format!("{key}: {:?} tensor, expected floating point", t.kind()));
        } else if t.size() != want {
            m.shapes.push(format!("{key}: file {:?} vs expected {:?}", t.size(), spec.shape));
        } else {
            tensors.insert(spec.name.clone(), t);
        }
    }
    m.unexpected.extend(ours.into_values().map(|(key, _)| key));
    m.unexpected.sort();
    if !m.is_empty() {
        return Err(m);
    }
    Ok((Plan { tensors, num_batches_tracked, file_classes: file_classes.unwrap_or(classes), fresh }, classes))
}

/// The run's config: the model with the imported class count and torchvision's ImageNet preprocessing.
fn config(o: &ImportOptions, classes: usize) -> Config {
    Config {
        model: ModelConfig { name: o.model.clone(), num_classes: Some(classes), in_channels: None, init_from: None, init_skip: vec![], detector: None },
        data: DataConfig {
            train: PathBuf::new(),
            val: None,
            limit_train: 0,
            limit_val: 0,
            mean: PerChannel::Each(MEAN.to_vec()),
            std: PerChannel::Each(STD.to_vec()),
            mean_file: None,
            ordinal: false,
            prepare: None,
            synthetic: 0,
        },
        train: TrainConfig { seed: o.seed, run: o.run.clone(), ..TrainConfig::default() },
        optimizer: OptimizerConfig::default(),
        schedule: Default::default(),
        augment: AugmentConfig::default(),
    }
}

/// `trainer import-weights`: checks the whole file against the model, then writes
/// `RUN/config.toml`, `RUN/checkpoints/epoch-0000.{safetensors,json}` and `RUN/import.json`.
pub fn import_weights(o: &ImportOptions) -> Result<ImportReport, ImportError> {
    let Some(tv) = Torchvision::of(&o.model) else {
        let known: Vec<&str> = TORCHVISION.iter().map(|t| t.model).collect();
        return Err(ImportError::NotTorchvision { model: o.model.clone(), known: known.join(", ") });
    };
    if let Some(e) = train::saved_epochs(&o.run).last() {
        return Err(ImportError::NotEmpty { run: o.run.clone(), epoch: *e });
    }
    let file = Tensor::read_safetensors(&o.weights).map_err(|source| ImportError::Read { path: o.weights.clone(), source })?;
    let (plan, classes) = plan(tv, file, o.num_classes).map_err(|mismatch| ImportError::Mismatch {
        path: o.weights.clone(),
        model: tv.model.into(),
        constructor: tv.constructor.into(),
        mismatch: Box::new(mismatch),
    })?;
    let c = config(o, classes);
    let net = train::build_net(&c, classes)?;
    tch::no_grad(|| {
        for (name, t) in &plan.tensors {
            net.params[name].shallow_clone().copy_(t);
        }
    });
    std::fs::create_dir_all(&o.run).map_err(|source| ImportError::Io { path: o.run.clone(), source })?;
    train::record_run(&o.run, &c, &net.graph)?;
    let info = CheckpointInfo {
        epoch: 0,
        lr: c.train.lr,
        seed: o.seed,
        producer: format!("trainer {}", models::VERSION),
        config: c,
        metrics: None,
        step: 0,
        partial: None,
        world: 1,
    };
    train::save_checkpoint(&o.run, &net, &Optimizer::new(OptimizerConfig::default()), &info)?;
    let report = ImportReport {
        model: tv.model.into(),
        torchvision: tv.constructor.into(),
        source: o.weights.clone(),
        loaded: plan.tensors.len(),
        num_batches_tracked_ignored: plan.num_batches_tracked,
        file_classes: plan.file_classes,
        num_classes: classes,
        fresh: plan.fresh,
        seed: o.seed,
        checkpoint: train::checkpoint_paths(&o.run, 0).0,
    };
    let path = crate::run_dir::RunDir::new(&o.run).import_report();
    std::fs::write(&path, serde_json::to_vec_pretty(&report).expect("the report is plain data")).map_err(|source| ImportError::Io { path, source })?;
    Ok(report)
}

/// The logits of a run's epoch-`epoch` checkpoint on a float32 batch `[N, C, H, W]` (already
/// normalised), in eval mode on the CPU: how an import is compared with the framework it came from.
pub fn checkpoint_logits(run: &Path, epoch: usize, data: &[f32], shape: [usize; 4]) -> Result<Vec<f32>, ImportError> {
    let c = train::load_checkpoint_info(run, epoch)?.config;
    let graph = crate::train::model_graph(&c, c.model.num_classes)?;
    let weights = train::checkpoint_paths(run, epoch).0;
    let mut net = crate::net::Net::new_cpu(graph, 0).map_err(|source| ImportError::Weights { path: weights.clone(), source })?;
    net.load(&weights).map_err(|source| ImportError::Weights { path: weights.clone(), source })?;
    let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    let x = Tensor::from_slice(data).view(dims.as_slice());
    let y = tch::no_grad(|| net.forward(&x, false));
    Vec::<f32>::try_from(y.flatten(0, -1)).map_err(|source| ImportError::Logits { run: run.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Net;

    /// A tv-resnet50 with non-trivial BatchNorm statistics, saved under torchvision's names with
    /// `num_batches_tracked` counters, as `safetensors.torch.save_file(model.state_dict())` writes it.
    fn torchvision_file(dir: &Path, edit: impl FnOnce(&mut BTreeMap<String, Tensor>)) -> (Net, PathBuf) {
        let net = Net::new_cpu(models::zoo::build("tv-resnet50", None, None).unwrap(), 3).unwrap();
        let tv = Torchvision::of("tv-resnet50").unwrap();
        let mut named: BTreeMap<String, Tensor> = BTreeMap::new();
        tch::no_grad(|| {
            for (name, t) in &net.params {
                if name.ends_with("running_mean") || name.ends_with("running_var") {
                    let _ = t.shallow_clone().uniform_(0.5, 1.5);
                }
                named.insert(tv.to_torchvision(name), t.detach().copy());
                if let Some(bn) = name.strip_suffix(".running_mean") {
                    named.insert(format!("{}.num_batches_tracked", tv.to_torchvision(bn)), Tensor::from(7i64));
                }
            }
        });
        edit(&mut named);
        let path = dir.join("resnet50.safetensors");
        let list: Vec<(&str, &Tensor)> = named.iter().map(|(k, v)| (k.as_str(), v)).collect();
        Tensor::write_safetensors(&list, &path).unwrap();
        (net, path)
    }

    fn temp(name: &str) -> tempfile::TempDir {
        tempfile::Builder::new().prefix(&format!("dlcv-import-{name}-")).tempdir().unwrap()
    }

    fn opts(weights: &Path, run: PathBuf, num_classes: Option<usize>) -> ImportOptions {
        ImportOptions { model: "tv-resnet50".into(), weights: weights.into(), run, num_classes, seed: 5 }
    }

    #[test]
    fn a_torchvision_state_dict_becomes_an_epoch_0_checkpoint_then_surgery_keeps_a_fresh_head() {
        let tmp = temp("ok");
        let dir = tmp.path().to_path_buf();
        // one tensor stored in half precision, as a `model.half().state_dict()` would be
        let (source, file) = torchvision_file(&dir, |m| {
            let w = m["layer1.0.conv1.weight"].to_kind(Kind::Half);
            m.insert("layer1.0.conv1.weight".into(), w);
        });
        let run = dir.join("run");
        let r = import_weights(&opts(&file, run.clone(), None)).unwrap();
        assert_eq!((r.loaded, r.num_batches_tracked_ignored, r.num_classes, r.fresh.len()), (267, 53, 1000, 0), "{r}");
        let mut net = Net::new_cpu(models::zoo::build("tv-resnet50", None, None).unwrap(), 9).unwrap();
        net.load(&r.checkpoint).unwrap();
        for (name, t) in &source.params {
            let t = if name == "layer1.0.conv1.weight" { t.to_kind(Kind::Half).to_kind(Kind::Float) } else { t.shallow_clone() };
            assert!(t.equal(&net.params[name]), "{name}");
        }
        // the run directory is what `trainer init` writes, with torchvision's preprocessing
        let info = train::load_checkpoint_info(&run, 0).unwrap();
        assert_eq!((info.config.model.name.as_str(), info.config.model.num_classes), ("tv-resnet50", Some(1000)));
        assert_eq!(train::batch_spec(&info.config, [3, 224, 224], false).unwrap().std, [58.395, 57.12, 57.375]);
        assert!(run.join("config.toml").is_file() && run.join("import.json").is_file());
        // a second import into the same run is refused rather than overwriting it
        assert!(import_weights(&opts(&file, run.clone(), None)).unwrap_err().to_string().contains("already holds checkpoints"));

        let r = import_weights(&opts(&file, dir.join("run10"), Some(10))).unwrap();
        assert_eq!((r.loaded, r.num_classes, r.file_classes), (265, 10, 1000));
        assert_eq!(r.fresh, ["classifier.weight", "classifier.bias"]);
        assert!(r.to_string().contains("surgery: the file's head has 1000 classes, the network 10"), "{r}");
        let mut net = Net::new_cpu(models::zoo::build("tv-resnet50", Some(10), None).unwrap(), 9).unwrap();
        net.load(&r.checkpoint).unwrap();
        assert!(net.params["layer4.2.bn3.running_var"].equal(&source.params["layer4.2.bn3.running_var"]));
        assert_eq!(net.params["classifier.weight"].size(), [10, 2048]);
    }

    #[test]
    fn every_missing_unexpected_and_misshapen_key_is_named_and_nothing_is_written() {
        let tmp = temp("bad");
        let dir = tmp.path().to_path_buf();
        let (_, file) = torchvision_file(&dir, |m| {
            m.remove("layer1.0.bn1.running_mean");
            m.remove("layer3.5.conv2.weight");
            let w = m.remove("fc.weight").unwrap();
            m.insert("classifier.weight".into(), w); // our name, not torchvision's
            m.insert("layer5.0.conv1.weight".into(), Tensor::zeros([2], (Kind::Float, tch::Device::Cpu)));
            m.insert("conv1.weight".into(), Tensor::zeros([64, 3, 5, 5], (Kind::Float, tch::Device::Cpu)));
            m.insert("bn1.bias".into(), Tensor::zeros([64], (Kind::Int64, tch::Device::Cpu)));
        });
        let run = dir.join("run");
        let e = import_weights(&opts(&file, run.clone(), None)).unwrap_err().to_string();
        for part in [
            "missing keys (3): layer1.0.bn1.running_mean, layer3.5.conv2.weight, fc.weight",
            "unexpected keys (2): classifier.weight, layer5.0.conv1.weight",
            "shape mismatches (2): conv1.weight: file [64, 3, 5, 5] vs expected [64, 3, 7, 7], bn1.bias: Int64 tensor, expected floating point",
        ] {
            assert!(e.contains(part), "'{part}' not in: {e}");
        }
        assert!(!run.exists(), "nothing is written for a file that does not fit");
        let mut o = opts(&file, run, None);
        o.model = "resnet50".into();
        assert!(import_weights(&o).unwrap_err().to_string().contains("import-weights takes tv-vgg16, tv-resnet50"));
    }
}
