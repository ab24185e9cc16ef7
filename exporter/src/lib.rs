//! `exporter`: lowers our model graphs and trained weights to ONNX, and reads ONNX files back.
//!
//! The lowering library is pure Rust (ONNX messages come from the `onnx-protobuf` crate, generated for
//! `protobuf` 3): `cargo tree -p exporter --no-default-features` shows neither libtorch nor ONNX
//! Runtime. The default `verify` feature adds [`pipeline`], the export that proves the written file
//! against libtorch (trainer) in ONNX Runtime (runtime), and [`logreg`], the same for a `trainer
//! logreg` model on a frozen network's features (the network cut at the feature layer, then the
//! fitted head of [`head`]); the `exporter` binary requires it. [`triton`] writes an ONNX file as an
//! entry of a Triton model repository (pure Rust too).

#[cfg(feature = "verify")]
pub mod detect_export;
pub mod detect_tail;
pub mod fold;
pub mod fp16;
pub mod head;
pub mod inspect;
#[cfg(feature = "verify")]
pub mod logreg;
pub mod lower;
pub mod parity;
#[cfg(feature = "verify")]
pub mod pipeline;
pub mod rcnn_export;
#[cfg(feature = "verify")]
pub mod rcnn_parity;
pub mod triton;

pub use onnx_protobuf as onnx;
