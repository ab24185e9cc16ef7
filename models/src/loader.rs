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

use crate::records::{RecordError, RecordFile};

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
        let [th, tw] = self.size;
        let c = self.channels as usize;
        let img = if c == 1 { DynamicImage::ImageLuma8(img.into_luma8()) } else { DynamicImage::ImageRgb8(img.into_rgb8()) };
        let (w, h) = img.dimensions();
        let raw = img.as_bytes();
        // Too small for the crop: sample as if scaled up so that the crop fits.
        let scale = (tw as f32 / w as f32).max(th as f32 / h as f32).max(1.0);
        let (sw, sh) = ((w as f32 * scale).floor() as u32, (h as f32 * scale).floor() as u32);
        let (sw, sh) = (sw.max(tw), sh.max(th));
        let (x0, y0) = if self.random_crop { (rng.gen_range(0..=sw - tw), rng.gen_range(0..=sh - th)) } else { ((sw - tw) / 2, (sh - th) / 2) };
        let angle = if self.rotate > 0.0 { rng.gen_range(-self.rotate..=self.rotate).to_radians() } else { 0.0 };
        let shear = if self.shear > 0.0 { rng.gen_range(-self.shear..=self.shear) } else { 0.0 };
        let flip = self.flip && rng.gen_bool(0.5);
        let (tw, th) = (tw as usize, th as usize);
        let mean: Vec<f32> = (0..c).map(|k| self.mean[k.min(self.mean.len() - 1)]).collect();
        let inv_std: Vec<f32> = (0..c).map(|k| 1.0 / self.std[k.min(self.std.len() - 1)]).collect();
        let plane = th * tw;
        let (w, h) = (w as usize, h as usize);
        if angle == 0.0 && shear == 0.0 && scale == 1.0 {
            for yy in 0..th {
                let row = (y0 as usize + yy) * w;
                for xx in 0..tw {
                    let sx = x0 as usize + if flip { tw - 1 - xx } else { xx };
                    let px = &raw[(row + sx) * c..(row + sx) * c + c];
                    for k in 0..c {
                        out[k * plane + yy * tw + xx] = (px[k] as f32 - mean[k]) * inv_std[k];
                    }
                }
            }
            return;
        }
        // Output pixel (u, v) about the crop centre; forward map is rotate(shear(p)), so the inverse
        // is shear^-1(rotate^-1(q)): rotate by -angle, then x -= shear * y.
        let (cx, cy) = ((tw as f32 - 1.0) / 2.0, (th as f32 - 1.0) / 2.0);
        let (sin, cos) = angle.sin_cos();
        let mut px = [0f32; 4];
        for yy in 0..th {
            for xx in 0..tw {
                let u = (if flip { tw - 1 - xx } else { xx }) as f32 - cx;
                let v = yy as f32 - cy;
                let (ru, rv) = (cos * u + sin * v, -sin * u + cos * v);
                let su = ru - shear * rv;
                // back to the (scaled) image, then to the decoded image's pixel centres
                let x = (su + cx + x0 as f32 + 0.5) / scale - 0.5;
                let y = (rv + cy + y0 as f32 + 0.5) / scale - 0.5;
                bilinear(raw, w, h, c, x, y, &mut px);
                for k in 0..c {
                    out[k * plane + yy * tw + xx] = (px[k] - mean[k]) * inv_std[k];
                }
            }
        }
    }
}

/// Bilinear sample of every channel at (x, y) in an interleaved u8 image; points outside read as 0.
#[inline]
fn bilinear(raw: &[u8], w: usize, h: usize, c: usize, x: f32, y: f32, out: &mut [f32; 4]) {
    let (fx, fy) = (x.floor(), y.floor());
    let (ax, ay) = (x - fx, y - fy);
    let (ix, iy) = (fx as isize, fy as isize);
    let weights = [(1.0 - ax) * (1.0 - ay), ax * (1.0 - ay), (1.0 - ax) * ay, ax * ay];
    out[..c].iter_mut().for_each(|v| *v = 0.0);
    if ix >= 0 && iy >= 0 && (ix as usize) + 1 < w && (iy as usize) + 1 < h {
        // all four neighbours inside: no bounds checks per read
        let (ix, iy) = (ix as usize, iy as usize);
        let offs = [(iy * w + ix) * c, (iy * w + ix + 1) * c, ((iy + 1) * w + ix) * c, ((iy + 1) * w + ix + 1) * c];
        for (o, wt) in offs.iter().zip(weights) {
            for k in 0..c {
                out[k] += raw[o + k] as f32 * wt;
            }
        }
        return;
    }
    for (n, wt) in weights.iter().enumerate() {
        let (px, py) = (ix + (n % 2) as isize, iy + (n / 2) as isize);
        if px >= 0 && py >= 0 && (px as usize) < w && (py as usize) < h {
            let o = (py as usize * w + px as usize) * c;
            for k in 0..c {
                out[k] += raw[o + k] as f32 * wt;
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
        if self.opts.drop_last { n / b } else { n.div_ceil(b) }
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
            std::thread::spawn(move || loop {
                let b = next.fetch_add(1, Ordering::SeqCst);
                if b >= batches.len() {
                    break;
                }
                let built = build_batch(&file, &t, &batches[b], &mut SmallRng::seed_from_u64(batch_seed(seed, epoch, b)));
                if tx.send((b, built)).is_err() {
                    break; // the consumer is gone
                }
            });
        }
        Epoch { rx, pending: BTreeMap::new(), next: start, total }
    }
}

fn build_batch(file: &RecordFile, t: &Transform, idx: &[usize], rng: &mut SmallRng) -> Result<Batch, RecordError> {
    let shape = [t.channels as usize, t.size[0] as usize, t.size[1] as usize];
    let per = shape.iter().product::<usize>();
    let mut data = vec![0f32; idx.len() * per];
    let mut labels = Vec::with_capacity(idx.len());
    let mut skipped = vec![];
    let mut n = 0;
    for &i in idx {
        let rec = file.read(i)?;
        match image::load_from_memory(&rec.image) {
            Ok(img) => {
                t.apply(img, rng, &mut data[n * per..(n + 1) * per]);
                labels.push(rec.label as i64);
                n += 1;
            }
            Err(e) => skipped.push((rec.key, e.to_string())),
        }
    }
    data.truncate(n * per);
    Ok(Batch { data, labels, n, shape, skipped })
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
            .map(|i| Item { source: Source::Image(DynamicImage::ImageLuma8(image::GrayImage::from_pixel(40, 30, image::Luma([(10 * i) as u8])))), key: format!("{i}"), label: i as i32, boxes: vec![] })
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
}
