//! `exporter`: lowers our model graphs and trained weights to ONNX, and reads ONNX files back.
//! Pure Rust: ONNX messages come from the `onnx-protobuf` crate (generated for `protobuf` 3).

pub mod fold;
pub mod fp16;
pub mod inspect;
pub mod lower;
pub mod meta;
pub mod parity;

pub use onnx_protobuf as onnx;
