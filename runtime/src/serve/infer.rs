//! One inference request, whichever front end it came through: checked against the model's declared
//! inputs (names, datatypes, shapes, batch size) before it is queued, encoded images decoded and
//! preprocessed server-side with the model's own metadata (the code `runtime predict` uses), and the
//! requested outputs picked, with Triton's classification extension applied.

use std::time::Instant;

use super::repository::ServedModel;
use super::scheduler::Job;
use super::tensor::{Data, DataType, Tensor};
use super::{printable, ApiError};

/// An output the client asked for.
#[derive(Debug, Clone, Default)]
pub struct RequestedOutput {
    pub name: String,
    /// `parameters.classification = K`: the top K classes as BYTES `"score:index:label"`.
    pub classification: Option<usize>,
    /// HTTP only: `parameters.binary_data` (None: the request's `binary_data_output`).
    pub binary: Option<bool>,
}

/// A request in protocol-neutral form.
#[derive(Debug, Clone, Default)]
pub struct InferRequest {
    pub id: String,
    pub inputs: Vec<Tensor>,
    /// Empty: every output of the model.
    pub outputs: Vec<RequestedOutput>,
}

/// An answered output, with what was asked of it.
#[derive(Debug, Clone)]
pub struct InferOutput {
    pub tensor: Tensor,
    pub binary: Option<bool>,
}

/// Runs `req` on `model`, recording the request in the model's statistics.
pub async fn infer(model: &ServedModel, req: InferRequest) -> Result<Vec<InferOutput>, ApiError> {
    let start = Instant::now();
    let result = run(model, req).await;
    model.scheduler.record_request(result.is_ok(), start.elapsed());
    result
}

async fn run(model: &ServedModel, req: InferRequest) -> Result<Vec<InferOutput>, ApiError> {
    let wanted = check_outputs(model, &req.outputs)?;
    let (inputs, rows) = check_inputs(model, req.inputs).await?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    // the queue (and the batching delay) starts now, after any image decoding, as Triton counts it
    model.scheduler.submit(Job { inputs, rows, enqueued: Instant::now(), reply: tx })?;
    let outputs = rx.await.map_err(|_| ApiError::Internal(format!("model '{}': the worker stopped before answering", model.name)))??;
    wanted
        .into_iter()
        .map(|(i, o)| {
            let t = outputs[i].clone();
            let tensor = match o.classification {
                Some(k) => classify(model, &t, k)?,
                None => t,
            };
            Ok(InferOutput { tensor, binary: o.binary })
        })
        .collect()
}

/// The requested outputs as (index among the model's outputs, request); all of them when none is named.
fn check_outputs(model: &ServedModel, requested: &[RequestedOutput]) -> Result<Vec<(usize, RequestedOutput)>, ApiError> {
    if requested.is_empty() {
        return Ok((0..model.outputs.len()).map(|i| (i, RequestedOutput { name: model.outputs[i].name.clone(), ..Default::default() })).collect());
    }
    let mut out = Vec::with_capacity(requested.len());
    for (n, r) in requested.iter().enumerate() {
        let i = model.outputs.iter().position(|o| o.name == r.name).ok_or_else(|| {
            let names: Vec<&str> = model.outputs.iter().map(|o| o.name.as_str()).collect();
            ApiError::bad(format!("unknown output '{}' of model '{}' (its outputs: {})", printable(&r.name), model.name, names.join(", ")))
        })?;
        if requested[..n].iter().any(|p| p.name == r.name) {
            return Err(ApiError::bad(format!("output '{}' is requested twice", r.name)));
        }
        if r.classification == Some(0) {
            return Err(ApiError::bad(format!("output '{}': classification must be at least 1", r.name)));
        }
        if r.classification.is_some() && !matches!(model.outputs[i].datatype, DataType::Fp32) {
            return Err(ApiError::bad(format!("output '{}' is {}: classification needs FP32 scores", r.name, model.outputs[i].datatype)));
        }
        out.push((i, r.clone()));
    }
    Ok(out)
}

/// Puts the inputs in the model's order, decodes encoded images, and checks every datatype and shape;
/// returns them with the request's row count.
async fn check_inputs(model: &ServedModel, given: Vec<Tensor>) -> Result<(Vec<Tensor>, usize), ApiError> {
    let mut slots: Vec<Option<Tensor>> = vec![None; model.inputs.len()];
    for t in given {
        let i = model.inputs.iter().position(|s| s.name == t.name).ok_or_else(|| {
            let names: Vec<&str> = model.inputs.iter().map(|s| s.name.as_str()).collect();
            ApiError::bad(format!("unknown input '{}' of model '{}' (its inputs: {})", printable(&t.name), model.name, names.join(", ")))
        })?;
        if slots[i].is_some() {
            return Err(ApiError::bad(format!("input '{}' is given twice", t.name)));
        }
        slots[i] = Some(t);
    }
    let mut inputs = Vec::with_capacity(slots.len());
    for (i, slot) in slots.into_iter().enumerate() {
        let spec = &model.inputs[i];
        let t = slot.ok_or_else(|| ApiError::bad(format!("input '{}' of model '{}' is missing", spec.name, model.name)))?;
        let t = match (&model.image, t.datatype) {
            (Some((img, pre)), DataType::Bytes) if *img == i && spec.datatype != DataType::Bytes => decode_images(t, pre.clone()).await?,
            _ => t,
        };
        if t.datatype != spec.datatype {
            let hint = if t.datatype == DataType::Bytes {
                "; encoded images need a model with dlcv preprocessing metadata"
            } else if model.image.as_ref().is_some_and(|(img, _)| *img == i) {
                "; or send encoded JPEG/PNG images as BYTES of shape [N]"
            } else {
                ""
            };
            return Err(ApiError::bad(format!("input '{}': datatype {} but model '{}' expects {}{hint}", t.name, t.datatype, model.name, spec.datatype)));
        }
        let want = model.request_shape(spec);
        let fits = t.shape.len() == want.len() && t.shape.iter().zip(&want).all(|(&g, &w)| w < 0 || g as i64 == w);
        if !fits {
            return Err(ApiError::bad(format!("input '{}': shape {:?} but model '{}' expects {want:?} (-1: any size)", t.name, t.shape, model.name)));
        }
        inputs.push(t);
    }
    let rows = if model.max_batch > 0 {
        let rows = inputs[0].shape[0];
        if let Some(t) = inputs.iter().find(|t| t.shape[0] != rows) {
            return Err(ApiError::bad(format!("input '{}' has batch size {} but input '{}' has {rows}", t.name, t.shape[0], inputs[0].name)));
        }
        if rows == 0 || rows > model.max_batch {
            return Err(ApiError::bad(format!("batch size {rows} of model '{}' must be between 1 and its max_batch_size {}", model.name, model.max_batch)));
        }
        rows
    } else {
        1
    };
    Ok((inputs, rows))
}

/// BYTES `[N]` (or `[N, 1]`) of encoded JPEG/PNG images → the model's FP32 input `[N, …]`, decoded and
/// preprocessed as `runtime predict` does, on a blocking thread.
async fn decode_images(t: Tensor, pre: crate::preprocess::Preprocess) -> Result<Tensor, ApiError> {
    let Data::Bytes(images) = t.data else { return Err(ApiError::Internal("BYTES tensor without elements".into())) };
    if !(t.shape.len() == 1 || (t.shape.len() == 2 && t.shape[1] == 1)) {
        return Err(ApiError::bad(format!("input '{}': encoded images come as BYTES of shape [N] or [N, 1], not {:?}", t.name, t.shape)));
    }
    let name = t.name;
    tokio::task::spawn_blocking(move || {
        let n = images.len();
        let per = pre.sample_len();
        let mut out = vec![0f32; n * per];
        for (i, (img, dst)) in images.iter().zip(out.chunks_mut(per)).enumerate() {
            crate::images::decode_into(img, &pre, dst).map_err(|e| ApiError::bad(format!("input '{name}': element {i} is not a usable image: {e}")))?;
        }
        Ok(Tensor::from_f32(&name, pre.shape(n).to_vec(), &out))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("image decoding stopped: {e}")))?
}

/// Triton's classification extension: per row of `scores` (`[N, C]`, or `[C]` unbatched), the top `k`
/// classes as `"score:index:label"` (`"score:index"` without labels), highest first.
fn classify(model: &ServedModel, scores: &Tensor, k: usize) -> Result<Tensor, ApiError> {
    let values = scores.f32s().ok_or_else(|| ApiError::Internal(format!("output '{}' is not FP32", scores.name)))?;
    let classes = *scores.shape.last().unwrap_or(&0);
    if classes == 0 {
        return Err(ApiError::bad(format!("output '{}' has no classes to rank", scores.name)));
    }
    let k = k.min(classes);
    let labels = model.labels.get(&scores.name);
    let rows = values.len() / classes;
    let mut elements = Vec::with_capacity(rows * k);
    for row in values.chunks(classes) {
        for (i, score) in data::metrics::top_k(row, k) {
            let s = match labels.and_then(|l| l.get(i)) {
                Some(label) => format!("{score:.6}:{i}:{label}"),
                None => format!("{score:.6}:{i}"),
            };
            elements.push(s.into_bytes());
        }
    }
    let mut shape = scores.shape.clone();
    *shape.last_mut().expect("checked non-empty") = k;
    Ok(Tensor { name: scores.name.clone(), datatype: DataType::Bytes, shape, data: Data::Bytes(elements) })
}
