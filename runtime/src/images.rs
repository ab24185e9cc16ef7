//! What `runtime eval`, `predict` and `bench --images` read: record files (from `trainer prepare`), a
//! folder with one sub-folder per class, or loose image files; decoded and preprocessed by worker threads
//! into batches while the model computes the previous ones (`data::pool`, bounded: memory stays at a
//! few batches whatever the dataset size).

use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use data::pool::{map_ordered, Ordered};
use data::records::RecordFile;
use data::Decoder;

use crate::preprocess::{to_image, Preprocess};

use data::files::is_image;
pub use data::files::IMAGE_EXTENSIONS;

/// Why a source of images cannot be opened; every message names the file or folder.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Records(#[from] data::records::RecordError),
    #[error("{}: no such file or folder", .0.display())]
    Missing(PathBuf),
    #[error("{}: cannot list the folder", path.display())]
    List {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: no class sub-folders (expected one folder per class, named by its label)", .0.display())]
    NoClassFolders(PathBuf),
    #[error("{}: class folders {unknown:?} are not among the model's labels {labels:?} (name each folder by its label, or 0..K-1)", path.display())]
    UnknownClasses { path: PathBuf, unknown: Vec<String>, labels: Vec<String> },
}

/// Where samples come from.
pub enum Source {
    Records(RecordFile),
    /// Image files with their class (None when unlabelled).
    Files(Vec<(PathBuf, Option<usize>)>),
}

/// A sample that could not be used: its name and why.
pub type Skipped = (String, String);

impl Source {
    /// A record file (`.rec`), a folder of class sub-folders (classes matched to `labels` by name, or by
    /// number when the folders are named 0, 1, …) or, with `labelled == false`, any folder of images.
    /// Files that are not images by extension are returned as skipped.
    pub fn open(path: &Path, labels: &[String], labelled: bool) -> Result<(Self, Vec<Skipped>), SourceError> {
        if path.is_file() {
            if path.extension().is_some_and(|e| e == "rec") {
                let rec = RecordFile::open(path)?;
                return Ok((Self::Records(rec), vec![]));
            }
            return Ok((Self::Files(vec![(path.to_path_buf(), None)]), vec![]));
        }
        if !path.is_dir() {
            return Err(SourceError::Missing(path.to_path_buf()));
        }
        let mut skipped = vec![];
        if !labelled {
            let mut files = vec![];
            walk(path, &mut files, &mut skipped)?;
            return Ok((Self::Files(files.into_iter().map(|f| (f, None)).collect()), skipped));
        }
        let mut classes = vec![];
        for entry in read_dir_sorted(path)? {
            if entry.is_dir() {
                classes.push(entry);
            } else {
                skipped.push((entry.display().to_string(), "not inside a class folder".into()));
            }
        }
        if classes.is_empty() {
            return Err(SourceError::NoClassFolders(path.to_path_buf()));
        }
        let names: Vec<String> = classes.iter().map(|c| c.file_name().unwrap_or_default().to_string_lossy().into_owned()).collect();
        let by_label: Vec<Option<usize>> = names.iter().map(|n| labels.iter().position(|l| l == n)).collect();
        let by_number: Vec<Option<usize>> = names.iter().map(|n| n.parse::<usize>().ok().filter(|&i| i < labels.len().max(1) || labels.is_empty())).collect();
        let index = if by_label.iter().all(Option::is_some) {
            by_label
        } else if by_number.iter().all(Option::is_some) {
            by_number
        } else {
            let unknown = names.iter().zip(&by_label).filter(|(_, i)| i.is_none()).map(|(n, _)| n.clone()).collect();
            return Err(SourceError::UnknownClasses { path: path.to_path_buf(), unknown, labels: labels.to_vec() });
        };
        let mut files = vec![];
        for (dir, class) in classes.iter().zip(index) {
            let mut found = vec![];
            walk(dir, &mut found, &mut skipped)?;
            files.extend(found.into_iter().map(|f| (f, class)));
        }
        Ok((Self::Files(files), skipped))
    }

    pub fn len(&self) -> usize {
        match self {
            Self::Records(r) => r.len(),
            Self::Files(f) => f.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decodes sample `i` (into `pre`'s channels, with the training loader's decoder: libjpeg-turbo for
    /// JPEGs, so that the runtime sees exactly the pixels `trainer eval` sees) and writes its input
    /// sample, or its ten with `ten_crop`, into `out`. Returns its name and label, or why it cannot be used.
    pub fn load_into(&self, i: usize, pre: &Preprocess, ten_crop: bool, out: &mut [f32]) -> Result<(String, Option<usize>), Skipped> {
        BUFFERS.with(|b| {
            let (bytes, decoder) = &mut *b.borrow_mut();
            // the encoded image goes into this thread's reused buffer: nothing is allocated per sample
            let (name, label, encoded) = match self {
                Self::Records(r) => {
                    let name = format!("{}#{i}", r.path.display());
                    let rec = r.read_into(i, bytes).map_err(|e| (name.clone(), e.to_string()))?;
                    let name = if rec.key.is_empty() { name } else { rec.key.into_owned() };
                    (name, usize::try_from(rec.label).ok(), rec.image)
                }
                Self::Files(f) => {
                    let (p, label) = &f[i];
                    let name = p.display().to_string();
                    bytes.clear();
                    std::fs::File::open(p).and_then(|mut f| f.read_to_end(bytes)).map_err(|e| (name.clone(), format!("cannot read: {e}")))?;
                    (name, *label, &bytes[..])
                }
            };
            preprocess_into(decoder, encoded, pre, ten_crop, out).map_err(|e| (name.clone(), e))?;
            Ok((name, label))
        })
    }
}

fn preprocess_into(decoder: &mut Decoder, encoded: &[u8], pre: &Preprocess, ten_crop: bool, out: &mut [f32]) -> Result<(), String> {
    let px = decoder.decode(encoded, pre.channels).map_err(|e| format!("undecodable image: {e}"))?;
    if ten_crop {
        pre.apply_ten_crop(to_image(&px), out);
    } else {
        pre.apply_decoded(&px, out);
    }
    Ok(())
}

/// Decodes one encoded image (JPEG, PNG, …) held in memory and writes its input sample (`pre.sample_len()`
/// floats) into `out`: exactly what [`Source::load_into`] does for a file or a record, with this thread's
/// reused decoder. `runtime serve` uses it for images sent in requests.
pub fn decode_into(encoded: &[u8], pre: &Preprocess, out: &mut [f32]) -> Result<(), String> {
    BUFFERS.with(|b| preprocess_into(&mut b.borrow_mut().1, encoded, pre, false, out))
}

thread_local! {
    /// Per worker thread: the encoded bytes of the sample being read, and the decoder with its pixels.
    static BUFFERS: std::cell::RefCell<(Vec<u8>, Decoder)> = std::cell::RefCell::new((Vec::new(), Decoder::new()));
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, SourceError> {
    let rd = std::fs::read_dir(dir).map_err(|source| SourceError::List { path: dir.to_path_buf(), source })?;
    let mut v: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    v.sort();
    Ok(v)
}

/// Every image file under `dir` (sorted, recursive); other files go to `skipped`.
fn walk(dir: &Path, files: &mut Vec<PathBuf>, skipped: &mut Vec<Skipped>) -> Result<(), SourceError> {
    for p in read_dir_sorted(dir)? {
        if p.is_dir() {
            walk(&p, files, skipped)?;
        } else if is_image(&p) {
            files.push(p);
        } else {
            skipped.push((p.display().to_string(), "not an image file (by extension)".into()));
        }
    }
    Ok(())
}

/// A batch of preprocessed samples.
pub struct Prepared {
    /// Position of the batch in the source (batches arrive in order).
    pub index: usize,
    /// `n * crops * sample_len` floats.
    pub data: Vec<f32>,
    /// One per usable image: its name and label.
    pub items: Vec<(String, Option<usize>)>,
    /// Samples per image: 1, or 10 with the 10-crop.
    pub crops: usize,
    pub skipped: Vec<Skipped>,
}

/// Decodes and preprocesses `source` in batches of `batch` images on `workers` threads, in order; at
/// most `3 * workers` batches are out (one being built per worker, and up to two per worker built
/// ahead), so memory stays at a few batches whatever the source's size.
pub fn prepare(source: Arc<Source>, pre: Preprocess, batch: usize, ten_crop: bool, workers: usize) -> Batches {
    let batch = batch.max(1);
    let total = source.len().div_ceil(batch);
    let workers = workers.clamp(1, total.max(1));
    let crops = if ten_crop { 10 } else { 1 };
    let batches = map_ordered(0..total, vec![(); workers], 2 * workers, move |_, b| {
        let per = crops * pre.sample_len();
        let range = b * batch..((b + 1) * batch).min(source.len());
        let mut out = Prepared { index: b, data: vec![0f32; range.len() * per], items: vec![], crops, skipped: vec![] };
        for i in range {
            let slot = &mut out.data[out.items.len() * per..(out.items.len() + 1) * per];
            match source.load_into(i, &pre, ten_crop, slot) {
                Ok(item) => out.items.push(item),
                Err(s) => out.skipped.push(s),
            }
        }
        out.data.truncate(out.items.len() * per);
        out
    });
    Batches(batches)
}

/// The batches of [`prepare`], in the source's order (workers finish them in any order).
pub struct Batches(Ordered<Prepared, Range<usize>>);

impl Iterator for Batches {
    type Item = Prepared;

    fn next(&mut self) -> Option<Prepared> {
        self.0.next()
    }
}

/// Worker threads to use by default: every core but one stays free for ONNX Runtime when there are
/// more than two.
pub fn default_workers() -> usize {
    let n = std::thread::available_parallelism().map_or(2, |n| n.get());
    if n > 2 {
        n - 1
    } else {
        n
    }
}

/// Averages each image's `crops` probability rows (10-crop) into one row.
pub fn average_crops(probs: &[f32], classes: usize, crops: usize) -> Vec<f32> {
    if crops == 1 {
        return probs.to_vec();
    }
    probs.chunks(classes * crops).flat_map(|img| (0..classes).map(move |k| (0..crops).map(|c| img[c * classes + k]).sum::<f32>() / crops as f32)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_crops_per_image() {
        // two images, two crops each, two classes
        let p = [0.2, 0.8, 0.4, 0.6, 1.0, 0.0, 0.0, 1.0];
        let avg = average_crops(&p, 2, 2);
        let want = [0.3, 0.7, 0.5, 0.5];
        assert!(avg.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6), "{avg:?}");
    }

    #[test]
    fn batches_come_in_order_with_every_image_once() {
        // 23 PNGs of distinct grey levels, one broken file; batches of 4 on 3 workers
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().to_path_buf();
        for i in 0..23u8 {
            data::image::GrayImage::from_pixel(3, 3, data::image::Luma([i * 10])).save(d.join(format!("{i:02}.png"))).unwrap();
        }
        std::fs::write(d.join("05b.png"), b"not a png").unwrap();
        let (s, _) = Source::open(&d, &[], false).unwrap();
        let a = crate::PreprocessArgs { size: Some("1x1".parse().unwrap()), gray: true, ..Default::default() };
        let pre = crate::Preprocess::resolve(None, &a).unwrap();
        let batches: Vec<Prepared> = prepare(Arc::new(s), pre, 4, false, 3).collect();
        assert_eq!(batches.iter().map(|b| b.index).collect::<Vec<_>>(), (0..6).collect::<Vec<_>>());
        let values: Vec<f32> = batches.iter().flat_map(|b| b.data.clone()).collect();
        assert_eq!(values, (0..23).map(|i| (i * 10) as f32).collect::<Vec<_>>());
        let skipped: Vec<&Skipped> = batches.iter().flat_map(|b| &b.skipped).collect();
        assert!(skipped.len() == 1 && skipped[0].0.ends_with("05b.png") && skipped[0].1.contains("undecodable"), "{skipped:?}");
    }

    #[test]
    fn folders_map_to_labels_by_name_and_other_files_are_counted() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().to_path_buf();
        for (c, f) in [("cat", "a.jpg"), ("dog", "b.png"), ("dog", "notes.txt")] {
            std::fs::create_dir_all(d.join(c)).unwrap();
            std::fs::write(d.join(c).join(f), b"x").unwrap();
        }
        std::fs::write(d.join("stray.jpg"), b"x").unwrap();
        let labels = ["dog".to_string(), "cat".to_string()];
        let (s, skipped) = Source::open(&d, &labels, true).unwrap();
        let Source::Files(f) = &s else { panic!() };
        assert_eq!(f.iter().map(|x| x.1).collect::<Vec<_>>(), vec![Some(1), Some(0)]);
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        let e = Source::open(&d, &["dog".to_string(), "bird".to_string()], true).err().unwrap().to_string();
        assert!(e.contains("[\"cat\"]"), "{e}");
        // broken images are skipped with the file named
        let pre = crate::Preprocess::resolve(None, &crate::PreprocessArgs { size: Some("4x4".parse().unwrap()), ..Default::default() }).unwrap();
        let err = s.load_into(0, &pre, false, &mut [0f32; 48]).err().unwrap();
        assert!(err.0.ends_with("a.jpg"), "{err:?}");
    }
}
