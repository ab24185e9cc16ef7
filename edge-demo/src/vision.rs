//! OpenCV pieces of the pipelines: frames to the runtime's images, the face detectors (the book's Haar
//! cascade, §6.6, or an ONNX BlazeFace detector with eye keypoints), face alignment (the book's
//! `FaceAligner` from the eyes, or a Haar eye cascade), and the overlays.

use std::path::Path;

use data::image::{DynamicImage, GrayImage, RgbImage};
use models::detect::{Face, Letterbox};
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

/// A face found in a frame: its box (frame pixels), its score (1 for the Haar cascade, which gives
/// none) and, from an ONNX detector, its keypoints (eyes first).
#[derive(Debug, Clone, PartialEq)]
pub struct FaceBox {
    pub rect: Rect,
    pub score: f32,
    pub keypoints: Vec<[f32; 2]>,
}

impl FaceBox {
    /// The eye centres, the image's left one first, when the detector gives them.
    pub fn eyes(&self) -> Option<[[f32; 2]; 2]> {
        Face { score: self.score, bbox: [0.0; 4], keypoints: self.keypoints.clone() }.eyes()
    }
}

enum Finder {
    /// The book's: a Haar cascade on a grey copy downscaled to `detect_width` (0: full size).
    Haar { cascade: CascadeClassifier, detect_width: i32 },
    /// An ONNX face detector in the BlazeFace contract, through the runtime; faces at `threshold` and above.
    Onnx { detector: Box<runtime::detect::Detector>, threshold: f32 },
}

/// The face detector of the face pipelines, and the eye cascade that aligns Haar faces.
pub struct FaceDetector {
    finder: Finder,
    eyes: Option<CascadeClassifier>,
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
    /// The book's Haar detector; `eye_cascade` aligns its faces.
    pub fn new(cascade: &Path, eye_cascade: Option<&Path>, detect_width: i32) -> Result<Self> {
        Ok(Self { finder: Finder::Haar { cascade: load_cascade(cascade)?, detect_width }, eyes: eye_cascade.map(load_cascade).transpose()? })
    }

    /// An ONNX face detector (the BlazeFace contract, which `detector` was checked to be), faces at
    /// `threshold` and above, overlapping ones merged above IoU `nms`.
    pub fn onnx(mut detector: runtime::detect::Detector, threshold: f32, nms: f32) -> Result<Self> {
        let runtime::detect::Contract::Face { spec, .. } = &mut detector.contract else {
            return Err(DemoError::NotFaceDetector(detector.path.clone()));
        };
        spec.iou_threshold = nms;
        spec.check().map_err(|e| DemoError::FaceSetting(e.to_string()))?;
        Ok(Self { finder: Finder::Onnx { detector: Box::new(detector), threshold }, eyes: None })
    }

    /// Whether this detector gives eye keypoints (and so aligns with the book's `FaceAligner`).
    pub fn gives_eyes(&self) -> bool {
        matches!(self.finder, Finder::Onnx { .. })
    }

    /// Faces in a BGR frame, in frame coordinates, largest first.
    pub fn detect(&mut self, frame: &Mat) -> Result<Vec<FaceBox>> {
        let mut faces = match &mut self.finder {
            Finder::Haar { cascade, detect_width } => {
                haar_faces(cascade, *detect_width, frame)?.into_iter().map(|rect| FaceBox { rect, score: 1.0, keypoints: vec![] }).collect()
            }
            Finder::Onnx { detector, threshold } => onnx_faces(detector, *threshold, frame)?,
        };
        faces.sort_by_key(|f| -(f.rect.width * f.rect.height));
        Ok(faces)
    }
}

/// BlazeFace on a frame: letterboxed into the model's square by OpenCV (an area resize, centred,
/// black around, BGR → RGB), run by the runtime, the faces mapped back to the frame.
fn onnx_faces(det: &mut runtime::detect::Detector, threshold: f32, frame: &Mat) -> Result<Vec<FaceBox>> {
    let [s, _] = det.image_size();
    let (fw, fh) = (frame.cols(), frame.rows());
    let fit = Letterbox::fit(fw as usize, fh as usize, s, s);
    let mut small = Mat::default();
    imgproc::resize(frame, &mut small, Size::new(fit.inner[0] as i32, fit.inner[1] as i32), 0.0, 0.0, imgproc::INTER_AREA)?;
    let [ox, oy] = fit.offset.map(|v| v as i32);
    let mut square = Mat::default();
    let (right, bottom) = (s as i32 - fit.inner[0] as i32 - ox, s as i32 - fit.inner[1] as i32 - oy);
    opencv::core::copy_make_border(&small, &mut square, oy, bottom, ox, right, opencv::core::BORDER_CONSTANT, Scalar::all(0.0))?;
    let code = match square.channels() {
        1 => imgproc::COLOR_GRAY2RGB,
        4 => imgproc::COLOR_BGRA2RGB,
        _ => imgproc::COLOR_BGR2RGB,
    };
    let mut rgb = Mat::default();
    imgproc::cvt_color_def(&square, &mut rgb, code)?;
    let (x, _) = runtime::detect::face_input(rgb.data_bytes()?, s, s, s);
    let faces = det.run_faces(&x, threshold)?;
    Ok(faces
        .iter()
        .map(|f| {
            let f = f.map(|p| fit.to_image(p));
            // boxes clipped to the frame: the crops are taken from it
            let (x0, y0) = (f.bbox[0].max(0.0).round() as i32, f.bbox[1].max(0.0).round() as i32);
            let (x1, y1) = (f.bbox[2].min(fw as f32).round() as i32, f.bbox[3].min(fh as f32).round() as i32);
            FaceBox { rect: Rect::new(x0, y0, (x1 - x0).max(1), (y1 - y0).max(1)), score: f.score, keypoints: f.keypoints }
        })
        .filter(|f| f.rect.x < fw && f.rect.y < fh)
        .collect())
}

/// The book's Haar detection: faces of a grey copy downscaled to `detect_width`, in frame pixels.
fn haar_faces(cascade: &mut CascadeClassifier, detect_width: i32, frame: &Mat) -> Result<Vec<Rect>> {
    {
        let mut gray = Mat::default();
        imgproc::cvt_color_def(frame, &mut gray, imgproc::COLOR_BGR2GRAY)?;
        let scale = if detect_width > 0 && gray.cols() > detect_width { detect_width as f64 / gray.cols() as f64 } else { 1.0 };
        let small = if scale < 1.0 {
            let mut s = Mat::default();
            imgproc::resize(&gray, &mut s, Size::new(0, 0), scale, scale, imgproc::INTER_AREA)?;
            s
        } else {
            gray
        };
        let mut found = Vector::<Rect>::new();
        // the book's settings: scaleFactor 1.1, minNeighbors 5, minSize 30x30 (on the downscaled frame)
        cascade.detect_multi_scale(&small, &mut found, 1.1, 5, 0, Size::new(30, 30), Size::default())?;
        Ok(found
            .iter()
            .map(|r| Rect::new((r.x as f64 / scale) as i32, (r.y as f64 / scale) as i32, (r.width as f64 / scale) as i32, (r.height as f64 / scale) as i32))
            .collect())
    }
}

/// The book's `FaceAligner` (imutils, used in the age/gender chapter) from two eye centres in frame
/// pixels, the image's left one first: the frame rotated about the eyes' midpoint so they are level,
/// scaled so that they lie `(1 - 2 * left_eye.0) * size` apart, and cut to `size` x `size` with the
/// left eye at `left_eye` (fractions of the output; the book's defaults are (0.35, 0.35) and 256).
pub fn align_by_eyes(frame: &Mat, [l, r]: [[f32; 2]; 2], size: i32, left_eye: (f64, f64)) -> Result<Mat> {
    let (dx, dy) = (f64::from(r[0] - l[0]), f64::from(r[1] - l[1]));
    let angle = dy.atan2(dx).to_degrees();
    let dist = (dx * dx + dy * dy).sqrt().max(1e-6);
    let scale = (1.0 - 2.0 * left_eye.0) * f64::from(size) / dist;
    let centre = Point2f::new((l[0] + r[0]) / 2.0, (l[1] + r[1]) / 2.0);
    let mut m = imgproc::get_rotation_matrix_2d(centre, angle, scale)?;
    // the midpoint goes to (size / 2, left_eye.1 * size)
    *m.at_2d_mut::<f64>(0, 2)? += f64::from(size) * 0.5 - f64::from(centre.x);
    *m.at_2d_mut::<f64>(1, 2)? += f64::from(size) * left_eye.1 - f64::from(centre.y);
    let mut out = Mat::default();
    imgproc::warp_affine(frame, &mut out, &m, Size::new(size, size), imgproc::INTER_CUBIC, opencv::core::BORDER_CONSTANT, Scalar::default())?;
    Ok(out)
}

/// The book's `FaceAligner` output size and left-eye position.
pub const ALIGNED_SIZE: i32 = 256;
pub const ALIGNED_LEFT_EYE: (f64, f64) = (0.35, 0.35);

impl FaceDetector {
    /// The face to classify and whether it was aligned. With eye keypoints (an ONNX detector) and
    /// `align`: the book's `FaceAligner` from them ([`align_by_eyes`]). With the Haar detector and an eye
    /// cascade: the face region rotated about its centre so that the eyes it finds in the face's upper
    /// half are level. Otherwise the plain crop.
    pub fn aligned_face(&mut self, frame: &Mat, found: &FaceBox, align: bool) -> Result<(Mat, bool)> {
        let face = found.rect;
        if let (true, Some(eyes)) = (align, found.eyes()) {
            return Ok((align_by_eyes(frame, eyes, ALIGNED_SIZE, ALIGNED_LEFT_EYE)?, true));
        }
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

/// Keypoints as small filled dots (a face detector's eyes, nose, mouth and ears).
pub fn draw_points(frame: &mut Mat, points: &[[f32; 2]]) -> Result<()> {
    let r = (frame.cols().min(frame.rows()) / 160).max(2);
    for p in points {
        imgproc::circle(frame, Point::new(p[0].round() as i32, p[1].round() as i32), r, Scalar::new(0.0, 220.0, 255.0, 0.0), -1, imgproc::LINE_AA, 0)?;
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The centre of the bright pixels of one channel of `m` inside `r`.
    fn blob(m: &Mat, channel: usize, r: Rect) -> (f64, f64) {
        let (mut sx, mut sy, mut n) = (0.0, 0.0, 0.0);
        for y in r.y..r.y + r.height {
            for x in r.x..r.x + r.width {
                let p = m.at_2d::<opencv::core::Vec3b>(y, x).unwrap();
                if p[channel] > 128 {
                    sx += f64::from(x);
                    sy += f64::from(y);
                    n += 1.0;
                }
            }
        }
        assert!(n > 0.0, "no blob in channel {channel}");
        (sx / n, sy / n)
    }

    #[test]
    fn align_by_eyes_levels_the_eyes_and_puts_them_where_the_book_does() {
        // two "eyes" 80 px apart on a line tilted by 20 degrees: blue on the image's left, red on its right
        let mut frame = Mat::new_rows_cols_with_default(400, 500, CV_8UC3, Scalar::all(0.0)).unwrap();
        let (a, t) = (20f64.to_radians(), 80.0);
        let l = [200.0f32, 180.0];
        let r = [l[0] + (t * a.cos()) as f32, l[1] + (t * a.sin()) as f32];
        imgproc::circle(&mut frame, Point::new(l[0] as i32, l[1] as i32), 6, Scalar::new(255.0, 0.0, 0.0, 0.0), -1, imgproc::LINE_8, 0).unwrap();
        imgproc::circle(&mut frame, Point::new(r[0].round() as i32, r[1].round() as i32), 6, Scalar::new(0.0, 0.0, 255.0, 0.0), -1, imgproc::LINE_8, 0)
            .unwrap();
        let out = align_by_eyes(&frame, [l, r], ALIGNED_SIZE, ALIGNED_LEFT_EYE).unwrap();
        assert_eq!((out.cols(), out.rows()), (256, 256));
        let half = Rect::new(0, 0, 128, 256);
        let (bx, by) = blob(&out, 0, half);
        let (rx, ry) = blob(&out, 2, Rect::new(128, 0, 128, 256));
        // the image's left eye at (0.35, 0.35) of 256 px, the other at (0.65, 0.35): level, 76.8 px apart
        let tol = 1.5;
        assert!((bx - 0.35 * 256.0).abs() < tol && (by - 0.35 * 256.0).abs() < tol, "left eye at ({bx:.1}, {by:.1})");
        assert!((rx - 0.65 * 256.0).abs() < tol && (ry - 0.35 * 256.0).abs() < tol, "right eye at ({rx:.1}, {ry:.1})");
    }

    #[test]
    fn face_boxes_give_their_eyes_left_to_right() {
        let f = FaceBox { rect: Rect::new(0, 0, 10, 10), score: 0.9, keypoints: vec![[7.0, 3.0], [2.0, 3.5], [5.0, 6.0]] };
        assert_eq!(f.eyes(), Some([[2.0, 3.5], [7.0, 3.0]]));
        assert_eq!(FaceBox { keypoints: vec![], ..f }.eyes(), None);
    }
}
