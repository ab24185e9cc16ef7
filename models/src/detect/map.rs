//! mAP as the book measures it: the TensorFlow Object Detection API's `PascalDetectionEvaluator`,
//! which the book's `eval.py` runs (IoU ≥ 0.5, VOC2010+ all-point average precision).

use serde::{Deserialize, Serialize};

use super::coco::{CocoEvaluator, CocoResult};
use super::{setting, Bbox, DetectError, Detection};

/// A labelled box of an image. `difficult` ones (PASCAL VOC's flag) count neither as objects to find
/// nor against a detection that finds them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GroundTruth {
    pub class: usize,
    pub bbox: Bbox,
    #[serde(default)]
    pub difficult: bool,
}

/// IoU in f64 (TFOD's `np_box_ops.iou`: no +1 pixel).
fn iou64(a: &Bbox, b: &Bbox) -> f64 {
    let a = a.map(f64::from);
    let b = b.map(f64::from);
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

#[derive(Debug, Clone, Default)]
struct Tally {
    /// Every counted detection's score and whether it was a true positive.
    scored: Vec<(f32, bool)>,
    ground_truth: usize,
}

/// Average precision per class and their mean.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApResult {
    /// AP of classes 1..=K (index 0 is class 1); None for a class with no ground truth.
    pub per_class: Vec<Option<f64>>,
    /// The mean over classes that have ground truth (None: no class has any).
    pub mean_ap: Option<f64>,
    /// Ground-truth objects per class (difficult ones left out).
    pub ground_truth: Vec<usize>,
    /// Detections counted per class.
    pub detections: Vec<usize>,
    /// COCO's AP@[.5:.95] of the same images (pycocotools' `COCOeval`), the second metric.
    #[serde(default)]
    pub coco: Option<CocoResult>,
}

/// One class's AP@0.5 in a report, by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassAp {
    pub label: String,
    /// `None` for a class with no ground truth in the set.
    pub ap: Option<f64>,
    /// Ground-truth objects of the class in the set (difficult ones left out).
    pub objects: usize,
    /// The class's detections the evaluator scored.
    pub detections: usize,
}

impl ApResult {
    /// One row per class, class `k` (1-based) named `label(k)`.
    pub fn by_class(&self, label: impl Fn(usize) -> String) -> Vec<ClassAp> {
        (0..self.per_class.len())
            .map(|i| ClassAp { label: label(i + 1), ap: self.per_class[i], objects: self.ground_truth[i], detections: self.detections[i] })
            .collect()
    }
}

/// The per-class table `trainer eval` and `runtime eval` print: class, AP@0.5, objects, detections.
pub fn ap_table(rows: &[ClassAp]) -> String {
    let mut t = format!("{:<24} {:>8} {:>8} {:>10}", "class", "AP@0.5", "objects", "detections");
    for c in rows {
        t += &format!("\n{:<24} {:>8} {:>8} {:>10}", c.label, c.ap.map_or("-".into(), |v| format!("{v:.4}")), c.objects, c.detections);
    }
    t
}

/// Where each of a data set's class names is among a model's (0-based), so that boxes labelled by
/// one are counted against the other's outputs; the names the model lacks are the error.
pub fn match_classes(data: &[String], model: &[String]) -> Result<Vec<usize>, Vec<String>> {
    let (found, missing): (Vec<_>, Vec<_>) = data.iter().map(|n| (n, model.iter().position(|m| m == n))).partition(|(_, at)| at.is_some());
    if missing.is_empty() {
        Ok(found.into_iter().filter_map(|(_, at)| at).collect())
    } else {
        Err(missing.into_iter().map(|(n, _)| n.clone()).collect())
    }
}

/// Accumulates images, then [`MapEvaluator::evaluate`]s: per image and class, detections in score
/// order each take the ground truth they overlap most; IoU ≥ the threshold and not yet taken is a
/// true positive, anything else a false positive (no second choice); over all images, precision
/// made non-increasing from the right and summed over the recall steps (VOC2010+).
#[derive(Debug, Clone)]
pub struct MapEvaluator {
    iou_threshold: f64,
    tallies: Vec<Tally>,
    images: usize,
    coco: CocoEvaluator,
}

/// TFOD's evaluator keeps at most this many detections per class and image.
const MAX_PER_IMAGE: usize = 10_000;

impl MapEvaluator {
    /// For classes 1..=`classes`, matching at IoU ≥ `iou_threshold` (the book: 0.5).
    pub fn new(classes: usize, iou_threshold: f64) -> Self {
        MapEvaluator { iou_threshold, tallies: vec![Tally::default(); classes], images: 0, coco: CocoEvaluator::new(classes) }
    }

    pub fn images(&self) -> usize {
        self.images
    }

    /// Adds one image's ground truth and detections; a class outside 1..=K is an error naming it.
    pub fn add_image(&mut self, truth: &[GroundTruth], detections: &[Detection]) -> Result<(), DetectError> {
        let k = self.tallies.len();
        for (what, class) in truth.iter().map(|g| ("ground truth", g.class)).chain(detections.iter().map(|d| ("detection", d.class))) {
            if class == 0 || class > k {
                return Err(setting(format!("{what} of class {class}"), format!("classes are 1..={k} (0 is the background)")));
            }
        }
        self.images += 1;
        self.coco.add_image(truth, detections);
        for class in 1..=k {
            let gts: Vec<&GroundTruth> = truth.iter().filter(|g| g.class == class).collect();
            let mut dets: Vec<&Detection> = detections.iter().filter(|d| d.class == class).collect();
            let tally = &mut self.tallies[class - 1];
            tally.ground_truth += gts.iter().filter(|g| !g.difficult).count();
            // stable: equal scores in the order given
            dets.sort_by(|a, b| b.score.total_cmp(&a.score));
            dets.truncate(MAX_PER_IMAGE);
            let mut taken = vec![false; gts.len()];
            for d in dets {
                let mut best: Option<(usize, f64)> = None;
                for (j, g) in gts.iter().enumerate() {
                    let v = iou64(&d.bbox, &g.bbox);
                    if best.is_none_or(|(_, b)| v > b) {
                        best = Some((j, v));
                    }
                }
                match best {
                    Some((j, v)) if v >= self.iou_threshold => {
                        if gts[j].difficult {
                            continue; // neither found nor false
                        }
                        tally.scored.push((d.score, !taken[j]));
                        taken[j] = true;
                    }
                    _ => tally.scored.push((d.score, false)),
                }
            }
        }
        Ok(())
    }

    /// Precision and recall after each detection of `class` (1..=K) in score order; None for a
    /// class with no ground truth.
    pub fn curve(&self, class: usize) -> Option<(Vec<f64>, Vec<f64>)> {
        let t = self.tallies.get(class.checked_sub(1)?)?;
        if t.ground_truth == 0 {
            return None;
        }
        let mut scored = t.scored.clone();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        let (mut tp, mut fp) = (0usize, 0usize);
        let mut precision = Vec::with_capacity(scored.len());
        let mut recall = Vec::with_capacity(scored.len());
        for (_, hit) in scored {
            if hit {
                tp += 1;
            } else {
                fp += 1;
            }
            precision.push(tp as f64 / (tp + fp) as f64);
            recall.push(tp as f64 / t.ground_truth as f64);
        }
        Some((precision, recall))
    }

    pub fn evaluate(&self) -> ApResult {
        let per_class: Vec<Option<f64>> = (1..=self.tallies.len()).map(|c| self.curve(c).map(|(p, r)| average_precision(&p, &r))).collect();
        let valid: Vec<f64> = per_class.iter().flatten().copied().collect();
        let mean_ap = if valid.is_empty() { None } else { Some(valid.iter().sum::<f64>() / valid.len() as f64) };
        ApResult {
            coco: Some(self.coco.evaluate()),
            per_class,
            mean_ap,
            ground_truth: self.tallies.iter().map(|t| t.ground_truth).collect(),
            detections: self.tallies.iter().map(|t| t.scored.len()).collect(),
        }
    }
}

/// VOC2010+ all-point AP: precision padded with 0 at both ends and made non-increasing from the
/// right, summed over the points where recall (padded with 0 and 1) changes. No detections: 0.
pub fn average_precision(precision: &[f64], recall: &[f64]) -> f64 {
    if precision.is_empty() {
        return 0.0;
    }
    let mut p: Vec<f64> = std::iter::once(0.0).chain(precision.iter().copied()).chain(std::iter::once(0.0)).collect();
    let r: Vec<f64> = std::iter::once(0.0).chain(recall.iter().copied()).chain(std::iter::once(1.0)).collect();
    for i in (0..p.len() - 1).rev() {
        p[i] = p[i].max(p[i + 1]);
    }
    (1..r.len()).filter(|&i| r[i] != r[i - 1]).map(|i| (r[i] - r[i - 1]) * p[i]).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_matched_by_name_and_the_unknown_ones_named() {
        let names = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(match_classes(&names(&["cat", "dog"]), &names(&["dog", "bird", "cat"])), Ok(vec![2, 0]));
        assert_eq!(match_classes(&names(&["cow", "dog", "yak"]), &names(&["dog"])), Err(names(&["cow", "yak"])));
        let r = ApResult { per_class: vec![Some(0.5), None], mean_ap: Some(0.5), ground_truth: vec![3, 0], detections: vec![4, 1], coco: None };
        let rows = r.by_class(|k| format!("c{k}"));
        assert_eq!(rows[1], ClassAp { label: "c2".into(), ap: None, objects: 0, detections: 1 });
        assert_eq!((rows[0].label.as_str(), rows[0].ap, rows[0].objects), ("c1", Some(0.5), 3));
    }

    fn det(class: usize, score: f32, bbox: Bbox) -> Detection {
        Detection { class, score, bbox }
    }

    fn gt(class: usize, bbox: Bbox) -> GroundTruth {
        GroundTruth { class, bbox, difficult: false }
    }

    #[test]
    fn duplicates_are_false_positives_and_ap_is_all_point() {
        let mut e = MapEvaluator::new(2, 0.5);
        let a = [0.0, 0.0, 10.0, 10.0];
        let b = [20.0, 20.0, 30.0, 30.0];
        // image 1: a found twice (the second is a false positive), b missed
        e.add_image(&[gt(1, a), gt(1, b)], &[det(1, 0.9, a), det(1, 0.8, [0.0, 0.0, 10.0, 9.0])]).unwrap();
        // image 2: one more "a", found with a low score; a false positive in between
        e.add_image(&[gt(1, a)], &[det(1, 0.7, [50.0, 50.0, 60.0, 60.0]), det(1, 0.6, [0.0, 0.0, 9.0, 10.0])]).unwrap();
        let r = e.evaluate();
        // order: TP (p 1, r 1/3), FP, FP, TP (p 2/4, r 2/3) → AP = 1/3 · 1 + 1/3 · 1/2
        assert!((r.per_class[0].unwrap() - 0.5).abs() < 1e-12, "{r:?}");
        assert_eq!(r.per_class[1], None, "class 2 has no ground truth");
        assert_eq!(r.mean_ap, r.per_class[0]);
        assert_eq!((r.ground_truth.clone(), r.detections.clone()), (vec![3, 0], vec![4, 0]));
        assert!(e.add_image(&[gt(3, a)], &[]).is_err());
        assert!(e.add_image(&[], &[det(0, 0.5, a)]).is_err());
    }

    #[test]
    fn no_fallback_to_a_second_ground_truth_and_difficult_ones_are_ignored() {
        let mut e = MapEvaluator::new(1, 0.5);
        let a = [0.0, 0.0, 10.0, 10.0];
        let near = [1.0, 0.0, 11.0, 10.0];
        // two detections both best on `a`; the second overlaps `near` by 0.82 too, but does not fall back
        e.add_image(&[gt(1, a), gt(1, near)], &[det(1, 0.9, [0.0, 0.0, 10.0, 10.0]), det(1, 0.8, [0.2, 0.0, 10.2, 10.0])]).unwrap();
        let r = e.evaluate();
        // TP then FP, 2 objects: AP = 1/2 · 1
        assert!((r.per_class[0].unwrap() - 0.5).abs() < 1e-12, "{r:?}");
        let mut d = MapEvaluator::new(1, 0.5);
        d.add_image(
            &[GroundTruth { class: 1, bbox: a, difficult: true }, gt(1, [30.0, 30.0, 40.0, 40.0])],
            &[det(1, 0.9, a), det(1, 0.5, [30.0, 30.0, 40.0, 40.0])],
        )
        .unwrap();
        let r = d.evaluate();
        assert_eq!((r.ground_truth[0], r.detections[0]), (1, 1));
        assert_eq!(r.per_class[0], Some(1.0));
    }
}
