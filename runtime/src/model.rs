//! A model handle: an ONNX Runtime session plus everything needed to feed it images and read its
//! answer (preprocessing, labels), from the file's metadata ([`ModelMeta`]) or from flags.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use models::meta::ModelMeta;
use ort::session::Session;

use ort::value::{TensorElementType, TensorRef, ValueType};

use crate::engine::{metadata_props, open_session, Provider, RuntimeError, SessionOptions};
use crate::preprocess::{Preprocess, PreprocessArgs};

/// An opened model, ready to run batches of preprocessed images.
pub struct Model {
    pub path: PathBuf,
    pub provider: Provider,
    session: Session,
    pub input_name: String,
    /// The input's dimensions as the file declares them (-1: dynamic).
    pub input_dims: Vec<i64>,
    /// The output read as class scores: `probabilities` when the file has it, else its first output.
    pub output_name: String,
    pub preprocess: Preprocess,
    /// One label per class, in output order.
    pub labels: Vec<String>,
    /// Every `metadata_props` entry of the file.
    pub metadata: HashMap<String, String>,
    /// What the file says about itself, when it is one of our exports.
    pub meta: Option<ModelMeta>,
    /// Whether the output needs a softmax to be probabilities (decided on the first batch when unknown).
    softmax: Option<bool>,
}

fn dims_text(d: &[i64]) -> String {
    let v: Vec<String> = d.iter().map(|&x| if x < 0 { "N".to_string() } else { x.to_string() }).collect();
    format!("[{}]", v.join(", "))
}

impl Model {
    /// Opens `path` on the provider in `opts`; preprocessing from the file's metadata with `args` laid over it.
    pub fn open(path: &Path, opts: &SessionOptions, args: &PreprocessArgs) -> Result<Self, RuntimeError> {
        Self::from_session(path, opts.provider, open_session(path, opts)?, args)
    }

    /// The model of a session already opened from `path` on `provider`.
    pub fn from_session(path: &Path, provider: Provider, session: Session, args: &PreprocessArgs) -> Result<Self, RuntimeError> {
        let err = |reason: String| RuntimeError::Model { path: path.to_path_buf(), reason };
        let metadata = metadata_props(&session).map_err(&err)?;
        let meta = ModelMeta::from_props(&metadata).map_err(|e| err(e.to_string()))?;
        let preprocess = Preprocess::resolve(meta.as_ref().map(Preprocess::from_meta), args).map_err(&err)?;

        let [input] = session.inputs() else {
            return Err(err(format!("has {} inputs; an image model has exactly one", session.inputs().len())));
        };
        let input_name = input.name().to_string();
        let ValueType::Tensor { ty, shape, .. } = input.dtype() else {
            return Err(err(format!("input '{input_name}' is {}, not a tensor", input.dtype())));
        };
        let input_dims: Vec<i64> = shape.iter().copied().collect();
        if *ty != TensorElementType::Float32 {
            return Err(err(format!("input '{input_name}' is {ty:?} {}; the runtime feeds float32 images", dims_text(&input_dims))));
        }
        let want: Vec<i64> = preprocess.shape(1).iter().map(|&d| d as i64).collect();
        let fits = input_dims.len() == 4 && input_dims.iter().zip(&want).skip(1).all(|(&m, &p)| m < 0 || m == p);
        if !fits {
            return Err(err(format!(
                "input '{input_name}' expects {} but the preprocessing ({preprocess}) gives {}: set --size WxH, --layout and --gray to match the model",
                dims_text(&input_dims),
                dims_text(&[-1, want[1], want[2], want[3]]),
            )));
        }
        let output = session
            .outputs()
            .iter()
            .find(|o| o.name() == "probabilities")
            .or(session.outputs().first())
            .ok_or_else(|| err("the model has no output".into()))?;
        let output_name = output.name().to_string();
        let classes = output.dtype().tensor_shape().and_then(|s| s.last().copied()).filter(|&k| k > 0);
        // our exports write probabilities; anyone else's output is checked on the first batch
        let softmax = match (output_name.as_str(), &meta) {
            ("probabilities", _) | (_, Some(_)) => Some(false),
            _ => None,
        };
        let labels = match (&args.labels, meta.as_ref().map(|m| &m.labels).filter(|l| !l.is_empty())) {
            (Some(file), _) => data::labels::read(file).map_err(|e| err(e.to_string()))?,
            (None, Some(labels)) => labels.clone(),
            (None, None) => (0..classes.unwrap_or(0)).map(|i| i.to_string()).collect(),
        };
        if let Some(k) = classes {
            if !labels.is_empty() && labels.len() != k as usize {
                return Err(err(format!("output '{output_name}' has {k} classes but there are {} labels", labels.len())));
            }
        }
        Ok(Self { path: path.to_path_buf(), provider, session, input_name, input_dims, output_name, preprocess, labels, metadata, meta, softmax })
    }

    /// Number of classes (known from the labels, or after the first batch).
    pub fn num_classes(&self) -> usize {
        self.labels.len()
    }

    /// The label of class `i`.
    pub fn label(&self, i: usize) -> &str {
        self.labels.get(i).map_or("?", String::as_str)
    }

    /// Runs `n` preprocessed samples (`n * sample_len()` floats) and returns `n * classes` probabilities.
    pub fn run(&mut self, data: &[f32], n: usize) -> Result<Vec<f32>, RuntimeError> {
        let err = |reason: String| RuntimeError::Model { path: self.path.clone(), reason };
        let shape = self.preprocess.shape(n);
        if data.len() != shape.iter().product::<usize>() {
            return Err(err(format!("input '{}': {} floats for shape {shape:?}", self.input_name, data.len())));
        }
        let tensor = TensorRef::from_array_view((shape, data)).map_err(|e| err(e.to_string()))?;
        let outputs = self.session.run(ort::inputs![self.input_name.as_str() => tensor]).map_err(|e| err(format!("inference failed: {e}")))?;
        let (oshape, values) =
            outputs[self.output_name.as_str()].try_extract_tensor::<f32>().map_err(|e| err(format!("output '{}': {e}", self.output_name)))?;
        if oshape.len() != 2 || oshape[0] as usize != n {
            return Err(err(format!("output '{}' has shape {oshape:?}; expected [{n}, classes]", self.output_name)));
        }
        let k = oshape[1] as usize;
        let mut probs = values.to_vec();
        drop(outputs);
        if self.labels.is_empty() {
            self.labels = (0..k).map(|i| i.to_string()).collect();
        }
        if k != self.labels.len() {
            return Err(err(format!("output '{}' has {k} classes but there are {} labels", self.output_name, self.labels.len())));
        }
        let softmax = *self
            .softmax
            .get_or_insert_with(|| !probs.chunks(k).all(|r| r.iter().all(|&p| (0.0..=1.0).contains(&p)) && (r.iter().sum::<f32>() - 1.0).abs() < 1e-3));
        if softmax {
            probs.chunks_mut(k).for_each(softmax_in_place);
        }
        Ok(probs)
    }
}

/// One row of scores: written once, in `data::metrics`; kept here under their old paths.
pub use data::metrics::{softmax_in_place, top_k};
