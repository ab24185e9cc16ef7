//! OpenCV pieces of the pipelines: frames to the runtime's images, the Haar face detector (book §6.6),
//! eye-based face alignment, and the overlays.

use std::path::Path;

use data::image::{DynamicImage, GrayImage, RgbImage};
use opencv::core::{Mat, Point, Point2f, Rect, Scalar, Size, Vector, CV_8UC3};
use opencv::imgproc;
use opencv::objdetect::{CascadeClassifier, CascadeClassifierTrait};
use opencv::prelude::*;

use crate::DemoError;

type Result<T, E = DemoError> = std::result::Result<T, E>;

/// BGR (or grey) `Mat` → the image type the runtime preprocesses: grey frames stay one channel (OpenCV's
/// BGR→grey weights, as the book's detectors and FER2013 models use), colour becomes RGB.
pub fn to_image(m: &Mat, gray: bool) -> Result<DynamicImage> {
    let mut conv = Mat::default();
    let code = match (m.channels(), gray) {
        (1, true) => return mat_bytes(m).map(|b| DynamicImage::ImageLuma8(GrayImage::from_raw(m.cols() as u32, m.rows() as u32, b).expect("size"))),
        (_, true) => imgproc::COLOR_BGR2GRAY,
        (1, false) => imgproc::COLOR_GRAY2RGB,
        (_, false) => imgproc::COLOR_BGR2RGB,
    };
    imgproc::cvt_color_def(m, &mut conv, code)?;
    let (w, h) = (conv.cols() as u32, conv.rows() as u32);
    let bytes = mat_bytes(&conv)?;
    Ok(if gray {
        DynamicImage::ImageLuma8(GrayImage::from_raw(w, h, bytes).expect("size"))
    } else {
        DynamicImage::ImageRgb8(RgbImage::from_raw(w, h, bytes).expect("size"))
    })
}

fn mat_bytes(m: &Mat) -> Result<Vec<u8>> {
    let m = if m.is_continuous() { m.try_clone()? } else { m.clone() };
    Ok(m.data_bytes()?.to_vec())
}

/// A copy of the `r` region of `m` (clipped to the frame).
pub fn crop(m: &Mat, r: Rect) -> Result<Mat> {
    let clipped = r & Rect::new(0, 0, m.cols(), m.rows());
    if clipped.width <= 0 || clipped.height <= 0 {
        return Err(DemoError::RegionOutside { region: r, width: m.cols(), height: m.rows() });
    }
    Ok(Mat::roi(m, clipped)?.try_clone()?)
}

/// The book's face detector: Haar cascade on a grey, downscaled copy of the frame.
pub struct FaceDetector {
    cascade: CascadeClassifier,
    eyes: Option<CascadeClassifier>,
    /// Frames wider than this are downscaled before detection (0: never).
    pub detect_width: i32,
}

fn load_cascade(path: &Path) -> Result<CascadeClassifier> {
    if !path.is_file() {
        return Err(DemoError::NoCascade(path.to_path_buf()));
    }
    let c = CascadeClassifier::new(path.as_os_str()).map_err(|e| DemoError::BadCascade { path: path.to_path_buf(), source: Some(e) })?;
    if c.empty()? {
        return Err(DemoError::BadCascade { path: path.to_path_buf(), source: None });
    }
    Ok(c)
}

impl FaceDetector {
    pub fn new(cascade: &Path, eye_cascade: Option<&Path>, detect_width: i32) -> Result<Self> {
        Ok(Self { cascade: load_cascade(cascade)?, eyes: eye_cascade.map(load_cascade).transpose()?, detect_width })
    }

    /// Faces in a BGR frame, in frame coordinates, largest first.
    pub fn detect(&mut self, frame: &Mat) -> Result<Vec<Rect>> {
        let mut gray = Mat::default();
        imgproc::cvt_color_def(frame, &mut gray, imgproc::COLOR_BGR2GRAY)?;
        let scale = if self.detect_width > 0 && gray.cols() > self.detect_width { self.detect_width as f64 / gray.cols() as f64 } else { 1.0 };
        let small = if scale < 1.0 {
            let mut s = Mat::default();
            imgproc::resize(&gray, &mut s, Size::new(0, 0), scale, scale, imgproc::INTER_AREA)?;
            s
        } else {
            gray
        };
        let mut found = Vector::<Rect>::new();
        // the book's settings: scaleFactor 1.1, minNeighbors 5, minSize 30x30 (on the downscaled frame)
        self.cascade.detect_multi_scale(&small, &mut found, 1.1, 5, 0, Size::new(30, 30), Size::default())?;
        let mut faces: Vec<Rect> = found
            .iter()
            .map(|r| Rect::new((r.x as f64 / scale) as i32, (r.y as f64 / scale) as i32, (r.width as f64 / scale) as i32, (r.height as f64 / scale) as i32))
            .collect();
        faces.sort_by_key(|r| -(r.width * r.height));
        Ok(faces)
    }

    /// The face region, rotated upright about its centre so that the eyes are level, when an eye
    /// cascade was given and finds two eyes in the face's upper half; else the plain crop.
    pub fn aligned_face(&mut self, frame: &Mat, face: Rect) -> Result<(Mat, bool)> {
        let plain = crop(frame, face)?;
        let Some(eyes) = self.eyes.as_mut() else { return Ok((plain, false)) };
        let mut gray = Mat::default();
        imgproc::cvt_color_def(&plain, &mut gray, imgproc::COLOR_BGR2GRAY)?;
        let upper = Mat::roi(&gray, Rect::new(0, 0, gray.cols(), gray.rows() / 2))?.try_clone()?;
        let mut found = Vector::<Rect>::new();
        let min = (face.width / 8).max(8);
        eyes.detect_multi_scale(&upper, &mut found, 1.1, 3, 0, Size::new(min, min), Size::default())?;
        let mut e: Vec<Rect> = found.iter().collect();
        if e.len() < 2 {
            return Ok((plain, false));
        }
        e.sort_by_key(|r| -(r.width * r.height));
        let (a, b) = (e[0], e[1]);
        let centre = |r: Rect| Point2f::new(r.x as f32 + r.width as f32 / 2.0, r.y as f32 + r.height as f32 / 2.0);
        let (l, r) = if centre(a).x < centre(b).x { (centre(a), centre(b)) } else { (centre(b), centre(a)) };
        if r.x - l.x < face.width as f32 / 5.0 {
            return Ok((plain, false)); // one eye found twice
        }
        let angle = ((r.y - l.y) as f64).atan2((r.x - l.x) as f64).to_degrees();
        let m = imgproc::get_rotation_matrix_2d(Point2f::new(plain.cols() as f32 / 2.0, plain.rows() as f32 / 2.0), angle, 1.0)?;
        let mut out = Mat::default();
        imgproc::warp_affine(&plain, &mut out, &m, plain.size()?, imgproc::INTER_LINEAR, opencv::core::BORDER_REPLICATE, Scalar::default())?;
        Ok((out, true))
    }
}

pub const GREEN: (f64, f64, f64) = (0.0, 200.0, 0.0);

fn bgr(c: (f64, f64, f64)) -> Scalar {
    Scalar::new(c.0, c.1, c.2, 0.0)
}

/// A box with a filled label above it.
pub fn draw_box(frame: &mut Mat, r: Rect, label: &str) -> Result<()> {
    draw_box_in(frame, r, label, GREEN)
}

/// A box in colour `c` (B, G, R) with a filled label above it.
pub fn draw_box_in(frame: &mut Mat, r: Rect, label: &str, c: (f64, f64, f64)) -> Result<()> {
    imgproc::rectangle(frame, r, bgr(c), 2, imgproc::LINE_8, 0)?;
    draw_label(frame, Point::new(r.x, (r.y - 6).max(14)), label)
}

/// Text with a dark backing, bottom-left at `at`.
pub fn draw_label(frame: &mut Mat, at: Point, text: &str) -> Result<()> {
    let mut base = 0;
    let size = imgproc::get_text_size(text, imgproc::FONT_HERSHEY_SIMPLEX, 0.55, 1, &mut base)?;
    imgproc::rectangle(
        frame,
        Rect::new(at.x, at.y - size.height - 4, size.width + 6, size.height + base + 6),
        Scalar::new(0.0, 0.0, 0.0, 0.0),
        -1,
        imgproc::LINE_8,
        0,
    )?;
    imgproc::put_text(
        frame,
        text,
        Point::new(at.x + 3, at.y),
        imgproc::FONT_HERSHEY_SIMPLEX,
        0.55,
        Scalar::new(255.0, 255.0, 255.0, 0.0),
        1,
        imgproc::LINE_AA,
        false,
    )?;
    Ok(())
}

/// The book's probability panel: one bar per class, the best highlighted, `width` wide and as tall as
/// the frame.
pub fn probability_panel(labels: &[String], probs: Option<&[f32]>, width: i32, height: i32) -> Result<Mat> {
    let mut panel = Mat::new_rows_cols_with_default(height, width, CV_8UC3, Scalar::all(30.0))?;
    let rows = labels.len().max(1) as i32;
    let bar_h = ((height - 10) / rows).clamp(12, 40);
    let best = probs.map(crate::pipeline::argmax);
    for (i, l) in labels.iter().enumerate() {
        let y = 5 + i as i32 * bar_h;
        let p = probs.map_or(0.0, |p| p[i]);
        let w = ((width - 10) as f32 * p) as i32;
        let colour = if best == Some(i) { bgr(GREEN) } else { Scalar::new(160.0, 100.0, 40.0, 0.0) };
        imgproc::rectangle(&mut panel, Rect::new(5, y + 2, w.max(1), bar_h - 4), colour, -1, imgproc::LINE_8, 0)?;
        let text = format!("{l}: {:.1}%", 100.0 * p);
        imgproc::put_text(
            &mut panel,
            &text,
            Point::new(10, y + bar_h - 8),
            imgproc::FONT_HERSHEY_SIMPLEX,
            0.45,
            Scalar::all(255.0),
            1,
            imgproc::LINE_AA,
            false,
        )?;
    }
    Ok(panel)
}

/// `frame` with `panel` to its right.
pub fn beside(frame: &Mat, panel: &Mat) -> Result<Mat> {
    let mut pair = Vector::<Mat>::new();
    pair.push(frame.try_clone()?);
    pair.push(panel.try_clone()?);
    let mut out = Mat::default();
    opencv::core::hconcat(&pair, &mut out)?;
    Ok(out)
}
