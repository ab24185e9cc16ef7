//! `models`: the architectures of the toolchain, defined once as data.
//!
//! Every other crate reads what is defined here: the trainer builds libtorch parameters from it, the
//! exporter lowers it to ONNX, the runtime and the video CLI read the model metadata it describes.
//! This crate has no native library at all (no libtorch, ONNX Runtime, OpenCV or libjpeg-turbo), so
//! everything in it is testable on any machine. The data pipeline is its neighbour, the `data` crate
//! in `models/data`.

pub mod builder;
pub mod cli;
pub mod describe;
pub mod detect;
pub mod graph;
pub mod meta;
pub mod repository;
pub mod zoo;

/// The toolchain's version, written into every run directory and every exported model.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
