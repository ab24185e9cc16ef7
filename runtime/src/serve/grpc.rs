//! The gRPC front end: `inference.GRPCInferenceService` (tonic), the same requests as REST.
//! Inputs come in `raw_input_contents` (one entry per input, as tritonclient sends them) or in the typed
//! `contents`; numeric outputs always go out in `raw_output_contents`, the only place tritonclient reads.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::infer::{self, InferOutput, InferRequest, RequestedOutput};
use super::proto::pb::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use super::proto::pb::{self, infer_parameter::ParameterChoice, InferTensorContents};
use super::tensor::{byte_len, element_count, Data, DataType, Tensor};
use super::{printable, ApiError, ServeError, Server};

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        let msg = e.to_string();
        match e {
            ApiError::NotFound(_) => Status::not_found(msg),
            ApiError::BadRequest(_) => Status::invalid_argument(msg),
            ApiError::Unavailable(_) => Status::unavailable(msg),
            ApiError::Internal(_) => Status::internal(msg),
        }
    }
}

/// The service over the loaded models.
pub struct Service(pub Arc<Server>);

#[tonic::async_trait]
impl GrpcInferenceService for Service {
    async fn server_live(&self, _: Request<pb::ServerLiveRequest>) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(&self, _: Request<pb::ServerReadyRequest>) -> Result<Response<pb::ServerReadyResponse>, Status> {
        Ok(Response::new(pb::ServerReadyResponse { ready: self.0.ready() }))
    }

    async fn model_ready(&self, r: Request<pb::ModelReadyRequest>) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let r = r.into_inner();
        self.0.model(&r.name, &r.version)?;
        Ok(Response::new(pb::ModelReadyResponse { ready: self.0.ready() }))
    }

    async fn server_metadata(&self, _: Request<pb::ServerMetadataRequest>) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        Ok(Response::new(self.0.metadata()))
    }

    async fn model_metadata(&self, r: Request<pb::ModelMetadataRequest>) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let r = r.into_inner();
        let m = self.0.model(&r.name, &r.version)?;
        Ok(Response::new(self.0.model_metadata(m)))
    }

    async fn model_infer(&self, r: Request<pb::ModelInferRequest>) -> Result<Response<pb::ModelInferResponse>, Status> {
        let r = r.into_inner();
        let model = self.0.model(&r.model_name, &r.model_version)?.clone();
        let id = r.id.clone();
        let req = match to_request(r) {
            Ok(req) => req,
            Err(e) => {
                model.scheduler.record_request(false, std::time::Duration::ZERO);
                return Err(e.into());
            }
        };
        let outputs = infer::infer(&model, req).await?;
        Ok(Response::new(to_response(&model.name, model.version, id, outputs)))
    }

    async fn model_config(&self, r: Request<pb::ModelConfigRequest>) -> Result<Response<pb::ModelConfigResponse>, Status> {
        let r = r.into_inner();
        let m = self.0.model(&r.name, &r.version)?;
        Ok(Response::new(pb::ModelConfigResponse { config: Some(m.config.clone()) }))
    }

    async fn model_statistics(&self, r: Request<pb::ModelStatisticsRequest>) -> Result<Response<pb::ModelStatisticsResponse>, Status> {
        let r = r.into_inner();
        Ok(Response::new(self.0.statistics(&r.name, &r.version)?))
    }
}

fn int_param(params: &std::collections::HashMap<String, pb::InferParameter>, key: &str, what: &str) -> Result<Option<u64>, ApiError> {
    match params.get(key).and_then(|p| p.parameter_choice.as_ref()) {
        None => Ok(None),
        Some(ParameterChoice::Int64Param(v)) => u64::try_from(*v).map(Some).map_err(|_| ApiError::bad(format!("{what}: parameter '{key}' is negative"))),
        Some(ParameterChoice::Uint64Param(v)) => Ok(Some(*v)),
        Some(other) => Err(ApiError::bad(format!("{what}: parameter '{key}' must be an integer, not {other:?}"))),
    }
}

/// Typed `contents` → tensor bytes, the element count checked against the shape first.
fn from_contents(name: &str, datatype: DataType, shape: Vec<usize>, count: usize, c: InferTensorContents) -> Result<Tensor, ApiError> {
    let what = format!("input '{}'", printable(name));
    let check = |n: usize, field: &str| {
        if n == count {
            Ok(())
        } else {
            Err(ApiError::bad(format!("{what}: {n} elements in contents.{field} for shape {shape:?}, which holds {count}")))
        }
    };
    macro_rules! narrow {
        ($values:expr, $field:literal, $t:ty) => {{
            check($values.len(), $field)?;
            let mut raw = Vec::with_capacity(count * std::mem::size_of::<$t>());
            for (i, v) in $values.iter().enumerate() {
                let x = <$t>::try_from(*v).map_err(|_| ApiError::bad(format!("{what}: element {i} ({v}) does not fit {datatype}")))?;
                raw.extend_from_slice(&x.to_le_bytes());
            }
            Data::Raw(raw)
        }};
    }
    let data = match datatype {
        DataType::Fp32 => {
            check(c.fp32_contents.len(), "fp32_contents")?;
            Data::Raw(c.fp32_contents.iter().flat_map(|v| v.to_le_bytes()).collect())
        }
        DataType::Fp64 => {
            check(c.fp64_contents.len(), "fp64_contents")?;
            Data::Raw(c.fp64_contents.iter().flat_map(|v| v.to_le_bytes()).collect())
        }
        DataType::Int8 => narrow!(c.int_contents, "int_contents", i8),
        DataType::Int16 => narrow!(c.int_contents, "int_contents", i16),
        DataType::Int32 => narrow!(c.int_contents, "int_contents", i32),
        DataType::Int64 => narrow!(c.int64_contents, "int64_contents", i64),
        DataType::Uint8 => narrow!(c.uint_contents, "uint_contents", u8),
        DataType::Uint16 => narrow!(c.uint_contents, "uint_contents", u16),
        DataType::Uint32 => narrow!(c.uint_contents, "uint_contents", u32),
        DataType::Uint64 => narrow!(c.uint64_contents, "uint64_contents", u64),
        DataType::Bool => {
            check(c.bool_contents.len(), "bool_contents")?;
            Data::Raw(c.bool_contents.iter().map(|&b| u8::from(b)).collect())
        }
        DataType::Bytes => {
            check(c.bytes_contents.len(), "bytes_contents")?;
            Data::Bytes(c.bytes_contents)
        }
        DataType::Fp16 | DataType::Bf16 => return Err(ApiError::bad(format!("{what}: {datatype} must come in raw_input_contents"))),
    };
    Ok(Tensor { name: name.to_string(), datatype, shape, data })
}

fn to_request(r: pb::ModelInferRequest) -> Result<InferRequest, ApiError> {
    let raw = r.raw_input_contents;
    if !raw.is_empty() && raw.len() != r.inputs.len() {
        return Err(ApiError::bad(format!("raw_input_contents has {} entries for {} inputs; give one per input, in order", raw.len(), r.inputs.len())));
    }
    let mut inputs = Vec::with_capacity(r.inputs.len());
    for (i, input) in r.inputs.into_iter().enumerate() {
        let what = format!("input '{}'", printable(&input.name));
        let datatype = DataType::parse(&input.datatype).ok_or_else(|| ApiError::bad(format!("{what}: unknown datatype '{}'", printable(&input.datatype))))?;
        let count = element_count(&what, &input.shape)?;
        if datatype != DataType::Bytes {
            byte_len(&what, datatype, count)?;
        }
        let shape: Vec<usize> = input.shape.iter().map(|&d| d as usize).collect();
        let tensor = match (raw.get(i), input.contents) {
            (Some(bytes), None) => Tensor::from_raw(&input.name, datatype, shape, bytes)?,
            (Some(_), Some(_)) => return Err(ApiError::bad(format!("{what}: has both contents and raw_input_contents"))),
            (None, Some(c)) => from_contents(&input.name, datatype, shape, count, c)?,
            (None, None) => return Err(ApiError::bad(format!("{what}: no contents and no raw_input_contents"))),
        };
        inputs.push(tensor);
    }
    let mut outputs = vec![];
    for o in r.outputs {
        let what = format!("output '{}'", printable(&o.name));
        let classification = int_param(&o.parameters, "classification", &what)?.map(|k| k as usize);
        outputs.push(RequestedOutput { name: o.name, classification, binary: None });
    }
    Ok(InferRequest { id: r.id, inputs, outputs })
}

fn to_response(model: &str, version: u64, id: String, outputs: Vec<InferOutput>) -> pb::ModelInferResponse {
    let mut out = pb::ModelInferResponse { model_name: model.to_string(), model_version: version.to_string(), id, ..Default::default() };
    for o in outputs {
        let t = o.tensor;
        out.outputs.push(pb::model_infer_response::InferOutputTensor {
            name: t.name.clone(),
            datatype: t.datatype.as_str().into(),
            shape: t.shape.iter().map(|&d| d as i64).collect(),
            ..Default::default()
        });
        out.raw_output_contents.push(t.raw_bytes().into_owned().into());
    }
    out
}

/// Serves gRPC on `listener` until `stop` turns true; requests in flight are finished.
pub async fn serve(listener: tokio::net::TcpListener, server: Arc<Server>, mut stop: tokio::sync::watch::Receiver<bool>) -> Result<(), ServeError> {
    let limits = server.limits.clone();
    let service = GrpcInferenceServiceServer::new(Service(server)).max_decoding_message_size(limits.max_body).max_encoding_message_size(usize::MAX);
    tonic::transport::Server::builder()
        .timeout(limits.request_timeout)
        .http2_keepalive_interval(Some(limits.header_timeout))
        .add_service(service)
        .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)), async move {
            super::until_stopped(&mut stop).await;
        })
        .await
        .map_err(|e| ServeError::Grpc(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_and_typed_contents_give_the_same_tensor() {
        let input = |contents| pb::model_infer_request::InferInputTensor {
            name: "x".into(),
            datatype: "FP32".into(),
            shape: vec![1, 2],
            contents,
            ..Default::default()
        };
        let typed = pb::ModelInferRequest {
            inputs: vec![input(Some(InferTensorContents { fp32_contents: vec![1.5, -2.0], ..Default::default() }))],
            ..Default::default()
        };
        let raw = pb::ModelInferRequest {
            inputs: vec![input(None)],
            raw_input_contents: vec![[1.5f32.to_le_bytes(), (-2.0f32).to_le_bytes()].concat().into()],
            ..Default::default()
        };
        assert_eq!(to_request(typed).unwrap().inputs, to_request(raw).unwrap().inputs);
        let short =
            pb::ModelInferRequest { inputs: vec![input(Some(InferTensorContents { fp32_contents: vec![1.5], ..Default::default() }))], ..Default::default() };
        assert!(to_request(short).unwrap_err().to_string().contains("1 elements in contents.fp32_contents"));
        let mismatched = pb::ModelInferRequest { inputs: vec![input(None)], raw_input_contents: vec![vec![0u8; 4].into(); 2], ..Default::default() };
        assert!(to_request(mismatched).unwrap_err().to_string().contains("2 entries for 1 inputs"));
    }
}
