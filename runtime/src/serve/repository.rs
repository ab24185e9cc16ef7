//! A Triton model repository: `DIR/NAME/config.pbtxt`, `DIR/NAME/VERSION/model.onnx`, optional label
//! files beside the config. Loading applies Triton's load-time rules against the ONNX file, so a folder
//! that loads here loads in Triton, and a config that does not fit its model is refused with the field
//! that is wrong.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use models::meta::ModelMeta;
use ort::session::Session;

use super::proto::pb;
use super::scheduler::{Policy, Scheduler};
use super::tensor::DataType;
use super::ServeOptions;
use crate::engine::{metadata_props, open_session, Provider, RuntimeError, SessionOptions};
use crate::preprocess::Preprocess;

/// The only platform (and backend) served: ONNX models on ONNX Runtime.
pub use models::repository::{BACKEND, PLATFORM};
use models::repository::{CONFIG_FILE, DEFAULT_MAX_BATCH, DEFAULT_QUEUE_DELAY_US, MODEL_FILE};

#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// config.pbtxt does not parse (the reason names line and column).
    #[error("{0}")]
    Config(String),
    /// The config and the model do not fit together, or the folder breaks the repository layout.
    #[error("model '{model}' ({path}): {reason}")]
    Rule { model: String, path: PathBuf, reason: String },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("--model {0}: expected NAME=FILE.onnx")]
    BadModelFlag(String),
    #[error("two models are named '{0}' (names must be unique across --model-repository and --model)")]
    Duplicate(String),
}

/// A tensor a model takes or gives, as the config declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct IoSpec {
    pub name: String,
    pub datatype: DataType,
    /// The dims after the batch dimension when the model batches, else all of them (-1: any size).
    pub dims: Vec<i64>,
}

/// One version of one model, loaded and running.
pub struct ServedModel {
    pub name: String,
    pub version: u64,
    pub path: PathBuf,
    pub config: pb::ModelConfig,
    pub inputs: Vec<IoSpec>,
    pub outputs: Vec<IoSpec>,
    /// `max_batch_size` (0: the model does not batch and the dims are complete).
    pub max_batch: usize,
    /// Per output: one label per class (from `label_filename`, or the file's own metadata).
    pub labels: HashMap<String, Vec<String>>,
    pub meta: Option<ModelMeta>,
    /// The image input and its preprocessing, when encoded images can be sent in as BYTES.
    pub image: Option<(usize, Preprocess)>,
    pub scheduler: Scheduler,
}

impl ServedModel {
    /// The shape a request sees for `spec`: `-1` for the batch dimension, then the dims.
    pub fn request_shape(&self, spec: &IoSpec) -> Vec<i64> {
        if self.max_batch > 0 {
            std::iter::once(-1).chain(spec.dims.iter().copied()).collect()
        } else {
            spec.dims.clone()
        }
    }

    /// One line for the log.
    pub fn summary(&self) -> String {
        let io = |v: &[IoSpec]| v.iter().map(|s| format!("{} {} {:?}", s.name, s.datatype, self.request_shape(s))).collect::<Vec<_>>().join(", ");
        format!(
            "{} → {}; max_batch_size {}, {} instance(s){}{}",
            io(&self.inputs),
            io(&self.outputs),
            self.max_batch,
            self.scheduler.instances(),
            if self.scheduler.policy().dynamic { format!(", dynamic batching within {:?}", self.scheduler.policy().delay) } else { String::new() },
            if self.image.is_some() { ", encoded images accepted" } else { "" },
        )
    }
}

/// Every model of `--model-repository` and `--model`.
pub fn load_all(opts: &ServeOptions) -> Result<Vec<ServedModel>, RepositoryError> {
    let mut out: Vec<ServedModel> = vec![];
    if let Some(dir) = &opts.repository {
        let rd = std::fs::read_dir(dir).map_err(|source| RepositoryError::Io { path: dir.clone(), source })?;
        let mut folders: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_dir()).collect();
        folders.sort();
        for folder in folders {
            let Some(name) = folder.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
                return Err(RepositoryError::Rule {
                    model: folder.display().to_string(),
                    path: folder.clone(),
                    reason: "a model folder's name must be UTF-8".into(),
                });
            };
            if name.starts_with('.') {
                continue;
            }
            out.extend(load_folder(&folder, &name, opts)?);
        }
    }
    for (name, file) in &opts.models {
        if out.iter().any(|m| &m.name == name) {
            return Err(RepositoryError::Duplicate(name.clone()));
        }
        out.push(load_model(name, 1, file, None, None, opts)?);
    }
    Ok(out)
}

/// Parses `--model NAME=FILE.onnx`.
pub fn parse_model_flag(s: &str) -> Result<(String, PathBuf), RepositoryError> {
    let (name, file) = s.split_once('=').ok_or_else(|| RepositoryError::BadModelFlag(s.to_string()))?;
    if !valid_name(name) || file.is_empty() {
        return Err(RepositoryError::BadModelFlag(s.to_string()));
    }
    Ok((name.to_string(), PathBuf::from(file)))
}

/// Model names are what a URL path segment can carry unescaped, and never a path (the rule `exporter
/// triton` writes by: `models::repository`).
pub fn valid_name(name: &str) -> bool {
    models::repository::name_problem(name).is_none()
}

fn rule(model: &str, path: &Path, reason: impl Into<String>) -> RepositoryError {
    RepositoryError::Rule { model: model.to_string(), path: path.to_path_buf(), reason: reason.into() }
}

/// One model folder: its config, the versions its version policy selects, each loaded.
fn load_folder(folder: &Path, name: &str, opts: &ServeOptions) -> Result<Vec<ServedModel>, RepositoryError> {
    if !valid_name(name) {
        return Err(rule(name, folder, "model names may hold only letters, digits, '_', '-' and '.'"));
    }
    let config_path = folder.join(CONFIG_FILE);
    let config = match std::fs::read_to_string(&config_path) {
        Ok(text) => Some(super::proto::parse_config(&text, &config_path).map_err(RepositoryError::Config)?),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => return Err(RepositoryError::Io { path: config_path, source }),
    };
    let mut versions: Vec<u64> = vec![];
    let rd = std::fs::read_dir(folder).map_err(|source| RepositoryError::Io { path: folder.to_path_buf(), source })?;
    for e in rd.flatten() {
        if e.path().is_dir() {
            if let Some(v) = e.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) {
                versions.push(v);
            }
        }
    }
    versions.sort_unstable();
    let policy = config.as_ref().and_then(|c| c.version_policy.as_ref()).and_then(|p| p.policy_choice.as_ref());
    let chosen: Vec<u64> = match policy {
        None => versions.last().copied().into_iter().collect(),
        Some(pb::model_version_policy::PolicyChoice::Latest(l)) => {
            let n = (l.num_versions.max(1) as usize).min(versions.len());
            versions[versions.len() - n..].to_vec()
        }
        Some(pb::model_version_policy::PolicyChoice::All(_)) => versions.clone(),
        Some(pb::model_version_policy::PolicyChoice::Specific(s)) => {
            for v in &s.versions {
                if !u64::try_from(*v).is_ok_and(|v| versions.contains(&v)) {
                    return Err(rule(name, folder, format!("version_policy asks for version {v}, which has no folder")));
                }
            }
            s.versions.iter().map(|&v| v as u64).collect()
        }
    };
    if chosen.is_empty() {
        return Err(rule(name, folder, "no version folder (DIR/NAME/1/model.onnx)"));
    }
    let file_name = config.as_ref().map(|c| c.default_model_filename.as_str()).filter(|f| !f.is_empty()).unwrap_or(MODEL_FILE);
    if !valid_name(file_name) {
        return Err(rule(name, folder, format!("default_model_filename '{file_name}' must be a plain file name")));
    }
    chosen
        .into_iter()
        .map(|v| {
            let file = folder.join(v.to_string()).join(file_name);
            load_model(name, v, &file, config.clone(), Some(folder), opts)
        })
        .collect()
}

/// The ONNX file's inputs or outputs: name, datatype, dims (-1: dynamic).
fn onnx_io(outlets: &[ort::value::Outlet], name: &str, path: &Path) -> Result<Vec<(String, DataType, Vec<i64>)>, RepositoryError> {
    outlets
        .iter()
        .map(|o| {
            let ty = o.dtype().tensor_type().ok_or_else(|| rule(name, path, format!("'{}' is {}, not a tensor", o.name(), o.dtype())))?;
            let dt = DataType::from_onnx(ty)
                .ok_or_else(|| rule(name, path, format!("'{}' has element type {ty:?}, which the protocol has no datatype for", o.name())))?;
            let dims = o.dtype().tensor_shape().map(|s| s.iter().map(|&d| if d < 0 { -1 } else { d }).collect()).unwrap_or_default();
            Ok((o.name().to_string(), dt, dims))
        })
        .collect()
}

fn config_io(dims_of: &[(String, DataType, Vec<i64>)], batching: bool) -> Vec<(String, i32, Vec<i64>)> {
    dims_of.iter().map(|(n, d, dims)| (n.clone(), d.config_value(), if batching { dims[1..].to_vec() } else { dims.clone() })).collect()
}

/// Triton's auto-completed configuration of an ONNX file with no config.pbtxt (its inputs and outputs
/// are completed by `load_model`).
fn auto_config(name: &str, ins: &[(String, DataType, Vec<i64>)], outs: &[(String, DataType, Vec<i64>)]) -> pb::ModelConfig {
    let batchable = ins.iter().chain(outs).all(|(_, _, d)| d.first() == Some(&-1));
    let mut c = pb::ModelConfig {
        name: name.to_string(),
        platform: PLATFORM.into(),
        backend: BACKEND.into(),
        max_batch_size: if batchable { DEFAULT_MAX_BATCH as i32 } else { 0 },
        ..Default::default()
    };
    // inputs and outputs are filled in from the file by `load_model`, as for a config that gives none
    if batchable {
        c.scheduling_choice = Some(pb::model_config::SchedulingChoice::DynamicBatching(pb::ModelDynamicBatching {
            max_queue_delay_microseconds: DEFAULT_QUEUE_DELAY_US,
            ..Default::default()
        }));
    }
    c.instance_group.push(pb::ModelInstanceGroup { count: 1, kind: pb::model_instance_group::Kind::Auto as i32, ..Default::default() });
    c
}

/// Whether config dims fit the model's: equal rank, and each fixed model dim equal to the config's.
fn dims_fit(config: &[i64], model: &[i64]) -> bool {
    config.len() == model.len() && config.iter().zip(model).all(|(&c, &m)| m < 0 || c == m)
}

/// Loads `file` as version `version` of `name`, checking `config` (or auto-completing one) against it.
fn load_model(
    name: &str,
    version: u64,
    file: &Path,
    config: Option<pb::ModelConfig>,
    folder: Option<&Path>,
    opts: &ServeOptions,
) -> Result<ServedModel, RepositoryError> {
    let r = |reason: String| rule(name, file, reason);
    let probe = open_session(file, &SessionOptions { provider: opts.provider, threads: Some(1), share_cores: true })?;
    let ins = onnx_io(probe.inputs(), name, file)?;
    let outs = onnx_io(probe.outputs(), name, file)?;
    let props = metadata_props(&probe).map_err(&r)?;
    let meta = ModelMeta::from_props(&props).map_err(|e| r(e.to_string()))?;
    drop(probe);

    let mut config = config.unwrap_or_else(|| auto_config(name, &ins, &outs));
    if config.name.is_empty() {
        config.name = name.to_string();
    }
    if config.name != name {
        return Err(r(format!("config.pbtxt says name: \"{}\" but the folder is '{name}'; they must be equal", config.name)));
    }
    if !config.platform.is_empty() && config.platform != PLATFORM {
        return Err(r(format!("platform \"{}\": only \"{PLATFORM}\" models are served", config.platform)));
    }
    if !config.backend.is_empty() && config.backend != BACKEND {
        return Err(r(format!("backend \"{}\": only the \"{BACKEND}\" backend is served", config.backend)));
    }
    if config.max_batch_size < 0 {
        return Err(r(format!("max_batch_size {} is negative", config.max_batch_size)));
    }
    let batching = config.max_batch_size > 0;
    if batching {
        for (n, _, dims) in ins.iter().chain(&outs) {
            if dims.first() != Some(&-1) {
                return Err(r(format!(
                    "max_batch_size {} needs a dynamic first (batch) dimension on every input and output, but '{n}' has dims {dims:?} in the ONNX file; set max_batch_size: 0 and give the full dims",
                    config.max_batch_size
                )));
            }
        }
    }
    // inputs and outputs: auto-completed where the config gives none, checked where it gives some
    let model_dims = |dims: &Vec<i64>| if batching { dims[1..].to_vec() } else { dims.clone() };
    if config.input.is_empty() {
        config.input = config_io(&ins, batching).into_iter().map(|(n, d, dims)| pb::ModelInput { name: n, data_type: d, dims, ..Default::default() }).collect();
    }
    if config.output.is_empty() {
        config.output =
            config_io(&outs, batching).into_iter().map(|(n, d, dims)| pb::ModelOutput { name: n, data_type: d, dims, ..Default::default() }).collect();
    }
    if config.input.len() != ins.len() {
        return Err(r(format!("config.pbtxt declares {} inputs but the ONNX file has {}", config.input.len(), ins.len())));
    }
    let check = |kind: &str, cname: &str, ctype: i32, cdims: &[i64], model: &[(String, DataType, Vec<i64>)]| -> Result<IoSpec, RepositoryError> {
        let (_, dt, dims) = model.iter().find(|(n, _, _)| n == cname).ok_or_else(|| {
            let names: Vec<&str> = model.iter().map(|(n, _, _)| n.as_str()).collect();
            r(format!("{kind} '{cname}' is not in the ONNX file (its {kind}s: {})", names.join(", ")))
        })?;
        let declared = DataType::from_config_value(ctype).ok_or_else(|| r(format!("{kind} '{cname}': data_type {ctype} is not a valid type")))?;
        if declared != *dt {
            return Err(r(format!("{kind} '{cname}': data_type {} but the ONNX file has {}", declared.config_name(), dt.config_name())));
        }
        let want = model_dims(dims);
        if !dims_fit(cdims, &want) {
            return Err(r(format!(
                "{kind} '{cname}': dims {cdims:?} do not match the ONNX file's {want:?}{}",
                if batching { " (after the batch dimension)" } else { "" }
            )));
        }
        Ok(IoSpec { name: cname.to_string(), datatype: declared, dims: cdims.to_vec() })
    };
    let inputs = config.input.iter().map(|i| check("input", &i.name, i.data_type, &i.dims, &ins)).collect::<Result<Vec<_>, _>>()?;
    let outputs = config.output.iter().map(|o| check("output", &o.name, o.data_type, &o.dims, &outs)).collect::<Result<Vec<_>, _>>()?;
    for (i, spec) in inputs.iter().enumerate() {
        if inputs[..i].iter().any(|s| s.name == spec.name) {
            return Err(r(format!("input '{}' is declared twice", spec.name)));
        }
        if !spec.datatype.runnable() {
            return Err(r(format!("input '{}' is {}: this server feeds numeric and boolean tensors only", spec.name, spec.datatype)));
        }
    }

    // labels: label_filename beside config.pbtxt, else the file's own labels on its class-score output
    let mut labels = HashMap::new();
    for o in &config.output {
        if o.label_filename.is_empty() {
            continue;
        }
        if !valid_name(&o.label_filename) {
            return Err(r(format!("output '{}': label_filename '{}' must be a plain file name in the model folder", o.name, o.label_filename)));
        }
        let dir = folder.ok_or_else(|| r("label_filename needs a model folder".into()))?;
        let path = dir.join(&o.label_filename);
        let list = data::labels::read(&path).map_err(|e| r(format!("output '{}': label_filename: {e}", o.name)))?;
        labels.insert(o.name.clone(), list);
    }
    if let Some(m) = meta.as_ref().filter(|m| !m.labels.is_empty()) {
        let scores = outputs.iter().find(|o| o.name == "probabilities").or(if outputs.len() == 1 { outputs.first() } else { None });
        if let Some(o) = scores {
            labels.entry(o.name.clone()).or_insert_with(|| m.labels.clone());
        }
    }
    for (out, list) in &labels {
        let spec = outputs.iter().find(|o| &o.name == out).expect("labels are keyed by declared outputs");
        if let Some(&k) = spec.dims.last().filter(|&&k| k > 0) {
            if list.len() as i64 != k {
                return Err(r(format!("output '{out}' has {k} classes but its labels list {} names", list.len())));
            }
        }
    }

    // scheduling
    let (dynamic, delay_us, preferred, queue) = match &config.scheduling_choice {
        Some(pb::model_config::SchedulingChoice::DynamicBatching(d)) => {
            if !batching {
                return Err(r("dynamic_batching needs max_batch_size > 0".into()));
            }
            for &p in &d.preferred_batch_size {
                if p <= 0 || p > config.max_batch_size {
                    return Err(r(format!("preferred_batch_size {p} must be between 1 and max_batch_size {}", config.max_batch_size)));
                }
            }
            let q = d.default_queue_policy.as_ref().map(|q| q.max_queue_size as usize).filter(|&q| q > 0);
            (true, d.max_queue_delay_microseconds, d.preferred_batch_size.iter().map(|&p| p as usize).collect(), q)
        }
        None => (false, 0, vec![], None),
    };
    if config.instance_group.is_empty() {
        let kind = if opts.provider == Provider::Cpu { pb::model_instance_group::Kind::Cpu } else { pb::model_instance_group::Kind::Gpu };
        config.instance_group.push(pb::ModelInstanceGroup { count: 1, kind: kind as i32, ..Default::default() });
    }
    let mut instances = 0usize;
    for g in &config.instance_group {
        let kind = pb::model_instance_group::Kind::try_from(g.kind).map_err(|_| r(format!("instance_group kind {} is not valid", g.kind)))?;
        match (kind, opts.provider) {
            (pb::model_instance_group::Kind::Gpu, Provider::Cpu) => {
                return Err(r("instance_group kind KIND_GPU needs --provider cuda (or set kind: KIND_AUTO)".into()));
            }
            (pb::model_instance_group::Kind::Model, _) => return Err(r("instance_group kind KIND_MODEL is not supported".into())),
            _ => {}
        }
        if g.count < 0 {
            return Err(r(format!("instance_group count {} is negative", g.count)));
        }
        instances += g.count.max(1) as usize;
    }
    let instances = instances.max(1);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let threads = opts.threads.unwrap_or((cores / instances).max(1));
    let mut sessions: Vec<Session> = Vec::with_capacity(instances);
    for _ in 0..instances {
        sessions.push(open_session(file, &SessionOptions { provider: opts.provider, threads: Some(threads), share_cores: true })?);
    }

    // encoded images in: one FP32 image input whose dims the file's own preprocessing produces
    let image = meta.as_ref().and_then(|m| {
        let pre = Preprocess::from_meta(m);
        let [only] = inputs.as_slice() else { return None };
        let want: Vec<i64> = pre.shape(1)[1..].iter().map(|&d| d as i64).collect();
        (only.datatype == DataType::Fp32 && batching && dims_fit(&want, &only.dims)).then_some((0, pre))
    });

    let max_batch = config.max_batch_size as usize;
    let policy = Policy { max_batch, dynamic, delay: std::time::Duration::from_micros(delay_us), preferred, max_queue: queue.unwrap_or(opts.limits.max_queue) };
    let scheduler =
        Scheduler::start(name, version, sessions, inputs.iter().map(|s| s.name.clone()).collect(), outputs.iter().map(|s| s.name.clone()).collect(), policy);
    Ok(ServedModel { name: name.to_string(), version, path: file.to_path_buf(), config, inputs, outputs, max_batch, labels, meta, image, scheduler })
}
