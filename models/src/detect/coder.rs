//! The box coder: ground truth relative to a prior, as the regression head predicts it.

use serde::{Deserialize, Serialize};

use super::Bbox;

/// torchvision's `BoxCoder` (and TFOD's `faster_rcnn_box_coder`, which the book's configs use with
/// scales 10, 10, 5, 5): for a prior of centre (px, py) and size (pw, ph) and a box of centre (x, y)
/// and size (w, h), the code is (wx·(x − px)/pw, wy·(y − py)/ph, ww·ln(w/pw), wh·ln(h/ph)).
/// Decoding clamps the size codes at ln(1000/16) before `exp`, as torchvision does.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoxCoder {
    pub weights: [f32; 4],
    /// The largest size code decoded (torchvision's `bbox_xform_clip`).
    #[serde(default = "d_clip")]
    pub clip: f32,
}

fn d_clip() -> f32 {
    (1000.0f64 / 16.0).ln() as f32
}

impl Default for BoxCoder {
    fn default() -> Self {
        BoxCoder { weights: [10.0, 10.0, 5.0, 5.0], clip: d_clip() }
    }
}

impl BoxCoder {
    /// The code of `gt` relative to `prior` (both `[x0, y0, x1, y1]`).
    pub fn encode(&self, gt: &Bbox, prior: &Bbox) -> [f32; 4] {
        let [wx, wy, ww, wh] = self.weights;
        let (pw, ph) = (prior[2] - prior[0], prior[3] - prior[1]);
        let (pcx, pcy) = (prior[0] + 0.5 * pw, prior[1] + 0.5 * ph);
        let (gw, gh) = (gt[2] - gt[0], gt[3] - gt[1]);
        let (gcx, gcy) = (gt[0] + 0.5 * gw, gt[1] + 0.5 * gh);
        [wx * (gcx - pcx) / pw, wy * (gcy - pcy) / ph, ww * (gw / pw).ln(), wh * (gh / ph).ln()]
    }

    /// The box a code stands for, relative to `prior`.
    pub fn decode(&self, code: &[f32; 4], prior: &Bbox) -> Bbox {
        let [wx, wy, ww, wh] = self.weights;
        let (pw, ph) = (prior[2] - prior[0], prior[3] - prior[1]);
        let (pcx, pcy) = (prior[0] + 0.5 * pw, prior[1] + 0.5 * ph);
        let (dx, dy) = (code[0] / wx, code[1] / wy);
        let (dw, dh) = ((code[2] / ww).min(self.clip), (code[3] / wh).min(self.clip));
        let (cx, cy) = (dx * pw + pcx, dy * ph + pcy);
        let (w, h) = (dw.exp() * pw, dh.exp() * ph);
        let (hw, hh) = (0.5 * w, 0.5 * h);
        [cx - hw, cy - hh, cx + hw, cy + hh]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_decode_gives_the_box_back() {
        let c = BoxCoder::default();
        let prior = [10.0, 20.0, 50.0, 40.0];
        let gt = [12.0, 18.0, 60.0, 44.0];
        let code = c.encode(&gt, &prior);
        // centre x: 36 vs 30 over width 40, times 10
        assert!((code[0] - 1.5).abs() < 1e-6, "{code:?}");
        assert!((code[2] - 5.0 * (48.0f32 / 40.0).ln()).abs() < 1e-6);
        let back = c.decode(&code, &prior);
        for (a, b) in back.iter().zip(gt) {
            assert!((a - b).abs() < 1e-4, "{back:?}");
        }
        assert_eq!(c.encode(&prior, &prior), [0.0; 4]);
        // a huge size code is clamped: at most 1000/16 times the prior
        let wide = c.decode(&[0.0, 0.0, 1e4, 0.0], &prior);
        assert!(((wide[2] - wide[0]) - 40.0 * 62.5).abs() < 1e-1, "{wide:?}");
    }
}
