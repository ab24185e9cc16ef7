//! The data loader used by the trainer and the runtime: record files in, normalised `[N, C, H, W]`
//! float batches out.
//!
//! Worker threads decode and augment whole batches while the consumer computes; at most `prefetch`
//! finished batches wait in a bounded channel, so resident memory stays at a few batches whatever the
//! dataset size (the records stay on disk and are read at random offsets). Every batch's random draws
//! come from (seed, epoch, batch index), so an epoch is the same whichever thread builds which batch.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

use image::{DynamicImage, GenericImageView};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::records::{to_gray, RecordError, RecordFile};

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
        let [th, tw] = self.size;
        let (tw, th) = (tw as usize, th as usize);
        let c = self.channels as usize;
        // (the sampling's integer conversion is exact up to 2^22, far beyond any image's size)
        assert!((1..1 << 21).contains(&width) && (1..1 << 21).contains(&height), "cannot sample a {width}x{height} image");
        assert!(
            pixels.len() >= width * height * bytes_per_pixel,
            "{width}x{height} pixels need {} bytes, got {}",
            width * height * bytes_per_pixel,
            pixels.len()
        );
        assert!(out.len() >= c * th * tw, "{c}x{th}x{tw} floats do not fit in {}", out.len());
        let g = self.draw(width, height, rng);
        let img = Img { px: pixels, w: width, h: height };
        match (c, bytes_per_pixel) {
            (1, 1) => self.sample::<1, 1>(&img, &g, out),
            (3, 3) => self.sample::<3, 3>(&img, &g, out),
            (3, 4) => self.sample::<3, 4>(&img, &g, out),
            (c, b) => panic!("{c} channels cannot be read from {b}-byte pixels (1 from 1, 3 from 3 or 4)"),
        }
    }

    /// The random draws for one image, in a fixed order: crop offset, angle, shear, flip.
    fn draw(&self, w: usize, h: usize, rng: &mut SmallRng) -> Placement {
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
        if g.angle == 0.0 && g.shear == 0.0 && g.scale == 1.0 {
            // A plain crop: every output pixel is one stored pixel.
            for yy in 0..th {
                let row = &img.px[((g.y0 + yy) * img.w + g.x0) * B..][..tw * B];
                for xx in 0..tw {
                    let sx = if g.flip { tw - 1 - xx } else { xx };
                    let px = &row[sx * B..sx * B + C];
                    for k in 0..C {
                        out[k * plane + yy * tw + xx] = (px[k] as f32 - mean[k]) * inv_std[k];
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

/// Where one image's crop lies and how it is turned (see [`Transform::draw`]).
struct Placement {
    x0: usize,
    y0: usize,
    scale: f32,
    angle: f32,
    shear: f32,
    flip: bool,
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

/// A batch of normalised images.
#[derive(Debug)]
pub struct Batch {
    /// `n * C * H * W` floats, channel-major per image.
    pub data: Vec<f32>,
    pub labels: Vec<i64>,
    /// The records' keys, one per image in the batch.
    pub keys: Vec<String>,
    pub n: usize,
    /// `[C, H, W]`.
    pub shape: [usize; 3],
    /// Records whose image could not be decoded: (key, reason). They are left out of the batch.
    pub skipped: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct LoaderOptions {
    pub batch_size: usize,
    pub shuffle: bool,
    pub seed: u64,
    /// Decode threads (0: one per core).
    pub workers: usize,
    /// Finished batches allowed to wait for the consumer.
    pub prefetch: usize,
    /// Read only shard `rank` of `world` (every world-th record): several processes split a file.
    pub shard: Option<(usize, usize)>,
    /// Drop a last batch smaller than `batch_size`.
    pub drop_last: bool,
}

impl Default for LoaderOptions {
    fn default() -> Self {
        Self { batch_size: 128, shuffle: false, seed: 0, workers: 0, prefetch: 2, shard: None, drop_last: false }
    }
}

/// Record files read as batches.
pub struct Loader {
    file: Arc<RecordFile>,
    transform: Arc<Transform>,
    opts: LoaderOptions,
    indices: Vec<usize>,
}

fn batch_seed(seed: u64, epoch: usize, batch: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add((epoch as u64) << 32).wrapping_add(batch as u64)
}

impl Loader {
    pub fn new(file: RecordFile, transform: Transform, opts: LoaderOptions) -> Self {
        let indices = match opts.shard {
            Some((rank, world)) => file.shard(rank, world),
            None => (0..file.len()).collect(),
        };
        Self { file: Arc::new(file), transform: Arc::new(transform), opts, indices }
    }

    /// Samples per epoch.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.len(), self.opts.batch_size.max(1));
        if self.opts.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The batches of one epoch, in order, built ahead by worker threads.
    pub fn epoch(&self, epoch: usize) -> Epoch {
        self.epoch_from(epoch, 0)
    }

    /// The batches of one epoch from batch `start` on (a resumed epoch), the same as in a whole epoch.
    pub fn epoch_from(&self, epoch: usize, start: usize) -> Epoch {
        let mut order = self.indices.clone();
        if self.opts.shuffle {
            order.shuffle(&mut SmallRng::seed_from_u64(batch_seed(self.opts.seed, epoch, usize::MAX)));
        }
        let bs = self.opts.batch_size.max(1);
        let batches: Vec<Vec<usize>> = order.chunks(bs).filter(|c| !self.opts.drop_last || c.len() == bs).map(|c| c.to_vec()).collect();
        let total = batches.len();
        let batches = Arc::new(batches);
        let workers = if self.opts.workers == 0 { std::thread::available_parallelism().map_or(2, |n| n.get()) } else { self.opts.workers };
        let (tx, rx) = sync_channel(self.opts.prefetch.max(1));
        let next = Arc::new(AtomicUsize::new(start));
        for _ in 0..workers.min(total.max(1)) {
            let (tx, next, batches, file, t) = (tx.clone(), next.clone(), batches.clone(), self.file.clone(), self.transform.clone());
            let seed = self.opts.seed;
            std::thread::spawn(move || {
                let mut scratch = Scratch::default();
                loop {
                    let b = next.fetch_add(1, Ordering::SeqCst);
                    if b >= batches.len() {
                        break;
                    }
                    let built = build_batch(&file, &t, &batches[b], &mut SmallRng::seed_from_u64(batch_seed(seed, epoch, b)), &mut scratch);
                    if tx.send((b, built)).is_err() {
                        break; // the consumer is gone
                    }
                }
            });
        }
        Epoch { rx, pending: BTreeMap::new(), next: start, total }
    }
}

/// What one worker reuses from record to record: the read buffer and the decoder with its pixels.
#[derive(Default)]
struct Scratch {
    record: Vec<u8>,
    decoder: Decoder,
}

fn build_batch(file: &RecordFile, t: &Transform, idx: &[usize], rng: &mut SmallRng, s: &mut Scratch) -> Result<Batch, RecordError> {
    let shape = [t.channels as usize, t.size[0] as usize, t.size[1] as usize];
    let per = shape.iter().product::<usize>();
    let mut data = vec![0f32; idx.len() * per];
    let mut labels = Vec::with_capacity(idx.len());
    let mut keys = Vec::with_capacity(idx.len());
    let mut skipped = vec![];
    let mut n = 0;
    for &i in idx {
        let rec = file.read_into(i, &mut s.record)?;
        match s.decoder.decode(rec.image, t.channels) {
            Ok(px) => {
                t.apply_interleaved(px.pixels, px.width, px.height, px.bytes_per_pixel, rng, &mut data[n * per..(n + 1) * per]);
                labels.push(rec.label as i64);
                keys.push(rec.key.into_owned());
                n += 1;
            }
            Err(e) => skipped.push((rec.key.into_owned(), e)),
        }
    }
    data.truncate(n * per);
    Ok(Batch { data, labels, keys, n, shape, skipped })
}

/// Decoded pixels, borrowed from the [`Decoder`] that wrote them: `height` rows of `width` pixels of
/// `bytes_per_pixel` bytes (1: grey; 3: RGB; 4: RGB and a padding byte), ready for
/// [`Transform::apply_interleaved`].
#[derive(Debug)]
pub struct Decoded<'a> {
    pub pixels: &'a [u8],
    pub width: usize,
    pub height: usize,
    pub bytes_per_pixel: usize,
}

/// Decodes stored images into one reused pixel buffer, straight into the channels the transform reads.
///
/// JPEGs go to libjpeg-turbo (the `turbojpeg` feature, on by default; it links the system's
/// libturbojpeg). Every other format, and any JPEG that libjpeg-turbo refuses (a CMYK file, a damaged or
/// truncated one), goes to the `image` crate, which decides as it always has: what it cannot decode
/// either is an error, and the loader skips and reports that record. Grey output is BT.601 luma
/// everywhere, as OpenCV and PIL make it ([`crate::records::to_gray`]): from a colour JPEG it is the
/// file's own Y channel, which libjpeg-turbo hands over without decoding the colour at all.
#[derive(Default)]
pub struct Decoder {
    #[cfg(feature = "turbojpeg")]
    turbo: Option<turbojpeg::Decompressor>,
    pixels: Vec<u8>,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder").field("buffer_bytes", &self.pixels.capacity()).finish_non_exhaustive()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes `encoded` into 1 (grey) or 3 (RGB) channels.
    pub fn decode(&mut self, encoded: &[u8], channels: u32) -> Result<Decoded<'_>, String> {
        let grey = channels == 1;
        #[cfg(feature = "turbojpeg")]
        if encoded.starts_with(&[0xFF, 0xD8]) {
            if let Some((width, height, bytes_per_pixel)) = self.decode_jpeg(encoded, grey) {
                return Ok(Decoded { pixels: &self.pixels[..width * height * bytes_per_pixel], width, height, bytes_per_pixel });
            }
        }
        let img = image::load_from_memory(encoded).map_err(|e| e.to_string())?;
        let (width, height) = (img.width() as usize, img.height() as usize);
        if width == 0 || height == 0 {
            return Err(format!("the image is {width}x{height} pixels"));
        }
        self.pixels = if grey { to_gray(&img).into_raw() } else { img.into_rgb8().into_raw() };
        let bytes_per_pixel = if grey { 1 } else { 3 };
        Ok(Decoded { pixels: &self.pixels, width, height, bytes_per_pixel })
    }

    /// libjpeg-turbo into `self.pixels`: RGBX for colour (four-byte pixels sample faster than three),
    /// grey from a grey JPEG or from a YCbCr one's Y channel. `None` when libjpeg-turbo cannot or will
    /// not: the caller falls back.
    #[cfg(feature = "turbojpeg")]
    fn decode_jpeg(&mut self, encoded: &[u8], grey: bool) -> Option<(usize, usize, usize)> {
        use turbojpeg::{Colorspace, Decompressor, Image, PixelFormat};
        let turbo = match &mut self.turbo {
            Some(t) => t,
            none => none.insert(Decompressor::new().ok()?),
        };
        let head = turbo.read_header(encoded).ok()?;
        if grey && !matches!(head.colorspace, Colorspace::Gray | Colorspace::YCbCr) {
            return None; // grey straight from the file only where it is the Y (BT.601 luma) channel
        }
        let (width, height) = (head.width, head.height);
        let (format, bytes_per_pixel) = if grey { (PixelFormat::GRAY, 1) } else { (PixelFormat::RGBX, 4) };
        let len = width.checked_mul(height)?.checked_mul(bytes_per_pixel)?;
        if len > 512 << 20 {
            return None; // past the image crate's default limit: let it refuse the image
        }
        if self.pixels.len() < len {
            self.pixels.resize(len, 0);
        }
        let out = Image { pixels: &mut self.pixels[..len], width, pitch: width * bytes_per_pixel, height, format };
        turbo.decompress(encoded, out).ok()?;
        Some((width, height, bytes_per_pixel))
    }
}

/// The batches of one epoch, yielded in order.
pub struct Epoch {
    rx: Receiver<(usize, Result<Batch, RecordError>)>,
    pending: BTreeMap<usize, Result<Batch, RecordError>>,
    next: usize,
    total: usize,
}

impl Epoch {
    pub fn total(&self) -> usize {
        self.total
    }
}

impl Iterator for Epoch {
    type Item = Result<Batch, RecordError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.total {
            return None;
        }
        while !self.pending.contains_key(&self.next) {
            let (b, batch) = self.rx.recv().ok()?;
            self.pending.insert(b, batch);
        }
        let out = self.pending.remove(&self.next);
        self.next += 1;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{pack, Item, PackOptions, Source};

    fn fixture(name: &str, n: usize) -> RecordFile {
        let d = std::env::temp_dir().join(format!("dlcv-loader-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        // image i is a flat grey square of value 10*i, 40x30 pixels; label i
        let items: Vec<Item> = (0..n)
            .map(|i| Item {
                source: Source::Image(DynamicImage::ImageLuma8(image::GrayImage::from_pixel(40, 30, image::Luma([(10 * i) as u8])))),
                key: format!("{i}"),
                label: i as i32,
                boxes: vec![],
            })
            .collect();
        let rec = d.join("s.rec");
        pack(&items, &rec, &PackOptions { short_side: 0, jpeg_quality: 0, grayscale: true }, false).unwrap();
        RecordFile::open(&rec).unwrap()
    }

    #[test]
    fn batches_are_in_order_normalised_and_complete() {
        let t = Transform::eval([20, 20], 1, vec![5.0], vec![2.0]);
        let l = Loader::new(fixture("order", 10), t, LoaderOptions { batch_size: 4, workers: 3, prefetch: 1, ..Default::default() });
        let batches: Vec<Batch> = l.epoch(0).map(Result::unwrap).collect();
        assert_eq!(batches.iter().map(|b| b.n).collect::<Vec<_>>(), [4, 4, 2]);
        let labels: Vec<i64> = batches.iter().flat_map(|b| b.labels.clone()).collect();
        assert_eq!(labels, (0..10).collect::<Vec<i64>>());
        // image 3 is all 30: (30 - 5) / 2 = 12.5 everywhere
        assert!(batches[0].data[3 * 400..4 * 400].iter().all(|&v| v == 12.5));
        assert_eq!(batches[0].shape, [1, 20, 20]);
    }

    #[test]
    fn shuffling_is_a_seeded_permutation_per_epoch() {
        let t = Transform::eval([8, 8], 1, vec![0.0], vec![1.0]);
        let opts = LoaderOptions { batch_size: 3, shuffle: true, seed: 9, workers: 2, ..Default::default() };
        let l = Loader::new(fixture("shuffle", 12), t, opts);
        let labels = |e| -> Vec<i64> { l.epoch(e).flat_map(|b| b.unwrap().labels).collect() };
        let (a, a2, b) = (labels(0), labels(0), labels(1));
        assert_eq!(a, a2, "same seed and epoch, same order");
        assert_ne!(a, b, "another epoch, another order");
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..12).collect::<Vec<i64>>());
    }

    #[test]
    fn shards_split_the_file_without_overlap() {
        let f = fixture("shard", 7);
        let t = Transform::eval([8, 8], 1, vec![0.0], vec![1.0]);
        let path = f.path.clone();
        let l0 = Loader::new(f, t.clone(), LoaderOptions { shard: Some((0, 2)), ..Default::default() });
        let l1 = Loader::new(RecordFile::open(&path).unwrap(), t, LoaderOptions { shard: Some((1, 2)), ..Default::default() });
        let a: Vec<i64> = l0.epoch(0).flat_map(|b| b.unwrap().labels).collect();
        let b: Vec<i64> = l1.epoch(0).flat_map(|b| b.unwrap().labels).collect();
        assert_eq!((a, b), (vec![0, 2, 4, 6], vec![1, 3, 5]));
    }

    #[test]
    fn augmentation_is_random_but_reproducible() {
        // a horizontal ramp, so flips and crops change the values
        let img = DynamicImage::ImageRgb8(image::RgbImage::from_fn(32, 32, |x, _| image::Rgb([(x * 8) as u8, 0, 0])));
        let t = Transform { size: [24, 24], channels: 3, random_crop: true, flip: true, rotate: 10.0, shear: 0.1, mean: vec![0.0], std: vec![1.0] };
        let run = |seed| {
            let mut out = vec![0f32; 3 * 24 * 24];
            t.apply(img.clone(), &mut SmallRng::seed_from_u64(seed), &mut out);
            out
        };
        assert_eq!(run(1), run(1));
        let distinct: std::collections::HashSet<Vec<u32>> = (0..8).map(|s| run(s).iter().map(|v| v.to_bits()).collect()).collect();
        assert!(distinct.len() > 4, "augmentation should vary with the seed");
        let centre = Transform::eval([24, 24], 3, vec![0.0], vec![1.0]);
        let mut out = vec![0f32; 3 * 24 * 24];
        centre.apply(img.clone(), &mut SmallRng::seed_from_u64(0), &mut out);
        assert_eq!(out[0], 4.0 * 8.0, "centre crop starts at x = 4");
    }

    /// A smooth colour texture: every channel different, no two neighbours equal.
    fn texture(w: u32, h: u32) -> image::RgbImage {
        image::RgbImage::from_fn(w, h, |x, y| {
            let (x, y) = (x as f32, y as f32);
            let v = |a: f32, b: f32, c: f32| (128.0 + 100.0 * (a * x + c).sin() * (b * y).cos()) as u8;
            image::Rgb([v(0.31, 0.17, 0.0), v(0.13, 0.29, 1.0), v(0.23, 0.11, 2.0)])
        })
    }

    /// What `apply` computes, written the plain way: one output pixel at a time, in f64, from the
    /// same draws. The vectorised kernel must agree with it.
    /// Also returns the extent of the source points: [min x, min y, max x, max y].
    fn reference(t: &Transform, img: &image::RgbImage, seed: u64) -> (Vec<f32>, [f64; 4]) {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let g = t.draw(w, h, &mut SmallRng::seed_from_u64(seed));
        let [th, tw] = [t.size[0] as usize, t.size[1] as usize];
        let (cx, cy) = ((tw as f64 - 1.0) / 2.0, (th as f64 - 1.0) / 2.0);
        let (sin, cos) = (g.angle as f64).sin_cos();
        let (shear, scale) = (g.shear as f64, g.scale as f64);
        let at = |x: i64, y: i64, k: usize| if x >= 0 && y >= 0 && x < w as i64 && y < h as i64 { img.get_pixel(x as u32, y as u32)[k] as f64 } else { 0.0 };
        let mut out = vec![0f32; 3 * th * tw];
        let mut extent = [f64::MAX, f64::MAX, f64::MIN, f64::MIN];
        for yy in 0..th {
            for xx in 0..tw {
                let u = (if g.flip { tw - 1 - xx } else { xx }) as f64 - cx;
                let v = yy as f64 - cy;
                let (ru, rv) = (cos * u + sin * v, -sin * u + cos * v);
                let x = (ru - shear * rv + cx + g.x0 as f64 + 0.5) / scale - 0.5;
                let y = (rv + cy + g.y0 as f64 + 0.5) / scale - 0.5;
                extent = [extent[0].min(x), extent[1].min(y), extent[2].max(x), extent[3].max(y)];
                let (fx, fy) = (x.floor(), y.floor());
                let (ax, ay, ix, iy) = (x - fx, y - fy, fx as i64, fy as i64);
                for k in 0..3 {
                    let top = at(ix, iy, k) * (1.0 - ax) + at(ix + 1, iy, k) * ax;
                    let bottom = at(ix, iy + 1, k) * (1.0 - ax) + at(ix + 1, iy + 1, k) * ax;
                    let value = top * (1.0 - ay) + bottom * ay;
                    out[k * th * tw + yy * tw + xx] = ((value - t.mean[k] as f64) / t.std[k] as f64) as f32;
                }
            }
        }
        (out, extent)
    }

    #[test]
    fn the_vectorised_sampling_matches_the_plain_formula() {
        let mean = vec![120.0, 110.0, 100.0];
        let std = vec![60.0, 50.0, 40.0];
        // 64x48 cropped whole and turned by up to 45 degrees: points past every edge of the image (they
        // read 0) and points whose neighbours straddle an edge; 30x20 under a 36x36 crop: the scale-up
        // path; 100 wide: rows longer than one block of lanes; no turn: the plain crop
        let cases = [
            (64, 48, [48, 64], 45.0, 0.3),
            (70, 50, [40, 48], 40.0, 0.3),
            (30, 20, [36, 36], 10.0, 0.1),
            (130, 90, [80, 100], 15.0, 0.1),
            (70, 50, [40, 48], 0.0, 0.0),
        ];
        for (case, (w, h, size, rotate, shear)) in cases.into_iter().enumerate() {
            let img = texture(w, h);
            let rgbx: Vec<u8> = img.pixels().flat_map(|p| [p[0], p[1], p[2], 77]).collect();
            let t = Transform { size, channels: 3, random_crop: true, flip: true, rotate, shear, mean: mean.clone(), std: std.clone() };
            let mut reached = [f64::MAX, f64::MAX, f64::MIN, f64::MIN];
            for seed in 0..8 {
                let (want, extent) = reference(&t, &img, seed);
                reached = [reached[0].min(extent[0]), reached[1].min(extent[1]), reached[2].max(extent[2]), reached[3].max(extent[3])];
                let mut got = vec![f32::NAN; want.len()];
                t.apply(DynamicImage::ImageRgb8(img.clone()), &mut SmallRng::seed_from_u64(seed), &mut got);
                let worst = want.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                // 0.001 standard deviations is a twentieth of a grey level; a pixel off by one or a
                // swapped channel is off by several levels
                assert!(worst < 1e-3, "{w}x{h} -> {size:?}, rotate {rotate}, seed {seed}: off by {worst}");
                // four-byte pixels (libjpeg-turbo's RGBX) give exactly the same floats
                let mut from_rgbx = vec![f32::NAN; want.len()];
                t.apply_interleaved(&rgbx, w as usize, h as usize, 4, &mut SmallRng::seed_from_u64(seed), &mut from_rgbx);
                assert_eq!(got, from_rgbx);
            }
            if case == 0 {
                let [x0, y0, x1, y1] = reached;
                assert!(x0 < -2.0 && y0 < -2.0 && x1 > w as f64 + 1.0 && y1 > h as f64 + 1.0, "the edges are not all reached: {reached:?}");
            }
        }
    }

    fn jpeg(img: DynamicImage) -> Vec<u8> {
        let mut bytes = std::io::Cursor::new(Vec::new());
        img.write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 95)).unwrap();
        bytes.into_inner()
    }

    fn largest_difference(a: &[u8], b: &[u8]) -> u8 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(a, b)| a.abs_diff(*b)).max().unwrap()
    }

    #[test]
    fn the_decoder_agrees_with_the_image_crate() {
        let colour = DynamicImage::ImageRgb8(texture(41, 23));
        let grey = DynamicImage::ImageLuma8(to_gray(&colour));
        let mut d = Decoder::new();
        for (what, encoded) in [("colour JPEG", jpeg(colour.clone())), ("grey JPEG", jpeg(grey.clone()))] {
            let reference = image::load_from_memory(&encoded).unwrap();
            for channels in [1, 3] {
                let px = d.decode(&encoded, channels).unwrap();
                assert_eq!((px.width, px.height), (41, 23), "{what}");
                let want = if channels == 1 { to_gray(&reference).into_raw() } else { reference.to_rgb8().into_raw() };
                let got: Vec<u8> = px.pixels.chunks_exact(px.bytes_per_pixel).flat_map(|p| p[..channels as usize].to_vec()).collect();
                // two correct JPEG decoders may differ by a level or two (IDCT rounding)
                assert!(largest_difference(&got, &want) <= 3, "{what}, {channels} channels");
                if cfg!(feature = "turbojpeg") {
                    // grey comes out as grey (from a colour JPEG: its Y channel, BT.601 luma)
                    assert_eq!(px.bytes_per_pixel, if channels == 1 { 1 } else { 4 }, "{what}, {channels} channels: libjpeg-turbo's layout");
                }
            }
        }
        // other formats: the image crate, exactly
        let mut png = std::io::Cursor::new(Vec::new());
        colour.write_to(&mut png, image::ImageFormat::Png).unwrap();
        let px = d.decode(png.get_ref(), 3).unwrap();
        assert_eq!((px.bytes_per_pixel, px.pixels), (3, colour.to_rgb8().as_raw().as_slice()));
        // the pixel buffer is reused, also after the other decoder took over
        let encoded = jpeg(colour);
        assert_eq!(d.decode(&encoded, 3).unwrap().width, 41);
    }

    #[test]
    fn what_cannot_be_decoded_is_an_error_as_the_image_crate_decides() {
        let encoded = jpeg(DynamicImage::ImageRgb8(texture(64, 48)));
        let mut d = Decoder::new();
        assert!(d.decode(b"\xff\xd8\xff\xe0 not a JPEG", 3).is_err());
        assert!(d.decode(b"neither JPEG nor anything else", 3).is_err());
        assert!(d.decode(&[], 3).is_err());
        // libjpeg-turbo rejects every truncated or damaged JPEG; the image crate then decides, as it did
        // before libjpeg-turbo was used
        let mut damaged = encoded.clone();
        for i in (700..damaged.len() - 2).step_by(97) {
            damaged[i] ^= 0x5A;
        }
        for (what, bytes) in [("truncated", &encoded[..encoded.len() / 2]), ("damaged", &damaged[..]), ("header only", &encoded[..200])] {
            assert_eq!(d.decode(bytes, 3).is_ok(), image::load_from_memory(bytes).is_ok(), "{what}");
        }
    }

    #[test]
    fn records_that_do_not_decode_are_skipped_and_named() {
        let d = std::env::temp_dir().join(format!("dlcv-loader-{}-undecodable", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let rec = d.join("mixed.rec");
        let mut w = crate::records::RecordWriter::create(&rec).unwrap();
        let good = jpeg(DynamicImage::ImageRgb8(texture(40, 30)));
        for (i, image) in [good.clone(), b"\xff\xd8\xff\xe0 cut".to_vec(), good.clone(), b"GIF89a?".to_vec(), good].into_iter().enumerate() {
            w.append(&crate::records::Record { label: i as i32, boxes: vec![], key: format!("img{i}"), image }).unwrap();
        }
        w.finish().unwrap();
        let t = Transform::eval([24, 24], 3, vec![0.0], vec![1.0]);
        let l = Loader::new(RecordFile::open(&rec).unwrap(), t, LoaderOptions { batch_size: 5, workers: 1, ..Default::default() });
        let batches: Vec<Batch> = l.epoch(0).map(Result::unwrap).collect();
        assert_eq!(batches.len(), 1);
        let b = &batches[0];
        assert_eq!((b.n, b.labels.clone(), b.data.len()), (3, vec![0, 2, 4], 3 * 3 * 24 * 24));
        assert_eq!(b.skipped.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["img1", "img3"]);
        assert!(b.skipped.iter().all(|(_, why)| !why.is_empty()));
    }
}
