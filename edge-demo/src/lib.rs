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
