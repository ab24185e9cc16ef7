//! `runtime serve`: an inference server speaking the Open Inference Protocol v2 (KServe v2 / Triton) over
//! HTTP/REST and gRPC, with Triton's extensions (model configuration, statistics, classification, binary
//! tensors), dynamic batching and Prometheus metrics, over a Triton model repository.
//!
//! - [`repository`]: loads `DIR/NAME/config.pbtxt` + `DIR/NAME/VERSION/model.onnx` with Triton's load-time rules;
//! - [`scheduler`]: per model, a bounded queue and `instance_group` workers, each owning its own session,
//!   merging requests into batches with Triton's dynamic-batching semantics; statistics;
//! - [`infer`]: one request checked against the model, encoded images decoded server-side, classification;
//! - [`http`], [`grpc`]: the two front ends; [`telemetry`]: `/metrics`;
//! - [`tensor`]: datatypes and tensor bytes; [`proto`]: the generated messages and the descriptors.

pub mod grpc;
pub mod http;
pub mod infer;
pub mod proto;
pub mod repository;
pub mod scheduler;
pub mod telemetry;
pub mod tensor;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::engine::Provider;
pub use repository::{RepositoryError, ServedModel};

/// The server's name and version in `GET /v2` and ServerMetadata.
pub const SERVER_NAME: &str = "dlcv";
/// The protocol extensions this server implements (Triton's names).
pub const EXTENSIONS: [&str; 4] = ["classification", "model_configuration", "statistics", "binary_tensor_data"];

/// How a request failed, with the status it maps to (Triton's mapping).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// Unknown model or version: HTTP 404, gRPC NOT_FOUND.
    #[error("{0}")]
    NotFound(String),
    /// Anything wrong with the request: HTTP 400, gRPC INVALID_ARGUMENT.
    #[error("{0}")]
    BadRequest(String),
    /// The model's queue is full, or the server is shutting down: HTTP 503, gRPC UNAVAILABLE.
    #[error("{0}")]
    Unavailable(String),
    /// The model failed on a valid request: HTTP 500, gRPC INTERNAL.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn bad(msg: impl Into<String>) -> Self {
        Self::BadRequest(msg.into())
    }

    /// The HTTP status code.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::NotFound(_) => 404,
            Self::BadRequest(_) => 400,
            Self::Unavailable(_) => 503,
            Self::Internal(_) => 500,
        }
    }

    /// The label used in metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "not_found",
            Self::BadRequest(_) => "bad_request",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }
}

/// Why the server could not start (or stopped badly).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Repository(#[from] RepositoryError),
    #[error("nothing to serve: give --model-repository DIR or --model NAME=FILE.onnx")]
    NoModels,
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind { what: &'static str, addr: SocketAddr, source: std::io::Error },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("metrics: {0}")]
    Metrics(String),
    #[error("gRPC server: {0}")]
    Grpc(String),
}

/// Limits and timeouts; the defaults are the secure ones.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body (HTTP) or message (gRPC), in bytes.
    pub max_body: usize,
    /// A client must send a request's headers within this time, also after an idle keep-alive wait.
    pub header_timeout: Duration,
    /// A request must be answered within this time (HTTP 408 / gRPC DEADLINE_EXCEEDED otherwise).
    pub request_timeout: Duration,
    /// How long shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
    /// Requests waiting per model (a model's `dynamic_batching.default_queue_policy.max_queue_size` wins).
    pub max_queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: 64 << 20,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(30),
            max_queue: 1024,
        }
    }
}

/// Everything `runtime serve` is told.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    pub repository: Option<PathBuf>,
    /// `--model NAME=FILE.onnx`: served without a repository folder.
    pub models: Vec<(String, PathBuf)>,
    pub http: Option<SocketAddr>,
    pub grpc: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
    pub provider: Provider,
    /// ONNX Runtime intra-op threads per instance; `None`: the cores divided among all instances.
    pub threads: Option<usize>,
    pub limits: Limits,
}

/// The loaded models and the server's state, shared by both front ends.
pub struct Server {
    /// By name, then version (ascending).
    pub models: BTreeMap<String, BTreeMap<u64, Arc<ServedModel>>>,
    pub limits: Limits,
    stopping: AtomicBool,
}

impl Server {
    pub fn new(models: Vec<ServedModel>, limits: Limits) -> Self {
        let mut map: BTreeMap<String, BTreeMap<u64, Arc<ServedModel>>> = BTreeMap::new();
        for m in models {
            map.entry(m.name.clone()).or_default().insert(m.version, Arc::new(m));
        }
        Self { models: map, limits, stopping: AtomicBool::new(false) }
    }

    /// The model `name` at `version` (empty: the newest loaded), looked up among loaded models only:
    /// nothing from a request ever reaches the file system.
    pub fn model(&self, name: &str, version: &str) -> Result<&Arc<ServedModel>, ApiError> {
        let versions = self.models.get(name).ok_or_else(|| ApiError::NotFound(format!("unknown model '{}'", printable(name))))?;
        if version.is_empty() {
            return versions.values().next_back().ok_or_else(|| ApiError::NotFound(format!("model '{name}' has no loaded version")));
        }
        let v: u64 = version
            .parse()
            .map_err(|_| ApiError::NotFound(format!("unknown version '{}' of model '{name}': versions are whole numbers", printable(version))))?;
        versions.get(&v).ok_or_else(|| {
            let loaded: Vec<String> = versions.keys().map(u64::to_string).collect();
            ApiError::NotFound(format!("unknown version {v} of model '{name}' (loaded: {})", loaded.join(", ")))
        })
    }

    /// ServerMetadata / `GET /v2`.
    pub fn metadata(&self) -> proto::pb::ServerMetadataResponse {
        proto::pb::ServerMetadataResponse {
            name: SERVER_NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: EXTENSIONS.iter().map(|e| e.to_string()).collect(),
        }
    }

    /// ModelMetadata / `GET /v2/models/{m}[/versions/{v}]`.
    pub fn model_metadata(&self, m: &ServedModel) -> proto::pb::ModelMetadataResponse {
        use proto::pb::model_metadata_response::TensorMetadata;
        let tensors = |specs: &[repository::IoSpec]| {
            specs.iter().map(|s| TensorMetadata { name: s.name.clone(), datatype: s.datatype.as_str().into(), shape: m.request_shape(s) }).collect()
        };
        proto::pb::ModelMetadataResponse {
            name: m.name.clone(),
            versions: self.models.get(&m.name).map(|v| v.keys().map(u64::to_string).collect()).unwrap_or_default(),
            platform: repository::PLATFORM.into(),
            inputs: tensors(&m.inputs),
            outputs: tensors(&m.outputs),
        }
    }

    /// ModelStatistics / `GET /v2/models[/{m}[/versions/{v}]]/stats`: one model version, every version
    /// of a model (`version` empty), or every model (`name` empty).
    pub fn statistics(&self, name: &str, version: &str) -> Result<proto::pb::ModelStatisticsResponse, ApiError> {
        let chosen: Vec<&Arc<ServedModel>> = match (name, version) {
            ("", _) => self.models.values().flat_map(|v| v.values()).collect(),
            (n, "") => self.models.get(n).ok_or_else(|| ApiError::NotFound(format!("unknown model '{}'", printable(n))))?.values().collect(),
            (n, v) => vec![self.model(n, v)?],
        };
        Ok(proto::pb::ModelStatisticsResponse { model_stats: chosen.into_iter().map(|m| statistics_of(m)).collect() })
    }

    /// Whether the server takes new requests.
    pub fn ready(&self) -> bool {
        !self.stopping.load(Ordering::SeqCst)
    }

    pub fn begin_shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Stops every model's workers after their queues drain.
    pub fn close(&self) {
        for versions in self.models.values() {
            for m in versions.values() {
                m.scheduler.close();
            }
        }
    }
}

fn statistics_of(m: &ServedModel) -> proto::pb::ModelStatistics {
    use proto::pb::{InferBatchStatistics, InferStatistics, ModelStatistics, StatisticDuration};
    let d = |d: scheduler::Duration2| Some(StatisticDuration { count: d.count, ns: d.ns });
    let s = m.scheduler.stats();
    ModelStatistics {
        name: m.name.clone(),
        version: m.version.to_string(),
        last_inference: s.last_inference,
        inference_count: s.inference_count,
        execution_count: s.execution_count,
        inference_stats: Some(InferStatistics {
            success: d(s.success),
            fail: d(s.fail),
            queue: d(s.queue),
            compute_input: d(s.compute_input),
            compute_infer: d(s.compute_infer),
            compute_output: d(s.compute_output),
            cache_hit: d(Default::default()),
            cache_miss: d(Default::default()),
        }),
        batch_stats: s
            .batches
            .iter()
            .map(|(&batch_size, b)| InferBatchStatistics {
                batch_size,
                compute_input: d(b.compute_input),
                compute_infer: d(b.compute_infer),
                compute_output: d(b.compute_output),
            })
            .collect(),
        memory_usage: vec![],
        response_stats: Default::default(),
    }
}

/// A name from a request, shortened and with control characters escaped, fit for an error message.
pub fn printable(s: &str) -> String {
    let mut out: String = s.chars().take(80).flat_map(char::escape_debug).collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

/// Loads the models, binds the listeners, serves until SIGTERM or Ctrl-C, then finishes the requests
/// in flight and returns. Prints one `<what> listening on <addr>` line per listener on stdout.
pub fn serve(opts: ServeOptions) -> Result<(), ServeError> {
    let models = repository::load_all(&opts)?;
    if models.is_empty() {
        return Err(ServeError::NoModels);
    }
    for m in &models {
        tracing::info!("model '{}' version {} ready: {}", m.name, m.version, m.summary());
    }
    let server = Arc::new(Server::new(models, opts.limits.clone()));
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("serve").build().map_err(ServeError::Runtime)?;
    let result = rt.block_on(run(server.clone(), &opts));
    server.close();
    result
}

async fn run(server: Arc<Server>, opts: &ServeOptions) -> Result<(), ServeError> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let bind = |what: &'static str, addr: SocketAddr| async move {
        let l = tokio::net::TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { what, addr, source })?;
        let local = l.local_addr().map_err(|source| ServeError::Bind { what, addr, source })?;
        println!("{what} listening on {local}");
        Ok::<_, ServeError>(l)
    };
    if let Some(addr) = opts.metrics {
        let handle = telemetry::install()?;
        let listener = bind("metrics", addr).await?;
        tasks.spawn(telemetry::serve(listener, handle, stop_rx.clone()));
    }
    if let Some(addr) = opts.http {
        let listener = bind("HTTP", addr).await?;
        tasks.spawn(http::serve(listener, server.clone(), stop_rx.clone()));
    }
    if let Some(addr) = opts.grpc {
        let listener = bind("gRPC", addr).await?;
        tasks.spawn(grpc::serve(listener, server.clone(), stop_rx.clone()));
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();

    shutdown_signal().await;
    tracing::info!("shutting down: no new connections; finishing the requests in flight");
    server.begin_shutdown();
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(server.limits.shutdown_grace, async {
        let mut first_error = None;
        while let Some(r) = tasks.join_next().await {
            if let Ok(Err(e)) = r {
                first_error.get_or_insert(e);
            }
        }
        first_error
    })
    .await;
    match drained {
        Ok(Some(e)) => Err(e),
        Ok(None) => {
            tracing::info!("shut down cleanly");
            Ok(())
        }
        Err(_) => {
            tracing::warn!("requests still in flight after {:?}: stopping anyway", server.limits.shutdown_grace);
            Ok(())
        }
    }
}

/// Resolves once `stop` holds true (or its sender is gone).
pub async fn until_stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot watch SIGTERM ({e}); Ctrl-C still stops the server");
                std::future::pending::<()>().await
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
