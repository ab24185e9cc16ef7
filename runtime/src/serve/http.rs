//! The REST front end: the Open Inference Protocol's HTTP API with Triton's binary tensor extension.
//!
//! `POST …/infer` bodies are JSON, or — with the `Inference-Header-Content-Length` header — a JSON header
//! followed by the binary data of each input that declares `parameters.binary_data_size`, in input order.
//! Outputs come back binary when asked (`parameters.binary_data` per output, or the request's
//! `binary_data_output`), with the same header on the response. Errors are `{"error": "…"}` with
//! Triton's status codes; every length in a request is checked against the body before use.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::{DeserializeSeed, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use super::infer::{self, InferOutput, InferRequest, RequestedOutput};
use super::proto;
use super::tensor::{element_count, Data, DataType, Tensor};
use super::{printable, ApiError, ServeError, Server};

/// Triton's header giving the length of the JSON part of a binary request or response.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(serde_json::json!({ "error": self.to_string() }))).into_response()
    }
}

fn json(v: Value) -> Response {
    axum::Json(v).into_response()
}

/// The routes, over `server`.
pub fn router(server: Arc<Server>) -> Router {
    let limit = server.limits.max_body;
    let timeout = server.limits.request_timeout;
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(|| async { StatusCode::OK }))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/stats", get(all_stats))
        .route("/v2/models/{model}", get(model_metadata))
        .route("/v2/models/{model}/versions/{version}", get(model_metadata_v))
        .route("/v2/models/{model}/ready", get(model_ready))
        .route("/v2/models/{model}/versions/{version}/ready", get(model_ready_v))
        .route("/v2/models/{model}/config", get(model_config))
        .route("/v2/models/{model}/versions/{version}/config", get(model_config_v))
        .route("/v2/models/{model}/stats", get(model_stats))
        .route("/v2/models/{model}/versions/{version}/stats", get(model_stats_v))
        .route("/v2/models/{model}/infer", post(infer_latest))
        .route("/v2/models/{model}/versions/{version}/infer", post(infer_version))
        .fallback(|uri: axum::http::Uri| async move { ApiError::NotFound(format!("no such endpoint: {}", printable(uri.path()))) })
        .layer(DefaultBodyLimit::max(limit))
        // inference answers 408 with a JSON error at the request timeout itself (below); this is the
        // backstop for anything else still unanswered a second later, such as a body trickling in
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, timeout + Duration::from_secs(1)))
        .with_state(server)
}

async fn server_metadata(State(s): State<Arc<Server>>) -> Response {
    json(proto::to_json(&s.metadata(), "inference.ServerMetadataResponse"))
}

async fn ready(State(s): State<Arc<Server>>) -> StatusCode {
    if s.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn all_stats(State(s): State<Arc<Server>>) -> Result<Response, ApiError> {
    Ok(json(proto::to_json(&s.statistics("", "")?, "inference.ModelStatisticsResponse")))
}

async fn model_metadata(State(s): State<Arc<Server>>, Path(m): Path<String>) -> Result<Response, ApiError> {
    model_metadata_v(State(s), Path((m, String::new()))).await
}
async fn model_metadata_v(State(s): State<Arc<Server>>, Path((m, v)): Path<(String, String)>) -> Result<Response, ApiError> {
    let model = s.model(&m, &v)?;
    Ok(json(proto::to_json(&s.model_metadata(model), "inference.ModelMetadataResponse")))
}

async fn model_ready(State(s): State<Arc<Server>>, Path(m): Path<String>) -> Result<StatusCode, ApiError> {
    model_ready_v(State(s), Path((m, String::new()))).await
}
async fn model_ready_v(State(s): State<Arc<Server>>, Path((m, v)): Path<(String, String)>) -> Result<StatusCode, ApiError> {
    s.model(&m, &v)?;
    Ok(if s.ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE })
}

async fn model_config(State(s): State<Arc<Server>>, Path(m): Path<String>) -> Result<Response, ApiError> {
    model_config_v(State(s), Path((m, String::new()))).await
}
async fn model_config_v(State(s): State<Arc<Server>>, Path((m, v)): Path<(String, String)>) -> Result<Response, ApiError> {
    Ok(json(proto::config_json(&s.model(&m, &v)?.config)))
}

async fn model_stats(State(s): State<Arc<Server>>, Path(m): Path<String>) -> Result<Response, ApiError> {
    model_stats_v(State(s), Path((m, String::new()))).await
}
async fn model_stats_v(State(s): State<Arc<Server>>, Path((m, v)): Path<(String, String)>) -> Result<Response, ApiError> {
    Ok(json(proto::to_json(&s.statistics(&m, &v)?, "inference.ModelStatisticsResponse")))
}

async fn infer_latest(state: State<Arc<Server>>, Path(m): Path<String>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    infer_version(state, Path((m, String::new())), headers, body).await
}

async fn infer_version(
    State(s): State<Arc<Server>>,
    Path((m, v)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let model = s.model(&m, &v)?.clone();
    // refusals of a request to a loaded model count as its failures, as in Triton's statistics
    let refuse = |status: StatusCode, msg: String| {
        model.scheduler.record_request(false, Duration::ZERO);
        (status, axum::Json(serde_json::json!({ "error": msg }))).into_response()
    };
    if let Some(enc) = headers.get(header::CONTENT_ENCODING).filter(|e| e.as_bytes() != b"identity") {
        let enc = printable(&String::from_utf8_lossy(enc.as_bytes()));
        return Ok(refuse(StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("Content-Encoding {enc}: compressed request bodies are not accepted")));
    }
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let msg = format!("request body is larger than the server's limit of {} bytes (runtime serve --max-body-mib)", s.limits.max_body);
            return Ok(refuse(StatusCode::PAYLOAD_TOO_LARGE, msg));
        }
        Err(e) => return Ok(refuse(StatusCode::BAD_REQUEST, format!("cannot read the request body: {e}"))),
    };
    let (req, binary_default) = match parse_request(&headers, &body) {
        Ok(r) => r,
        Err(e) => return Ok(refuse(StatusCode::BAD_REQUEST, e.to_string())),
    };
    let id = req.id.clone();
    let Ok(outputs) = tokio::time::timeout(s.limits.request_timeout, infer::infer(&model, req)).await else {
        let msg = format!("not answered within the request timeout of {:?} (runtime serve --request-timeout)", s.limits.request_timeout);
        return Ok(refuse(StatusCode::REQUEST_TIMEOUT, msg));
    };
    let outputs = outputs?;
    Ok(write_response(&model.name, model.version, &id, outputs, binary_default))
}

// ----------------------------------------------------------------------------------------- requests

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonRequest {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    inputs: Vec<JsonInput>,
    #[serde(default)]
    outputs: Option<Vec<JsonOutput>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonInput {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(default)]
    data: Option<FlatData>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonOutput {
    name: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

/// One element of a JSON `data` array.
#[derive(Debug, Clone, PartialEq)]
enum Scalar {
    F(f64),
    I(i64),
    U(u64),
    B(bool),
    S(String),
}

/// A JSON `data` array, nested or flat, flattened in row-major order as it is read.
struct FlatData(Vec<Scalar>);

impl<'de> Deserialize<'de> for FlatData {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut out = vec![];
        d.deserialize_any(Flatten(&mut out))?;
        Ok(FlatData(out))
    }
}

struct Flatten<'a>(&'a mut Vec<Scalar>);

impl<'de> DeserializeSeed<'de> for Flatten<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Flatten<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of numbers, booleans or strings (nested arrays are flattened)")
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.0.push(Scalar::B(v));
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.0.push(Scalar::I(v));
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.0.push(Scalar::U(v));
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.0.push(Scalar::F(v));
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        self.0.push(Scalar::S(v.to_string()));
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Flatten(self.0))?.is_some() {}
        Ok(())
    }
}

fn param_bool(p: &Option<Map<String, Value>>, key: &str, what: &str) -> Result<Option<bool>, ApiError> {
    match p.as_ref().and_then(|p| p.get(key)) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(ApiError::bad(format!("{what}: parameter '{key}' must be true or false, not {v}"))),
    }
}

fn param_uint(p: &Option<Map<String, Value>>, key: &str, what: &str) -> Result<Option<u64>, ApiError> {
    match p.as_ref().and_then(|p| p.get(key)) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| ApiError::bad(format!("{what}: parameter '{key}' must be a non-negative integer, not {v}"))),
    }
}

/// The request in `body` (JSON, or JSON + binary per `Inference-Header-Content-Length`), and whether
/// outputs are binary unless they say otherwise.
fn parse_request(headers: &HeaderMap, body: &[u8]) -> Result<(InferRequest, bool), ApiError> {
    let json_len = match headers.get(HEADER_LENGTH) {
        None => body.len(),
        Some(v) => {
            let n: usize = v.to_str().ok().and_then(|s| s.trim().parse().ok()).ok_or_else(|| {
                ApiError::bad(format!("header Inference-Header-Content-Length: {:?} is not a byte count", String::from_utf8_lossy(v.as_bytes())))
            })?;
            if n > body.len() {
                return Err(ApiError::bad(format!("header Inference-Header-Content-Length says {n} bytes of JSON but the body has only {}", body.len())));
            }
            n
        }
    };
    let (head, mut binary) = body.split_at(json_len);
    let req: JsonRequest = serde_json::from_slice(head).map_err(|e| ApiError::bad(format!("malformed request JSON: {e}")))?;
    let binary_default = param_bool(&req.parameters, "binary_data_output", "request")?.unwrap_or(false);
    let mut inputs = Vec::with_capacity(req.inputs.len());
    for input in req.inputs {
        let what = format!("input '{}'", printable(&input.name));
        let datatype = DataType::parse(&input.datatype).ok_or_else(|| ApiError::bad(format!("{what}: unknown datatype '{}'", printable(&input.datatype))))?;
        let count = element_count(&what, &input.shape)?;
        let shape: Vec<usize> = input.shape.iter().map(|&d| d as usize).collect();
        let binary_size = param_uint(&input.parameters, "binary_data_size", &what)?;
        let tensor = match (binary_size, input.data) {
            (Some(_), Some(_)) => return Err(ApiError::bad(format!("{what}: has both 'data' and parameters.binary_data_size"))),
            (Some(n), None) => {
                let n = usize::try_from(n).ok().filter(|&n| n <= binary.len()).ok_or_else(|| {
                    ApiError::bad(format!("{what}: binary_data_size {n} runs past the end of the body ({} bytes of binary data left)", binary.len()))
                })?;
                let (mine, rest) = binary.split_at(n);
                binary = rest;
                Tensor::from_raw(&input.name, datatype, shape, mine)?
            }
            (None, Some(FlatData(values))) => from_json_values(&input.name, datatype, shape, count, values)?,
            (None, None) => return Err(ApiError::bad(format!("{what}: no 'data' and no parameters.binary_data_size"))),
        };
        inputs.push(tensor);
    }
    if !binary.is_empty() {
        return Err(ApiError::bad(format!("{} bytes of binary data after the last input's binary_data_size", binary.len())));
    }
    let mut outputs = vec![];
    for o in req.outputs.unwrap_or_default() {
        let what = format!("output '{}'", printable(&o.name));
        let classification = param_uint(&o.parameters, "classification", &what)?.map(|k| k as usize);
        let binary = param_bool(&o.parameters, "binary_data", &what)?;
        outputs.push(RequestedOutput { name: o.name, classification, binary });
    }
    Ok((InferRequest { id: req.id.unwrap_or_default(), inputs, outputs }, binary_default))
}

/// JSON elements → tensor bytes, each element checked against the datatype.
fn from_json_values(name: &str, datatype: DataType, shape: Vec<usize>, count: usize, values: Vec<Scalar>) -> Result<Tensor, ApiError> {
    let what = format!("input '{}'", printable(name));
    if values.len() != count {
        return Err(ApiError::bad(format!("{what}: {} elements of data for shape {shape:?}, which holds {count}", values.len())));
    }
    let bad = |i: usize, v: &Scalar| ApiError::bad(format!("{what}: element {i} ({v:?}) is not a valid {datatype}"));
    let num = |i: usize, v: &Scalar| -> Result<f64, ApiError> {
        match *v {
            Scalar::F(x) => Ok(x),
            Scalar::I(x) => Ok(x as f64),
            Scalar::U(x) => Ok(x as f64),
            Scalar::B(_) | Scalar::S(_) => Err(bad(i, v)),
        }
    };
    let int = |i: usize, v: &Scalar| -> Result<i128, ApiError> {
        match *v {
            Scalar::I(x) => Ok(x as i128),
            Scalar::U(x) => Ok(x as i128),
            Scalar::F(_) | Scalar::B(_) | Scalar::S(_) => Err(bad(i, v)),
        }
    };
    macro_rules! ints {
        ($t:ty) => {{
            let mut raw = Vec::with_capacity(count * std::mem::size_of::<$t>());
            for (i, v) in values.iter().enumerate() {
                let x = <$t>::try_from(int(i, v)?).map_err(|_| bad(i, v))?;
                raw.extend_from_slice(&x.to_le_bytes());
            }
            Data::Raw(raw)
        }};
    }
    let data = match datatype {
        DataType::Fp32 => {
            let mut raw = Vec::with_capacity(count * 4);
            for (i, v) in values.iter().enumerate() {
                raw.extend_from_slice(&(num(i, v)? as f32).to_le_bytes());
            }
            Data::Raw(raw)
        }
        DataType::Fp64 => {
            let mut raw = Vec::with_capacity(count * 8);
            for (i, v) in values.iter().enumerate() {
                raw.extend_from_slice(&num(i, v)?.to_le_bytes());
            }
            Data::Raw(raw)
        }
        DataType::Int8 => ints!(i8),
        DataType::Int16 => ints!(i16),
        DataType::Int32 => ints!(i32),
        DataType::Int64 => ints!(i64),
        DataType::Uint8 => ints!(u8),
        DataType::Uint16 => ints!(u16),
        DataType::Uint32 => ints!(u32),
        DataType::Uint64 => ints!(u64),
        DataType::Bool => Data::Raw(
            values
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Scalar::B(b) => Ok(u8::from(*b)),
                    Scalar::F(_) | Scalar::I(_) | Scalar::U(_) | Scalar::S(_) => Err(bad(i, v)),
                })
                .collect::<Result<_, _>>()?,
        ),
        DataType::Bytes => Data::Bytes(
            values
                .into_iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Scalar::S(s) => Ok(s.into_bytes()),
                    Scalar::F(_) | Scalar::I(_) | Scalar::U(_) | Scalar::B(_) => Err(bad(i, &v)),
                })
                .collect::<Result<_, _>>()?,
        ),
        DataType::Fp16 | DataType::Bf16 => return Err(ApiError::bad(format!("{what}: {datatype} in JSON is not supported; send it as binary data"))),
    };
    Ok(Tensor { name: name.to_string(), datatype, shape, data })
}

// ---------------------------------------------------------------------------------------- responses

#[derive(Serialize)]
#[serde(untagged)]
enum OutData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    U64(Vec<u64>),
    Bool(Vec<bool>),
    Str(Vec<String>),
}

/// The elements of `t` as JSON values.
fn out_data(t: &Tensor) -> OutData {
    let Data::Raw(b) = &t.data else {
        let Data::Bytes(v) = &t.data else { unreachable!() };
        return OutData::Str(v.iter().map(|e| String::from_utf8_lossy(e).into_owned()).collect());
    };
    macro_rules! le {
        ($t:ty, $n:literal, $into:ty, $variant:ident) => {
            OutData::$variant(b.chunks_exact($n).map(|c| <$into>::from(<$t>::from_le_bytes(c.try_into().expect("chunk size")))).collect())
        };
    }
    match t.datatype {
        DataType::Fp32 => le!(f32, 4, f32, F32),
        DataType::Fp64 => le!(f64, 8, f64, F64),
        DataType::Int8 => le!(i8, 1, i64, I64),
        DataType::Int16 => le!(i16, 2, i64, I64),
        DataType::Int32 => le!(i32, 4, i64, I64),
        DataType::Int64 => le!(i64, 8, i64, I64),
        DataType::Uint8 => le!(u8, 1, u64, U64),
        DataType::Uint16 => le!(u16, 2, u64, U64),
        DataType::Uint32 => le!(u32, 4, u64, U64),
        DataType::Uint64 => le!(u64, 8, u64, U64),
        DataType::Bool => OutData::Bool(b.iter().map(|&x| x != 0).collect()),
        DataType::Fp16 | DataType::Bf16 | DataType::Bytes => OutData::Str(vec![]),
    }
}

#[derive(Serialize)]
struct BinarySize {
    binary_data_size: usize,
}

#[derive(Serialize)]
struct OutTensor<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [usize],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinarySize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<OutData>,
}

#[derive(Serialize)]
struct JsonResponse<'a> {
    model_name: &'a str,
    model_version: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    id: &'a str,
    outputs: Vec<OutTensor<'a>>,
}

/// The answer: JSON, or JSON + binary outputs (serialised from typed values, so FP32 data prints in
/// its shortest float32 form rather than widened to float64).
fn write_response(model: &str, version: u64, id: &str, outputs: Vec<InferOutput>, binary_default: bool) -> Response {
    let mut blobs: Vec<std::borrow::Cow<'_, [u8]>> = vec![];
    let mut outs = Vec::with_capacity(outputs.len());
    for o in &outputs {
        let t = &o.tensor;
        let (parameters, data) = if o.binary.unwrap_or(binary_default) {
            let raw = t.raw_bytes();
            let size = BinarySize { binary_data_size: raw.len() };
            blobs.push(raw);
            (Some(size), None)
        } else {
            (None, Some(out_data(t)))
        };
        outs.push(OutTensor { name: &t.name, datatype: t.datatype.as_str(), shape: &t.shape, parameters, data });
    }
    let head = JsonResponse { model_name: model, model_version: version.to_string(), id, outputs: outs };
    let head = serde_json::to_vec(&head).expect("a response serialises");
    if blobs.is_empty() {
        return ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], head).into_response();
    }
    let json_len = head.len();
    let mut body = head;
    blobs.iter().for_each(|b| body.extend_from_slice(b));
    let mut r = ([(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"))], body).into_response();
    r.headers_mut().insert(HEADER_LENGTH, HeaderValue::from(json_len));
    r
}

// ------------------------------------------------------------------------------------------ serving

/// Serves HTTP/1.1 (and HTTP/2 with prior knowledge) on `listener` until `stop` turns true, then lets
/// the requests in flight finish. Headers must arrive within the header timeout, also on an idle
/// keep-alive connection, so a silent client cannot hold a connection open.
pub async fn serve(listener: tokio::net::TcpListener, server: Arc<Server>, mut stop: tokio::sync::watch::Receiver<bool>) -> Result<(), ServeError> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;
    let app = router(server.clone());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(server.limits.header_timeout).keep_alive(true);
    builder.http2().timer(TokioTimer::new()).keep_alive_interval(Some(server.limits.header_timeout));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // out of file descriptors and the like: wait a moment rather than spin
                        tracing::warn!("HTTP accept: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
                let conn = graceful.watch(conn.into_owned());
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = super::until_stopped(&mut stop) => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(headers: &[(&'static str, String)], body: &[u8]) -> Result<InferRequest, ApiError> {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        parse_request(&h, body).map(|(r, _)| r)
    }

    #[test]
    fn json_data_nested_or_flat_becomes_the_same_bytes() {
        let flat = parse(&[], br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2.5,3,4]}]}"#).unwrap();
        let nested = parse(&[], br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2.5],[3,4]]}]}"#).unwrap();
        assert_eq!(flat.inputs, nested.inputs);
        assert_eq!(flat.inputs[0].f32s().unwrap(), vec![1.0, 2.5, 3.0, 4.0]);
        let e = parse(&[], br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2,3]}]}"#).unwrap_err();
        assert!(e.to_string().contains("3 elements of data for shape [2, 2], which holds 4"), "{e}");
        let e = parse(&[], br#"{"inputs":[{"name":"x","shape":[1],"datatype":"INT8","data":[300]}]}"#).unwrap_err();
        assert!(e.to_string().contains("not a valid INT8"), "{e}");
        let e = parse(&[], br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":["a"]}]}"#).unwrap_err();
        assert!(e.to_string().contains("element 0"), "{e}");
        let e = parse(&[], br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FLOAT","data":[1]}]}"#).unwrap_err();
        assert!(e.to_string().contains("unknown datatype 'FLOAT'"), "{e}");
        let e = parse(&[], br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}],"extra":1}"#).unwrap_err();
        assert!(e.to_string().contains("malformed request JSON") && e.to_string().contains("extra"), "{e}");
    }

    #[tokio::test]
    async fn json_outputs_print_float32_shortest_and_binary_outputs_follow_the_header() {
        let t = Tensor::from_f32("p", vec![1, 2], &[0.1, 0.7]);
        let body = |r: Response| async { axum::body::to_bytes(r.into_body(), usize::MAX).await.unwrap() };
        let j = body(write_response("m", 1, "x", vec![InferOutput { tensor: t.clone(), binary: None }], false)).await;
        let text = String::from_utf8(j.to_vec()).unwrap();
        assert!(text.contains("\"data\":[0.1,0.7]") && text.contains("\"id\":\"x\""), "{text}");
        let r = write_response("m", 1, "", vec![InferOutput { tensor: t, binary: Some(true) }], false);
        let len: usize = r.headers()[HEADER_LENGTH].to_str().unwrap().parse().unwrap();
        let b = body(r).await;
        let head: Value = serde_json::from_slice(&b[..len]).unwrap();
        assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 8);
        assert!(head.get("id").is_none());
        assert_eq!(&b[len..], [0.1f32.to_le_bytes(), 0.7f32.to_le_bytes()].concat().as_slice());
    }

    #[test]
    fn binary_lengths_are_checked_against_the_body() {
        let head = br#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}"#;
        let mut body = head.to_vec();
        body.extend_from_slice(&1f32.to_le_bytes());
        body.extend_from_slice(&2f32.to_le_bytes());
        let len = ("inference-header-content-length", head.len().to_string());
        let r = parse(std::slice::from_ref(&len), &body).unwrap();
        assert_eq!(r.inputs[0].f32s().unwrap(), vec![1.0, 2.0]);
        // truncated: binary_data_size runs past the end
        let e = parse(std::slice::from_ref(&len), &body[..body.len() - 1]).unwrap_err();
        assert!(e.to_string().contains("runs past the end"), "{e}");
        // a header length that lies
        let e = parse(&[("inference-header-content-length", (body.len() + 1).to_string())], &body).unwrap_err();
        assert!(e.to_string().contains("has only"), "{e}");
        // extra bytes after the declared data
        let mut longer = body.clone();
        longer.push(0);
        let e = parse(std::slice::from_ref(&len), &longer).unwrap_err();
        assert!(e.to_string().contains("1 bytes of binary data after"), "{e}");
        // a shape whose product overflows is refused before anything is allocated
        let huge = br#"{"inputs":[{"name":"x","shape":[4294967296,4294967296,16],"datatype":"FP32","parameters":{"binary_data_size":0}}]}"#;
        let e = parse(&[("inference-header-content-length", huge.len().to_string())], huge).unwrap_err();
        assert!(e.to_string().contains("more elements than can be addressed"), "{e}");
        // a shape asking for gigabytes with a few bytes of data
        let big = br#"{"inputs":[{"name":"x","shape":[1000000,1000],"datatype":"FP32","parameters":{"binary_data_size":0}}]}"#;
        let e = parse(&[("inference-header-content-length", big.len().to_string())], big).unwrap_err();
        assert!(e.to_string().contains("needs 4000000000 bytes"), "{e}");
    }
}
