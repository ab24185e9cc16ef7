//! `runtime doctor`: which ONNX Runtime is loaded, which providers it has, and (with a model) a real
//! inference on the requested provider with zero-filled inputs.

use std::path::Path;

use ort::value::{Tensor, ValueType};
use serde::Serialize;

use crate::engine::{self, Provider, RuntimeError, SessionOptions};

#[derive(Debug, Serialize)]
pub struct Report {
    pub library: String,
    pub build_info: String,
    pub providers: Vec<&'static str>,
    pub provider: String,
    /// What running the model did, when one was given.
    #[serde(serialize_with = "models::cli::serialize_opt_check")]
    pub model: Option<Result<Vec<String>, String>>,
}

/// Loads ONNX Runtime, lists its providers and, when `model` is given, runs it once on `provider`.
pub fn run(provider: Provider, model: Option<&Path>) -> Result<Report, RuntimeError> {
    engine::environment()?;
    Ok(Report {
        library: engine::library_path()?.display().to_string(),
        build_info: ort::info().to_string(),
        providers: engine::compiled_providers()?,
        provider: provider.to_string(),
        model: model.map(|m| probe(m, provider).map_err(|e| e.to_string())),
    })
}

/// One inference with every input zero-filled (dynamic dimensions set to 1); returns one line per output.
fn probe(path: &Path, provider: Provider) -> Result<Vec<String>, RuntimeError> {
    let err = |reason: String| RuntimeError::Model { path: path.to_path_buf(), reason };
    let mut session = engine::open_session(path, &SessionOptions { provider, ..Default::default() })?;
    let mut inputs = Vec::new();
    for input in session.inputs() {
        let ValueType::Tensor { ty, shape, .. } = input.dtype() else {
            return Err(err(format!("input '{}' is {}, not a tensor", input.name(), input.dtype())));
        };
        if *ty != ort::value::TensorElementType::Float32 {
            return Err(err(format!("input '{}' has element type {ty}; the probe feeds float32 only", input.name())));
        }
        let dims: Vec<i64> = shape.iter().map(|&d| if d < 0 { 1 } else { d }).collect();
        let n = dims.iter().product::<i64>() as usize;
        let tensor = Tensor::from_array((dims, vec![0f32; n])).map_err(|e| err(format!("input '{}': {e}", input.name())))?;
        inputs.push((input.name().to_string(), tensor.into_dyn()));
    }
    let outputs = session.run(inputs).map_err(|e| err(format!("inference failed: {e}")))?;
    let mut lines = Vec::new();
    for (name, value) in outputs.iter() {
        let line = match value.try_extract_tensor::<f32>() {
            Ok((shape, data)) => {
                let finite = data.iter().all(|v| v.is_finite());
                format!("{name}: shape {shape}, {} values, all finite: {finite}", data.len())
            }
            Err(_) => format!("{name}: {}", value.dtype()),
        };
        lines.push(line);
    }
    Ok(lines)
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "onnxruntime     {}", self.library)?;
        writeln!(f, "build           {}", self.build_info)?;
        write!(f, "providers       {}", self.providers.join(", "))?;
        match &self.model {
            None => Ok(()),
            Some(Ok(lines)) => {
                write!(f, "\nmodel on {:<6} ok", self.provider)?;
                lines.iter().try_for_each(|l| write!(f, "\n  {l}"))
            }
            Some(Err(e)) => write!(f, "\nmodel on {:<6} FAILED: {e}", self.provider),
        }
    }
}
