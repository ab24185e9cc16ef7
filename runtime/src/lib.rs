//! `runtime`: ONNX Runtime (through `ort`) for our exported models and anyone's. This is the only crate
//! that loads ONNX Runtime.
//!
//! - [`model::Model`]: a session plus the preprocessing and labels from the file's metadata or flags;
//! - [`preprocess`]: image → input tensor (the flag contract shared with edge-demo), 10-crop;
//! - [`images`]: where images come from (record files, class folders, loose files) and the batches
//!   decoded and preprocessed from them in parallel, overlapping inference;
//! - [`detect`]: our exported detectors: mAP@0.5 on record files with boxes, boxes on images;
//! - [`eval`]: evaluation, prediction and benchmarks; [`metrics`]: rank-1/5, one-off, per-class report;
//! - [`serve`]: `runtime serve`, the Open Inference Protocol server (KServe v2 / Triton) over HTTP and gRPC.

pub mod detect;
pub mod doctor;
pub mod engine;
pub mod eval;
pub mod images;
pub mod metrics;
pub mod model;
pub mod preprocess;
pub mod serve;

pub use engine::{open_session, Provider, RuntimeError, SessionOptions};
pub use model::Model;
pub use preprocess::{Preprocess, PreprocessArgs};
