//! `models`: the architectures of the toolchain, defined once as data.
//!
//! Every other crate reads what is defined here: the trainer builds libtorch parameters from it, the
//! exporter lowers it to ONNX, the runtime and the video CLI read the model metadata it describes.
//! This crate has no libtorch, ONNX Runtime or OpenCV, so everything in it is testable on any machine;
//! its one native library is libjpeg-turbo for the loader's JPEG decoding (the default `turbojpeg`
//! feature; without it the `image` crate decodes everything).

pub mod builder;
pub mod cli;
pub mod describe;
pub mod graph;
pub mod loader;
pub mod meta;
pub mod progress;
pub mod records;
pub mod zoo;

/// The toolchain's version, written into every run directory and every exported model.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
