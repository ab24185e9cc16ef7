//! Prometheus metrics at `/metrics` on their own port, Triton's split under our own `dlcv_` prefix:
//! request success/failure counters, queue / compute (input, infer, output) / request duration
//! histograms, a batch-size histogram and the pending-request gauge, labelled by model and version.
//! Recording goes through the `metrics` facade, so nothing is recorded unless the exporter is installed.

use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::ServeError;

pub const REQUEST_SUCCESS: &str = "dlcv_inference_request_success_total";
pub const REQUEST_FAILURE: &str = "dlcv_inference_request_failure_total";
pub const INFERENCE_COUNT: &str = "dlcv_inference_count_total";
pub const EXECUTION_COUNT: &str = "dlcv_inference_exec_count_total";
pub const PENDING: &str = "dlcv_inference_pending_request_count";
pub const REQUEST_DURATION: &str = "dlcv_inference_request_duration_seconds";
pub const QUEUE_DURATION: &str = "dlcv_inference_queue_duration_seconds";
pub const COMPUTE_INPUT: &str = "dlcv_inference_compute_input_duration_seconds";
pub const COMPUTE_INFER: &str = "dlcv_inference_compute_infer_duration_seconds";
pub const COMPUTE_OUTPUT: &str = "dlcv_inference_compute_output_duration_seconds";
pub const BATCH_SIZE: &str = "dlcv_inference_batch_size";

/// Seconds: 50 µs … 10 s.
const DURATION_BUCKETS: [f64; 14] = [5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.5, 1.0, 10.0];
const BATCH_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0];

/// Installs the Prometheus recorder for this process.
pub fn install() -> Result<PrometheusHandle, ServeError> {
    let e = |e: metrics_exporter_prometheus::BuildError| ServeError::Metrics(e.to_string());
    let handle = PrometheusBuilder::new()
        .set_buckets(&DURATION_BUCKETS)
        .map_err(e)?
        .set_buckets_for_metric(Matcher::Full(BATCH_SIZE.into()), &BATCH_BUCKETS)
        .map_err(e)?
        .install_recorder()
        .map_err(e)?;
    describe();
    Ok(handle)
}

fn describe() {
    metrics::describe_counter!(REQUEST_SUCCESS, "Inference requests answered successfully");
    metrics::describe_counter!(REQUEST_FAILURE, "Inference requests that failed, by reason");
    metrics::describe_counter!(INFERENCE_COUNT, "Rows inferred (a batch of 4 counts 4)");
    metrics::describe_counter!(EXECUTION_COUNT, "Model executions (batches)");
    metrics::describe_gauge!(PENDING, "Requests waiting in the model's queue");
    metrics::describe_histogram!(REQUEST_DURATION, metrics::Unit::Seconds, "From a request's arrival to its answer");
    metrics::describe_histogram!(QUEUE_DURATION, metrics::Unit::Seconds, "Time a request waited in the queue");
    metrics::describe_histogram!(COMPUTE_INPUT, metrics::Unit::Seconds, "Building the batch's input tensors");
    metrics::describe_histogram!(COMPUTE_INFER, metrics::Unit::Seconds, "Running the model on the batch");
    metrics::describe_histogram!(COMPUTE_OUTPUT, metrics::Unit::Seconds, "Reading and splitting the batch's outputs");
    metrics::describe_histogram!(BATCH_SIZE, "Rows per model execution");
}

pub fn pending(model: &str, version: &str, n: usize) {
    gauge!(PENDING, "model" => model.to_string(), "version" => version.to_string()).set(n as f64);
}

pub fn request(model: &str, version: &str, ok: bool, d: Duration) {
    let labels = [("model", model.to_string()), ("version", version.to_string())];
    if ok {
        counter!(REQUEST_SUCCESS, &labels).increment(1);
    } else {
        counter!(REQUEST_FAILURE, &labels).increment(1);
    }
    histogram!(REQUEST_DURATION, &labels).record(d.as_secs_f64());
}

pub fn batch(model: &str, version: &str, rows: usize, queued: &[Duration], [d_in, d_run, d_out]: [Duration; 3]) {
    let labels = [("model", model.to_string()), ("version", version.to_string())];
    counter!(INFERENCE_COUNT, &labels).increment(rows as u64);
    counter!(EXECUTION_COUNT, &labels).increment(1);
    histogram!(BATCH_SIZE, &labels).record(rows as f64);
    let q = histogram!(QUEUE_DURATION, &labels);
    queued.iter().for_each(|d| q.record(d.as_secs_f64()));
    histogram!(COMPUTE_INPUT, &labels).record(d_in.as_secs_f64());
    histogram!(COMPUTE_INFER, &labels).record(d_run.as_secs_f64());
    histogram!(COMPUTE_OUTPUT, &labels).record(d_out.as_secs_f64());
}

/// Serves `GET /metrics` until `stop` turns true.
pub async fn serve(listener: tokio::net::TcpListener, handle: PrometheusHandle, mut stop: tokio::sync::watch::Receiver<bool>) -> Result<(), ServeError> {
    use axum::routing::get;
    let upkeep = handle.clone();
    let ticker = tokio::spawn(async move {
        let mut t = tokio::time::interval(Duration::from_secs(5));
        loop {
            t.tick().await;
            upkeep.run_upkeep();
        }
    });
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let h = handle.clone();
            async move { ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], h.render()) }
        }),
    );
    let r = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            super::until_stopped(&mut stop).await;
        })
        .await;
    ticker.abort();
    r.map_err(|e| ServeError::Metrics(e.to_string()))
}
