//! The pipelines: what happens to each frame between capture and output.
//!
//! - `classify`: the whole frame, top label and probability drawn.
//! - `emotion`: the book's real-time emotion detector (§6.6): Haar faces on a downscaled grey frame, the
//!   largest face classified, box and label drawn, a probability bar panel beside the frame.
//! - `age-gender`: every face through an age and a gender model (optionally aligned on the eyes,
//!   optionally 10-crop).
//! - `orientation`: the rotation of each frame or image predicted and undone.
//! - `faces`: every face (Haar, or an ONNX detector with its eye keypoints), boxes and keypoints drawn,
//!   written as detections (the JSON `runtime eval-detections` scores).
//! - `detect`: an object detector (one of our exports, or a TFOD-contract model made elsewhere) on the
//!   frame brought to its size by OpenCV; boxes with label and score drawn, one colour per class.

use std::time::Instant;

use data::rotation::angle_of;
use opencv::core::{Mat, Point, Rect, Size};
use opencv::imgproc;
use opencv::prelude::*;
use runtime::detect::{class_colour, pixel_box, Detector};
use runtime::images::average_crops;
use runtime::Model;
use serde_json::{json, Value};

use crate::vision::{self, FaceBox, FaceDetector};
use crate::DemoError;

type Result<T, E = DemoError> = std::result::Result<T, E>;

/// Which pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Classify,
    Emotion,
    AgeGender,
    Orientation,
    Detect,
    Faces,
}

/// Time spent in each stage of one frame, in milliseconds.
#[derive(Debug, Default, Clone, Copy)]
pub struct StageTimes {
    pub detect: f64,
    pub infer: f64,
    pub draw: f64,
}

/// What a frame gave.
pub struct Outcome {
    /// The frame's JSON line (without index and timestamp, which the caller adds).
    pub json: Value,
    /// The frame to show and write.
    pub annotated: Mat,
    /// Orientation: the corrected frame without overlay (written for image folders).
    pub corrected: Option<Mat>,
}

pub use data::metrics::argmax;

/// A model with its role in the pipeline.
pub struct Pipeline {
    pub kind: Kind,
    /// The classifier (every kind but `detect`).
    pub model: Option<Model>,
    /// `detect`: the detector, and the lowest score drawn.
    pub detector: Option<Detector>,
    pub min_score: f32,
    /// Age-gender: the gender model (`model` is the age model).
    pub second: Option<Model>,
    pub faces: Option<FaceDetector>,
    /// Age-gender: align each face before classifying (from the detector's eyes, else the eye cascade).
    pub align: bool,
    pub ten_crop: bool,
    pub panel_width: i32,
    /// Classify: how many labels to draw (the book's top-5 visualisation).
    pub top: usize,
}

/// Class probabilities of one image region for `model` (10-crop averaged when asked).
pub fn classify(model: &mut Model, region: &Mat, ten_crop: bool) -> Result<Vec<f32>> {
    let img = vision::to_image(region, model.preprocess.channels == 1)?;
    let n = model.preprocess.sample_len();
    let crops = if ten_crop { 10 } else { 1 };
    let mut data = vec![0f32; n * crops];
    if ten_crop {
        model.preprocess.apply_ten_crop(img, &mut data);
    } else {
        model.preprocess.apply(img, &mut data);
    }
    let probs = model.run(&data, crops)?;
    Ok(average_crops(&probs, model.num_classes(), crops))
}

fn probabilities(model: &Model, p: &[f32]) -> Value {
    Value::Object(model.labels.iter().zip(p).map(|(l, v)| (l.clone(), json!(v))).collect())
}

fn face_json(model: &Model, p: &[f32]) -> Value {
    let best = argmax(p);
    json!({"label": model.label(best), "probability": p[best], "probabilities": probabilities(model, p)})
}

/// Where a face is: its box `[x, y, w, h]`, its detector's score and, from an ONNX detector, its keypoints.
fn face_place(f: &FaceBox) -> Value {
    let r = f.rect;
    let mut v = json!({"box": [r.x, r.y, r.width, r.height], "score": f.score});
    if !f.keypoints.is_empty() {
        v["keypoints"] = json!(f.keypoints);
    }
    v
}

/// `v`'s fields laid over `base`'s.
fn merged(mut base: Value, v: Value) -> Value {
    if let (Some(b), Value::Object(o)) = (base.as_object_mut(), v) {
        b.extend(o);
    }
    base
}

impl Pipeline {
    /// Checks that the models fit the pipeline.
    pub fn check(&self) -> Result<()> {
        if self.kind == Kind::Detect {
            return if self.detector.is_some() { Ok(()) } else { Err(DemoError::NoDetector) };
        }
        if self.kind == Kind::Faces {
            return if self.faces.is_some() { Ok(()) } else { Err(DemoError::NoFaceDetector) };
        }
        let model = self.model.as_ref().ok_or(DemoError::NoModel)?;
        if self.kind == Kind::Orientation && !model.labels.iter().all(|l| angle_of(l).is_some()) {
            return Err(DemoError::NotOrientation { model: model.path.clone(), labels: model.labels.clone() });
        }
        if matches!(self.kind, Kind::Emotion | Kind::AgeGender) && self.faces.is_none() {
            return Err(DemoError::NoFaceDetector);
        }
        Ok(())
    }

    pub fn process(&mut self, frame: &Mat, t: &mut StageTimes) -> Result<Outcome> {
        match self.kind {
            Kind::Classify => self.classify_frame(frame, t),
            Kind::Emotion => self.emotion(frame, t),
            Kind::AgeGender => self.age_gender(frame, t),
            Kind::Orientation => self.orientation(frame, t),
            Kind::Detect => self.detect(frame, t),
            Kind::Faces => self.faces(frame, t),
        }
    }

    /// The classifier; `check` made sure there is one.
    fn clf(&self) -> &Model {
        self.model.as_ref().expect("checked: every kind but detect has a model")
    }

    fn clf_mut(&mut self) -> &mut Model {
        self.model.as_mut().expect("checked: every kind but detect has a model")
    }

    fn detect(&mut self, frame: &Mat, t: &mut StageTimes) -> Result<Outcome> {
        let det = self.detector.as_mut().expect("checked");
        let s = Instant::now();
        // OpenCV brings the frame to the model's size and channel order; the detector takes the bytes
        let [h, w] = det.image_size();
        let mut small = Mat::default();
        imgproc::resize(frame, &mut small, Size::new(w as i32, h as i32), 0.0, 0.0, imgproc::INTER_LINEAR)?;
        // frames are BGR, or grey from some cameras
        let code = match (small.channels(), det.channels()) {
            (1, 1) => None,
            (1, _) => Some(imgproc::COLOR_GRAY2RGB),
            (4, 1) => Some(imgproc::COLOR_BGRA2GRAY),
            (4, _) => Some(imgproc::COLOR_BGRA2RGB),
            (_, 1) => Some(imgproc::COLOR_BGR2GRAY),
            _ => Some(imgproc::COLOR_BGR2RGB),
        };
        let px = match code {
            Some(code) => {
                let mut px = Mat::default();
                imgproc::cvt_color_def(&small, &mut px, code)?;
                px
            }
            None => small,
        };
        t.detect = s.elapsed().as_secs_f64() * 1e3;
        let s = Instant::now();
        let mut found = det.detect_pixels(px.data_bytes()?, w, h, self.min_score)?;
        let (sx, sy) = (frame.cols() as f32 / w as f32, frame.rows() as f32 / h as f32);
        for f in &mut found {
            f.bbox = models::detect::scale_box(&f.bbox, sx, sy);
        }
        t.infer = s.elapsed().as_secs_f64() * 1e3;
        let s = Instant::now();
        let mut annotated = frame.try_clone()?;
        let (fw, fh) = (i64::from(annotated.cols()), i64::from(annotated.rows()));
        for f in &found {
            // within one pixel of the frame, so the i32 casts hold
            let [x0, y0, x1, y1] = pixel_box(&f.bbox, fw, fh).map(|v| v as i32);
            let [r, g, b] = class_colour(f.class).map(f64::from);
            vision::draw_box_in(&mut annotated, Rect::new(x0, y0, (x1 - x0).max(1), (y1 - y0).max(1)), &format!("{}: {:.2}", f.label, f.score), (b, g, r))?;
        }
        t.draw = s.elapsed().as_secs_f64() * 1e3;
        Ok(Outcome { json: json!({"objects": found.len(), "detections": found}), annotated, corrected: None })
    }

    fn faces(&mut self, frame: &Mat, t: &mut StageTimes) -> Result<Outcome> {
        let s = Instant::now();
        let faces = self.faces.as_mut().expect("checked").detect(frame)?;
        t.detect = s.elapsed().as_secs_f64() * 1e3;
        let s = Instant::now();
        let mut annotated = frame.try_clone()?;
        let mut found = Vec::with_capacity(faces.len());
        for f in &faces {
            vision::draw_box(&mut annotated, f.rect, &format!("face: {:.2}", f.score))?;
            vision::draw_points(&mut annotated, &f.keypoints)?;
            let r = f.rect;
            let mut d = json!({"label": "face", "class": 1, "score": f.score, "box": [r.x, r.y, r.x + r.width, r.y + r.height]});
            if !f.keypoints.is_empty() {
                d["keypoints"] = json!(f.keypoints);
            }
            found.push(d);
        }
        t.draw = s.elapsed().as_secs_f64() * 1e3;
        Ok(Outcome { json: json!({"objects": faces.len(), "detections": found}), annotated, corrected: None })
    }

    fn classify_frame(&mut self, frame: &Mat, t: &mut StageTimes) -> Result<Outcome> {
        let s = Instant::now();
        let p = {
            let ten_crop = self.ten_crop;
            classify(self.clf_mut(), frame, ten_crop)?
        };
        t.infer = s.elapsed().as_secs_f64() * 1e3;
        let s = Instant::now();
        let best = argmax(&p);
        let mut annotated = frame.try_clone()?;
        for (rank, (i, prob)) in data::metrics::top_k(&p, self.top.max(1)).into_iter().enumerate() {
            let y = 24 + 24 * rank as i32;
            vision::draw_label(&mut annotated, Point::new(8, y), &format!("{}. {}: {:.1}%", rank + 1, self.clf().label(i), 100.0 * prob))?;
        }
        t.draw = s.elapsed().as_secs_f64() * 1e3;
        let json = json!({"label": self.clf().label(best), "probability": p[best], "probabilities": probabilities(self.clf(), &p)});
        Ok(Outcome { json, annotated, corrected: None })
    }

    fn emotion(&mut self, frame: &Mat, t: &mut StageTimes) -> Result<Outcome> {
        let s = Instant::now();
        let faces = self.faces.as_mut().expect("checked").detect(frame)?;
        t.detect = s.elapsed().as_secs_f64() * 1e3;
        let s = Instant::now();
        let result = match faces.first() {
            Some(f) => {
                let ten_crop = self.ten_crop;
                Some((f, classify(self.clf_mut(), &vision::crop(frame, f.rect)?, ten_crop)?))
            }
            None => None,
        };
        t.infer = s.elapsed().as_secs_f64() * 1e3;
        let s = Instant::now();
        let mut annotated = frame.try_clone()?;
        if let Some((f, p)) = &result {
            let best = argmax(p);
            vision::draw_box(&mut annotated, f.rect, &format!("{}: {:.0}%", self.clf().label(best), 100.0 * p[best]))?;
        }
        let panel = vision::probability_panel(&self.clf().labels, result.as_ref().map(|(_, p)| p.as_slice()), self.panel_width, annotated.rows())?;
        let annotated = vision::beside(&annotated, &panel)?;
        t.draw = s.elapsed().as_secs_f64() * 1e3;
        let faces_json: Vec<Value> = result.iter().map(|(f, p)| merged(face_place(f), face_json(self.clf(), p))).collect();
        Ok(Outcome { json: json!({"faces_detected": faces.len(), "faces": faces_json}), annotated, corrected: None })
    }

    fn age_gender(&mut self, frame: &Mat, t: &mut StageTimes) -> Result<Outcome> {
        let s = Instant::now();
        let detector = self.faces.as_mut().expect("checked");
        let faces = detector.detect(frame)?;
        let mut crops = vec![];
        for f in &faces {
            crops.push((f, detector.aligned_face(frame, f, self.align)?));
        }
        t.detect = s.elapsed().as_secs_f64() * 1e3;
        let s = Instant::now();
        let mut results = vec![];
        for (r, (face, aligned)) in crops {
            let ten_crop = self.ten_crop;
            let age = classify(self.clf_mut(), &face, ten_crop)?;
            let gender = match self.second.as_mut() {
                Some(g) => Some(classify(g, &face, self.ten_crop)?),
                None => None,
            };
            results.push((r, aligned, age, gender));
        }
        t.infer = s.elapsed().as_secs_f64() * 1e3;
        let s = Instant::now();
        let mut annotated = frame.try_clone()?;
        let mut out = vec![];
        for (f, aligned, age, gender) in &results {
            let mut text = self.clf().label(argmax(age)).to_string();
            let mut j = merged(face_place(f), json!({"aligned": aligned, "age": face_json(self.clf(), age)}));
            if let (Some(g), Some(gm)) = (gender, self.second.as_ref()) {
                text = format!("{}, {text}", gm.label(argmax(g)));
                j["gender"] = face_json(gm, g);
            }
            vision::draw_box(&mut annotated, f.rect, &text)?;
            out.push(j);
        }
        t.draw = s.elapsed().as_secs_f64() * 1e3;
        Ok(Outcome { json: json!({"faces_detected": faces.len(), "faces": out}), annotated, corrected: None })
    }

    fn orientation(&mut self, frame: &Mat, t: &mut StageTimes) -> Result<Outcome> {
        let s = Instant::now();
        let p = {
            let ten_crop = self.ten_crop;
            classify(self.clf_mut(), frame, ten_crop)?
        };
        t.infer = s.elapsed().as_secs_f64() * 1e3;
        let s = Instant::now();
        let best = argmax(&p);
        let angle = angle_of(self.clf().label(best)).expect("checked");
        // the label is how far the image was turned clockwise: turn it back
        let mut corrected = Mat::default();
        match angle {
            90 => opencv::core::rotate(frame, &mut corrected, opencv::core::ROTATE_90_COUNTERCLOCKWISE)?,
            180 => opencv::core::rotate(frame, &mut corrected, opencv::core::ROTATE_180)?,
            270 => opencv::core::rotate(frame, &mut corrected, opencv::core::ROTATE_90_CLOCKWISE)?,
            _ => corrected = frame.try_clone()?,
        }
        let mut annotated = corrected.try_clone()?;
        vision::draw_label(&mut annotated, Point::new(8, 24), &format!("was rotated {angle} deg ({:.0}%)", 100.0 * p[best]))?;
        t.draw = s.elapsed().as_secs_f64() * 1e3;
        let json = json!({"rotation": angle, "probability": p[best], "probabilities": probabilities(self.clf(), &p)});
        Ok(Outcome { json, annotated, corrected: Some(corrected) })
    }
}
