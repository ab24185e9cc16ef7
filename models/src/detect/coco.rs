//! COCO-style AP@[.5:.95] as pycocotools' `COCOeval` (box IoU, area range "all", at most 100
//! detections per image and class) computes it: the second metric beside the book's mAP@0.5.
//!
//! Per image and class, ground truth is ordered with the ignored ones last and detections by score
//! (ties in the order given); at each IoU threshold 0.50, 0.55, …, 0.95 every detection takes the
//! not-yet-taken ground truth it overlaps most, at or above the threshold, preferring ones that are not
//! ignored. Over all images, precision made non-increasing from the right is read at the 101 recall
//! points 0, 0.01, …, 1 (zero past the last recall reached); AP is the mean over thresholds, recall
//! points and the classes that have ground truth. A `difficult` object is COCO's `iscrowd`: ignored,
//! matched by intersection over the detection's area, and able to absorb several detections.

use serde::{Deserialize, Serialize};

use super::{Bbox, Detection, GroundTruth};

/// pycocotools' default `maxDets[-1]`.
const MAX_DETS: usize = 100;
const THRESHOLDS: usize = 10;
const RECALL_POINTS: usize = 101;

/// `np.linspace(start, stop, n)` as numpy computes it: `i * step + start`, the last value `stop`.
fn linspace(start: f64, stop: f64, n: usize) -> Vec<f64> {
    let step = (stop - start) / (n - 1) as f64;
    (0..n).map(|i| if i == n - 1 { stop } else { i as f64 * step + start }).collect()
}

/// COCO's box IoU on `[x, y, w, h]` (maskUtils' `bbIou`): intersection over union, or over the
/// detection's area when the ground truth is a crowd.
fn iou_xywh(d: &[f64; 4], g: &[f64; 4], crowd: bool) -> f64 {
    let w = (d[0] + d[2]).min(g[0] + g[2]) - d[0].max(g[0]);
    if w <= 0.0 {
        return 0.0;
    }
    let h = (d[1] + d[3]).min(g[1] + g[3]) - d[1].max(g[1]);
    if h <= 0.0 {
        return 0.0;
    }
    let i = w * h;
    let u = if crowd { d[2] * d[3] } else { d[2] * d[3] + g[2] * g[3] - i };
    i / u
}

fn xywh(b: &Bbox) -> [f64; 4] {
    let [x0, y0, x1, y1] = b.map(f64::from);
    [x0, y0, x1 - x0, y1 - y0]
}

/// One detection after matching: its score, and per threshold whether it matched and whether the
/// match was an ignored (crowd) object.
#[derive(Debug, Clone)]
struct Scored {
    score: f32,
    matched: [bool; THRESHOLDS],
    ignored: [bool; THRESHOLDS],
}

#[derive(Debug, Clone, Default)]
struct ClassTally {
    /// Detections of every image in image order (each image's best first).
    scored: Vec<Scored>,
    /// Ground truth that is not ignored.
    objects: usize,
}

/// COCO's AP of one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoResult {
    /// AP@[.5:.95]: `None` when no class has ground truth.
    pub ap: Option<f64>,
    /// AP at IoU 0.50 and 0.75 with COCO's 101-point interpolation.
    pub ap50: Option<f64>,
    pub ap75: Option<f64>,
    /// AP@[.5:.95] of classes 1..=K (index 0 is class 1).
    pub per_class: Vec<Option<f64>>,
}

/// Accumulates images, then [`CocoEvaluator::evaluate`]s.
#[derive(Debug, Clone)]
pub struct CocoEvaluator {
    thresholds: Vec<f64>,
    tallies: Vec<ClassTally>,
}

impl CocoEvaluator {
    /// For classes 1..=`classes`.
    pub fn new(classes: usize) -> Self {
        CocoEvaluator { thresholds: linspace(0.5, 0.95, THRESHOLDS), tallies: vec![ClassTally::default(); classes] }
    }

    /// Adds one image; classes outside 1..=K are the caller's to refuse ([`super::MapEvaluator`] does).
    pub fn add_image(&mut self, truth: &[GroundTruth], detections: &[Detection]) {
        for (c, tally) in self.tallies.iter_mut().enumerate() {
            let class = c + 1;
            // not ignored first, each group in the order given (a stable sort, as numpy's mergesort)
            let mut gts: Vec<&GroundTruth> = truth.iter().filter(|g| g.class == class).collect();
            gts.sort_by_key(|g| g.difficult);
            let mut dets: Vec<&Detection> = detections.iter().filter(|d| d.class == class).collect();
            dets.sort_by(|a, b| b.score.total_cmp(&a.score));
            dets.truncate(MAX_DETS);
            tally.objects += gts.iter().filter(|g| !g.difficult).count();
            let g_boxes: Vec<[f64; 4]> = gts.iter().map(|g| xywh(&g.bbox)).collect();
            let ious: Vec<Vec<f64>> =
                dets.iter().map(|d| g_boxes.iter().zip(&gts).map(|(g, gt)| iou_xywh(&xywh(&d.bbox), g, gt.difficult)).collect()).collect();
            let mut scored: Vec<Scored> = dets.iter().map(|d| Scored { score: d.score, matched: [false; THRESHOLDS], ignored: [false; THRESHOLDS] }).collect();
            for (t, &threshold) in self.thresholds.iter().enumerate() {
                let mut taken = vec![false; gts.len()];
                for (di, row) in ious.iter().enumerate() {
                    let mut best = threshold.min(1.0 - 1e-10);
                    let mut m: Option<usize> = None;
                    for (gi, g) in gts.iter().enumerate() {
                        if taken[gi] && !g.difficult {
                            continue;
                        }
                        // once a real object is matched, the ignored ones (sorted last) cannot take over
                        if m.is_some_and(|m| !gts[m].difficult) && g.difficult {
                            break;
                        }
                        if row[gi] < best {
                            continue;
                        }
                        best = row[gi];
                        m = Some(gi);
                    }
                    if let Some(m) = m {
                        scored[di].matched[t] = true;
                        scored[di].ignored[t] = gts[m].difficult;
                        taken[m] = true;
                    }
                }
            }
            tally.scored.extend(scored);
        }
    }

    pub fn evaluate(&self) -> CocoResult {
        let recall_points = linspace(0.0, 1.0, RECALL_POINTS);
        // precision[class][threshold][recall point]; None for a class without ground truth
        let precision: Vec<Option<Vec<Vec<f64>>>> = self
            .tallies
            .iter()
            .map(|tally| {
                if tally.objects == 0 {
                    return None;
                }
                let mut order: Vec<&Scored> = tally.scored.iter().collect();
                order.sort_by(|a, b| b.score.total_cmp(&a.score));
                let per_threshold = (0..THRESHOLDS)
                    .map(|t| {
                        let (mut tp, mut fp) = (0.0f64, 0.0f64);
                        let (mut rc, mut pr) = (Vec::with_capacity(order.len()), Vec::with_capacity(order.len()));
                        for s in &order {
                            if !s.ignored[t] {
                                if s.matched[t] {
                                    tp += 1.0;
                                } else {
                                    fp += 1.0;
                                }
                            }
                            rc.push(tp / tally.objects as f64);
                            pr.push(tp / (fp + tp + f64::EPSILON));
                        }
                        for i in (1..pr.len()).rev() {
                            if pr[i] > pr[i - 1] {
                                pr[i - 1] = pr[i];
                            }
                        }
                        // np.searchsorted(rc, r, side='left'): the first recall reaching r
                        recall_points.iter().map(|&r| rc.partition_point(|&x| x < r)).map(|i| pr.get(i).copied().unwrap_or(0.0)).collect()
                    })
                    .collect();
                Some(per_threshold)
            })
            .collect();
        let mean = |values: &mut dyn Iterator<Item = f64>| {
            let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
            (n > 0).then(|| sum / n as f64)
        };
        let over = |ts: std::ops::Range<usize>| mean(&mut precision.iter().flatten().flat_map(|p| p[ts.clone()].iter().flatten().copied()));
        CocoResult {
            ap: over(0..THRESHOLDS),
            ap50: over(0..1),
            ap75: over(5..6),
            per_class: precision.iter().map(|p| p.as_ref().and_then(|p| mean(&mut p.iter().flatten().copied()))).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gt(bbox: Bbox) -> GroundTruth {
        GroundTruth { class: 1, bbox, difficult: false }
    }

    fn det(score: f32, bbox: Bbox) -> Detection {
        Detection { class: 1, score, bbox }
    }

    #[test]
    fn the_thresholds_are_numpys_linspace() {
        let t = linspace(0.5, 0.95, 10);
        assert_eq!((t[0], t[5], t[9]), (0.5, 0.75, 0.95));
        assert_eq!(linspace(0.0, 1.0, 101)[37], 37.0 * 0.01);
    }

    #[test]
    fn a_perfect_detection_scores_one_and_a_loose_one_only_at_low_thresholds() {
        let mut e = CocoEvaluator::new(1);
        e.add_image(&[gt([0.0, 0.0, 10.0, 10.0])], &[det(0.9, [0.0, 0.0, 10.0, 10.0])]);
        // precision is tp / (tp + fp + eps), as pycocotools divides
        assert!((e.evaluate().ap.unwrap() - 1.0).abs() < 1e-12);
        // IoU 0.64: a hit at 0.50..0.60 (3 of 10 thresholds), a miss above
        let mut e = CocoEvaluator::new(1);
        e.add_image(&[gt([0.0, 0.0, 10.0, 10.0])], &[det(0.9, [0.0, 0.0, 10.0, 6.4])]);
        let r = e.evaluate();
        assert!((r.ap.unwrap() - 0.3).abs() < 1e-12, "{r:?}");
        assert!((r.ap50.unwrap() - 1.0).abs() < 1e-12 && r.ap75 == Some(0.0), "{r:?}");
        // no ground truth anywhere: no AP
        assert_eq!(CocoEvaluator::new(2).evaluate().ap, None);
    }
}
