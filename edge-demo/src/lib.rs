//! `edge-demo`: real-time video inference. The only crate that links OpenCV.

pub mod doctor;

/// Where Debian's opencv-data puts the Haar cascades.
pub const HAAR_DIR: &str = "/usr/share/opencv4/haarcascades";
/// The frontal-face cascade the book's detectors use.
pub const DEFAULT_FACE_CASCADE: &str = "/usr/share/opencv4/haarcascades/haarcascade_frontalface_default.xml";
