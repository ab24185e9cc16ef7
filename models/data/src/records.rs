//! Record files: a dataset split packed into one file of encoded images with their labels, plus an index
//! for random access and sharding (the role of mxnet's `.rec`/`.idx` in the book).
//!
//! `NAME.rec` is a sequence of records, each
//! ```text
//! magic u32 LE = 0x43455244 ("DREC") | payload length u32 LE | CRC-32 of the payload u32 LE | payload
//! payload = label i32 | box count u32 | boxes (class u32, x0 y0 x1 y1 f32) | key length u16 | key (UTF-8)
//!           | the encoded image (JPEG or PNG), up to the end of the payload
//! ```
//! all little-endian; box coordinates are pixels of the stored image. `NAME.idx` has one line per record,
//! `index<TAB>offset<TAB>length<TAB>label`. A damaged record is detected by its magic, length or checksum
//! and reported with the file and the record's index.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use image::{DynamicImage, ImageFormat};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// The image crate this module decodes and encodes with, for callers that build [`Source::Image`]s.
pub use image;

pub const MAGIC: u32 = 0x4345_5244;
const HEADER: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}, record {index}: {reason}")]
    Damaged { path: PathBuf, index: usize, reason: String },
    #[error("{path}:{line}: {reason}")]
    Index { path: PathBuf, line: usize, reason: String },
}

/// An object box in pixels of the stored image.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BoundingBox {
    pub class: u32,
    pub x0: f32,
    pub y0: f32,
    pub x1: f32,
    pub y1: f32,
}

/// One record, decoded from the file but with its image still encoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub label: i32,
    pub boxes: Vec<BoundingBox>,
    /// Where the image came from (a path or an id).
    pub key: String,
    pub image: Vec<u8>,
}

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        let key = self.key.as_bytes();
        let key = &key[..key.len().min(u16::MAX as usize)];
        let mut p = Vec::with_capacity(10 + self.boxes.len() * 20 + key.len() + self.image.len());
        p.extend_from_slice(&self.label.to_le_bytes());
        p.extend_from_slice(&(self.boxes.len() as u32).to_le_bytes());
        for b in &self.boxes {
            p.extend_from_slice(&b.class.to_le_bytes());
            for v in [b.x0, b.y0, b.x1, b.y1] {
                p.extend_from_slice(&v.to_le_bytes());
            }
        }
        p.extend_from_slice(&(key.len() as u16).to_le_bytes());
        p.extend_from_slice(key);
        p.extend_from_slice(&self.image);
        p
    }

    pub fn decode(p: &[u8]) -> Result<Record, String> {
        RecordRef::decode(p).map(RecordRef::into_owned)
    }
}

/// One record borrowed from the buffer it was read into ([`RecordFile::read_into`]): the same fields as
/// [`Record`] without copying the image out of the payload.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordRef<'a> {
    pub label: i32,
    pub boxes: Vec<BoundingBox>,
    pub key: std::borrow::Cow<'a, str>,
    pub image: &'a [u8],
}

impl<'a> RecordRef<'a> {
    pub fn decode(p: &'a [u8]) -> Result<RecordRef<'a>, String> {
        let take = |at: usize, n: usize| p.get(at..at + n).ok_or_else(|| format!("payload ends at byte {} (needs {})", p.len(), at + n));
        let u32_at = |at: usize| take(at, 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        let label = u32_at(0)? as i32;
        let n = u32_at(4)? as usize;
        let mut at = 8;
        let mut boxes = Vec::with_capacity(n.min(4096));
        for _ in 0..n {
            let class = u32_at(at)?;
            let f = |k: usize| u32_at(at + 4 + 4 * k).map(f32::from_bits);
            boxes.push(BoundingBox { class, x0: f(0)?, y0: f(1)?, x1: f(2)?, y1: f(3)? });
            at += 20;
        }
        let kb = take(at, 2)?;
        let klen = u16::from_le_bytes([kb[0], kb[1]]) as usize;
        let key = String::from_utf8_lossy(take(at + 2, klen)?);
        Ok(RecordRef { label, boxes, key, image: &p[at + 2 + klen..] })
    }

    pub fn into_owned(self) -> Record {
        Record { label: self.label, boxes: self.boxes, key: self.key.into_owned(), image: self.image.to_vec() }
    }
}

/// One line of the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub offset: u64,
    pub length: u32,
    pub label: i32,
}

pub fn index_path(rec: &Path) -> PathBuf {
    rec.with_extension("idx")
}

/// Appends records to a `.rec` file and writes its `.idx` when finished.
pub struct RecordWriter {
    path: PathBuf,
    out: BufWriter<File>,
    offset: u64,
    index: Vec<IndexEntry>,
}

impl RecordWriter {
    pub fn create(path: &Path) -> Result<Self, RecordError> {
        let io = |source| RecordError::Io { path: path.to_path_buf(), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let out = BufWriter::new(File::create(path).map_err(io)?);
        Ok(Self { path: path.to_path_buf(), out, offset: 0, index: vec![] })
    }

    pub fn append(&mut self, r: &Record) -> Result<(), RecordError> {
        let payload = r.encode();
        let mut head = [0u8; HEADER];
        head[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        head[4..8].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        head[8..12].copy_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        let io = |source| RecordError::Io { path: self.path.clone(), source };
        self.out.write_all(&head).map_err(io)?;
        self.out.write_all(&payload).map_err(io)?;
        let length = (HEADER + payload.len()) as u32;
        self.index.push(IndexEntry { offset: self.offset, length, label: r.label });
        self.offset += length as u64;
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Flushes the records and writes the index next to them.
    pub fn finish(mut self) -> Result<PathBuf, RecordError> {
        let io = |p: &Path, source| RecordError::Io { path: p.to_path_buf(), source };
        self.out.flush().map_err(|e| io(&self.path, e))?;
        self.out.get_ref().sync_all().map_err(|e| io(&self.path, e))?;
        let idx = index_path(&self.path);
        let mut text = String::with_capacity(self.index.len() * 24);
        for (i, e) in self.index.iter().enumerate() {
            text.push_str(&format!("{i}\t{}\t{}\t{}\n", e.offset, e.length, e.label));
        }
        std::fs::write(&idx, text).map_err(|e| io(&idx, e))?;
        Ok(self.path)
    }
}

/// A record file opened for random access from many threads.
pub struct RecordFile {
    pub path: PathBuf,
    file: File,
    pub index: Vec<IndexEntry>,
}

impl RecordFile {
    /// Opens `path` and its `.idx`; a missing index is rebuilt by scanning the file.
    pub fn open(path: &Path) -> Result<Self, RecordError> {
        let file = File::open(path).map_err(|source| RecordError::Io { path: path.to_path_buf(), source })?;
        let idx = index_path(path);
        let index = if idx.is_file() { read_index(&idx)? } else { scan(path, &file)? };
        Ok(Self { path: path.to_path_buf(), file, index })
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Reads and checks record `i`.
    pub fn read(&self, i: usize) -> Result<Record, RecordError> {
        self.read_into(i, &mut Vec::new()).map(RecordRef::into_owned)
    }

    /// Reads and checks record `i` into `buf` (reused from call to call, so a reader that goes through
    /// many records allocates nothing per record); the record borrows its key and image from `buf`.
    pub fn read_into<'b>(&self, i: usize, buf: &'b mut Vec<u8>) -> Result<RecordRef<'b>, RecordError> {
        let damaged = |reason: String| RecordError::Damaged { path: self.path.clone(), index: i, reason };
        let e = self.index.get(i).ok_or_else(|| damaged(format!("out of range (the file has {} records)", self.index.len())))?;
        buf.resize(e.length as usize, 0);
        self.file.read_exact_at(buf, e.offset).map_err(|err| damaged(format!("cannot read {} bytes at offset {}: {err}", e.length, e.offset)))?;
        let buf = &buf[..];
        let word = |at: usize| u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
        if buf.len() < HEADER || word(0) != MAGIC {
            return Err(damaged(format!("no record header at offset {}", e.offset)));
        }
        let len = word(4) as usize;
        if len + HEADER != buf.len() {
            return Err(damaged(format!("header says {len} payload bytes, the index says {}", buf.len() - HEADER)));
        }
        let payload = &buf[HEADER..];
        let crc = crc32fast::hash(payload);
        if crc != word(8) {
            return Err(damaged(format!("checksum mismatch (stored {:08x}, computed {crc:08x})", word(8))));
        }
        RecordRef::decode(payload).map_err(damaged)
    }

    /// The record indices of shard `rank` of `world` (every world-th record, starting at rank).
    pub fn shard(&self, rank: usize, world: usize) -> Vec<usize> {
        (rank..self.len()).step_by(world.max(1)).collect()
    }
}

fn read_index(idx: &Path) -> Result<Vec<IndexEntry>, RecordError> {
    let text = std::fs::read_to_string(idx).map_err(|source| RecordError::Io { path: idx.to_path_buf(), source })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| {
            let bad = |reason: &str| RecordError::Index { path: idx.to_path_buf(), line: n + 1, reason: reason.to_string() };
            let f: Vec<&str> = l.split('\t').collect();
            if f.len() != 4 {
                return Err(bad("expected index, offset, length, label separated by tabs"));
            }
            Ok(IndexEntry {
                offset: f[1].parse().map_err(|_| bad("bad offset"))?,
                length: f[2].parse().map_err(|_| bad("bad length"))?,
                label: f[3].parse().map_err(|_| bad("bad label"))?,
            })
        })
        .collect()
}

fn scan(path: &Path, file: &File) -> Result<Vec<IndexEntry>, RecordError> {
    let size = file.metadata().map_err(|source| RecordError::Io { path: path.to_path_buf(), source })?.len();
    let mut index = vec![];
    let mut offset = 0u64;
    while offset < size {
        let mut head = [0u8; HEADER + 4];
        let n = if size - offset >= head.len() as u64 { head.len() } else { HEADER };
        file.read_exact_at(&mut head[..n], offset).map_err(|source| RecordError::Io { path: path.to_path_buf(), source })?;
        if u32::from_le_bytes([head[0], head[1], head[2], head[3]]) != MAGIC {
            return Err(RecordError::Damaged { path: path.to_path_buf(), index: index.len(), reason: format!("no record header at offset {offset}") });
        }
        let len = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        let label = if n > HEADER { i32::from_le_bytes([head[12], head[13], head[14], head[15]]) } else { -1 };
        index.push(IndexEntry { offset, length: len + HEADER as u32, label });
        offset += (len as usize + HEADER) as u64;
    }
    Ok(index)
}

/// How images are stored in records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackOptions {
    /// Resize so that the shorter side is this long (0 keeps the size; never upscales).
    pub short_side: u32,
    /// JPEG quality 1-100; 0 stores PNG (lossless).
    pub jpeg_quality: u8,
    /// Store single-channel images.
    pub grayscale: bool,
}

impl Default for PackOptions {
    fn default() -> Self {
        Self { short_side: 256, jpeg_quality: 95, grayscale: false }
    }
}

/// Where an item's image comes from.
#[derive(Debug, Clone)]
pub enum Source {
    File(PathBuf),
    /// A file turned clockwise by 0, 90, 180 or 270 degrees when packed (orientation datasets).
    FileRotated(PathBuf, u32),
    /// Already decoded pixels (FER2013's CSV, IDX files, rotated copies).
    Image(DynamicImage),
}

/// One image to pack with its label(s).
#[derive(Debug, Clone)]
pub struct Item {
    pub source: Source,
    pub key: String,
    pub label: i32,
    pub boxes: Vec<BoundingBox>,
}

/// What packing did: every item is either written or skipped with a reason.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PackReport {
    pub file: PathBuf,
    pub read: usize,
    pub written: usize,
    pub skipped: Vec<(String, String)>,
    /// Per-channel mean of the written images (0-255, RGB or gray), measured after resizing.
    pub channel_means: Vec<f64>,
}

/// The size an image of `w`×`h` takes when its shorter side is brought down to `short` (0 or a shorter
/// side already at most `short`: unchanged, never upscaled).
pub fn short_side_size(w: u32, h: u32, short: u32) -> (u32, u32) {
    let s = w.min(h);
    if short == 0 || s <= short {
        return (w, h);
    }
    let scale = short as f64 / s as f64;
    (((w as f64 * scale).round() as u32).max(1), ((h as f64 * scale).round() as u32).max(1))
}

/// Brings the shorter side down to `short` (see [`short_side_size`]) with the filter records are stored
/// with (Catmull-Rom): what `trainer prepare` does, and what the runtime repeats on raw images.
pub fn shrink_short_side(img: DynamicImage, short: u32) -> DynamicImage {
    let (w, h) = (img.width(), img.height());
    let (nw, nh) = short_side_size(w, h, short);
    if (nw, nh) == (w, h) {
        return img;
    }
    img.resize_exact(nw, nh, image::imageops::FilterType::CatmullRom)
}

/// Grey from colour the way the book does it (`cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)`) and PIL's
/// `convert("L")` do: ITU-R BT.601 luma, 0.299 R + 0.587 G + 0.114 B, in OpenCV's 14-bit fixed point.
/// (The image crate's `to_luma8` weighs by BT.709 instead, which would feed a model different grey
/// values than the OpenCV frames it meets in deployment.) Grey images are returned as they are.
pub fn to_gray(img: &DynamicImage) -> image::GrayImage {
    if !img.color().has_color() {
        return img.to_luma8();
    }
    let rgb = img.to_rgb8();
    let luma = rgb.pixels().map(|p| ((4899 * p[0] as u32 + 9617 * p[1] as u32 + 1868 * p[2] as u32 + (1 << 13)) >> 14) as u8).collect();
    image::GrayImage::from_raw(rgb.width(), rgb.height(), luma).expect("one byte per pixel")
}

/// [`shrink_short_side`], with the boxes scaled along.
fn resize_short(img: DynamicImage, short: u32, boxes: &mut [BoundingBox]) -> DynamicImage {
    let (w, h) = (img.width(), img.height());
    let (nw, nh) = short_side_size(w, h, short);
    for b in boxes.iter_mut() {
        b.x0 = (b.x0 as f64 * nw as f64 / w as f64) as f32;
        b.x1 = (b.x1 as f64 * nw as f64 / w as f64) as f32;
        b.y0 = (b.y0 as f64 * nh as f64 / h as f64) as f32;
        b.y1 = (b.y1 as f64 * nh as f64 / h as f64) as f32;
    }
    shrink_short_side(img, short)
}

/// A packed record with its per-channel pixel sums and its pixel count.
type Prepared = (Record, Vec<f64>, u64);

/// Decodes, resizes and encodes one item; returns the record and its per-channel pixel sums.
fn prepare_item(item: &Item, o: &PackOptions) -> Result<Prepared, String> {
    let open = |p: &PathBuf| image::open(p).map_err(|e| format!("{}: {e}", p.display()));
    let img = match &item.source {
        Source::File(p) => open(p)?,
        Source::FileRotated(p, deg) => match deg {
            0 => open(p)?,
            90 => open(p)?.rotate90(),
            180 => open(p)?.rotate180(),
            270 => open(p)?.rotate270(),
            other => return Err(format!("{}: rotation {other} is not a multiple of 90 degrees", p.display())),
        },
        Source::Image(img) => img.clone(),
    };
    let mut boxes = item.boxes.clone();
    let img = resize_short(img, o.short_side, &mut boxes);
    let img = if o.grayscale { DynamicImage::ImageLuma8(to_gray(&img)) } else { DynamicImage::ImageRgb8(img.to_rgb8()) };
    let raw = img.as_bytes();
    let c = if o.grayscale { 1 } else { 3 };
    let mut sums = vec![0f64; c];
    for px in raw.chunks_exact(c) {
        for (s, &v) in sums.iter_mut().zip(px) {
            *s += v as f64;
        }
    }
    let mut bytes = std::io::Cursor::new(Vec::new());
    if o.jpeg_quality == 0 {
        img.write_to(&mut bytes, ImageFormat::Png).map_err(|e| e.to_string())?;
    } else {
        let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, o.jpeg_quality.min(100));
        img.write_with_encoder(enc).map_err(|e| e.to_string())?;
    }
    let pixels = (raw.len() / c) as u64;
    Ok((Record { label: item.label, boxes, key: item.key.clone(), image: bytes.into_inner() }, sums, pixels))
}

/// Packs `items` into `path` in parallel (order kept), skipping and listing the ones that fail.
pub fn pack(items: &[Item], path: &Path, o: &PackOptions, progress: bool) -> Result<PackReport, RecordError> {
    let bar = crate::progress::bar(items.len() as u64, &format!("packing {}", path.file_name().and_then(|n| n.to_str()).unwrap_or("records")), progress);
    let writer = Mutex::new(RecordWriter::create(path)?);
    let mut report = PackReport { file: path.to_path_buf(), read: items.len(), ..PackReport::default() };
    let c = if o.grayscale { 1 } else { 3 };
    let mut sums = vec![0f64; c];
    let mut pixels = 0u64;
    let done = AtomicUsize::new(0);
    // Chunks keep memory bounded and the output in input order.
    for chunk in items.chunks(256) {
        let prepared: Vec<Result<Prepared, String>> = chunk
            .par_iter()
            .map(|it| {
                let r = prepare_item(it, o);
                done.fetch_add(1, Ordering::Relaxed);
                r
            })
            .collect();
        let mut w = writer.lock().expect("writer lock");
        for (item, res) in chunk.iter().zip(prepared) {
            match res {
                Ok((rec, s, n)) => {
                    w.append(&rec)?;
                    sums.iter_mut().zip(s).for_each(|(a, b)| *a += b);
                    pixels += n;
                    report.written += 1;
                }
                Err(reason) => report.skipped.push((item.key.clone(), reason)),
            }
        }
        bar.set_position(done.load(Ordering::Relaxed) as u64);
    }
    bar.finish_and_clear();
    writer.into_inner().expect("writer lock").finish()?;
    report.channel_means = sums.iter().map(|s| if pixels > 0 { s / pixels as f64 } else { 0.0 }).collect();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> DynamicImage {
        DynamicImage::ImageRgb8(image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 100])))
    }

    #[test]
    fn records_round_trip_with_boxes_and_keys() {
        let r = Record {
            label: 7,
            boxes: vec![BoundingBox { class: 2, x0: 1.5, y0: 2.0, x1: 30.0, y1: 40.25 }],
            key: "dir/ü.jpg".into(),
            image: vec![1, 2, 3, 4, 5],
        };
        assert_eq!(Record::decode(&r.encode()).unwrap(), r);
        assert!(Record::decode(&r.encode()[..9]).is_err());
    }

    #[test]
    fn grey_is_bt601_luma_as_opencv_and_pil_make_it() {
        // cv2.cvtColor(np.uint8([[[B, G, R]]]), cv2.COLOR_BGR2GRAY) and PIL's convert("L") for these
        // RGB pixels give 76, 150, 29, 255, 0 and 124 (the image crate's BT.709 would give 54, 182, 18).
        let px = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0], [200, 100, 50]];
        let img = image::RgbImage::from_fn(6, 1, |x, _| image::Rgb(px[x as usize]));
        assert_eq!(to_gray(&DynamicImage::ImageRgb8(img)).into_raw(), vec![76, 150, 29, 255, 0, 124]);
        // already grey: unchanged
        let g = image::GrayImage::from_fn(3, 2, |x, y| image::Luma([(x * 50 + y * 7) as u8]));
        assert_eq!(to_gray(&DynamicImage::ImageLuma8(g.clone())), g);
    }

    #[test]
    fn pack_resizes_skips_bad_files_and_reconciles() {
        let scratch = tempfile::tempdir().unwrap();
        let d = scratch.path();
        let good = d.join("good.png");
        gradient(400, 300).save(&good).unwrap();
        let bad = d.join("bad.jpg");
        std::fs::write(&bad, b"\xff\xd8\xff\xe0 truncated").unwrap();
        let items = vec![
            Item {
                source: Source::File(good.clone()),
                key: "good".into(),
                label: 1,
                boxes: vec![BoundingBox { class: 0, x0: 0.0, y0: 0.0, x1: 400.0, y1: 300.0 }],
            },
            Item { source: Source::File(bad), key: "bad".into(), label: 2, boxes: vec![] },
            Item { source: Source::Image(gradient(100, 50)), key: "small".into(), label: 3, boxes: vec![] },
        ];
        let rec = d.join("train.rec");
        let rep = pack(&items, &rec, &PackOptions { short_side: 150, jpeg_quality: 0, grayscale: false }, false).unwrap();
        assert_eq!((rep.read, rep.written, rep.skipped.len()), (3, 2, 1));
        assert_eq!(rep.skipped[0].0, "bad");
        let f = RecordFile::open(&rec).unwrap();
        assert_eq!(f.len(), 2);
        let first = f.read(0).unwrap();
        let img = image::load_from_memory(&first.image).unwrap();
        assert_eq!((img.width(), img.height()), (200, 150)); // short side 300 -> 150
        assert_eq!(first.boxes[0].x1, 200.0);
        let second = f.read(1).unwrap();
        let img2 = image::load_from_memory(&second.image).unwrap();
        assert_eq!((img2.width(), img2.height(), second.label), (100, 50, 3)); // never upscaled
                                                                               // PNG is lossless: the blue channel's mean is exactly 100
        assert!((rep.channel_means[2] - 100.0).abs() < 1e-9, "{:?}", rep.channel_means);
        // the index can be rebuilt by scanning
        std::fs::remove_file(index_path(&rec)).unwrap();
        assert_eq!(RecordFile::open(&rec).unwrap().index, f.index);
        assert_eq!(f.shard(1, 2), vec![1]);
    }

    #[test]
    fn a_flipped_byte_is_caught_by_the_checksum_and_named() {
        let scratch = tempfile::tempdir().unwrap();
        let d = scratch.path();
        let rec = d.join("val.rec");
        let items: Vec<Item> = (0..3).map(|i| Item { source: Source::Image(gradient(20, 20)), key: format!("k{i}"), label: i, boxes: vec![] }).collect();
        pack(&items, &rec, &PackOptions { short_side: 0, jpeg_quality: 90, grayscale: true }, false).unwrap();
        let f = RecordFile::open(&rec).unwrap();
        let mut bytes = std::fs::read(&rec).unwrap();
        let at = f.index[1].offset as usize + HEADER + 20;
        bytes[at] ^= 0x40;
        std::fs::write(&rec, bytes).unwrap();
        let f = RecordFile::open(&rec).unwrap();
        assert!(f.read(0).is_ok() && f.read(2).is_ok());
        let err = f.read(1).unwrap_err().to_string();
        assert!(err.contains("val.rec, record 1: checksum mismatch"), "{err}");
        // reading into one reused buffer: the same records, the same error
        let mut buf = Vec::new();
        for i in [2, 0] {
            assert_eq!(f.read_into(i, &mut buf).unwrap().into_owned(), f.read(i).unwrap());
        }
        assert_eq!(f.read_into(1, &mut buf).unwrap_err().to_string(), err);
        assert_eq!(f.read_into(0, &mut buf).unwrap().key, "k0");
    }
}
