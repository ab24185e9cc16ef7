//! Non-maximum suppression with ONNX Runtime's semantics, and the post-process of a detector's raw
//! outputs into detections (what the exported graph computes, written out as the reference).

use serde::{Deserialize, Serialize};

use super::boxes::clip;
use super::{setting, Bbox, BoxCoder, DetectError};

/// Whether ONNX Runtime's `NonMaxSuppression` lets box `b` go because of the selected box `a`: the
/// same float operations in the same order (corners taken in either order; no overlap, an empty
/// intersection or an empty box never suppresses), IoU strictly above the threshold.
fn suppresses(a: &Bbox, b: &Bbox, iou_threshold: f32) -> bool {
    let (ax0, ax1) = (a[0].min(a[2]), a[0].max(a[2]));
    let (bx0, bx1) = (b[0].min(b[2]), b[0].max(b[2]));
    let (ix0, ix1) = (ax0.max(bx0), ax1.min(bx1));
    if ix1 <= ix0 {
        return false;
    }
    let (ay0, ay1) = (a[1].min(a[3]), a[1].max(a[3]));
    let (by0, by1) = (b[1].min(b[3]), b[1].max(b[3]));
    let (iy0, iy1) = (ay0.max(by0), ay1.min(by1));
    if iy1 <= iy0 {
        return false;
    }
    let inter = (ix1 - ix0) * (iy1 - iy0);
    if inter <= 0.0 {
        return false;
    }
    let area_a = (ax1 - ax0) * (ay1 - ay0);
    let area_b = (bx1 - bx0) * (by1 - by0);
    let union = area_a + area_b - inter;
    if area_a <= 0.0 || area_b <= 0.0 || union <= 0.0 {
        return false;
    }
    inter / union > iou_threshold
}

/// One class's NMS as ONNX's `NonMaxSuppression` (ONNX Runtime's kernel): boxes with a score above
/// `score_threshold` (strictly; all boxes without one), highest score first (equal scores: the lower
/// index first), each kept unless it overlaps a kept one by IoU > `iou_threshold`, at most
/// `max_output` kept (None: no cap). Returns the kept indices in the order they were kept.
pub fn nms(boxes: &[Bbox], scores: &[f32], iou_threshold: f32, score_threshold: Option<f32>, max_output: Option<usize>) -> Vec<usize> {
    assert_eq!(boxes.len(), scores.len(), "one score per box");
    if max_output == Some(0) {
        return vec![];
    }
    let mut order: Vec<usize> = (0..boxes.len()).filter(|&i| score_threshold.is_none_or(|t| scores[i] > t)).collect();
    // stable: equal scores stay in index order
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut kept: Vec<usize> = vec![];
    for i in order {
        if kept.iter().any(|&k| suppresses(&boxes[k], &boxes[i], iou_threshold)) {
            continue;
        }
        if max_output.is_some_and(|m| kept.len() >= m) {
            break;
        }
        kept.push(i);
    }
    kept
}

/// One detection: `class` counts from 1 (0 is the background), the box in the image's pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub class: usize,
    pub score: f32,
    pub bbox: Bbox,
}

fn d_score() -> f32 {
    0.01
}
fn d_iou() -> f32 {
    0.45
}
fn d_per_class() -> usize {
    100
}
fn d_max() -> usize {
    100
}

/// The tail every detector shares, in the exported graph and here: class scores, decoded boxes
/// clipped to the image, per class (1..) NMS with ONNX Runtime's semantics and a per-class cap,
/// then the best `max_detections` over all classes (equal scores: in class order, then NMS order,
/// as ONNX's `TopK` breaks ties by the lower index).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostProcess {
    /// Scores must be above this to be kept (TFOD's SSD configs: 1e-8; torchvision's SSD: 0.01).
    #[serde(default = "d_score")]
    pub score_threshold: f32,
    /// Boxes of a class overlapping a better one by more than this are suppressed.
    #[serde(default = "d_iou")]
    pub iou_threshold: f32,
    #[serde(default = "d_per_class")]
    pub max_per_class: usize,
    #[serde(default = "d_max")]
    pub max_detections: usize,
}

impl Default for PostProcess {
    fn default() -> Self {
        PostProcess { score_threshold: d_score(), iou_threshold: d_iou(), max_per_class: d_per_class(), max_detections: d_max() }
    }
}

impl PostProcess {
    pub fn check(&self) -> Result<(), DetectError> {
        if !(0.0..=1.0).contains(&self.iou_threshold) {
            return Err(setting("postprocess.iou_threshold", format!("{} is not in [0, 1]", self.iou_threshold)));
        }
        if !self.score_threshold.is_finite() {
            return Err(setting("postprocess.score_threshold", format!("{} is not a number", self.score_threshold)));
        }
        if self.max_per_class == 0 || self.max_detections == 0 {
            return Err(setting("postprocess", "max_per_class and max_detections must be at least 1"));
        }
        Ok(())
    }
}

/// Softmax over each row of `logits` `[rows, classes]`, in f32 with the row's maximum subtracted.
pub fn softmax_rows(logits: &[f32], classes: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(logits.len());
    for row in logits.chunks(classes) {
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let e: Vec<f32> = row.iter().map(|v| (v - m).exp()).collect();
        let s: f32 = e.iter().sum();
        out.extend(e.iter().map(|v| v / s));
    }
    out
}

/// The detections of one image from a detector's raw outputs: class `scores` `[P, C]`
/// (probabilities, column 0 the background) and box `codes` relative to `priors` (pixels), on an
/// image of `image` = `[height, width]` pixels. The codes are one box per row `[P, 4]` (an SSD's), or
/// one per row and foreground class `[P, 4 (C − 1)]` (a Faster R-CNN's second stage, whose "priors"
/// are its proposals).
pub fn postprocess(
    scores: &[f32],
    codes: &[f32],
    priors: &[Bbox],
    coder: &BoxCoder,
    image: [usize; 2],
    p: &PostProcess,
) -> Result<Vec<Detection>, DetectError> {
    let n = priors.len();
    if n == 0 || !scores.len().is_multiple_of(n) || scores.len() / n < 2 {
        return Err(DetectError::Length { what: format!("class scores (P = {n} priors × C ≥ 2 classes)"), expected: n * 2, got: scores.len() });
    }
    let classes = scores.len() / n;
    if codes.len() != n * 4 && codes.len() != n * 4 * (classes - 1) {
        return Err(DetectError::Length {
            what: format!("box codes (4 per prior, or 4 per prior and class of {})", classes - 1),
            expected: n * 4,
            got: codes.len(),
        });
    }
    let row = codes.len() / n;
    let (h, w) = (image[0] as f32, image[1] as f32);
    let decode = |class: usize| -> Vec<Bbox> {
        let at = if row == 4 { 0 } else { (class - 1) * 4 };
        (0..n)
            .map(|i| {
                let c = &codes[i * row + at..i * row + at + 4];
                clip(&coder.decode(&[c[0], c[1], c[2], c[3]], &priors[i]), w, h)
            })
            .collect()
    };
    let shared = (row == 4).then(|| decode(1));
    let mut all = vec![];
    for class in 1..classes {
        let own;
        let boxes = match &shared {
            Some(b) => b,
            None => {
                own = decode(class);
                &own
            }
        };
        let col: Vec<f32> = (0..n).map(|i| scores[i * classes + class]).collect();
        for i in nms(boxes, &col, p.iou_threshold, Some(p.score_threshold), Some(p.max_per_class)) {
            all.push(Detection { class, score: col[i], bbox: boxes[i] });
        }
    }
    all.sort_by(|a, b| b.score.total_cmp(&a.score));
    all.truncate(p.max_detections);
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nms_keeps_equal_iou_drops_equal_score_and_caps_after_suppression() {
        // box 1 overlaps box 0 by exactly 1/3 (2×2 squares sharing a 1×2 strip: 2 / 6)
        let boxes = [[0.0, 0.0, 2.0, 2.0], [1.0, 0.0, 3.0, 2.0], [0.1, 0.0, 2.1, 2.0], [10.0, 10.0, 11.0, 11.0]];
        let scores = [0.9, 0.8, 0.85, 0.5];
        let third = 2.0f32 / 6.0;
        // IoU equal to the threshold is kept; box 2 (IoU 0.9 with box 0) goes
        assert_eq!(nms(&boxes, &scores, third, None, None), [0, 1, 3]);
        // just below: box 1 goes too
        assert_eq!(nms(&boxes, &scores, third - 1e-6, None, None), [0, 3]);
        // a score equal to the threshold is dropped
        assert_eq!(nms(&boxes, &scores, 0.5, Some(0.5), None), [0, 1]);
        // the cap counts kept boxes, after suppression
        assert_eq!(nms(&boxes, &scores, 0.5, None, Some(2)), [0, 1]);
        // equal scores: the lower index first
        assert_eq!(nms(&[[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]], &[0.7, 0.7], 0.5, None, None), [0]);
        assert_eq!(nms(&[[5.0, 5.0, 6.0, 6.0], [0.0, 0.0, 1.0, 1.0]], &[0.7, 0.7], 0.5, None, None), [0, 1]);
        // corners in either order
        assert_eq!(nms(&[[2.0, 2.0, 0.0, 0.0], [0.0, 0.0, 2.0, 2.0]], &[0.9, 0.8], 0.5, None, None), [0]);
    }

    #[test]
    fn postprocess_decodes_suppresses_per_class_and_keeps_the_best() {
        let priors = [[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0], [50.0, 50.0, 60.0, 60.0]];
        let codes = [0.0f32; 12];
        // 3 classes (background, a, b): priors 0 and 1 say "a", prior 2 says "b"; prior 1 also a bit "b"
        let scores = [0.1, 0.8, 0.1, 0.2, 0.6, 0.2, 0.3, 0.0, 0.7];
        let p = PostProcess { score_threshold: 0.05, iou_threshold: 0.5, max_per_class: 10, max_detections: 10 };
        let d = postprocess(&scores, &codes, &priors, &BoxCoder::default(), [100, 100], &p).unwrap();
        let got: Vec<(usize, f32)> = d.iter().map(|d| (d.class, d.score)).collect();
        // class a: prior 1 suppressed by prior 0 (IoU 0.82); class b: prior 2, prior 1 (apart from
        // it; that prior 1 was suppressed as an "a" does not matter), prior 0 suppressed by prior 1
        assert_eq!(got, [(1, 0.8), (2, 0.7), (2, 0.2)]);
        assert_eq!(d[0].bbox, [0.0, 0.0, 10.0, 10.0]);
        let top2 = postprocess(&scores, &codes, &priors, &BoxCoder::default(), [100, 100], &PostProcess { max_detections: 2, ..p }).unwrap();
        assert_eq!(top2.len(), 2);
        assert!(postprocess(&scores[..8], &codes, &priors, &BoxCoder::default(), [100, 100], &p).is_err());
    }

    #[test]
    fn postprocess_reads_one_box_per_class_when_the_codes_have_them() {
        // one proposal, classes background, a, b: class a's code moves the box right by its width,
        // class b's keeps it
        let priors = [[0.0, 0.0, 10.0, 10.0]];
        let coder = BoxCoder::default();
        let shifted = coder.encode(&[10.0, 0.0, 20.0, 10.0], &priors[0]);
        let mut codes = shifted.to_vec();
        codes.extend([0.0; 4]);
        let scores = [0.2, 0.5, 0.3];
        let p = PostProcess { score_threshold: 0.05, iou_threshold: 0.5, max_per_class: 10, max_detections: 10 };
        let d = postprocess(&scores, &codes, &priors, &coder, [100, 100], &p).unwrap();
        assert_eq!((d[0].class, d[1].class), (1, 2));
        for (a, b) in d[0].bbox.iter().zip([10.0, 0.0, 20.0, 10.0]) {
            assert!((a - b).abs() < 1e-4, "{:?}", d[0].bbox);
        }
        assert_eq!(d[1].bbox, priors[0]);
        // neither 4 nor 4 × 2 codes per row
        assert!(postprocess(&scores, &codes[..6], &priors, &coder, [100, 100], &p).is_err());
    }
}
