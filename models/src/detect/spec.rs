//! What makes a graph a detector: [`DetectorSpec`], part of the model definition (`graph.json`), so
//! the trainer's targets, the exported graph's decoding and every evaluation read the same priors,
//! coder, thresholds and labels.

use serde::{Deserialize, Serialize};

use super::{setting, Bbox, BoxCoder, DetectError, GridAnchors, Matcher, PostProcess, SsdPriors};

/// How boxes are written where a detector's boxes leave it (the exported file's `detection_boxes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BoxFormat {
    /// `[x0, y0, x1, y1]` in pixels of the network input (ours).
    XyxyPixels,
    /// `[ymin, xmin, ymax, xmax]` in [0, 1] of the input (the TFOD contract of foreign models).
    YxyxNormalized,
}

fn d_match() -> f32 {
    0.5
}
fn d_neg_pos() -> f32 {
    3.0
}
fn d_scores() -> String {
    "scores".into()
}
fn d_codes() -> String {
    "box_codes".into()
}

/// Where a detector's boxes start: SSD's default boxes, or the grid anchors of Faster R-CNN's region
/// proposal network. In `graph.json` they are told apart by their fields (`sizes` are anchors').
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Priors {
    Ssd(SsdPriors),
    Anchors(GridAnchors),
}

impl Priors {
    pub fn per_location(&self) -> Vec<usize> {
        match self {
            Priors::Ssd(p) => p.per_location(),
            Priors::Anchors(a) => a.per_location(),
        }
    }

    pub fn boxes(&self, grids: &[[usize; 2]], image: [usize; 2]) -> Result<Vec<Bbox>, DetectError> {
        match self {
            Priors::Ssd(p) => p.boxes(grids, image),
            Priors::Anchors(a) => a.boxes(grids, image),
        }
    }

    pub fn check(&self, maps: usize) -> Result<(), DetectError> {
        match self {
            Priors::Ssd(p) => p.check(maps),
            Priors::Anchors(a) => a.check(maps),
        }
    }
}

impl From<SsdPriors> for Priors {
    fn from(p: SsdPriors) -> Self {
        Priors::Ssd(p)
    }
}

impl From<GridAnchors> for Priors {
    fn from(a: GridAnchors) -> Self {
        Priors::Anchors(a)
    }
}

/// A detector: its priors (SSD's default boxes, or the anchors of a Faster R-CNN's region proposal
/// network) on feature maps of `grids`, the coder of the (final) regression head, the matcher of
/// training, the post-process of inference and the class names.
///
/// An SSD's output is the class logits `[P, C]` (column 0 the background) and its named output
/// [`DetectorSpec::codes_output`] the box codes `[P, 4]`, both in the priors' row order. A Faster
/// R-CNN ([`DetectorSpec::rcnn`]) gives its region proposal network's objectness `[A, 1]` and box
/// codes `[A, 4]` per image, and, per region of interest after its `RoiAlign` node, class logits
/// `[C]` as the graph's output and one box code per foreground class `[4 (C − 1)]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorSpec {
    pub priors: Priors,
    /// `[height, width]` of each feature map the priors sit on.
    pub grids: Vec<[usize; 2]>,
    /// `[height, width]` of the network input the priors are laid on.
    pub image: [usize; 2],
    #[serde(default)]
    pub coder: BoxCoder,
    /// A prior is matched to the ground truth it overlaps most when the IoU is at least this (SSD: 0.5);
    /// each ground truth also takes its best prior.
    #[serde(default = "d_match")]
    pub match_iou: f32,
    /// Hard-negative mining: background priors in the loss per matched one (SSD: 3).
    #[serde(default = "d_neg_pos")]
    pub neg_pos_ratio: f32,
    #[serde(default)]
    pub postprocess: PostProcess,
    /// Class names, index 0 the background (empty until the trainer learns them from the data).
    #[serde(default)]
    pub labels: Vec<String>,
    pub box_format: BoxFormat,
    /// The graph output holding the class logits (the graph's main output).
    #[serde(default = "d_scores")]
    pub scores_output: String,
    /// The named graph output holding the box codes.
    #[serde(default = "d_codes")]
    pub codes_output: String,
    /// A two-stage detector's region proposals and region sampling (Faster R-CNN); none for an SSD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rcnn: Option<RcnnSpec>,
}

fn d_rpn_coder() -> BoxCoder {
    BoxCoder { weights: [1.0; 4], ..BoxCoder::default() }
}
fn d_07() -> f32 {
    0.7
}
fn d_03() -> f32 {
    0.3
}
fn d_256() -> usize {
    256
}
fn d_half() -> f32 {
    0.5
}
fn d_min_size() -> f32 {
    1e-3
}
fn d_512() -> usize {
    512
}
fn d_quarter() -> f32 {
    0.25
}
fn d_rpn_scores() -> String {
    "rpn_scores".into()
}
fn d_rpn_codes() -> String {
    "rpn_codes".into()
}

/// Faster R-CNN's two stages (Ren et al. 2015, as torchvision's `RegionProposalNetwork` and
/// `RoIHeads` do them, the defaults theirs): the region proposal network's anchors are the spec's
/// priors; its training samples `rpn_batch` anchors per image, up to `rpn_positive_fraction` of them
/// foreground (IoU ≥ `rpn_fg_iou`, and each ground truth's best anchors), background below
/// `rpn_bg_iou`; its proposals are the `pre_nms_top_n` best-scored anchors decoded by `rpn_coder`,
/// clipped, those smaller than `min_size` dropped, class-agnostic NMS at `rpn_nms_iou`, the best
/// `post_nms_top_n` kept (each `[training, inference]`). The second stage trains on `rois_per_image`
/// proposals per image (the ground truth added), up to `roi_positive_fraction` foreground (IoU ≥ the
/// spec's `match_iou`), background in [`roi_bg_iou_low`, `match_iou`).
///
/// The book (ch. 14) gives the RPN's foreground at 0.5 and background below 0.1 in its text; TFOD's
/// and torchvision's configurations, which its chapter 15 trains with, use 0.7 and 0.3.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RcnnSpec {
    #[serde(default = "d_rpn_coder")]
    pub rpn_coder: BoxCoder,
    #[serde(default = "d_07")]
    pub rpn_fg_iou: f32,
    #[serde(default = "d_03")]
    pub rpn_bg_iou: f32,
    #[serde(default = "d_256")]
    pub rpn_batch: usize,
    #[serde(default = "d_half")]
    pub rpn_positive_fraction: f32,
    /// Anchors kept by objectness before NMS, `[training, inference]`.
    pub pre_nms_top_n: [usize; 2],
    /// Proposals kept after NMS, `[training, inference]`: the rows the second stage sees.
    pub post_nms_top_n: [usize; 2],
    #[serde(default = "d_07")]
    pub rpn_nms_iou: f32,
    /// Proposals narrower or lower than this (input pixels) are dropped.
    #[serde(default = "d_min_size")]
    pub min_size: f32,
    #[serde(default = "d_512")]
    pub rois_per_image: usize,
    #[serde(default = "d_quarter")]
    pub roi_positive_fraction: f32,
    #[serde(default)]
    pub roi_bg_iou_low: f32,
    /// The named graph output holding the RPN's objectness logits `[A, 1]`.
    #[serde(default = "d_rpn_scores")]
    pub scores_output: String,
    /// The named graph output holding the RPN's box codes `[A, 4]`.
    #[serde(default = "d_rpn_codes")]
    pub codes_output: String,
}

impl RcnnSpec {
    /// torchvision's defaults with the given proposal counts.
    pub fn new(pre_nms_top_n: [usize; 2], post_nms_top_n: [usize; 2]) -> Self {
        RcnnSpec {
            rpn_coder: d_rpn_coder(),
            rpn_fg_iou: d_07(),
            rpn_bg_iou: d_03(),
            rpn_batch: d_256(),
            rpn_positive_fraction: d_half(),
            pre_nms_top_n,
            post_nms_top_n,
            rpn_nms_iou: d_07(),
            min_size: d_min_size(),
            rois_per_image: d_512(),
            roi_positive_fraction: d_quarter(),
            roi_bg_iou_low: 0.0,
            scores_output: d_rpn_scores(),
            codes_output: d_rpn_codes(),
        }
    }

    /// The RPN's training matcher (foreground, ignored between, background; each ground truth's
    /// best anchors kept as foreground).
    pub fn rpn_matcher(&self) -> Matcher {
        Matcher { high: self.rpn_fg_iou, low: self.rpn_bg_iou, allow_low_quality: true, force_best: false }
    }

    /// `[training, inference]` index.
    pub fn proposals(&self, train: bool) -> (usize, usize) {
        let k = usize::from(!train);
        (self.pre_nms_top_n[k], self.post_nms_top_n[k])
    }

    fn check(&self, match_iou: f32) -> Result<(), DetectError> {
        let unit = |what: &str, v: f32, open_low: bool| {
            let ok = if open_low { v > 0.0 && v <= 1.0 } else { (0.0..=1.0).contains(&v) };
            if ok {
                Ok(())
            } else {
                Err(setting(format!("detector.rcnn.{what}"), format!("{v} is not in {}0, 1]", if open_low { "(" } else { "[" })))
            }
        };
        unit("rpn_fg_iou", self.rpn_fg_iou, true)?;
        unit("rpn_bg_iou", self.rpn_bg_iou, false)?;
        unit("rpn_positive_fraction", self.rpn_positive_fraction, true)?;
        unit("rpn_nms_iou", self.rpn_nms_iou, false)?;
        unit("roi_positive_fraction", self.roi_positive_fraction, true)?;
        unit("roi_bg_iou_low", self.roi_bg_iou_low, false)?;
        if self.rpn_bg_iou > self.rpn_fg_iou {
            return Err(setting("detector.rcnn.rpn_bg_iou", format!("{} is above rpn_fg_iou {}", self.rpn_bg_iou, self.rpn_fg_iou)));
        }
        if self.roi_bg_iou_low >= match_iou {
            return Err(setting("detector.rcnn.roi_bg_iou_low", format!("{} leaves no background below match_iou {match_iou}", self.roi_bg_iou_low)));
        }
        for (what, [t, i]) in [("pre_nms_top_n", self.pre_nms_top_n), ("post_nms_top_n", self.post_nms_top_n)] {
            if t == 0 || i == 0 {
                return Err(setting(format!("detector.rcnn.{what}"), "[training, inference] must both be at least 1"));
            }
        }
        if self.post_nms_top_n.iter().zip(self.pre_nms_top_n).any(|(post, pre)| *post > pre) {
            return Err(setting("detector.rcnn.post_nms_top_n", format!("{:?} keeps more than pre_nms_top_n {:?}", self.post_nms_top_n, self.pre_nms_top_n)));
        }
        if self.rpn_batch == 0 || self.rois_per_image == 0 {
            return Err(setting("detector.rcnn", "rpn_batch and rois_per_image must be at least 1"));
        }
        if !(self.min_size >= 0.0 && self.min_size.is_finite()) {
            return Err(setting("detector.rcnn.min_size", format!("{} is not a size in pixels", self.min_size)));
        }
        if self.rpn_coder.weights.iter().any(|w| w.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)) {
            return Err(setting("detector.rcnn.rpn_coder.weights", format!("{:?}: every weight must be > 0", self.rpn_coder.weights)));
        }
        Ok(())
    }
}

impl DetectorSpec {
    /// A spec with the defaults of SSD (match at 0.5, 3:1 mining, torchvision's post-process).
    pub fn ssd(priors: SsdPriors, grids: Vec<[usize; 2]>, image: [usize; 2]) -> Self {
        DetectorSpec {
            priors: priors.into(),
            grids,
            image,
            coder: BoxCoder::default(),
            match_iou: d_match(),
            neg_pos_ratio: d_neg_pos(),
            postprocess: PostProcess::default(),
            labels: vec![],
            box_format: BoxFormat::XyxyPixels,
            scores_output: d_scores(),
            codes_output: d_codes(),
            rcnn: None,
        }
    }

    /// A Faster R-CNN on one feature map of `grid`: `anchors` for its RPN, the second stage's
    /// defaults (foreground ROIs at IoU 0.5, torchvision's post-process), proposals as `rcnn` says.
    pub fn faster_rcnn(anchors: GridAnchors, grid: [usize; 2], image: [usize; 2], rcnn: RcnnSpec) -> Self {
        DetectorSpec { priors: anchors.into(), rcnn: Some(rcnn), ..DetectorSpec::ssd(SsdPriors::ssd300(), vec![grid], image) }
    }

    /// Priors per location of each feature map.
    pub fn per_location(&self) -> Vec<usize> {
        self.priors.per_location()
    }

    /// Rows of the heads' outputs: every prior of every feature map.
    pub fn num_priors(&self) -> usize {
        self.grids.iter().zip(self.per_location()).map(|([h, w], a)| h * w * a).sum()
    }

    /// The priors in pixels of the input, in the heads' row order.
    pub fn prior_boxes(&self) -> Result<Vec<Bbox>, DetectError> {
        self.priors.boxes(&self.grids, self.image)
    }

    /// The training matcher.
    pub fn matcher(&self) -> Matcher {
        Matcher::ssd(self.match_iou)
    }

    /// The name of foreground class `k` (1-based), or `class K` when the labels are not known.
    pub fn label(&self, k: usize) -> String {
        self.labels.get(k).cloned().unwrap_or_else(|| format!("class {k}"))
    }

    /// This spec with the fields of `patch` (a table of the spec's own field names, nested as the spec
    /// is: `{"match_iou": 0.6, "rcnn": {"rpn_fg_iou": 0.5}}`) put over its own: a recipe's settings
    /// (`[model.detector]` in a trainer config) over the model's defaults. Tables merge, any other
    /// value replaces; an unknown field or a value of the wrong type is an error that names it. The
    /// result is not checked here ([`Self::check`] and graph validation do that).
    pub fn with_overrides(&self, patch: &serde_json::Value) -> Result<Self, DetectError> {
        fn merge(base: &mut serde_json::Value, patch: &serde_json::Value) {
            match (base, patch) {
                (serde_json::Value::Object(b), serde_json::Value::Object(p)) => {
                    for (k, v) in p {
                        match b.get_mut(k) {
                            Some(slot) => merge(slot, v),
                            None => {
                                b.insert(k.clone(), v.clone());
                            }
                        }
                    }
                }
                (b, p) => *b = p.clone(),
            }
        }
        let mut v = serde_json::to_value(self).expect("a spec serialises");
        merge(&mut v, patch);
        serde_json::from_value(v).map_err(|e| setting("model.detector", e.to_string()))
    }

    /// Checks the settings together; `classes` is the number of score columns (background included).
    pub fn check(&self, classes: usize) -> Result<(), DetectError> {
        self.priors.check(self.grids.len())?;
        self.postprocess.check()?;
        match (&self.rcnn, &self.priors) {
            (Some(r), Priors::Anchors(_)) => r.check(self.match_iou)?,
            (None, Priors::Ssd(_)) => {}
            (Some(_), Priors::Ssd(_)) => {
                return Err(setting("detector.priors", "a Faster R-CNN's priors are its RPN's grid anchors (sizes and aspect_ratios)"))
            }
            (None, Priors::Anchors(_)) => return Err(setting("detector.priors", "grid anchors belong to a Faster R-CNN's RPN (detector.rcnn), not an SSD")),
        }
        if self.image.contains(&0) || self.grids.iter().any(|g| g.contains(&0)) {
            return Err(setting("detector.grids", format!("{:?} on an image of {:?}: every size must be at least 1", self.grids, self.image)));
        }
        if !(self.match_iou > 0.0 && self.match_iou <= 1.0) {
            return Err(setting("detector.match_iou", format!("{} is not in (0, 1]", self.match_iou)));
        }
        if !(self.neg_pos_ratio > 0.0 && self.neg_pos_ratio.is_finite()) {
            return Err(setting("detector.neg_pos_ratio", format!("{} must be a positive number", self.neg_pos_ratio)));
        }
        if self.coder.weights.iter().any(|w| w.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)) {
            return Err(setting("detector.coder.weights", format!("{:?}: every weight must be > 0", self.coder.weights)));
        }
        if classes < 2 {
            return Err(setting("detector", format!("{classes} score columns: a detector needs the background and at least one class")));
        }
        if !self.labels.is_empty() && self.labels.len() != classes {
            return Err(setting(
                "detector.labels",
                format!("{} names for {classes} score columns (the background at 0, then one per class)", self.labels.len()),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> DetectorSpec {
        let priors = SsdPriors { aspect_ratios: vec![vec![2.0], vec![2.0, 3.0]], min_ratio: 0.2, max_ratio: 0.6, scales: None, steps: None, clip: true };
        DetectorSpec::ssd(priors, vec![[4, 4], [2, 2]], [64, 64])
    }

    #[test]
    fn counts_priors_in_the_heads_row_order() {
        let s = tiny();
        assert_eq!(s.per_location(), [4, 6]);
        assert_eq!(s.num_priors(), 4 * 4 * 4 + 2 * 2 * 6);
        let boxes = s.prior_boxes().unwrap();
        assert_eq!(boxes.len(), s.num_priors());
        // the first prior: the first map's first cell, centred at (8, 8) of 64 px, scale 0.2
        let b = boxes[0];
        assert!((b[0] - (8.0 - 0.1 * 64.0)).abs() < 1e-4 && (b[2] - (8.0 + 0.1 * 64.0)).abs() < 1e-4, "{b:?}");
        // the first prior of the second map: centre (16, 16)
        let b = boxes[64];
        assert!(((b[0] + b[2]) / 2.0 - 16.0).abs() < 1e-4, "{b:?}");
    }

    #[test]
    fn overrides_merge_tables_and_name_an_unknown_field() {
        let anchors = GridAnchors { sizes: vec![vec![32.0]], aspect_ratios: vec![vec![1.0]] };
        let s = DetectorSpec::faster_rcnn(anchors, [4, 4], [64, 64], RcnnSpec::new([300, 150], [64, 32]));
        let patch = serde_json::json!({"match_iou": 0.6, "postprocess": {"score_threshold": 0.2}, "rcnn": {"rpn_fg_iou": 0.5, "rpn_bg_iou": 0.1, "post_nms_top_n": [100, 10]}});
        let o = s.with_overrides(&patch).unwrap();
        let r = o.rcnn.as_ref().unwrap();
        assert_eq!((o.match_iou, o.postprocess.score_threshold, r.rpn_fg_iou, r.rpn_bg_iou, r.post_nms_top_n), (0.6, 0.2, 0.5, 0.1, [100, 10]));
        // the rest is the model's
        assert_eq!((o.postprocess.iou_threshold, r.pre_nms_top_n, &o.priors), (s.postprocess.iou_threshold, [300, 150], &s.priors));
        assert!(o.check(3).is_ok());
        let e = s.with_overrides(&serde_json::json!({"rcnn": {"rpn_fg_iuo": 0.5}})).unwrap_err().to_string();
        assert!(e.contains("model.detector") && e.contains("rpn_fg_iuo"), "{e}");
        let e = s.with_overrides(&serde_json::json!({"match_iou": "high"})).unwrap_err().to_string();
        assert!(e.contains("model.detector") && e.contains("high"), "{e}");
    }

    #[test]
    fn check_names_the_wrong_setting() {
        let mut s = tiny();
        assert!(s.check(3).is_ok());
        s.labels = vec!["background".into(), "a".into()];
        assert!(s.check(3).unwrap_err().to_string().contains("detector.labels"));
        s.labels.clear();
        s.match_iou = 0.0;
        assert!(s.check(3).unwrap_err().to_string().contains("match_iou"));
        s.match_iou = 0.5;
        s.grids.pop();
        assert!(s.check(3).unwrap_err().to_string().contains("aspect_ratios"));
        let json = serde_json::to_string(&tiny()).unwrap();
        assert_eq!(serde_json::from_str::<DetectorSpec>(&json).unwrap(), tiny());
    }

    #[test]
    fn a_faster_rcnn_spec_names_the_setting_that_is_wrong_and_round_trips() {
        let anchors = GridAnchors { sizes: vec![vec![32.0, 64.0]], aspect_ratios: vec![vec![0.5, 1.0, 2.0]] };
        let good = DetectorSpec::faster_rcnn(anchors, [4, 4], [64, 64], RcnnSpec::new([100, 50], [20, 10]));
        assert!(good.check(3).is_ok());
        assert_eq!(good.num_priors(), 4 * 4 * 6);
        let json = serde_json::to_string(&good).unwrap();
        assert!(json.contains("\"sizes\"") && json.contains("\"rcnn\""), "{json}");
        assert_eq!(serde_json::from_str::<DetectorSpec>(&json).unwrap(), good);
        // an SSD's JSON has no rcnn key and reads back as SSD priors
        let ssd = serde_json::to_string(&tiny()).unwrap();
        assert!(!ssd.contains("rcnn"));
        assert!(matches!(serde_json::from_str::<DetectorSpec>(&ssd).unwrap().priors, Priors::Ssd(_)));
        let bad = |f: &dyn Fn(&mut RcnnSpec)| {
            let mut s = good.clone();
            f(s.rcnn.as_mut().unwrap());
            s.check(3).unwrap_err().to_string()
        };
        assert!(bad(&|r| r.rpn_bg_iou = 0.8).contains("rpn_bg_iou"));
        assert!(bad(&|r| r.post_nms_top_n = [200, 10]).contains("post_nms_top_n"));
        assert!(bad(&|r| r.roi_bg_iou_low = 0.5).contains("roi_bg_iou_low"));
        assert!(bad(&|r| r.rpn_fg_iou = 0.0).contains("rpn_fg_iou"));
        assert!(bad(&|r| r.pre_nms_top_n = [0, 10]).contains("pre_nms_top_n"));
        let mut ssd_priors = good.clone();
        ssd_priors.priors = SsdPriors { aspect_ratios: vec![vec![2.0]], min_ratio: 0.2, max_ratio: 0.6, scales: None, steps: None, clip: true }.into();
        assert!(ssd_priors.check(3).unwrap_err().to_string().contains("grid anchors"));
    }
}
