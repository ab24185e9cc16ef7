//! The data loader used by the trainer and the runtime: record files in, normalised `[N, C, H, W]`
//! float batches out.
//!
//! Worker threads ([`crate::pool`]) decode and augment whole batches while the consumer computes; at
//! most one batch per worker plus `prefetch` are out at a time, so resident memory stays at a few
//! batches whatever the dataset size (the records stay on disk and are read at random offsets). Every batch's random draws
//! come from (seed, epoch, batch index), so an epoch is the same whichever thread builds which batch.

use std::ops::Range;
use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::decode::Decoder;
use crate::detect_transform::DetectTransform;
use crate::pool::{map_ordered, Ordered};
use crate::records::{RecordError, RecordFile};
use crate::transform::Transform;

/// A batch of normalised images.
#[derive(Debug)]
pub struct Batch {
    /// `n * C * H * W` floats, channel-major per image (empty with [`LoaderOptions::pixels`]).
    pub data: Vec<f32>,
    /// With [`LoaderOptions::pixels`]: the same images before the normalisation, `n * C * H * W`
    /// bytes (0-255, interpolated values rounded to the nearest); empty otherwise.
    pub pixels: Vec<u8>,
    pub labels: Vec<i64>,
    /// The records' keys, one per image in the batch.
    pub keys: Vec<String>,
    pub n: usize,
    /// `[C, H, W]`.
    pub shape: [usize; 3],
    /// Records whose image could not be decoded: (key, reason). They are left out of the batch.
    pub skipped: Vec<(String, String)>,
    /// Each image's boxes in pixels of the batch's images, moved with any augmentation (a detection
    /// loader, [`Loader::detection`]); empty for a classification loader.
    pub boxes: Vec<Vec<crate::records::BoundingBox>>,
}

#[derive(Debug, Clone)]
pub struct LoaderOptions {
    pub batch_size: usize,
    pub shuffle: bool,
    pub seed: u64,
    /// Decode threads (0: one per core).
    pub workers: usize,
    /// Batches allowed to be built ahead of the consumer beyond one per worker.
    pub prefetch: usize,
    /// Read only shard `rank` of `world`: the epoch's order (the same permutation on every rank, as
    /// PyTorch's `DistributedSampler` draws it) is dealt out in turn, so the ranks' batches of step s
    /// together hold the samples one process would read in step s with `world` times the batch size.
    pub shard: Option<(usize, usize)>,
    /// With `shard`: cut the epoch's order to a multiple of `world` so that every rank reads the same
    /// number of samples and batches (training: the ranks step together). The at most `world - 1`
    /// samples left out are different ones every epoch when shuffling; [`Loader::left_out`] counts them.
    pub even_shards: bool,
    /// Drop a last batch smaller than `batch_size`.
    pub drop_last: bool,
    /// Classification: deliver the cropped, augmented images as bytes ([`Batch::pixels`]), left to
    /// the consumer to normalise (a trainer copies a quarter of the bytes to its GPU and normalises
    /// there). A plain crop (with its flip) gives exactly the stored bytes; rotated, sheared or
    /// scaled samples are rounded to the nearest byte.
    pub pixels: bool,
}

impl Default for LoaderOptions {
    fn default() -> Self {
        Self { batch_size: 128, shuffle: false, seed: 0, workers: 0, prefetch: 2, shard: None, even_shards: false, drop_last: false, pixels: false }
    }
}

/// Record files read as batches.
pub struct Loader {
    file: Arc<RecordFile>,
    transform: Arc<Pipeline>,
    opts: LoaderOptions,
    pool: Arc<Pool>,
}

/// Batch buffers handed back by the consumer ([`Loader::recycle`]) for the workers to fill again,
/// during one epoch (released when it ends). A
/// batch of 64 RGB 224x224 floats is 38 MB, past glibc's largest mmap threshold (32 MB), so a fresh
/// one is mapped and page-faulted in every time: a sixth of the loader's time at 2 threads, measured
/// with `trainer loader-bench` (batch 32 ran 1.2x faster than 64 before buffers were reused).
#[derive(Default)]
struct Pool {
    /// (buffers, how many to keep: the batches in flight)
    free: std::sync::Mutex<(Vec<Vec<f32>>, usize)>,
}

impl Pool {
    fn take(&self) -> Vec<f32> {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).0.pop().unwrap_or_default()
    }

    /// Lets go of every buffer and keeps none until the next epoch sets how many are in flight.
    fn release(&self) {
        *self.free.lock().unwrap_or_else(|e| e.into_inner()) = (vec![], 0);
    }

    fn put(&self, buf: Vec<f32>) {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.0.len() < free.1 && buf.capacity() > 0 {
            free.0.push(buf);
        }
    }
}

/// What a loader makes of each record.
enum Pipeline {
    /// An image (and its label).
    Classify(Transform),
    /// An image with its boxes.
    Detect(DetectTransform),
}

fn batch_seed(seed: u64, epoch: usize, batch: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add((epoch as u64) << 32).wrapping_add(batch as u64)
}

/// The seed of one record's augmentation in one epoch: the same whichever batch, rank or world size
/// reads it, so a run on several processes augments exactly as a run on one.
fn sample_seed(seed: u64, epoch: usize, record: usize) -> u64 {
    batch_seed(seed ^ 0xA5A5_5A5A_C3C3_3C3C, epoch, record).wrapping_mul(0xBF58_476D_1CE4_E5B9)
}

impl Loader {
    pub fn new(file: RecordFile, transform: Transform, opts: LoaderOptions) -> Self {
        let transform = if opts.pixels {
            // the same sampling, unnormalised: values in 0-255, rounded to bytes per image
            let c = transform.channels as usize;
            Transform { mean: vec![0.0; c], std: vec![1.0; c], ..transform }
        } else {
            transform
        };
        Self { file: Arc::new(file), transform: Arc::new(Pipeline::Classify(transform)), opts, pool: Arc::default() }
    }

    /// A loader for a detector: each batch also holds every image's boxes, moved with its pixels.
    /// (`pixels` is for classification loaders only.)
    pub fn detection(file: RecordFile, transform: DetectTransform, opts: LoaderOptions) -> Self {
        assert!(!opts.pixels, "LoaderOptions::pixels is for classification loaders");
        Self { file: Arc::new(file), transform: Arc::new(Pipeline::Detect(transform)), opts, pool: Arc::default() }
    }

    /// Hands a batch's float buffer back (once its values are copied out, into a tensor say) for a
    /// later batch to be written into, instead of allocating a new one. Optional: a consumer that
    /// drops its batches gets fresh buffers.
    pub fn recycle(&self, data: Vec<f32>) {
        self.pool.put(data);
    }

    /// (rank, world) of the shard read; (0, 1) without sharding.
    fn shard(&self) -> (usize, usize) {
        self.opts.shard.map_or((0, 1), |(r, w)| (r, w.max(1)))
    }

    /// Samples per epoch (of this loader's shard).
    pub fn len(&self) -> usize {
        let (rank, world) = self.shard();
        let n = self.file.len();
        if self.opts.even_shards {
            n / world
        } else {
            n.saturating_sub(rank).div_ceil(world)
        }
    }

    /// Records in the file (every shard together, with any left out).
    pub fn records(&self) -> usize {
        self.file.len()
    }

    /// Samples of the file that no shard reads in an epoch (`even_shards` cuts to a multiple of the world).
    pub fn left_out(&self) -> usize {
        let world = self.shard().1;
        if self.opts.even_shards {
            self.file.len() % world
        } else {
            0
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
        let mut order: Vec<usize> = (0..self.file.len()).collect();
        if self.opts.shuffle {
            order.shuffle(&mut SmallRng::seed_from_u64(batch_seed(self.opts.seed, epoch, usize::MAX)));
        }
        let (rank, world) = self.shard();
        if self.opts.even_shards {
            order.truncate(order.len() / world * world);
        }
        let order: Vec<usize> = order.into_iter().skip(rank).step_by(world).collect();
        let bs = self.opts.batch_size.max(1);
        let batches: Vec<Vec<usize>> = order.chunks(bs).filter(|c| !self.opts.drop_last || c.len() == bs).map(|c| c.to_vec()).collect();
        let total = batches.len();
        let workers = if self.opts.workers == 0 { std::thread::available_parallelism().map_or(2, |n| n.get()) } else { self.opts.workers };
        let scratch = (0..workers.min(total.max(1))).map(|_| Scratch::default()).collect();
        let (file, t, seed, pixels) = (self.file.clone(), self.transform.clone(), self.opts.seed, self.opts.pixels);
        // the batches in flight: one a worker, the prefetched ones and the consumer's
        self.pool.free.lock().unwrap_or_else(|e| e.into_inner()).1 = workers + self.opts.prefetch.max(1) + 1;
        let pool = self.pool.clone();
        let batches = map_ordered(start..total, scratch, self.opts.prefetch.max(1), move |scratch, b| {
            let batch = build_batch(&file, &t, &batches[b], |i| SmallRng::seed_from_u64(sample_seed(seed, epoch, i)), scratch, pool.take());
            if pixels {
                batch.map(|b| {
                    let (b, floats) = to_pixels(b);
                    pool.put(floats);
                    b
                })
            } else {
                batch
            }
        });
        Epoch { batches, total, pool: self.pool.clone() }
    }
}

/// A batch sampled unnormalised (mean 0, std 1) as bytes ([`LoaderOptions::pixels`]), and its
/// float buffer, free again.
fn to_pixels(mut b: Batch) -> (Batch, Vec<f32>) {
    b.pixels = b.data.iter().map(|&v| v.round() as u8).collect();
    let floats = std::mem::take(&mut b.data);
    (b, floats)
}

/// What one worker reuses from record to record: the read buffer and the decoder with its pixels.
#[derive(Default)]
struct Scratch {
    record: Vec<u8>,
    decoder: Decoder,
}

/// Decodes and transforms the records `idx` into `buffer` (a recycled one, or empty); `rng(i)` gives
/// record i's random draws.
fn build_batch(
    file: &RecordFile,
    t: &Pipeline,
    idx: &[usize],
    rng: impl Fn(usize) -> SmallRng,
    s: &mut Scratch,
    buffer: Vec<f32>,
) -> Result<Batch, RecordError> {
    let (size, channels) = match t {
        Pipeline::Classify(t) => (t.size, t.channels),
        Pipeline::Detect(t) => (t.size, t.channels),
    };
    let shape = [channels as usize, size[0] as usize, size[1] as usize];
    let per = shape.iter().product::<usize>();
    // A classification sample writes every value of its image; a detection canvas may leave some at
    // 0, so a recycled buffer is cleared for it.
    let mut data = buffer;
    if matches!(t, Pipeline::Detect(_)) {
        data.clear();
    }
    data.resize(idx.len() * per, 0.0);
    let mut labels = Vec::with_capacity(idx.len());
    let mut keys = Vec::with_capacity(idx.len());
    let mut boxes = vec![];
    let mut skipped = vec![];
    let mut n = 0;
    for &i in idx {
        let rec = file.read_into(i, &mut s.record)?;
        // a classifier's crop is placed from the image's size before decoding, so that only the
        // window it reads is decoded (Decoder::decode_window); the draws are apply_interleaved's
        let mut placed = None;
        let decoded = match t {
            Pipeline::Classify(t) => s.decoder.decode_window(rec.image, channels, |w, h| {
                let (g, window) = t.place(w, h, &mut rng(i));
                placed = Some(g);
                window
            }),
            Pipeline::Detect(_) => s.decoder.decode(rec.image, channels),
        };
        match decoded {
            Ok(px) => {
                let out = &mut data[n * per..(n + 1) * per];
                match t {
                    Pipeline::Classify(t) => t.apply_placed(&px, placed.expect("decode_window asks for the window"), out),
                    Pipeline::Detect(t) => boxes.push(t.apply(px.pixels, px.width, px.height, px.bytes_per_pixel, &rec.boxes, &mut rng(i), out)),
                }
                labels.push(rec.label as i64);
                keys.push(rec.key.into_owned());
                n += 1;
            }
            Err(e) => skipped.push((rec.key.into_owned(), e)),
        }
    }
    data.truncate(n * per);
    Ok(Batch { data, pixels: vec![], labels, keys, n, shape, skipped, boxes })
}

/// The batches of one epoch, yielded in order.
pub struct Epoch {
    batches: Ordered<Result<Batch, RecordError>, Range<usize>>,
    total: usize,
    pool: Arc<Pool>,
}

impl Drop for Epoch {
    /// The recycled buffers go with the epoch: between epochs (a validation pass, say) the loader
    /// holds none of its batches' memory.
    fn drop(&mut self) {
        self.pool.release();
    }
}

impl Epoch {
    pub fn total(&self) -> usize {
        self.total
    }
}

impl Iterator for Epoch {
    type Item = Result<Batch, RecordError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.batches.next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{pack, to_gray, Item, PackOptions, Source};
    use crate::transform::*;
    use image::DynamicImage;

    fn fixture(name: &str, n: usize) -> RecordFile {
        // kept on disk: the returned RecordFile reopens its file by path in each worker
        let d = tempfile::Builder::new().prefix(&format!("dlcv-loader-{name}-")).tempdir().unwrap().keep();
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
    fn recycled_buffers_are_written_whole_so_batches_equal_fresh_ones() {
        let t = Transform { size: [20, 20], channels: 1, random_crop: true, flip: true, rotate: 10.0, shear: 0.1, mean: vec![5.0], std: vec![2.0] };
        // five batches through one worker: the later ones are built after buffers came back
        let opts = LoaderOptions { batch_size: 2, shuffle: true, seed: 2, workers: 1, prefetch: 1, ..Default::default() };
        let fresh: Vec<Batch> = Loader::new(fixture("fresh", 10), t.clone(), opts.clone()).epoch(3).map(Result::unwrap).collect();
        let l = Loader::new(fixture("recycled", 10), t, opts);
        // the pool keeps as many as are in flight; hand back garbage-filled buffers of every size
        let mut got = vec![];
        let mut handed = vec![];
        let mut reused = 0;
        let mut epoch = l.epoch(3);
        for len in [1, 1600, 5000, 99] {
            let buf = vec![f32::NAN; len];
            handed.push(buf.as_ptr());
            l.recycle(buf);
        }
        for b in &mut epoch {
            let b = b.unwrap();
            reused += handed.contains(&b.data.as_ptr()) as usize;
            got.push((b.labels.clone(), b.data.clone()));
            handed.push(b.data.as_ptr());
            l.recycle(b.data);
        }
        assert!(reused >= 1, "no batch was written into a recycled buffer");
        drop(epoch);
        assert_eq!(l.pool.free.lock().unwrap().0.len(), 0, "the buffers go with the epoch");
        assert_eq!(got.len(), fresh.len());
        for ((labels, data), f) in got.iter().zip(&fresh) {
            assert_eq!((labels, data.len()), (&f.labels, f.data.len()));
            assert!(data.iter().zip(&f.data).all(|(a, b)| a.to_bits() == b.to_bits()), "a recycled buffer left old values");
        }
    }

    #[test]
    fn pixel_batches_normalised_by_the_consumer_equal_the_loaders_floats() {
        // noise RGB images, so that every sampled position matters
        let d = tempfile::Builder::new().prefix("dlcv-loader-pixels-").tempdir().unwrap().keep();
        let mut rng = SmallRng::seed_from_u64(3);
        let items: Vec<Item> = (0..6)
            .map(|i| Item {
                source: Source::Image(DynamicImage::ImageRgb8(image::RgbImage::from_fn(37, 31, |_, _| image::Rgb(rand::Rng::gen(&mut rng))))),
                key: format!("{i}"),
                label: i,
                boxes: vec![],
            })
            .collect();
        let rec = d.join("s.rec");
        pack(&items, &rec, &PackOptions { short_side: 0, jpeg_quality: 0, grayscale: false }, false).unwrap();
        let (mean, std) = (vec![123.7f32, 116.8, 103.9], vec![58.4f32, 57.1, 57.4]);
        let plain = Transform { size: [24, 24], channels: 3, random_crop: true, flip: true, rotate: 0.0, shear: 0.0, mean: mean.clone(), std: std.clone() };
        let turned = Transform { rotate: 15.0, shear: 0.1, ..plain.clone() };
        for (t, exact) in [(plain, true), (turned, false)] {
            let opts = LoaderOptions { batch_size: 4, shuffle: true, seed: 8, workers: 2, ..Default::default() };
            let floats: Vec<Batch> = Loader::new(RecordFile::open(&rec).unwrap(), t.clone(), opts.clone()).epoch(1).map(Result::unwrap).collect();
            let bytes: Vec<Batch> =
                Loader::new(RecordFile::open(&rec).unwrap(), t, LoaderOptions { pixels: true, ..opts }).epoch(1).map(Result::unwrap).collect();
            for (f, b) in floats.iter().zip(&bytes) {
                assert_eq!((b.labels.clone(), b.data.len(), b.pixels.len()), (f.labels.clone(), 0, f.data.len()));
                assert!(f.pixels.is_empty());
                let plane = 24 * 24;
                let mut worst = 0f32;
                for (i, (&v, &p)) in f.data.iter().zip(&b.pixels).enumerate() {
                    let k = (i / plane) % 3;
                    // what a consumer computes: (pixel - mean) * (1 / std), as the plain crop does
                    let mine = (p as f32 - mean[k]) * (1.0 / std[k]);
                    if exact {
                        assert_eq!(mine.to_bits(), v.to_bits(), "value {i}: {mine} vs {v}");
                    }
                    worst = worst.max((mine - v).abs() * std[k]);
                }
                // a rotated sample differs by its rounding to a byte, at most half a level
                assert!(worst <= 0.5 + 1e-3, "{worst} levels");
                if !exact {
                    assert!(worst > 0.0, "rotated samples are interpolated, so some round");
                }
            }
        }
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
    fn shards_of_a_shuffled_epoch_hold_the_global_batches_with_the_same_augmentation() {
        // 11 records, 3 ranks, 2 per rank: one process with batches of 6 reads, in step s, the samples
        // that the three ranks read together in step s, each augmented the same way
        let f = fixture("dist", 11);
        let path = f.path.clone();
        let t = Transform { size: [24, 24], channels: 1, random_crop: true, flip: true, rotate: 10.0, shear: 0.1, mean: vec![0.0], std: vec![1.0] };
        let opts = |batch_size, shard| LoaderOptions { batch_size, shuffle: true, seed: 4, workers: 2, shard, even_shards: true, ..Default::default() };
        let one = Loader::new(RecordFile::open(&path).unwrap(), t.clone(), LoaderOptions { shard: None, ..opts(6, None) });
        let ranks: Vec<Loader> = (0..3).map(|r| Loader::new(RecordFile::open(&path).unwrap(), t.clone(), opts(2, Some((r, 3))))).collect();
        for r in &ranks {
            assert_eq!((r.len(), r.batches_per_epoch(), r.left_out()), (3, 2, 2), "11 records over 3 ranks: 3 each, 2 left out");
        }
        for epoch in [0, 1] {
            let global: Vec<Batch> = one.epoch(epoch).map(Result::unwrap).collect();
            let per_rank: Vec<Vec<Batch>> = ranks.iter().map(|r| r.epoch(epoch).map(Result::unwrap).collect()).collect();
            let mut everyone = std::collections::BTreeSet::new();
            for step in 0..2 {
                let mut want: Vec<(i64, Vec<u32>)> = vec![];
                for b in per_rank.iter().map(|r| &r[step]) {
                    for (k, &label) in b.labels.iter().enumerate() {
                        want.push((label, b.data[k * 576..(k + 1) * 576].iter().map(|v| v.to_bits()).collect()));
                    }
                }
                let g = &global[step];
                let mut got: Vec<(i64, Vec<u32>)> =
                    g.labels.iter().enumerate().map(|(k, &l)| (l, g.data[k * 576..(k + 1) * 576].iter().map(|v| v.to_bits()).collect())).collect();
                everyone.extend(want.iter().map(|w| w.0));
                want.sort();
                got.sort();
                // step 1 of the single process holds the 5 left; the ranks, the 3 of them that split evenly
                assert!(want.iter().all(|w| got.contains(w)), "epoch {epoch} step {step}: the ranks read what one process reads, augmented alike");
            }
            assert_eq!(everyone.len(), 9, "epoch {epoch}: no sample read by two ranks");
        }
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

    /// Colour and grey JPEGs of both iMCU widths (8: 4:4:4 and grey; 16: 4:2:0), and real photos.
    fn jpegs_of_every_layout() -> Vec<(String, Vec<u8>)> {
        let colour = DynamicImage::ImageRgb8(texture(301, 203));
        let mut out = vec![("colour".to_string(), jpeg(colour.clone())), ("grey".to_string(), jpeg(DynamicImage::ImageLuma8(to_gray(&colour))))];
        let faces = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../edge-demo/assets/faces");
        for name in ["grace_hopper.jpg", "obama.jpg"] {
            out.push((name.to_string(), std::fs::read(faces.join(name)).unwrap()));
        }
        out
    }

    #[test]
    fn a_window_decodes_to_the_same_pixels_as_the_whole_image() {
        let mut whole = Decoder::new();
        let mut part = Decoder::new();
        let mut mcu_widths = std::collections::BTreeSet::new();
        for (what, encoded) in jpegs_of_every_layout() {
            #[cfg(feature = "turbojpeg")]
            mcu_widths.insert(crate::tj3::Tj3::new().unwrap().header(&encoded).unwrap().mcu_width.unwrap());
            for channels in [1, 3] {
                let full = whole.decode(&encoded, channels).unwrap();
                let (w, h, b) = (full.width, full.height, full.bytes_per_pixel);
                let full = full.pixels.to_vec();
                let mut windows = vec![(0, 0, 24, 20), (w - 24, h - 20, 24, 20), (0, 0, w, h), (w - 40, 0, 40, h)];
                // left and right edges on, just past and just before iMCU boundaries, tops likewise
                for (i, x) in [1, 7, 8, 9, 15, 16, 17, 23, 24, 31, 32, 33, 37, 48].into_iter().enumerate() {
                    windows.push((x, [0, 3, 7, 8, 9, 15, 16, 17][i % 8], [9, 16, 17, 24, 31, 40, 23][i % 7], [9, 16, 17, 20][i % 4]));
                }
                for (x, y, tw, th) in windows {
                    let mut asked = None;
                    let px = part
                        .decode_window(&encoded, channels, |ww, hh| {
                            asked = Some((ww, hh));
                            Some(crate::decode::Window { x, y, width: tw, height: th })
                        })
                        .unwrap();
                    assert_eq!(asked, Some((w, h)), "{what}: told the stored size");
                    assert_eq!(px.bytes_per_pixel, b);
                    // the window lies inside what was decoded
                    assert!(px.x <= x && px.y <= y && px.x + px.width >= x + tw && px.y + px.height >= y + th, "{what} {x},{y}: got {px:?}");
                    if cfg!(feature = "turbojpeg") {
                        assert!(px.width * px.height < w * h || (tw, th) == (w, h), "{what} {x},{y}: only the window is decoded");
                    }
                    // the window's pixels (not the margin decoded around it) are the whole decode's
                    for row in 0..th {
                        let got = &px.pixels[((y - px.y + row) * px.width + x - px.x) * b..][..tw * b];
                        let want = &full[((y + row) * w + x) * b..][..tw * b];
                        assert!(got == want, "{what}, {channels} channels, window {x},{y} {tw}x{th}: row {row} differs from the whole decode");
                    }
                }
            }
        }
        if cfg!(feature = "turbojpeg") {
            assert_eq!(mcu_widths.into_iter().collect::<Vec<_>>(), [8, 16], "both iMCU widths are covered");
        }
        // a file cut short below the window is decoded as a whole decode would (here: by the image
        // crate, after libjpeg-turbo's warning), not in part without a warning
        let colour = jpeg(DynamicImage::ImageRgb8(texture(301, 203)));
        let cut = &colour[..colour.len() * 6 / 10];
        let window = crate::decode::Window { x: 40, y: 0, width: 64, height: 32 };
        let full = whole.decode(cut, 3).unwrap();
        let (w, b) = (full.width, full.bytes_per_pixel);
        let full = full.pixels.to_vec();
        let px = part.decode_window(cut, 3, |_, _| Some(window)).unwrap();
        assert_eq!((px.x, px.y, px.width, px.bytes_per_pixel), (0, 0, w, b), "decoded whole");
        assert!(px.pixels == &full[..], "the same pixels as a whole decode");
    }

    #[test]
    fn crops_sampled_from_a_decoded_window_equal_crops_of_the_whole_image() {
        let mut whole = Decoder::new();
        let mut part = Decoder::new();
        for (what, encoded) in jpegs_of_every_layout() {
            for (channels, rotate) in [(3, 0.0), (1, 0.0), (3, 10.0)] {
                let t = Transform {
                    random_crop: true,
                    flip: true,
                    rotate,
                    ..Transform::eval([40, 56], channels, vec![100.0, 110.0, 120.0], vec![50.0, 60.0, 70.0])
                };
                for seed in 0..6 {
                    let px = whole.decode(&encoded, channels).unwrap();
                    let mut want = vec![0f32; channels as usize * 40 * 56];
                    t.apply_interleaved(px.pixels, px.width, px.height, px.bytes_per_pixel, &mut SmallRng::seed_from_u64(seed), &mut want);
                    let mut rng = SmallRng::seed_from_u64(seed);
                    let mut placed = None;
                    let px = part
                        .decode_window(&encoded, channels, |w, h| {
                            let (g, window) = t.place(w, h, &mut rng);
                            placed = Some(g);
                            window
                        })
                        .unwrap();
                    let mut got = vec![0f32; want.len()];
                    t.apply_placed(&px, placed.unwrap(), &mut got);
                    assert!(got == want, "{what}, {channels} channels, rotate {rotate}, seed {seed}");
                }
            }
        }
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
        let d = tempfile::tempdir().unwrap();
        let rec = d.path().join("mixed.rec");
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

    #[test]
    fn a_detection_loader_moves_each_images_boxes_with_it() {
        let d = tempfile::Builder::new().prefix("dlcv-loader-boxes-").tempdir().unwrap().keep();
        // image i: 48x32, a bright 8x8 square at x = 4i, y = 10; its box says so, class i % 3
        let items: Vec<Item> = (0..7)
            .map(|i| {
                let mut img = image::GrayImage::new(48, 32);
                for y in 10..18 {
                    for x in 4 * i..4 * i + 8 {
                        img.put_pixel(x as u32, y, image::Luma([250]));
                    }
                }
                let b = crate::records::BoundingBox { class: (i % 3) as u32, x0: 4.0 * i as f32, y0: 10.0, x1: 4.0 * i as f32 + 8.0, y1: 18.0 };
                Item { source: Source::Image(DynamicImage::ImageLuma8(img)), key: format!("{i}"), label: 0, boxes: vec![b] }
            })
            .collect();
        let rec = d.join("b.rec");
        pack(&items, &rec, &PackOptions { short_side: 0, jpeg_quality: 0, grayscale: true }, false).unwrap();
        let t = crate::DetectTransform { flip: true, ..crate::DetectTransform::eval([32, 48], 1, vec![0.0], vec![1.0]) };
        let opts = LoaderOptions { batch_size: 3, shuffle: true, seed: 5, workers: 2, ..Default::default() };
        let l = Loader::detection(RecordFile::open(&rec).unwrap(), t, opts);
        let mut flipped = 0;
        for b in l.epoch(1).map(Result::unwrap) {
            assert_eq!(b.boxes.len(), b.n);
            for (j, (key, boxes)) in b.keys.iter().zip(&b.boxes).enumerate() {
                let i: usize = key.parse().unwrap();
                let [bx] = boxes[..] else { panic!("image {key}: {boxes:?}") };
                assert_eq!(bx.class, (i % 3) as u32);
                let x0 = if bx.x0 == 4.0 * i as f32 {
                    bx.x0
                } else {
                    flipped += 1;
                    48.0 - bx.x1
                };
                assert_eq!((x0, bx.y0, bx.x1 - bx.x0), (4.0 * i as f32, 10.0, 8.0), "image {key}");
                // the pixels at the box's centre are the square's
                let (cx, cy) = (((bx.x0 + bx.x1) / 2.0) as usize, ((bx.y0 + bx.y1) / 2.0) as usize);
                assert!(b.data[j * 32 * 48 + cy * 48 + cx] > 200.0, "image {key}");
            }
        }
        assert!(flipped > 0 && flipped < 7, "{flipped} of 7 flipped");
    }
}
