//! Which ground truth each prior learns from.

use serde::{Deserialize, Serialize};

/// A prior's match: a ground-truth index, or one of these.
pub const BACKGROUND: i64 = -1;
/// Between the thresholds: neither foreground nor background (ignored in the loss).
pub const IGNORED: i64 = -2;

/// torchvision's `Matcher`: each prior takes the ground truth it overlaps most (the first on ties);
/// IoU < `low` makes it background, `low` ≤ IoU < `high` ignored. With `allow_low_quality`, every
/// prior that is some ground truth's best (ties included) keeps its match whatever the IoU (Faster
/// R-CNN's RPN). `force_best` is SSD's rule on top (torchvision's `SSDMatcher`): each ground truth is
/// assigned to its best prior (the later ground truth winning a prior two share).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matcher {
    pub high: f32,
    pub low: f32,
    #[serde(default)]
    pub allow_low_quality: bool,
    #[serde(default)]
    pub force_best: bool,
}

impl Matcher {
    /// SSD's matcher: IoU ≥ `threshold` (0.5 in the paper and torchvision) plus each ground truth's best prior.
    pub fn ssd(threshold: f32) -> Self {
        Matcher { high: threshold, low: threshold, allow_low_quality: false, force_best: true }
    }

    /// The match of every prior, from `iou` row-major `[num_gt, num_priors]`. No ground truth: all
    /// background.
    pub fn matches(&self, iou: &[f32], num_gt: usize, num_priors: usize) -> Vec<i64> {
        assert_eq!(iou.len(), num_gt * num_priors, "iou is [num_gt, num_priors]");
        if num_gt == 0 {
            return vec![BACKGROUND; num_priors];
        }
        let row = |g: usize| &iou[g * num_priors..(g + 1) * num_priors];
        let mut best = vec![(f32::NEG_INFINITY, 0usize); num_priors];
        for g in 0..num_gt {
            for (p, &v) in row(g).iter().enumerate() {
                if v > best[p].0 {
                    best[p] = (v, g);
                }
            }
        }
        let mut out: Vec<i64> = best
            .iter()
            .map(|&(v, g)| {
                if v < self.low {
                    BACKGROUND
                } else if v < self.high {
                    IGNORED
                } else {
                    g as i64
                }
            })
            .collect();
        if self.allow_low_quality {
            for g in 0..num_gt {
                let top = row(g).iter().copied().fold(f32::NEG_INFINITY, f32::max);
                for (p, &v) in row(g).iter().enumerate() {
                    if v == top {
                        out[p] = best[p].1 as i64;
                    }
                }
            }
        }
        if self.force_best {
            for g in 0..num_gt {
                let mut arg = 0;
                for (p, &v) in row(g).iter().enumerate() {
                    if v > row(g)[arg] {
                        arg = p;
                    }
                }
                out[arg] = g as i64;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssd_matching_forces_each_ground_truth_onto_its_best_prior() {
        // 2 ground truths × 4 priors
        let iou = [
            0.6, 0.2, 0.1, 0.0, //
            0.7, 0.3, 0.4, 0.1,
        ];
        let m = Matcher::ssd(0.5).matches(&iou, 2, 4);
        // prior 0: gt 1 (0.7 > 0.6); gt 0's best prior is also 0, gt 1's too: the later gt keeps it
        assert_eq!(m, [1, BACKGROUND, BACKGROUND, BACKGROUND]);
        let iou = [0.6, 0.2, 0.45, 0.0, 0.1, 0.3, 0.2, 0.35];
        let m = Matcher::ssd(0.5).matches(&iou, 2, 4);
        // gt 1 has nothing ≥ 0.5 but is forced onto prior 3
        assert_eq!(m, [0, BACKGROUND, BACKGROUND, 1]);
        let rpn = Matcher { high: 0.7, low: 0.3, allow_low_quality: true, force_best: false };
        assert_eq!(rpn.matches(&iou, 2, 4), [0, IGNORED, IGNORED, 1]);
        assert_eq!(Matcher::ssd(0.5).matches(&[], 0, 3), [BACKGROUND; 3]);
    }
}
