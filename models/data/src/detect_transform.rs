//! How a stored image and its boxes become a detector's input: SSD's augmentation (Liu et al. 2016,
//! §2.2 "Data augmentation", as torchvision's detection references implement it) with the boxes moved
//! with the pixels, or the plain resize of evaluation.
//!
//! One image's draws, in a fixed order: photometric distortion (brightness ±32, contrast and, for
//! RGB, saturation 0.5–1.5, each with probability ½), zoom out ("expand": the image placed at a
//! random spot of a canvas up to `expand` times its size, filled with the mean, probability ½), the
//! SSD random crop (a minimum IoU drawn from {any, 0.1, 0.3, 0.5, 0.7, 0.9, no crop}; up to 50 tries
//! of a 0.3–1 × size crop with aspect ratio ½–2 that keeps the boxes whose centres fall inside and
//! overlaps one of them by at least that IoU), the resize to the input size, a horizontal flip
//! (probability ½). Boxes are clipped to the crop; those whose centres fall outside it are dropped,
//! as in SSD. Hue is not distorted (torchvision's `RandomPhotometricDistort` does; our composites are
//! grey).

use rand::rngs::SmallRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::records::BoundingBox;

/// How a detector's input is made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetectTransform {
    /// Output `[height, width]`; the image is resized to it (not letterboxed), as SSD trains.
    pub size: [u32; 2],
    /// 1 (grey) or 3 (RGB).
    pub channels: u32,
    /// Random horizontal flips.
    #[serde(default)]
    pub flip: bool,
    /// SSD's random crop with IoU constraints.
    #[serde(default)]
    pub crop: bool,
    /// Zoom out by up to this factor (1: never).
    #[serde(default = "one")]
    pub expand: f32,
    /// Random brightness, contrast (and saturation).
    #[serde(default)]
    pub photometric: bool,
    /// Per-channel mean and standard deviation in 0–255 pixel units: x = (pixel - mean) / std.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

fn one() -> f32 {
    1.0
}

/// A rectangle `[x0, y0, x1, y1]` in pixels.
type Rect = [f32; 4];

fn iou(a: &Rect, b: &Rect) -> f32 {
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

/// The minimum IoUs SSD's crop draws from; `None` keeps the whole image, 0 takes any crop.
const MIN_IOUS: [Option<f32>; 7] = [None, Some(0.0), Some(0.1), Some(0.3), Some(0.5), Some(0.7), Some(0.9)];

/// One image's geometric and photometric draws.
struct Draw {
    /// Where the image lies on the canvas (the zoom-out), `[left, top]`, and the canvas size.
    offset: [f32; 2],
    /// The crop of the canvas that becomes the output.
    crop: Rect,
    flip: bool,
    /// v → v · contrast + brightness, then the saturation about the pixel's grey value.
    contrast: f32,
    brightness: f32,
    saturation: f32,
}

impl DetectTransform {
    /// The evaluation transform: a plain resize.
    pub fn eval(size: [u32; 2], channels: u32, mean: Vec<f32>, std: Vec<f32>) -> Self {
        Self { size, channels, flip: false, crop: false, expand: 1.0, photometric: false, mean, std }
    }

    /// Samples one image (`height` rows of `width` pixels of `bytes_per_pixel` bytes, the first
    /// `channels` used) into `out` (`C·H·W` floats, channel-major) and returns its boxes in pixels of
    /// the output, in the order given, less those the crop left out.
    #[allow(clippy::too_many_arguments)]
    pub fn apply(
        &self,
        pixels: &[u8],
        width: usize,
        height: usize,
        bytes_per_pixel: usize,
        boxes: &[BoundingBox],
        rng: &mut SmallRng,
        out: &mut [f32],
    ) -> Vec<BoundingBox> {
        let c = self.channels as usize;
        let [th, tw] = [self.size[0] as usize, self.size[1] as usize];
        assert!(width > 0 && height > 0 && pixels.len() >= width * height * bytes_per_pixel, "{width}x{height} pixels do not fit {} bytes", pixels.len());
        assert!(bytes_per_pixel >= c && out.len() >= c * th * tw, "{c} channels of {bytes_per_pixel}-byte pixels into {} floats", out.len());
        let d = self.draw(width as f32, height as f32, boxes, rng);
        self.sample(pixels, width, height, bytes_per_pixel, &d, out);
        let [cx0, cy0, cx1, cy1] = d.crop;
        let (sx, sy) = (tw as f32 / (cx1 - cx0), th as f32 / (cy1 - cy0));
        let mut kept = vec![];
        for b in boxes {
            let r = [b.x0 + d.offset[0], b.y0 + d.offset[1], b.x1 + d.offset[0], b.y1 + d.offset[1]];
            let (mx, my) = ((r[0] + r[2]) / 2.0, (r[1] + r[3]) / 2.0);
            if !(mx > cx0 && mx < cx1 && my > cy0 && my < cy1) {
                continue;
            }
            let x0 = (r[0].max(cx0) - cx0) * sx;
            let x1 = (r[2].min(cx1) - cx0) * sx;
            let y0 = (r[1].max(cy0) - cy0) * sy;
            let y1 = (r[3].min(cy1) - cy0) * sy;
            let (x0, x1) = if d.flip { (tw as f32 - x1, tw as f32 - x0) } else { (x0, x1) };
            kept.push(BoundingBox { class: b.class, x0, y0, x1, y1 });
        }
        kept
    }

    fn draw(&self, w: f32, h: f32, boxes: &[BoundingBox], rng: &mut SmallRng) -> Draw {
        let (mut contrast, mut brightness, mut saturation) = (1.0, 0.0, 1.0);
        if self.photometric {
            if rng.gen_bool(0.5) {
                brightness = rng.gen_range(-32.0..=32.0);
            }
            if rng.gen_bool(0.5) {
                contrast = rng.gen_range(0.5..=1.5);
            }
            if self.channels == 3 && rng.gen_bool(0.5) {
                saturation = rng.gen_range(0.5..=1.5);
            }
        }
        let (mut offset, mut canvas) = ([0.0, 0.0], [w, h]);
        if self.expand > 1.0 && rng.gen_bool(0.5) {
            let r = rng.gen_range(1.0..=self.expand);
            canvas = [w * r, h * r];
            offset = [rng.gen_range(0.0..=canvas[0] - w), rng.gen_range(0.0..=canvas[1] - h)];
        }
        let mut crop = [0.0, 0.0, canvas[0], canvas[1]];
        if self.crop && !boxes.is_empty() {
            let shifted: Vec<Rect> = boxes.iter().map(|b| [b.x0 + offset[0], b.y0 + offset[1], b.x1 + offset[0], b.y1 + offset[1]]).collect();
            if let Some(min_iou) = MIN_IOUS[rng.gen_range(0..MIN_IOUS.len())] {
                for _ in 0..50 {
                    let (cw, ch) = (canvas[0] * rng.gen_range(0.3..=1.0f32), canvas[1] * rng.gen_range(0.3..=1.0f32));
                    if !(0.5..=2.0).contains(&(cw / ch)) {
                        continue;
                    }
                    let (x0, y0) = (rng.gen_range(0.0..=canvas[0] - cw), rng.gen_range(0.0..=canvas[1] - ch));
                    let r = [x0, y0, x0 + cw, y0 + ch];
                    let inside: Vec<&Rect> = shifted
                        .iter()
                        .filter(|b| {
                            let (mx, my) = ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0);
                            mx > r[0] && mx < r[2] && my > r[1] && my < r[3]
                        })
                        .collect();
                    if inside.is_empty() || inside.iter().map(|b| iou(b, &r)).fold(0.0, f32::max) < min_iou {
                        continue;
                    }
                    crop = r;
                    break;
                }
            }
        }
        let flip = self.flip && rng.gen_bool(0.5);
        Draw { offset, crop, flip, contrast, brightness, saturation }
    }

    /// Bilinear resampling of the crop into the output; canvas outside the image reads as the mean.
    fn sample(&self, px: &[u8], w: usize, h: usize, bpp: usize, d: &Draw, out: &mut [f32]) {
        let c = self.channels as usize;
        let [th, tw] = [self.size[0] as usize, self.size[1] as usize];
        let plane = th * tw;
        let mean: Vec<f32> = (0..c).map(|k| self.mean[k.min(self.mean.len() - 1)]).collect();
        let inv_std: Vec<f32> = (0..c).map(|k| 1.0 / self.std[k.min(self.std.len() - 1)]).collect();
        let [cx0, cy0, cx1, cy1] = d.crop;
        let (step_x, step_y) = ((cx1 - cx0) / tw as f32, (cy1 - cy0) / th as f32);
        // per output column (row): the image column (row) left of (above) the sample and its weight
        let axis = |n: usize, start: f32, step: f32, offset: f32| -> Vec<(isize, f32)> {
            (0..n)
                .map(|i| {
                    let s = start + (i as f32 + 0.5) * step - 0.5 - offset;
                    let f = s.floor();
                    (f as isize, s - f)
                })
                .collect()
        };
        let xs = axis(tw, cx0, step_x, d.offset[0]);
        let ys = axis(th, cy0, step_y, d.offset[1]);
        // the canvas beyond the image (zoom out) is the mean; the image's own border is repeated
        // half a pixel out, as a resize does
        let on_canvas = |v: f32, len: usize| v >= -0.5 && v <= len as f32 - 0.5;
        let mut value = vec![0f32; c];
        for (v, &(iy, ay)) in ys.iter().enumerate() {
            let sy = iy as f32 + ay;
            let y_in = on_canvas(sy, h);
            let (y0, y1) = (iy.clamp(0, h as isize - 1) as usize, (iy + 1).clamp(0, h as isize - 1) as usize);
            for (u, &(ix, ax)) in xs.iter().enumerate() {
                let o = if d.flip { tw - 1 - u } else { u };
                let sx = ix as f32 + ax;
                if !(y_in && on_canvas(sx, w)) {
                    for k in 0..c {
                        out[k * plane + v * tw + o] = 0.0;
                    }
                    continue;
                }
                let (x0, x1) = (ix.clamp(0, w as isize - 1) as usize, (ix + 1).clamp(0, w as isize - 1) as usize);
                let at = |y: usize, x: usize, k: usize| px[(y * w + x) * bpp + k] as f32;
                for (k, val) in value.iter_mut().enumerate() {
                    let top = at(y0, x0, k) + ax * (at(y0, x1, k) - at(y0, x0, k));
                    let bottom = at(y1, x0, k) + ax * (at(y1, x1, k) - at(y1, x0, k));
                    *val = (top + ay * (bottom - top)) * d.contrast + d.brightness;
                }
                if d.saturation != 1.0 && c == 3 {
                    let grey = 0.299 * value[0] + 0.587 * value[1] + 0.114 * value[2];
                    for val in value.iter_mut() {
                        *val = grey + d.saturation * (*val - grey);
                    }
                }
                for k in 0..c {
                    out[k * plane + v * tw + o] = (value[k].clamp(0.0, 255.0) - mean[k]) * inv_std[k];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    /// A 40×30 grey image, 0 everywhere but a 255 rectangle at x 10..20, y 5..15, with its box.
    fn scene() -> (Vec<u8>, BoundingBox) {
        let (w, h) = (40, 30);
        let mut px = vec![0u8; w * h];
        for y in 5..15 {
            for x in 10..20 {
                px[y * w + x] = 255;
            }
        }
        (px, BoundingBox { class: 2, x0: 10.0, y0: 5.0, x1: 20.0, y1: 15.0 })
    }

    /// The box of the bright pixels (value > 127 after unnormalising) of a 1-channel output.
    fn bright_box(out: &[f32], tw: usize, th: usize) -> [f32; 4] {
        let mut b = [f32::MAX, f32::MAX, f32::MIN, f32::MIN];
        for y in 0..th {
            for x in 0..tw {
                if out[y * tw + x] > 0.5 {
                    b = [b[0].min(x as f32), b[1].min(y as f32), b[2].max(x as f32 + 1.0), b[3].max(y as f32 + 1.0)];
                }
            }
        }
        b
    }

    #[test]
    fn eval_resizes_pixels_and_boxes_together() {
        let (px, b) = scene();
        let t = DetectTransform::eval([60, 80], 1, vec![0.0], vec![255.0]);
        let mut out = vec![0f32; 60 * 80];
        let got = t.apply(&px, 40, 30, 1, &[b], &mut SmallRng::seed_from_u64(0), &mut out);
        assert_eq!(got, [BoundingBox { class: 2, x0: 20.0, y0: 10.0, x1: 40.0, y1: 30.0 }]);
        assert_eq!(bright_box(&out, 80, 60), [20.0, 10.0, 40.0, 30.0]);
    }

    #[test]
    fn every_augmentation_keeps_the_boxes_on_their_pixels() {
        let (px, b) = scene();
        let t = DetectTransform { flip: true, crop: true, expand: 3.0, photometric: false, ..DetectTransform::eval([64, 64], 1, vec![0.0], vec![255.0]) };
        let (mut flipped, mut cropped, mut expanded, mut dropped) = (0, 0, 0, 0);
        for seed in 0..300 {
            let mut out = vec![0f32; 64 * 64];
            let got = t.apply(&px, 40, 30, 1, &[b], &mut SmallRng::seed_from_u64(seed), &mut out);
            let Some(g) = got.first() else {
                dropped += 1;
                continue;
            };
            assert_eq!(g.class, 2);
            let seen = bright_box(&out, 64, 64);
            // the bright pixels cover the box to within a pixel of resampling on each side
            for (k, (s, want)) in seen.iter().zip([g.x0, g.y0, g.x1, g.y1]).enumerate() {
                assert!((s - want).abs() <= 1.5, "seed {seed}: side {k} of the box is {want}, the pixels say {s} ({g:?} vs {seen:?})");
            }
            let (w, h) = (g.x1 - g.x0, g.y1 - g.y0);
            flipped += (g.x0 < 64.0 - g.x1 - 1.0) as usize; // the unflipped box sits left of centre
            cropped += (w > 17.0) as usize; // zoomed in (a 16-px box at 40 → 64 px)
            expanded += (w < 15.0 && h < 15.0) as usize;
        }
        assert!(flipped > 30 && cropped > 30 && expanded > 30, "flips {flipped}, crops {cropped}, zoom-outs {expanded} of 300");
        // a box whose centre falls outside the crop is dropped, never its pixels silently mislabelled
        assert!(dropped < 150, "{dropped} of 300 images lost their box");
    }

    #[test]
    fn photometric_changes_values_not_geometry() {
        let (px, b) = scene();
        let t = DetectTransform { photometric: true, ..DetectTransform::eval([30, 40], 1, vec![0.0], vec![1.0]) };
        let mut changed = 0;
        for seed in 0..20 {
            let mut out = vec![0f32; 30 * 40];
            let got = t.apply(&px, 40, 30, 1, &[b], &mut SmallRng::seed_from_u64(seed), &mut out);
            assert_eq!(got, [b]);
            changed += (out[0] != 0.0 || out[5 * 40 + 10] != 255.0) as usize;
            assert!(out.iter().all(|v| (0.0..=255.0).contains(v)));
        }
        assert!(changed > 5, "{changed} of 20 draws changed the pixels");
    }
}
