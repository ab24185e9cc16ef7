//! How a stored image becomes a network input: the training augmentation (random crop, flip, rotation,
//! shear) and the evaluation centre crop, sampled in one vectorised pass from decoded pixels into
//! normalised planar floats.

use image::{DynamicImage, GenericImageView};
use rand::rngs::SmallRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::decode::{Decoded, Window};
use crate::records::to_gray;

/// How a stored image becomes a network input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transform {
    /// Output `[height, width]`.
    pub size: [u32; 2],
    /// 1 (grey) or 3 (RGB).
    pub channels: u32,
    /// Training: a random crop of `size`; otherwise the centre crop.
    #[serde(default)]
    pub random_crop: bool,
    /// Random horizontal flips.
    #[serde(default)]
    pub flip: bool,
    /// Random rotation within ± degrees about the crop's centre.
    #[serde(default)]
    pub rotate: f32,
    /// Random horizontal shear within ± this ratio.
    #[serde(default)]
    pub shear: f32,
    /// Per-channel mean and standard deviation in 0–255 pixel units: x = (pixel - mean) / std.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Transform {
    /// A deterministic evaluation transform: centre crop, no augmentation.
    pub fn eval(size: [u32; 2], channels: u32, mean: Vec<f32>, std: Vec<f32>) -> Self {
        Self { size, channels, random_crop: false, flip: false, rotate: 0.0, shear: 0.0, mean, std }
    }

    /// Applies the transform; writes `C*H*W` floats (channel-major) into `out`.
    ///
    /// One pass per output pixel: the crop, the rotation and shear about the crop's centre, the flip, a
    /// scale-up when the image is smaller than the crop, and the normalisation are composed into a
    /// single inverse mapping into the decoded image, sampled bilinearly (nearest when it is a plain
    /// crop). Points that fall outside the image read as 0.
    pub fn apply(&self, img: DynamicImage, rng: &mut SmallRng, out: &mut [f32]) {
        let c = self.channels as usize;
        let img = if c == 1 { DynamicImage::ImageLuma8(to_gray(&img)) } else { DynamicImage::ImageRgb8(img.into_rgb8()) };
        let (w, h) = img.dimensions();
        let bytes_per_pixel = if c == 1 { 1 } else { 3 };
        self.apply_interleaved(img.as_bytes(), w as usize, h as usize, bytes_per_pixel, rng, out);
    }

    /// [`Transform::apply`] on decoded pixels: `height` rows of `width` pixels, `bytes_per_pixel` bytes
    /// each, of which the first `channels` are used (1 for grey, 3 for RGB, 4 for RGB with a padding
    /// byte, as libjpeg-turbo writes RGBX). The random draws are the same as `apply`'s, in the same order.
    pub fn apply_interleaved(&self, pixels: &[u8], width: usize, height: usize, bytes_per_pixel: usize, rng: &mut SmallRng, out: &mut [f32]) {
        let g = self.draw(width, height, rng);
        let d = Decoded { pixels, width, height, bytes_per_pixel, x: 0, y: 0 };
        self.apply_placed(&d, g, out);
    }

    /// The draws for a `width` x `height` image ([`Transform::apply_interleaved`]'s, in its order),
    /// and the window of it they read when that is less than the whole (a plain crop: no rotation,
    /// shear or upscaling), for [`Decoder::decode_window`](crate::decode::Decoder::decode_window).
    pub fn place(&self, width: usize, height: usize, rng: &mut SmallRng) -> (Placement, Option<Window>) {
        let g = self.draw(width, height, rng);
        let [th, tw] = self.size;
        let window = g.is_plain().then_some(Window { x: g.x0, y: g.y0, width: tw as usize, height: th as usize });
        (g, window)
    }

    /// Samples `decoded` (the whole image, or the window of it that `g`'s plain crop reads) as placed
    /// by [`Transform::place`] into `out`.
    pub fn apply_placed(&self, decoded: &Decoded, g: Placement, out: &mut [f32]) {
        let Decoded { pixels, width, height, bytes_per_pixel, x, y } = *decoded;
        let [th, tw] = self.size;
        let (tw, th) = (tw as usize, th as usize);
        let c = self.channels as usize;
        // a window holds the crop: shift the crop to the window's own pixels
        let plain = g.is_plain();
        assert!((x, y) == (0, 0) || plain, "only a plain crop reads a window of the image");
        assert!(g.x0 >= x && g.y0 >= y && (!plain || (g.x0 - x + tw <= width && g.y0 - y + th <= height)), "the decoded pixels miss the crop");
        let g = Placement { x0: g.x0 - x, y0: g.y0 - y, ..g };
        // (the sampling's integer conversion is exact up to 2^22, far beyond any image's size)
        assert!((1..1 << 21).contains(&width) && (1..1 << 21).contains(&height), "cannot sample a {width}x{height} image");
        assert!(
            pixels.len() >= width * height * bytes_per_pixel,
            "{width}x{height} pixels need {} bytes, got {}",
            width * height * bytes_per_pixel,
            pixels.len()
        );
        assert!(out.len() >= c * th * tw, "{c}x{th}x{tw} floats do not fit in {}", out.len());
        let img = Img { px: pixels, w: width, h: height };
        match (c, bytes_per_pixel) {
            (1, 1) => self.sample::<1, 1>(&img, &g, out),
            (3, 3) => self.sample::<3, 3>(&img, &g, out),
            (3, 4) => self.sample::<3, 4>(&img, &g, out),
            (c, b) => panic!("{c} channels cannot be read from {b}-byte pixels (1 from 1, 3 from 3 or 4)"),
        }
    }

    /// The random draws for one image, in a fixed order: crop offset, angle, shear, flip.
    pub(crate) fn draw(&self, w: usize, h: usize, rng: &mut SmallRng) -> Placement {
        // (the sampling's integer conversion is exact up to 2^22, far beyond any image's size)
        assert!((1..1 << 21).contains(&w) && (1..1 << 21).contains(&h), "cannot sample a {w}x{h} image");
        let [th, tw] = self.size;
        let (w, h) = (w as u32, h as u32);
        // Too small for the crop: sample as if scaled up so that the crop fits.
        let scale = (tw as f32 / w as f32).max(th as f32 / h as f32).max(1.0);
        let (sw, sh) = ((w as f32 * scale).floor() as u32, (h as f32 * scale).floor() as u32);
        let (sw, sh) = (sw.max(tw), sh.max(th));
        let (x0, y0) = if self.random_crop { (rng.gen_range(0..=sw - tw), rng.gen_range(0..=sh - th)) } else { ((sw - tw) / 2, (sh - th) / 2) };
        let angle = if self.rotate > 0.0 { rng.gen_range(-self.rotate..=self.rotate).to_radians() } else { 0.0 };
        let shear = if self.shear > 0.0 { rng.gen_range(-self.shear..=self.shear) } else { 0.0 };
        let flip = self.flip && rng.gen_bool(0.5);
        Placement { x0: x0 as usize, y0: y0 as usize, scale, angle, shear, flip }
    }

    /// Samples the placed crop of `img` (pixels of `B` bytes, `C` of them used) into `out`, normalised.
    fn sample<const C: usize, const B: usize>(&self, img: &Img, g: &Placement, out: &mut [f32]) {
        let [th, tw] = self.size;
        let (tw, th) = (tw as usize, th as usize);
        let mean: [f32; C] = std::array::from_fn(|k| self.mean[k.min(self.mean.len() - 1)]);
        let inv_std: [f32; C] = std::array::from_fn(|k| 1.0 / self.std[k.min(self.std.len() - 1)]);
        let plane = th * tw;
        let (out, _) = out.split_at_mut(C * plane);
        if g.is_plain() {
            // A plain crop: every output pixel is one stored pixel. One channel plane at a time, the
            // row's pixels walked forwards or (flipped) backwards, with no index to check: the loops
            // vectorise.
            for yy in 0..th {
                let row = &img.px[((g.y0 + yy) * img.w + g.x0) * B..][..tw * B];
                let rows = out_rows::<C>(out, plane, yy * tw, tw);
                for (k, dst) in rows.into_iter().enumerate() {
                    let (m, s) = (mean[k], inv_std[k]);
                    let src = row.chunks_exact(B).map(|px| px[k]);
                    if g.flip {
                        dst.iter_mut().zip(src.rev()).for_each(|(d, v)| *d = (v as f32 - m) * s);
                    } else {
                        dst.iter_mut().zip(src).for_each(|(d, v)| *d = (v as f32 - m) * s);
                    }
                }
            }
            return;
        }
        // Output pixel (u, v) about the crop centre; the forward map is rotate(shear(p)), so the inverse
        // is shear^-1(rotate^-1(q)): rotate by -angle, then x -= shear * y; then back to the (scaled)
        // image and to the decoded image's pixel centres. All of it is affine in the output column, so
        // each row is a start point and a step: x = x_row + dx * xx, y = y_row + dy * xx.
        let (cx, cy) = ((tw as f32 - 1.0) / 2.0, (th as f32 - 1.0) / 2.0);
        let (sin, cos) = g.angle.sin_cos();
        let inv_scale = 1.0 / g.scale;
        // u = u_first + u_step * xx (the flip walks the row backwards)
        let (u_first, u_step) = if g.flip { (tw as f32 - 1.0 - cx, -1.0) } else { (-cx, 1.0) };
        let (xu, xv) = (cos + g.shear * sin, sin - g.shear * cos); // x = xu*u + xv*v (before the shift)
        let (yu, yv) = (-sin, cos);
        let (dx, dy) = (xu * u_step * inv_scale, yu * u_step * inv_scale);
        let (ox, oy) = (cx + g.x0 as f32 + 0.5, cy + g.y0 as f32 + 0.5);
        let shift: [f32; C] = std::array::from_fn(|k| -mean[k] * inv_std[k]); // (v - mean) / std = v / std + shift
        let mut taps = Taps::default();
        for yy in 0..th {
            let v = yy as f32 - cy;
            let x_row = (xu * u_first + xv * v + ox) * inv_scale - 0.5;
            let y_row = (yu * u_first + yv * v + oy) * inv_scale - 0.5;
            let mut rows = out_rows::<C>(out, plane, yy * tw, tw);
            // BLOCK output pixels at a time, in three passes: their source points and weights, then
            // their neighbours (the one scalar pass), then the interpolation and the normalisation of
            // every channel straight into the output rows. The passes are far enough apart that the
            // vector loads of one never wait for the scalar stores of the one before.
            for x_first in (0..tw).step_by(BLOCK) {
                let n = BLOCK.min(tw - x_first);
                let inside = taps.place(x_row, y_row, dx, dy, x_first, img);
                taps.fetch::<C, B>(img, n, inside);
                if n == BLOCK {
                    let dst = rows.each_mut().map(|row| row[x_first..].first_chunk_mut::<BLOCK>().expect("a whole block"));
                    taps.lerp(&inv_std, &shift, dst);
                } else {
                    // the row's last few
                    let mut last = [[0f32; BLOCK]; C];
                    taps.lerp(&inv_std, &shift, last.each_mut());
                    for (row, last) in rows.iter_mut().zip(&last) {
                        row[x_first..].copy_from_slice(&last[..n]);
                    }
                }
            }
        }
    }
}

/// Where one image's crop lies and how it is turned (see [`Transform::place`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    pub(crate) x0: usize,
    pub(crate) y0: usize,
    pub(crate) scale: f32,
    pub(crate) angle: f32,
    pub(crate) shear: f32,
    pub(crate) flip: bool,
}

impl Placement {
    /// A plain crop: every output pixel is one stored pixel (no rotation, shear or upscaling).
    pub fn is_plain(&self) -> bool {
        self.angle == 0.0 && self.shear == 0.0 && self.scale == 1.0
    }
}

/// Interleaved decoded pixels.
struct Img<'a> {
    px: &'a [u8],
    w: usize,
    h: usize,
}

/// Row `at..at + len` of each of the `C` planes of `out`.
#[inline]
fn out_rows<const C: usize>(out: &mut [f32], plane: usize, at: usize, len: usize) -> [&mut [f32]; C] {
    let mut planes = out.chunks_exact_mut(plane);
    std::array::from_fn(|_| &mut planes.next().expect("C planes")[at..at + len])
}

/// Output pixels interpolated together.
const BLOCK: usize = 64;

/// Adding this to a float of magnitude below 2^22 rounds it to an integer, which then sits in the low
/// bits of the sum: a floor and an integer conversion that vectorise (`as i32` saturates and does not).
const ROUNDER: f32 = 12_582_912.0; // 1.5 * 2^23

/// BLOCK source points: their top-left neighbours, their bilinear weights and their four neighbours.
struct Taps {
    ix: [i32; BLOCK],
    iy: [i32; BLOCK],
    ax: [f32; BLOCK],
    ay: [f32; BLOCK],
    /// Pixels packed one byte per channel (channel k at bits 8k), 0 outside the image:
    /// [top-left, top-right, bottom-left, bottom-right][lane].
    px: [[u32; BLOCK]; 4],
}

impl Default for Taps {
    fn default() -> Self {
        Self { ix: [0; BLOCK], iy: [0; BLOCK], ax: [0.0; BLOCK], ay: [0.0; BLOCK], px: [[0; BLOCK]; 4] }
    }
}

/// The first `C` channels of a `B`-byte pixel, packed one byte per channel.
#[inline(always)]
fn packed<const C: usize, const B: usize>(p: &[u8]) -> u32 {
    if B == 4 {
        return u32::from_le_bytes([p[0], p[1], p[2], p[3]]); // the padding byte is never unpacked
    }
    let mut v = 0;
    for (k, &byte) in p[..C].iter().enumerate() {
        v |= (byte as u32) << (8 * k);
    }
    v
}

impl Taps {
    /// The points (x_row + dx * xx, y_row + dy * xx) for xx = x_first .. x_first + BLOCK: their floors
    /// and weights. Returns whether every one has all four neighbours inside `img`.
    #[inline(always)]
    fn place(&mut self, x_row: f32, y_row: f32, dx: f32, dy: f32, x_first: usize, img: &Img) -> bool {
        let limit = 4_194_304.0; // 2^22: far outside any image, still exact for ROUNDER
        let clamp = |v: f32| {
            if v < -limit {
                -limit
            } else if v > limit {
                limit
            } else {
                v
            }
        };
        // neighbours (x, y) .. (x + 1, y + 1) inside: 0 <= x < w - 1 and 0 <= y < h - 1 (as u32, a
        // negative x is huge)
        let (x_end, y_end) = (img.w.saturating_sub(1) as u32, img.h.saturating_sub(1) as u32);
        let mut all_inside = true;
        let first = x_first as f32;
        // (wrapping integer arithmetic and `&` rather than `&&`: no overflow checks and no branches
        // in the loop, so that it vectorises in the dev profile too)
        for i in 0..BLOCK {
            let xx = first + i as f32;
            let (x, y) = (clamp(x_row + dx * xx), clamp(y_row + dy * xx));
            let (rx, ry) = ((x + ROUNDER) - ROUNDER, (y + ROUNDER) - ROUNDER);
            let (floor_x, floor_y) = (rx - if rx > x { 1.0 } else { 0.0 }, ry - if ry > y { 1.0 } else { 0.0 });
            self.ax[i] = x - floor_x;
            self.ay[i] = y - floor_y;
            self.ix[i] = (floor_x + ROUNDER).to_bits().wrapping_sub(ROUNDER.to_bits()) as i32;
            self.iy[i] = (floor_y + ROUNDER).to_bits().wrapping_sub(ROUNDER.to_bits()) as i32;
            all_inside &= ((self.ix[i] as u32) < x_end) & ((self.iy[i] as u32) < y_end);
        }
        all_inside
    }

    /// Fetches the four neighbours of the first `n` points placed (pixels of `B` bytes, `C` used).
    #[inline(always)]
    fn fetch<const C: usize, const B: usize>(&mut self, img: &Img, n: usize, all_inside: bool) {
        let row = img.w * B;
        if all_inside {
            // the common case: two rows of two pixels per point, no checks
            for i in 0..n {
                let o = (self.iy[i] as usize).wrapping_mul(row).wrapping_add((self.ix[i] as usize).wrapping_mul(B));
                let (top, bottom) = (&img.px[o..][..2 * B], &img.px[o.wrapping_add(row)..][..2 * B]);
                self.px[0][i] = packed::<C, B>(top);
                self.px[1][i] = packed::<C, B>(&top[B..]);
                self.px[2][i] = packed::<C, B>(bottom);
                self.px[3][i] = packed::<C, B>(&bottom[B..]);
            }
            return;
        }
        let (w, h) = (img.w as i64, img.h as i64);
        for i in 0..n {
            for (t, tap) in self.px.iter_mut().enumerate() {
                let (px, py) = (self.ix[i] as i64 + (t % 2) as i64, self.iy[i] as i64 + (t / 2) as i64);
                let inside = px >= 0 && py >= 0 && px < w && py < h;
                tap[i] = if inside { packed::<C, B>(&img.px[py as usize * row + px as usize * B..]) } else { 0 };
            }
        }
    }

    /// Every channel `k` of every point, interpolated along x on both rows, then along y, times
    /// `scale[k]` plus `shift[k]`, into `out[k]`.
    #[inline(always)]
    #[allow(clippy::needless_range_loop)] // `i` walks seven arrays in step
    fn lerp<const C: usize>(&self, scale: &[f32; C], shift: &[f32; C], out: [&mut [f32; BLOCK]; C]) {
        for i in 0..BLOCK {
            let (ax, ay) = (self.ax[i], self.ay[i]);
            let px = [self.px[0][i], self.px[1][i], self.px[2][i], self.px[3][i]];
            for k in 0..C {
                let at = |t: usize| (px[t].wrapping_shr(8 * k as u32) & 0xFF) as i32 as f32;
                let top = at(0) + ax * (at(1) - at(0));
                let bottom = at(2) + ax * (at(3) - at(2));
                out[k][i] = (top + ay * (bottom - top)) * scale[k] + shift[k];
            }
        }
    }
}
