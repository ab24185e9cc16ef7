//! `edge-demo doctor`: the OpenCV build, its video back ends, the face detector, and (optionally) one
//! source opened and read, plus the ONNX Runtime check of the `runtime` crate.

use std::path::Path;

use opencv::core::{Mat, MatTraitConst, Rect, Size, Vector};
use opencv::objdetect::{CascadeClassifier, CascadeClassifierTrait, CascadeClassifierTraitConst};
use opencv::prelude::*;
use opencv::{imgproc, videoio};
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Report {
    pub opencv: String,
    pub video_backends: Vec<String>,
    #[serde(serialize_with = "models::cli::serialize_check")]
    pub face_cascade: Result<String, String>,
    /// What reading the source gave, when one was given.
    #[serde(serialize_with = "models::cli::serialize_opt_check")]
    pub source: Option<Result<String, String>>,
}

fn cascade_check(path: &Path) -> Result<String, String> {
    if !path.is_file() {
        return Err(format!("{}: no such file (install Debian's opencv-data)", path.display()));
    }
    let c = CascadeClassifier::new(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if c.empty().unwrap_or(true) {
        return Err(format!("{}: OpenCV could not load this cascade", path.display()));
    }
    Ok(path.display().to_string())
}

/// Opens `source` (a file or a camera index), reads the first frame and runs the face detector on it.
fn source_check(source: &str, cascade: &Path) -> Result<String, String> {
    let mut cap = match source.parse::<i32>() {
        Ok(index) => videoio::VideoCapture::new(index, videoio::CAP_ANY),
        Err(_) => videoio::VideoCapture::from_file(source, videoio::CAP_ANY),
    }
    .map_err(|e| format!("{source}: {e}"))?;
    if !cap.is_opened().unwrap_or(false) {
        return Err(format!("{source}: OpenCV cannot open this source"));
    }
    let mut frame = Mat::default();
    if !cap.read(&mut frame).map_err(|e| format!("{source}: {e}"))? || frame.empty() {
        return Err(format!("{source}: opened, but no frame could be read"));
    }
    let frames = cap.get(videoio::CAP_PROP_FRAME_COUNT).unwrap_or(0.0);
    let fps = cap.get(videoio::CAP_PROP_FPS).unwrap_or(0.0);
    let mut gray = Mat::default();
    imgproc::cvt_color_def(&frame, &mut gray, imgproc::COLOR_BGR2GRAY).map_err(|e| e.to_string())?;
    let mut faces = Vector::<Rect>::new();
    let mut detector = CascadeClassifier::new(cascade).map_err(|e| e.to_string())?;
    detector.detect_multi_scale(&gray, &mut faces, 1.1, 5, 0, Size::new(30, 30), Size::default()).map_err(|e| e.to_string())?;
    // Streams and still images report no frame count (OpenCV gives a negative or zero value).
    let count = if frames > 0.0 { format!("{frames:.0} frames") } else { "frame count unknown".to_string() };
    Ok(format!("{}x{} frames, {count} at {fps:.1} fps; {} face(s) in the first frame", frame.cols(), frame.rows(), faces.len()))
}

pub fn run(cascade: &Path, source: Option<&str>) -> opencv::Result<Report> {
    let video_backends = videoio::get_backends()?.iter().map(|b| videoio::get_backend_name(b).unwrap_or_else(|_| format!("{b:?}"))).collect();
    let face_cascade = cascade_check(cascade);
    let source = source.map(|s| face_cascade.clone().and_then(|_| source_check(s, cascade)));
    Ok(Report { opencv: opencv::core::get_version_string()?, video_backends, face_cascade, source })
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "opencv          {}", self.opencv)?;
        writeln!(f, "video back ends {}", self.video_backends.join(", "))?;
        match &self.face_cascade {
            Ok(p) => write!(f, "face detector   ok: {p}")?,
            Err(e) => write!(f, "face detector   FAILED: {e}")?,
        }
        match &self.source {
            None => Ok(()),
            Some(Ok(s)) => write!(f, "\nsource          ok: {s}"),
            Some(Err(e)) => write!(f, "\nsource          FAILED: {e}"),
        }
    }
}
