//! `runtime`: ONNX Runtime (through `ort`) for our exported models and anyone's. This is the only crate
//! that loads ONNX Runtime.

pub mod doctor;
pub mod engine;

pub use engine::{open_session, Provider, RuntimeError, SessionOptions};
