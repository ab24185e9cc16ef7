//! `data`: the pure-Rust data pipeline, read left to right.
//!
//! - [`prepare`]: every dataset of the book in its real format (one file per kind) → a prepared
//!   dataset folder ([`folder`]: record files, `labels.txt`, `mean.json`, `report.json`);
//! - [`records`]: the record file format (write, index, read back, pack);
//! - [`decode`]: stored images → pixels (libjpeg-turbo, the `image` crate for the rest);
//! - [`transform`]: pixels → normalised network inputs (augmentation or the evaluation crop);
//!   [`detect_transform`]: the same for detectors, the boxes moved with the pixels;
//! - [`loader`]: record files → batches on worker threads, in order ([`pool`] is the ordered worker
//!   pool the loader, the runtime and the video CLI share);
//! - [`idx`]: MNIST-family IDX files; [`labels`]: the one `labels.txt` reader; [`rotation`]: the
//!   angle an orientation label names;
//! - [`metrics`]: argmax, softmax, top-k and the classification report;
//! - [`rng`]: the fixed-sequence generator behind every fixed pseudo-random input.
//!
//! No libtorch, ONNX Runtime or OpenCV: its tests run on any machine. Its one native library is
//! libjpeg-turbo (the default `turbojpeg` feature; without it the `image` crate decodes everything).

pub mod decode;
pub mod detect_transform;
pub mod files;
pub mod folder;
pub mod idx;
pub mod labels;
pub mod loader;
pub mod metrics;
pub mod pool;
pub mod prepare;
pub mod progress;
pub mod records;
pub mod rng;
pub mod rotation;
#[cfg(feature = "turbojpeg")]
mod tj3;
pub mod transform;

/// The image crate the pipeline decodes and encodes with.
pub use image;

pub use decode::{Decoded, Decoder};
pub use detect_transform::DetectTransform;
pub use loader::{Batch, Epoch, Loader, LoaderOptions};
pub use records::RecordFile;
pub use transform::Transform;
