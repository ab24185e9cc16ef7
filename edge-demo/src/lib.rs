//! `edge-demo`: real-time video inference. The only crate that links OpenCV.
//!
//! [`source`] captures frames (files, cameras, streams, image folders), [`pipeline`] turns each frame
//! into results and an annotated frame (with [`vision`]: faces, alignment, overlays), and [`app`] runs
//! the loop and writes the outputs and the summary. Models run through the `runtime` crate.

pub mod app;
pub mod doctor;
pub mod error;
pub mod pipeline;
pub mod source;
pub mod vision;

pub use error::DemoError;

/// Where Debian's opencv-data puts the Haar cascades.
pub const HAAR_DIR: &str = "/usr/share/opencv4/haarcascades";
/// The frontal-face cascade the book's detectors use.
pub const DEFAULT_FACE_CASCADE: &str = "/usr/share/opencv4/haarcascades/haarcascade_frontalface_default.xml";
/// The eye cascade used to align faces for age and gender.
pub const DEFAULT_EYE_CASCADE: &str = "/usr/share/opencv4/haarcascades/haarcascade_eye.xml";

/// The BlazeFace models in `edge-demo/assets` that `--face-detector blazeface|blazeface-full` name.
pub const BLAZEFACE_SHORT: &str = "face_detection_short_range.onnx";
pub const BLAZEFACE_FULL: &str = "face_detection_full_range.onnx";

/// Where one of the repository's assets is: the `edge-demo/assets` this binary was built from, else
/// one under the current folder (a copy of the repository moved elsewhere), else `None`.
pub fn asset(name: &str) -> Option<std::path::PathBuf> {
    let built = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets").join(name);
    let here = std::path::Path::new("edge-demo/assets").join(name);
    [built, here].into_iter().find(|p| p.is_file())
}
