//! `exporter triton`: an ONNX file as one entry of an NVIDIA Triton model repository, in Triton's own
//! layout and configuration format, so that the same folder is served by Triton (ONNX Runtime backend)
//! and by `runtime serve`:
//!
//! ```text
//! REPOSITORY/NAME/config.pbtxt        Triton's ModelConfig in protobuf text format
//! REPOSITORY/NAME/VERSION/model.onnx  a copy of the file
//! REPOSITORY/NAME/labels.txt          one label per line, when the file has labels (or --labels)
//! ```
//!
//! The configuration is derived from the file alone: its graph inputs (initializers excluded) and
//! outputs with their Triton data types and dims, the batching settings, and every `metadata_props`
//! entry as a string parameter. With `max_batch_size > 0` Triton adds the batch dimension itself, so
//! every input and output must have a dynamic first dimension and `dims` are the dimensions after it;
//! with `max_batch_size: 0` the dims are the full shape and there is no dynamic batching.
//! Pure Rust: it needs neither libtorch nor ONNX Runtime.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};

use models::repository;
use onnx_protobuf::{tensor_proto::DataType, type_proto, ModelProto, ValueInfoProto};
use protobuf::{Enum, Message};

/// The version folder written by default.
pub const DEFAULT_VERSION: u64 = 1;
/// Triton's `max_batch_size` written by default.
pub const DEFAULT_MAX_BATCH: u32 = repository::DEFAULT_MAX_BATCH;
/// Model instances (`instance_group { count }`) written by default.
pub const DEFAULT_INSTANCES: u32 = 1;
/// `dynamic_batching { max_queue_delay_microseconds }` written by default.
pub const DEFAULT_QUEUE_DELAY_US: u64 = repository::DEFAULT_QUEUE_DELAY_US;
pub use models::repository::{BACKEND, CONFIG_FILE, LABELS_FILE, MODEL_FILE, PLATFORM};

/// Why an entry was not written; each names the file or flag that is wrong.
#[derive(Debug, thiserror::Error)]
pub enum TritonError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: not an ONNX model ({source})", path.display())]
    Decode { path: PathBuf, source: protobuf::Error },
    #[error("{}: the model has no graph", path.display())]
    NoGraph { path: PathBuf },
    #[error("{}: no model name can be made from the file name; give one with --name", path.display())]
    NoName { path: PathBuf },
    #[error("--name '{name}': {reason}")]
    Name { name: String, reason: &'static str },
    #[error("--version 0: Triton ignores version folders that are 0 or start with 0; give 1 or more")]
    Version,
    #[error("--max-batch {0}: Triton's max_batch_size is a 32-bit signed number, at most {max}", max = i32::MAX)]
    MaxBatch(u32),
    #[error("--instances {0}: give 1 to {max}", max = i32::MAX)]
    Instances(u32),
    #[error("--preferred-batch {size}: {reason}")]
    PreferredBatch { size: u32, reason: String },
    #[error("{}: {what} '{name}' {reason}", path.display())]
    Port { path: PathBuf, what: &'static str, name: String, reason: String },
    #[error(
        "{}: {what} '{name}' has the fixed first dimension {dim}, but with --max-batch {max_batch} Triton adds a batch \
         dimension of its own; export it with a dynamic batch dimension, or serve it without batching (--max-batch 0)",
        path.display()
    )]
    FixedBatch { path: PathBuf, what: &'static str, name: String, dim: i64, max_batch: u32 },
    #[error("{}: the file's labels cannot be read: {source}", path.display())]
    Meta { path: PathBuf, source: models::meta::MetaError },
    #[error(transparent)]
    Labels(#[from] data::labels::LabelsError),
    #[error("{what}: {reason}")]
    LabelsRefused { what: String, reason: String },
    #[error(
        "{}: refusing to overwrite it with a different model ({}); give another --version or remove it",
        path.display(), from.display()
    )]
    Exists { path: PathBuf, from: PathBuf },
}

type Result<T, E = TritonError> = std::result::Result<T, E>;

/// What to write and where (the `exporter triton` flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TritonOptions {
    /// The ONNX file.
    pub model: PathBuf,
    /// The model repository (the folder that holds one folder per model).
    pub repository: PathBuf,
    /// The model's name [default: the file's stem, see [`default_name`]].
    pub name: Option<String>,
    pub version: u64,
    /// Triton's `max_batch_size`; 0: no batching, the dims are the full shapes.
    pub max_batch: u32,
    pub instances: u32,
    pub queue_delay_us: u64,
    /// `dynamic_batching { preferred_batch_size }` (written sorted, each once).
    pub preferred_batch: Vec<u32>,
    /// Labels for a file whose metadata has none (or other ones); one per line.
    pub labels: Option<PathBuf>,
}

impl TritonOptions {
    /// `model` into `repository` with the defaults.
    pub fn new(model: impl Into<PathBuf>, repository: impl Into<PathBuf>) -> Self {
        Self {
            model: model.into(),
            repository: repository.into(),
            name: None,
            version: DEFAULT_VERSION,
            max_batch: DEFAULT_MAX_BATCH,
            instances: DEFAULT_INSTANCES,
            queue_delay_us: DEFAULT_QUEUE_DELAY_US,
            preferred_batch: vec![],
            labels: None,
        }
    }
}

/// One input or output of the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorConfig {
    pub name: String,
    /// Triton's data type (`TYPE_FP32`, ...).
    pub data_type: &'static str,
    /// The dims Triton is told: after the batch dimension when batching; -1 where dynamic.
    pub dims: Vec<i64>,
    /// `Some(vec![])` for a tensor that is a scalar per batch item: Triton needs at least one dim, so
    /// it is written `dims: [ 1 ]` with `reshape { shape: [ ] }`.
    pub reshape: Option<Vec<i64>>,
    /// `labels.txt` on the classification output when labels are written.
    pub label_filename: Option<String>,
}

/// `dynamic_batching { ... }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicBatching {
    pub preferred_batch_size: Vec<u32>,
    pub max_queue_delay_microseconds: u64,
}

/// The part of Triton's `ModelConfig` that an entry sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelConfig {
    pub name: String,
    pub max_batch_size: u32,
    pub input: Vec<TensorConfig>,
    pub output: Vec<TensorConfig>,
    /// `None` when `max_batch_size` is 0.
    pub dynamic_batching: Option<DynamicBatching>,
    /// `instance_group [ { count, kind: KIND_AUTO } ]`.
    pub instances: u32,
    /// Every `metadata_props` entry of the file, as string parameters.
    pub parameters: BTreeMap<String, String>,
}

/// Where the labels come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelSource {
    /// The file's own metadata.
    Metadata,
    /// `--labels FILE`.
    File(PathBuf),
}

/// The configuration of one entry and the labels written beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub config: ModelConfig,
    pub labels: Option<(Vec<String>, LabelSource)>,
}

/// Triton's data type of an ONNX element type; `None` where Triton has none (complex, float8, int4...).
pub fn triton_type(elem_type: i32) -> Option<&'static str> {
    Some(match DataType::from_i32(elem_type)? {
        DataType::FLOAT => "TYPE_FP32",
        DataType::DOUBLE => "TYPE_FP64",
        DataType::FLOAT16 => "TYPE_FP16",
        DataType::BFLOAT16 => "TYPE_BF16",
        DataType::INT64 => "TYPE_INT64",
        DataType::INT32 => "TYPE_INT32",
        DataType::INT16 => "TYPE_INT16",
        DataType::INT8 => "TYPE_INT8",
        DataType::UINT64 => "TYPE_UINT64",
        DataType::UINT32 => "TYPE_UINT32",
        DataType::UINT16 => "TYPE_UINT16",
        DataType::UINT8 => "TYPE_UINT8",
        DataType::BOOL => "TYPE_BOOL",
        DataType::STRING => "TYPE_STRING",
        DataType::UNDEFINED
        | DataType::COMPLEX64
        | DataType::COMPLEX128
        | DataType::FLOAT8E4M3FN
        | DataType::FLOAT8E4M3FNUZ
        | DataType::FLOAT8E5M2
        | DataType::FLOAT8E5M2FNUZ
        | DataType::UINT4
        | DataType::INT4 => return None,
    })
}

/// Refuses a model name that is not one plain folder name of `[A-Za-z0-9_.-]`.
pub fn check_name(name: &str) -> Result<()> {
    match repository::name_problem(name) {
        None => Ok(()),
        Some(reason) => Err(TritonError::Name { name: name.into(), reason }),
    }
}

/// The file's stem with every character outside `[A-Za-z0-9_.-]` replaced by `_`
/// (`mini vgg+1.onnx` → `mini_vgg_1`).
pub fn default_name(model: &Path) -> Result<String> {
    let stem = model.file_stem().map(|s| s.to_string_lossy().chars().map(|c| if repository::name_char(c) { c } else { '_' }).collect::<String>());
    match stem {
        Some(s) if check_name(&s).is_ok() => Ok(s),
        _ => Err(TritonError::NoName { path: model.into() }),
    }
}

/// `s` as a protobuf text-format string literal (with its quotes): `\`, `"`, newline, carriage return and
/// tab escaped, every other control character as a three-digit octal escape; other UTF-8 as it is.
pub fn text_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\{:03o}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One graph input or output: its Triton type and full dims (-1 where dynamic).
struct Port {
    name: String,
    data_type: &'static str,
    dims: Vec<i64>,
}

fn port(path: &Path, what: &'static str, v: &ValueInfoProto) -> Result<Port> {
    let err = |reason: String| TritonError::Port { path: path.into(), what, name: v.name.clone(), reason };
    let Some(type_proto::Value::TensorType(t)) = &v.type_.value else {
        return Err(err("is not a tensor; Triton's ONNX Runtime backend serves tensors only".into()));
    };
    let elem = DataType::from_i32(t.elem_type).map_or_else(|| format!("type {}", t.elem_type), |d| format!("{d:?}"));
    let data_type = triton_type(t.elem_type).ok_or_else(|| err(format!("has the element type {elem}, which Triton has no type for")))?;
    if t.shape.is_none() {
        return Err(err("has no shape; Triton needs the rank of every tensor".into()));
    }
    let dims = t.shape.dim.iter().map(|d| if d.has_dim_value() && d.dim_value() >= 0 { d.dim_value() } else { -1 }).collect();
    Ok(Port { name: v.name.clone(), data_type, dims })
}

/// The tensor configuration of `p`: the dims after the batch dimension when batching.
fn tensor(path: &Path, what: &'static str, p: &Port, max_batch: u32) -> Result<TensorConfig> {
    let dims = if max_batch == 0 {
        p.dims.clone()
    } else {
        match p.dims.first() {
            Some(-1) => p.dims[1..].to_vec(),
            Some(&dim) => return Err(TritonError::FixedBatch { path: path.into(), what, name: p.name.clone(), dim, max_batch }),
            None => {
                let reason = format!("is a scalar, but with --max-batch {max_batch} every tensor needs a batch dimension; use --max-batch 0");
                return Err(TritonError::Port { path: path.into(), what, name: p.name.clone(), reason });
            }
        }
    };
    let (dims, reshape) = if dims.is_empty() { (vec![1], Some(vec![])) } else { (dims, None) };
    Ok(TensorConfig { name: p.name.clone(), data_type: p.data_type, dims, reshape, label_filename: None })
}

/// Refuses labels that would not read back from `labels.txt` one per line as they are.
fn check_labels(labels: &[String], what: &str) -> Result<()> {
    for (i, l) in labels.iter().enumerate() {
        if l.is_empty() || l.contains(['\n', '\r']) || l.trim() != l {
            let reason = format!("label {} ({l:?}) cannot be one line of {LABELS_FILE}: it is empty, spans lines or has surrounding blanks", i + 1);
            return Err(TritonError::LabelsRefused { what: what.into(), reason });
        }
    }
    Ok(())
}

/// The entry of the decoded `model` (read from `path`) under options `o`: the configuration, and the
/// labels (`--labels`, else the file's metadata) checked against the classification output.
pub fn entry(model: &ModelProto, path: &Path, o: &TritonOptions) -> Result<Entry> {
    let name = match &o.name {
        Some(n) => {
            check_name(n)?;
            n.clone()
        }
        None => default_name(&o.model)?,
    };
    if o.version == 0 {
        return Err(TritonError::Version);
    }
    if o.max_batch > i32::MAX as u32 {
        return Err(TritonError::MaxBatch(o.max_batch));
    }
    if o.instances == 0 || o.instances > i32::MAX as u32 {
        return Err(TritonError::Instances(o.instances));
    }
    let mut preferred = o.preferred_batch.clone();
    preferred.sort_unstable();
    preferred.dedup();
    for &size in &preferred {
        let reason = if o.max_batch == 0 {
            "there is no dynamic batching with --max-batch 0".to_string()
        } else if size == 0 {
            "a batch has at least one request".to_string()
        } else if size > o.max_batch {
            format!("larger than --max-batch {}", o.max_batch)
        } else {
            continue;
        };
        return Err(TritonError::PreferredBatch { size, reason });
    }

    let g = model.graph.as_ref().ok_or_else(|| TritonError::NoGraph { path: path.into() })?;
    // Older exporters list initializers among the inputs too; those are not inputs a client feeds.
    let initializers: std::collections::HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    let inputs = g.input.iter().filter(|i| !initializers.contains(i.name.as_str())).map(|v| port(path, "input", v)).collect::<Result<Vec<_>>>()?;
    let outputs = g.output.iter().map(|v| port(path, "output", v)).collect::<Result<Vec<_>>>()?;
    let input = inputs.iter().map(|p| tensor(path, "input", p, o.max_batch)).collect::<Result<Vec<_>>>()?;
    let mut output = outputs.iter().map(|p| tensor(path, "output", p, o.max_batch)).collect::<Result<Vec<_>>>()?;

    let parameters: BTreeMap<String, String> = model.metadata_props.iter().map(|p| (p.key.clone(), p.value.clone())).collect();
    let labels = match &o.labels {
        Some(file) => Some((data::labels::read(file)?, LabelSource::File(file.clone()))),
        None => match models::meta::ModelMeta::from_props(&parameters) {
            Ok(Some(meta)) if !meta.labels.is_empty() => Some((meta.labels, LabelSource::Metadata)),
            Ok(_) => None,
            Err(source) => return Err(TritonError::Meta { path: path.into(), source }),
        },
    };
    if let Some((labels, from)) = &labels {
        let what = match from {
            LabelSource::File(f) => format!("--labels {}", f.display()),
            LabelSource::Metadata => format!("{}: the labels in its metadata", path.display()),
        };
        check_labels(labels, &what)?;
        // the classification output: `probabilities` when there is one, else the first 2-D output
        let class = outputs.iter().position(|p| p.name == "probabilities").or_else(|| outputs.iter().position(|p| p.dims.len() == 2));
        let Some(class) = class else {
            return Err(TritonError::LabelsRefused { what, reason: "the model has no classification output (`probabilities` or a 2-D output)".into() });
        };
        let p = &outputs[class];
        let classes = p.dims.last().copied().unwrap_or(-1);
        if classes < 0 {
            let reason = format!("output '{}' has no fixed class count to check the labels against", p.name);
            return Err(TritonError::LabelsRefused { what, reason });
        }
        if labels.len() as i64 != classes {
            let reason = format!("{} labels, but output '{}' has {classes} classes", labels.len(), p.name);
            return Err(TritonError::LabelsRefused { what, reason });
        }
        output[class].label_filename = Some(LABELS_FILE.into());
    }
    let dynamic_batching = (o.max_batch > 0).then_some(DynamicBatching { preferred_batch_size: preferred, max_queue_delay_microseconds: o.queue_delay_us });
    let config = ModelConfig { name, max_batch_size: o.max_batch, input, output, dynamic_batching, instances: o.instances, parameters };
    Ok(Entry { config, labels })
}

fn list<T: fmt::Display>(v: &[T]) -> String {
    if v.is_empty() {
        "[ ]".into()
    } else {
        format!("[ {} ]", v.iter().map(T::to_string).collect::<Vec<_>>().join(", "))
    }
}

impl ModelConfig {
    /// The configuration as `config.pbtxt` (protobuf text format of Triton's `ModelConfig`); the same
    /// configuration always gives the same text.
    pub fn to_pbtxt(&self) -> String {
        let mut s = String::new();
        let w = &mut s;
        let _ = writeln!(w, "name: {}", text_string(&self.name));
        let _ = writeln!(w, "platform: {}", text_string(PLATFORM));
        let _ = writeln!(w, "backend: {}", text_string(BACKEND));
        let _ = writeln!(w, "max_batch_size: {}", self.max_batch_size);
        for (field, tensors) in [("input", &self.input), ("output", &self.output)] {
            let _ = writeln!(w, "{field} [");
            for (i, t) in tensors.iter().enumerate() {
                let _ = writeln!(w, "  {{");
                let _ = writeln!(w, "    name: {}", text_string(&t.name));
                let _ = writeln!(w, "    data_type: {}", t.data_type);
                let _ = writeln!(w, "    dims: {}", list(&t.dims));
                if let Some(shape) = &t.reshape {
                    let _ = writeln!(w, "    reshape {{ shape: {} }}", list(shape));
                }
                if let Some(l) = &t.label_filename {
                    let _ = writeln!(w, "    label_filename: {}", text_string(l));
                }
                let _ = writeln!(w, "  }}{}", if i + 1 < tensors.len() { "," } else { "" });
            }
            let _ = writeln!(w, "]");
        }
        if let Some(d) = &self.dynamic_batching {
            let _ = writeln!(w, "dynamic_batching {{");
            if !d.preferred_batch_size.is_empty() {
                let _ = writeln!(w, "  preferred_batch_size: {}", list(&d.preferred_batch_size));
            }
            let _ = writeln!(w, "  max_queue_delay_microseconds: {}", d.max_queue_delay_microseconds);
            let _ = writeln!(w, "}}");
        }
        let _ = writeln!(w, "instance_group [");
        let _ = writeln!(w, "  {{");
        let _ = writeln!(w, "    count: {}", self.instances);
        let _ = writeln!(w, "    kind: KIND_AUTO");
        let _ = writeln!(w, "  }}");
        let _ = writeln!(w, "]");
        for (k, v) in &self.parameters {
            let _ = writeln!(w, "parameters {{");
            let _ = writeln!(w, "  key: {}", text_string(k));
            let _ = writeln!(w, "  value: {{ string_value: {} }}", text_string(v));
            let _ = writeln!(w, "}}");
        }
        s
    }
}

/// What [`write`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub name: String,
    pub version: u64,
    /// `REPOSITORY/NAME`.
    pub dir: PathBuf,
    pub config: PathBuf,
    pub model: PathBuf,
    /// False when the version folder already held the same bytes.
    pub model_copied: bool,
    pub source: PathBuf,
    /// `labels.txt`, how many labels and where they came from.
    pub labels: Option<(PathBuf, usize, LabelSource)>,
    pub max_batch_size: u32,
    pub instances: u32,
}

impl fmt::Display for Written {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let batching = if self.max_batch_size == 0 { "no batching".to_string() } else { format!("max_batch_size {}", self.max_batch_size) };
        let inst = if self.instances == 1 { "1 instance".to_string() } else { format!("{} instances", self.instances) };
        writeln!(f, "Triton model '{}' version {} in {} ({batching}, {inst}, {PLATFORM})", self.name, self.version, self.dir.display())?;
        writeln!(f, "wrote {}", self.config.display())?;
        if self.model_copied {
            write!(f, "wrote {} (copy of {})", self.model.display(), self.source.display())?;
        } else {
            write!(f, "kept  {} (the same bytes as {})", self.model.display(), self.source.display())?;
        }
        if let Some((path, n, from)) = &self.labels {
            let from = match from {
                LabelSource::Metadata => "from the file's metadata".to_string(),
                LabelSource::File(p) => format!("from {}", p.display()),
            };
            write!(f, "\nwrote {} ({n} labels, {from})", path.display())?;
        }
        Ok(())
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TritonError + '_ {
    move |source| TritonError::Io { path: path.into(), source }
}

/// Reads `o.model` and writes its entry into `o.repository`: `NAME/config.pbtxt` and `NAME/labels.txt`
/// (replaced), `NAME/VERSION/model.onnx` (refused when a different file is there). Everything is
/// checked before the first file is written.
pub fn write(o: &TritonOptions) -> Result<Written> {
    let bytes = std::fs::read(&o.model).map_err(io(&o.model))?;
    let model = ModelProto::parse_from_bytes(&bytes).map_err(|source| TritonError::Decode { path: o.model.clone(), source })?;
    let e = entry(&model, &o.model, o)?;
    let dir = o.repository.join(&e.config.name);
    let version_dir = dir.join(o.version.to_string());
    let model_path = version_dir.join(MODEL_FILE);
    let model_copied = match std::fs::read(&model_path) {
        Ok(old) if old == bytes => false,
        Ok(_) => return Err(TritonError::Exists { path: model_path, from: o.model.clone() }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => true,
        Err(err) => return Err(TritonError::Io { path: model_path, source: err }),
    };
    std::fs::create_dir_all(&version_dir).map_err(io(&version_dir))?;
    if model_copied {
        std::fs::write(&model_path, &bytes).map_err(io(&model_path))?;
    }
    let labels = match e.labels {
        Some((labels, from)) => {
            let path = dir.join(LABELS_FILE);
            data::labels::write(&path, &labels)?;
            Some((path, labels.len(), from))
        }
        None => None,
    };
    let config = dir.join(CONFIG_FILE);
    std::fs::write(&config, e.config.to_pbtxt()).map_err(io(&config))?;
    Ok(Written {
        name: e.config.name.clone(),
        version: o.version,
        dir,
        config,
        model: model_path,
        model_copied,
        source: o.model.clone(),
        labels,
        max_batch_size: e.config.max_batch_size,
        instances: e.config.instances,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use onnx_protobuf::tensor_shape_proto::Dimension;
    use onnx_protobuf::{GraphProto, StringStringEntryProto, TensorProto, TypeProto};

    fn value(name: &str, elem: DataType, dims: &[Result<i64, &str>]) -> ValueInfoProto {
        let mut t = type_proto::Tensor::new();
        t.elem_type = elem as i32;
        let shape = t.shape.mut_or_insert_default();
        for d in dims {
            let mut dim = Dimension::new();
            match d {
                Ok(v) => dim.set_dim_value(*v),
                Err("") => {}
                Err(p) => dim.set_dim_param(p.to_string()),
            }
            shape.dim.push(dim);
        }
        let mut ty = TypeProto::new();
        ty.value = Some(type_proto::Value::TensorType(t));
        let mut v = ValueInfoProto::new();
        v.name = name.into();
        v.type_ = Some(ty).into();
        v
    }

    /// Inputs `image` [N, 3, 8, 8] float, `scale` [?] double, and `w` (an initializer listed as an input);
    /// outputs `probabilities` [N, 4] float and `index` [N] int64.
    fn model() -> ModelProto {
        let mut g = GraphProto::new();
        g.input.push(value("image", DataType::FLOAT, &[Err("N"), Ok(3), Ok(8), Ok(8)]));
        g.input.push(value("scale", DataType::DOUBLE, &[Err("")]));
        g.input.push(value("w", DataType::FLOAT, &[Ok(2)]));
        g.output.push(value("probabilities", DataType::FLOAT, &[Err("N"), Ok(4)]));
        g.output.push(value("index", DataType::INT64, &[Err("batch")]));
        let mut w = TensorProto::new();
        w.name = "w".into();
        g.initializer.push(w);
        let mut m = ModelProto::new();
        m.graph = Some(g).into();
        for (k, v) in [("zeta", "last"), ("alpha", "{\"a\": [1, 2]}")] {
            let mut e = StringStringEntryProto::new();
            e.key = k.into();
            e.value = v.into();
            m.metadata_props.push(e);
        }
        m
    }

    #[test]
    fn text_strings_escape_what_the_text_format_requires_and_keep_utf8() {
        assert_eq!(text_string("plain"), "\"plain\"");
        assert_eq!(text_string(r#"{"a": "b\c"}"#), r#""{\"a\": \"b\\c\"}""#);
        assert_eq!(text_string("a\nb\rc\td"), r#""a\nb\rc\td""#);
        assert_eq!(text_string("\u{0}\u{1}\u{1b}\u{1f}\u{7f}"), r#""\000\001\033\037\177""#);
        assert_eq!(text_string("café ☕ 'x'"), "\"café ☕ 'x'\"");
        assert_eq!(text_string(""), "\"\"");
    }

    #[test]
    fn onnx_types_map_to_tritons() {
        let cases = [
            (DataType::FLOAT, "TYPE_FP32"),
            (DataType::DOUBLE, "TYPE_FP64"),
            (DataType::FLOAT16, "TYPE_FP16"),
            (DataType::INT64, "TYPE_INT64"),
            (DataType::INT32, "TYPE_INT32"),
            (DataType::UINT8, "TYPE_UINT8"),
            (DataType::INT8, "TYPE_INT8"),
            (DataType::BOOL, "TYPE_BOOL"),
            (DataType::STRING, "TYPE_STRING"),
            (DataType::BFLOAT16, "TYPE_BF16"),
        ];
        for (onnx, triton) in cases {
            assert_eq!(triton_type(onnx as i32), Some(triton), "{onnx:?}");
        }
        assert_eq!(triton_type(DataType::COMPLEX64 as i32), None);
        assert_eq!(triton_type(DataType::UNDEFINED as i32), None);
        assert_eq!(triton_type(999), None);
    }

    #[test]
    fn names_are_one_folder_name() {
        assert_eq!(default_name(Path::new("out/mini vgg+1.onnx")).unwrap(), "mini_vgg_1");
        assert_eq!(default_name(Path::new("a/resnet-18.v2.onnx")).unwrap(), "resnet-18.v2");
        assert!(default_name(Path::new("/")).is_err());
        for bad in ["", ".", "..", "a/b", "..\\x", "a b"] {
            let e = check_name(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("--name '{bad}'")), "{e}");
        }
        check_name("model_1.a-b").unwrap();
    }

    #[test]
    fn batched_dims_drop_the_batch_and_unbatched_keep_the_shape() {
        let path = Path::new("m.onnx");
        let e = entry(&model(), path, &TritonOptions::new(path, "repo")).unwrap();
        let c = &e.config;
        assert_eq!(c.name, "m");
        let ins: Vec<_> = c.input.iter().map(|t| (t.name.as_str(), t.data_type, t.dims.clone())).collect();
        // `scale` has no known first dimension: a dynamic batch dim, and nothing after it
        assert_eq!(ins, [("image", "TYPE_FP32", vec![3, 8, 8]), ("scale", "TYPE_FP64", vec![1])]);
        assert_eq!(c.input[1].reshape, Some(vec![]));
        assert_eq!(c.output[0].dims, [4]);
        assert_eq!(c.output[1].data_type, "TYPE_INT64");
        assert_eq!(c.dynamic_batching, Some(DynamicBatching { preferred_batch_size: vec![], max_queue_delay_microseconds: 100 }));
        assert_eq!(e.labels, None);

        let o = TritonOptions { max_batch: 0, ..TritonOptions::new(path, "repo") };
        let c = entry(&model(), path, &o).unwrap().config;
        assert_eq!(c.input[0].dims, [-1, 3, 8, 8]);
        assert_eq!((c.input[1].dims.clone(), c.input[1].reshape.clone()), (vec![-1], None));
        assert_eq!(c.dynamic_batching, None);
        assert!(!c.to_pbtxt().contains("dynamic_batching"));
    }

    #[test]
    fn the_text_is_deterministic_with_sorted_parameters() {
        let path = Path::new("m.onnx");
        let o = TritonOptions { preferred_batch: vec![8, 2, 8], instances: 2, ..TritonOptions::new(path, "repo") };
        let text = entry(&model(), path, &o).unwrap().config.to_pbtxt();
        assert_eq!(text, entry(&model(), path, &o).unwrap().config.to_pbtxt());
        assert!(text.contains("  preferred_batch_size: [ 2, 8 ]\n  max_queue_delay_microseconds: 100\n"), "{text}");
        assert!(text.contains("    dims: [ 3, 8, 8 ]\n"), "{text}");
        assert!(text.contains("    count: 2\n    kind: KIND_AUTO\n"), "{text}");
        let alpha = text.find("key: \"alpha\"").unwrap();
        assert!(alpha < text.find("key: \"zeta\"").unwrap(), "{text}");
        assert!(text.contains(r#"value: { string_value: "{\"a\": [1, 2]}" }"#), "{text}");
        assert!(text.starts_with("name: \"m\"\nplatform: \"onnxruntime_onnx\"\nbackend: \"onnxruntime\"\nmax_batch_size: 8\n"), "{text}");
    }

    #[test]
    fn refuses_what_triton_would_not_serve() {
        let path = Path::new("m.onnx");
        let base = TritonOptions::new(path, "repo");
        let err = |o: TritonOptions, m: &ModelProto| entry(m, path, &o).unwrap_err().to_string();
        let e = err(TritonOptions { preferred_batch: vec![4, 16], ..base.clone() }, &model());
        assert!(e.contains("--preferred-batch 16") && e.contains("--max-batch 8"), "{e}");
        let e = err(TritonOptions { preferred_batch: vec![1], max_batch: 0, ..base.clone() }, &model());
        assert!(e.contains("--preferred-batch 1") && e.contains("--max-batch 0"), "{e}");
        assert!(err(TritonOptions { version: 0, ..base.clone() }, &model()).contains("--version 0"));
        assert!(err(TritonOptions { instances: 0, ..base.clone() }, &model()).contains("--instances 0"));

        let mut fixed = model();
        fixed.graph.mut_or_insert_default().output[1] = value("index", DataType::INT64, &[Ok(1)]);
        let e = err(base.clone(), &fixed);
        assert!(e.contains("output 'index' has the fixed first dimension 1") && e.contains("--max-batch 0"), "{e}");
        entry(&fixed, path, &TritonOptions { max_batch: 0, ..base.clone() }).unwrap();

        let mut complex = model();
        complex.graph.mut_or_insert_default().input[0] = value("image", DataType::COMPLEX64, &[Err("N")]);
        let e = err(base.clone(), &complex);
        assert!(e.contains("input 'image'") && e.contains("COMPLEX64"), "{e}");
    }
}
