//! What makes a graph a detector: [`DetectorSpec`], part of the model definition (`graph.json`), so
//! the trainer's targets, the exported graph's decoding and every evaluation read the same priors,
//! coder, thresholds and labels.

use serde::{Deserialize, Serialize};

use super::{setting, Bbox, BoxCoder, DetectError, Matcher, PostProcess, SsdPriors};

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

/// An SSD: default boxes on feature maps of `grids`, the coder of the regression head, the matcher
/// of training, the post-process of inference and the class names.
///
/// The graph's output is the class logits `[P, C]` (column 0 the background) and its named output
/// [`DetectorSpec::codes_output`] the box codes `[P, 4]`, both in the priors' row order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectorSpec {
    pub priors: SsdPriors,
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
}

impl DetectorSpec {
    /// A spec with the defaults of SSD (match at 0.5, 3:1 mining, torchvision's post-process).
    pub fn ssd(priors: SsdPriors, grids: Vec<[usize; 2]>, image: [usize; 2]) -> Self {
        DetectorSpec {
            priors,
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
        }
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

    /// Checks the settings together; `classes` is the number of score columns (background included).
    pub fn check(&self, classes: usize) -> Result<(), DetectError> {
        self.priors.check(self.grids.len())?;
        self.postprocess.check()?;
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
}
