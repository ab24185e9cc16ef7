//! `exporter`: lowers our model graphs and trained weights to ONNX, and reads ONNX files back.
//! Pure Rust: ONNX messages come from the `onnx-protobuf` crate (generated for `protobuf` 3).

pub mod inspect;
pub mod lower;
pub mod meta;

pub use onnx_protobuf as onnx;
