//! The ONNX Runtime library, its execution providers and sessions.
//!
//! ONNX Runtime is loaded at run time (`ort`'s `load-dynamic`) from, in order: `ORT_DYLIB_PATH`, then the
//! library recorded at build time by scripts/setup.sh. An execution provider that was asked for and cannot
//! register is an error: ONNX Runtime's own habit of falling back to the CPU silently is never ours.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::ep::{self, ExecutionProvider};
use ort::session::Session;

/// The environment variable that overrides which libonnxruntime.so is loaded.
pub const ORT_DYLIB_ENV: &str = "ORT_DYLIB_PATH";

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("no ONNX Runtime library: set {ORT_DYLIB_ENV} to a libonnxruntime.so, or run scripts/setup.sh and rebuild")]
    NoLibrary,
    #[error("ONNX Runtime library {path}: {reason}")]
    Library { path: PathBuf, reason: String },
    #[error("unknown execution provider '{0}': expected 'cpu', 'cuda' or 'cuda:N'")]
    BadProvider(String),
    #[error("execution provider {provider} is not available: {reason}")]
    ProviderUnavailable { provider: Provider, reason: String },
    #[error("model file {path}: {reason}")]
    Model { path: PathBuf, reason: String },
}

/// Where an ONNX model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Provider {
    #[default]
    Cpu,
    /// The CUDA execution provider on device N.
    Cuda(i32),
}

impl FromStr for Provider {
    type Err = RuntimeError;
    fn from_str(s: &str) -> Result<Self, RuntimeError> {
        match models::cli::parse_device_name(s) {
            Some(None) => Ok(Self::Cpu),
            Some(Some(i)) => i32::try_from(i).map(Self::Cuda).map_err(|_| RuntimeError::BadProvider(s.to_string())),
            None => Err(RuntimeError::BadProvider(s.to_string())),
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

/// The library that will be (or was) loaded, and why that one.
pub fn library_path() -> Result<PathBuf, RuntimeError> {
    if let Some(p) = std::env::var_os(ORT_DYLIB_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    option_env!("DLCV_ORT_DYLIB").map(PathBuf::from).ok_or(RuntimeError::NoLibrary)
}

static ENVIRONMENT: OnceLock<Result<(PathBuf, Environment), String>> = OnceLock::new();

/// Loads ONNX Runtime once per process and returns its environment.
pub fn environment() -> Result<&'static Environment, RuntimeError> {
    let loaded = ENVIRONMENT.get_or_init(|| {
        let path = library_path().map_err(|e| e.to_string())?;
        if !path.is_file() {
            return Err(format!("ONNX Runtime library {}: no such file", path.display()));
        }
        let env = ort::init_from(&path)
            .map_err(|e| format!("ONNX Runtime library {}: cannot load: {e}", path.display()))?
            .with_name("dlcv")
            .build()
            .map_err(|e| format!("ONNX Runtime library {}: {e}", path.display()))?;
        Ok((path, env))
    });
    match loaded {
        Ok((_, env)) => Ok(env),
        Err(reason) => Err(RuntimeError::Library { path: library_path().unwrap_or_default(), reason: reason.clone() }),
    }
}

/// Which execution providers the loaded library was built with (ONNX Runtime's own names).
pub fn compiled_providers() -> Result<Vec<&'static str>, RuntimeError> {
    environment()?;
    let mut names = vec![];
    let mut check = |name: &'static str, available: ort::Result<bool>| {
        if available.unwrap_or(false) {
            names.push(name);
        }
    };
    check(ep::CPU::NAME, ep::CPU::is_available());
    check(ep::CUDA::NAME, ep::CUDA::is_available());
    Ok(names)
}

/// How to open a session.
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    pub provider: Provider,
    /// Intra-op threads; `None` lets ONNX Runtime use every core.
    pub threads: Option<usize>,
    /// Threads of ours (decoding, capture) work while the model runs: ONNX Runtime's intra-op workers
    /// then sleep between runs instead of spinning, leaving the cores to them
    /// (`session.intra_op.allow_spinning = 0`). Off: ONNX Runtime's default, the lowest latency for
    /// back-to-back runs of the model alone.
    pub share_cores: bool,
}

/// Opens `path` on the requested provider, or says exactly why it cannot.
pub fn open_session(path: &Path, opts: &SessionOptions) -> Result<Session, RuntimeError> {
    let model_err = |reason: String| RuntimeError::Model { path: path.to_path_buf(), reason };
    if !path.is_file() {
        return Err(model_err("no such file".into()));
    }
    let env = environment()?;
    let mut builder = Session::builder(env).map_err(|e| model_err(e.to_string()))?;
    if let Some(n) = opts.threads {
        builder = builder.with_intra_threads(n).map_err(|e| model_err(e.to_string()))?;
    }
    if opts.share_cores {
        builder = builder.with_intra_op_spinning(false).map_err(|e| model_err(e.to_string()))?;
    }
    if let Provider::Cuda(device) = opts.provider {
        let unavailable = |reason: String| RuntimeError::ProviderUnavailable { provider: opts.provider, reason };
        if !ep::CUDA::is_available().unwrap_or(false) {
            return Err(unavailable(format!(
                "the ONNX Runtime library {} was built without it (install the onnxruntime-gpu wheel and point {ORT_DYLIB_ENV} at its libonnxruntime.so)",
                library_path().unwrap_or_default().display()
            )));
        }
        builder = builder
            .with_execution_providers([ep::CUDA::default().with_device_id(device).build().error_on_failure()])
            .map_err(|e| unavailable(format!("registration failed: {e}")))?;
    }
    builder.commit_from_file(path).map_err(|e| model_err(e.to_string()))
}

/// Every `metadata_props` entry of an opened model.
pub fn metadata_props(session: &Session) -> Result<std::collections::HashMap<String, String>, String> {
    let md = session.metadata().map_err(|e| format!("cannot read metadata: {e}"))?;
    let mut props = std::collections::HashMap::new();
    for key in md.custom_keys().map_err(|e| format!("cannot read metadata: {e}"))? {
        if let Some(v) = md.custom(&key) {
            props.insert(key, v);
        }
    }
    Ok(props)
}

/// One float32 output of a model: its name, shape and values.
pub type Output = (String, Vec<usize>, Vec<f32>);

/// Runs `path` once on a float32 `[N, C, H, W]` (or any shape) input and returns every float output.
pub fn infer(path: &Path, opts: &SessionOptions, data: Vec<f32>, shape: &[usize]) -> Result<Vec<Output>, RuntimeError> {
    let model_err = |reason: String| RuntimeError::Model { path: path.to_path_buf(), reason };
    let mut session = open_session(path, opts)?;
    let input = session.inputs().first().map(|i| i.name().to_string()).ok_or_else(|| model_err("the model has no input".into()))?;
    let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    let tensor = ort::value::Tensor::from_array((dims, data)).map_err(|e| model_err(e.to_string()))?;
    let outputs = session.run(ort::inputs![input.as_str() => tensor]).map_err(|e| model_err(format!("inference failed: {e}")))?;
    let mut result = vec![];
    for (name, value) in outputs.iter() {
        let (shape, values) = value.try_extract_tensor::<f32>().map_err(|e| model_err(format!("output '{name}': {e}")))?;
        result.push((name.to_string(), shape.iter().map(|&d| d as usize).collect(), values.to_vec()));
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_providers() {
        assert_eq!("cpu".parse::<Provider>().unwrap(), Provider::Cpu);
        assert_eq!("CUDA".parse::<Provider>().unwrap(), Provider::Cuda(0));
        assert_eq!("cuda:1".parse::<Provider>().unwrap(), Provider::Cuda(1));
        for bad in ["cuda:-1", "tensorrt", "cuda:", ""] {
            assert!(matches!(bad.parse::<Provider>(), Err(RuntimeError::BadProvider(_))), "{bad}");
        }
    }
}
