//! Where a detector looks: SSD's default boxes and Faster R-CNN's grid anchors.
//!
//! Both list, feature map after feature map, every location in row-major order (y, then x) and at
//! each location every box shape: the row order of a head's output after the "rows per anchor"
//! reshape `[A·K, H, W] → [H·W·A, K]`.

use serde::{Deserialize, Serialize};

use super::{setting, Bbox, DetectError};

/// > 0 and not NaN.
fn positive(v: f64) -> bool {
    v > 0.0
}

fn d_min_ratio() -> f64 {
    0.15
}
fn d_max_ratio() -> f64 {
    0.9
}
fn d_true() -> bool {
    true
}

/// SSD's default boxes (Liu et al. 2016, p. 6), computed as torchvision's `DefaultBoxGenerator`:
/// feature map k has scale s_k (from `scales`, else evenly spaced from `min_ratio` to `max_ratio`,
/// then 1.0 appended), boxes of width and height s_k and √(s_k·s_k+1), and for each aspect ratio r
/// the pair (s_k·√r, s_k/√r) and its transpose; centres at ((j + 0.5)/f_x, (i + 0.5)/f_y) with
/// f = the map's size, or image size / `steps[k]` when given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsdPriors {
    /// Extra aspect ratios per feature map (torchvision's SSD300: [[2], [2, 3], [2, 3], [2, 3], [2], [2]]).
    pub aspect_ratios: Vec<Vec<f64>>,
    #[serde(default = "d_min_ratio")]
    pub min_ratio: f64,
    #[serde(default = "d_max_ratio")]
    pub max_ratio: f64,
    /// One scale per feature map plus one (the last only sets √(s_k·s_k+1)).
    #[serde(default)]
    pub scales: Option<Vec<f64>>,
    /// The pixels between box centres per feature map (SSD300: 8, 16, 32, 64, 100, 300).
    #[serde(default)]
    pub steps: Option<Vec<f64>>,
    /// Clamps the widths and heights into [0, 1].
    #[serde(default = "d_true")]
    pub clip: bool,
}

impl SsdPriors {
    /// torchvision's `ssd300_vgg16` settings.
    pub fn ssd300() -> Self {
        SsdPriors {
            aspect_ratios: vec![vec![2.0], vec![2.0, 3.0], vec![2.0, 3.0], vec![2.0, 3.0], vec![2.0], vec![2.0]],
            min_ratio: 0.15,
            max_ratio: 0.9,
            scales: Some(vec![0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05]),
            steps: Some(vec![8.0, 16.0, 32.0, 64.0, 100.0, 300.0]),
            clip: true,
        }
    }

    /// The scale of each feature map, plus one.
    pub fn scales(&self) -> Vec<f64> {
        if let Some(s) = &self.scales {
            return s.clone();
        }
        let n = self.aspect_ratios.len();
        if n > 1 {
            let range = self.max_ratio - self.min_ratio;
            let mut s: Vec<f64> = (0..n).map(|k| self.min_ratio + range * k as f64 / (n as f64 - 1.0)).collect();
            s.push(1.0);
            s
        } else {
            vec![self.min_ratio, self.max_ratio]
        }
    }

    /// Boxes per location on each feature map: 2 + 2 per aspect ratio.
    pub fn per_location(&self) -> Vec<usize> {
        self.aspect_ratios.iter().map(|r| 2 + 2 * r.len()).collect()
    }

    /// Checks the settings against the feature maps they are for.
    pub fn check(&self, maps: usize) -> Result<(), DetectError> {
        let n = self.aspect_ratios.len();
        if n != maps {
            return Err(setting("priors.aspect_ratios", format!("{n} lists for {maps} feature maps")));
        }
        if let Some(s) = &self.scales {
            if s.len() != n + 1 {
                return Err(setting("priors.scales", format!("{} values; {} feature maps need {}", s.len(), n, n + 1)));
            }
        }
        if let Some(s) = &self.steps {
            if s.len() != n || s.iter().any(|v| !positive(*v)) {
                return Err(setting("priors.steps", format!("{s:?}: one positive value per feature map ({n})")));
            }
        }
        if self.aspect_ratios.iter().flatten().any(|r| !positive(*r)) {
            return Err(setting("priors.aspect_ratios", "every ratio must be > 0"));
        }
        Ok(())
    }

    /// The (w, h) pairs of feature map `k`, image-relative.
    fn wh_pairs(&self, k: usize, scales: &[f64]) -> Vec<[f32; 2]> {
        let s = scales[k];
        let s_prime = (scales[k] * scales[k + 1]).sqrt();
        let mut out = vec![[s as f32, s as f32], [s_prime as f32, s_prime as f32]];
        for &ar in &self.aspect_ratios[k] {
            let sq = ar.sqrt();
            let (w, h) = ((s * sq) as f32, (s / sq) as f32);
            out.push([w, h]);
            out.push([h, w]);
        }
        if self.clip {
            for p in &mut out {
                *p = [p[0].clamp(0.0, 1.0), p[1].clamp(0.0, 1.0)];
            }
        }
        out
    }

    /// The default boxes as `[cx, cy, w, h]`, image-relative, for feature maps of `grids`
    /// (`[height, width]` each) on an image of `image` = `[height, width]` pixels.
    pub fn cxcywh(&self, grids: &[[usize; 2]], image: [usize; 2]) -> Result<Vec<[f32; 4]>, DetectError> {
        self.check(grids.len())?;
        let scales = self.scales();
        let mut out = vec![];
        for (k, &[fh, fw]) in grids.iter().enumerate() {
            let (fy, fx) = match &self.steps {
                Some(steps) => ((image[0] as f64 / steps[k]) as f32, (image[1] as f64 / steps[k]) as f32),
                None => (fh as f32, fw as f32),
            };
            let pairs = self.wh_pairs(k, &scales);
            for i in 0..fh {
                let cy = (i as f32 + 0.5) / fy;
                for j in 0..fw {
                    let cx = (j as f32 + 0.5) / fx;
                    out.extend(pairs.iter().map(|[w, h]| [cx, cy, *w, *h]));
                }
            }
        }
        Ok(out)
    }

    /// The default boxes in pixels, `[x0, y0, x1, y1]`, as `DefaultBoxGenerator.forward` returns them.
    pub fn boxes(&self, grids: &[[usize; 2]], image: [usize; 2]) -> Result<Vec<Bbox>, DetectError> {
        let (w, h) = (image[1] as f32, image[0] as f32);
        Ok(self
            .cxcywh(grids, image)?
            .iter()
            .map(|[cx, cy, bw, bh]| [(cx - 0.5 * bw) * w, (cy - 0.5 * bh) * h, (cx + 0.5 * bw) * w, (cy + 0.5 * bh) * h])
            .collect())
    }
}

/// Faster R-CNN's anchors, as torchvision's `AnchorGenerator`: on feature map k, for each aspect
/// ratio r (= height / width) and size s, a box of width s/√r and height s·√r centred on
/// (x·stride, y·stride) with stride = image size ÷ map size, its corners rounded to whole pixels
/// (half to even) around the centre. The book's Faster R-CNN: one map, sizes 128, 256, 512 (× the
/// TFOD `scales` 0.25–2.0 of a 256 base), ratios 0.5, 1, 2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridAnchors {
    /// Sizes (pixels) per feature map.
    pub sizes: Vec<Vec<f64>>,
    /// Aspect ratios (height / width) per feature map.
    pub aspect_ratios: Vec<Vec<f64>>,
}

impl GridAnchors {
    /// Anchors per location on each feature map.
    pub fn per_location(&self) -> Vec<usize> {
        self.sizes.iter().zip(&self.aspect_ratios).map(|(s, r)| s.len() * r.len()).collect()
    }

    pub fn check(&self, maps: usize) -> Result<(), DetectError> {
        if self.sizes.len() != maps || self.aspect_ratios.len() != maps {
            return Err(setting("anchors", format!("{} size lists and {} ratio lists for {maps} feature maps", self.sizes.len(), self.aspect_ratios.len())));
        }
        if self.sizes.iter().chain(&self.aspect_ratios).flatten().any(|v| !positive(*v)) {
            return Err(setting("anchors", "every size and ratio must be > 0"));
        }
        Ok(())
    }

    /// The zero-centred boxes of feature map `k` (ratio-major, then size).
    fn cell(&self, k: usize) -> Vec<[f32; 4]> {
        let mut out = vec![];
        for &r in &self.aspect_ratios[k] {
            let h_ratio = (r as f32).sqrt();
            let w_ratio = 1.0 / h_ratio;
            for &s in &self.sizes[k] {
                let (ws, hs) = (w_ratio * s as f32, h_ratio * s as f32);
                out.push([-ws, -hs, ws, hs].map(|v| (v / 2.0).round_ties_even()));
            }
        }
        out
    }

    /// The anchors in pixels for feature maps of `grids` (`[height, width]`) on an `image` of
    /// `[height, width]` pixels.
    pub fn boxes(&self, grids: &[[usize; 2]], image: [usize; 2]) -> Result<Vec<Bbox>, DetectError> {
        self.check(grids.len())?;
        let mut out = vec![];
        for (k, &[gh, gw]) in grids.iter().enumerate() {
            if gh == 0 || gw == 0 {
                return Err(setting(format!("feature map {k}"), format!("empty ({gh}×{gw})")));
            }
            let (sy, sx) = (image[0] / gh, image[1] / gw);
            let cell = self.cell(k);
            for y in 0..gh {
                for x in 0..gw {
                    let (ox, oy) = ((x * sx) as f32, (y * sy) as f32);
                    out.extend(cell.iter().map(|c| [ox + c[0], oy + c[1], ox + c[2], oy + c[3]]));
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssd300_has_8732_default_boxes() {
        let p = SsdPriors::ssd300();
        let grids = [[38, 38], [19, 19], [10, 10], [5, 5], [3, 3], [1, 1]];
        assert_eq!(p.per_location(), [4, 6, 6, 6, 4, 4]);
        let b = p.boxes(&grids, [300, 300]).unwrap();
        assert_eq!(b.len(), 8732);
        // the first box: centre (4, 4) px, side 0.07 · 300 = 21 px
        let first = b[0];
        assert!((first[0] - (4.0 - 10.5)).abs() < 1e-4 && (first[2] - (4.0 + 10.5)).abs() < 1e-4, "{first:?}");
        // the last map's last box: aspect ratio 1/2 at scale 0.87, centred; clipped widths stay ≤ 1
        let last = p.cxcywh(&grids, [300, 300]).unwrap()[8731];
        assert_eq!(last[0], 0.5);
        assert!((last[2] - (0.87 / 2f64.sqrt()) as f32).abs() < 1e-7 && (last[3] - 1.0).abs() < 1e-7, "{last:?}");
        assert!(p.check(5).is_err());
    }

    #[test]
    fn grid_anchors_centre_on_the_stride_and_round() {
        let a = GridAnchors { sizes: vec![vec![32.0]], aspect_ratios: vec![vec![0.5, 1.0]] };
        let b = a.boxes(&[[2, 3]], [32, 48]).unwrap();
        assert_eq!(b.len(), 2 * 3 * 2);
        // ratio 1 at location (0, 0): ±16; ratio 0.5: w = 32·√2 = 45.25 → ±22.63 → ±23, h → ±11.31 → ±11
        assert_eq!(b[0], [-23.0, -11.0, 23.0, 11.0]);
        assert_eq!(b[1], [-16.0, -16.0, 16.0, 16.0]);
        // location (y 0, x 1): shifted by the stride 48 / 3 = 16
        assert_eq!(b[3], [0.0, -16.0, 32.0, 16.0]);
        // location (y 1, x 0)
        assert_eq!(b[7], [-16.0, 0.0, 16.0, 32.0]);
    }
}
