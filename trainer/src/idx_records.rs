//! IDX sets (MNIST, Fashion-MNIST) as record files: the trainer reads records only, so an IDX prefix in a
//! config is packed once by `trainer prepare idx`'s builder ([`data::prepare::idx`]) into a cache folder
//! and read from there by every later run.
//!
//! The cache lives in `$DLCV_CACHE_DIR`, else `$XDG_CACHE_HOME/dlcv`, else `~/.cache/dlcv` (the temp
//! folder when there is no home), under `idx/`: one folder per packed set, named after the prefix, holding
//! what `trainer prepare` writes (`train.rec`, `labels.txt`, `mean.json`, `report.json`) and `source.json`,
//! the size and modification time of the IDX files it was packed from. A folder whose `source.json` no
//! longer matches its files is packed again.
//!
//! `augment.shift` (random translation by up to N pixels) is a border of N black pixels packed around every
//! image: the loader's random crop back to the image size then shifts it by -N..=N in each direction, and
//! its centre crop gives the image itself.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use data::folder::DatasetDir;
use data::image::{DynamicImage, GrayImage};
use data::prepare::idx::{build, IdxOptions};
use data::records::{PackOptions, Source};
use serde::{Deserialize, Serialize};

/// The environment variable naming the cache folder.
pub const CACHE_ENV: &str = "DLCV_CACHE_DIR";

/// Bumped when the packed layout changes, so that older cache folders are packed again.
const LAYOUT: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum IdxRecordsError {
    #[error(transparent)]
    Idx(#[from] data::idx::DataError),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{prefix}: reading the IDX set to pack it: {source}")]
    Build { prefix: PathBuf, source: Box<data::prepare::PrepareError> },
    #[error("packing {prefix} into {dir}: {source}")]
    Pack { prefix: PathBuf, dir: PathBuf, source: Box<data::prepare::PrepareError> },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IdxRecordsError + '_ {
    move |source| IdxRecordsError::Io { path: path.to_path_buf(), source }
}

/// Where packed IDX sets are kept (see the module documentation).
pub fn cache_root() -> PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    var(CACHE_ENV)
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("dlcv")))
        .or_else(|| var("HOME").map(|d| d.join(".cache/dlcv")))
        .unwrap_or_else(|| std::env::temp_dir().join("dlcv-cache"))
}

/// One IDX file as it was when it was packed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SourceFile {
    path: PathBuf,
    bytes: u64,
    modified_ns: u128,
}

impl SourceFile {
    fn of(path: &Path) -> Result<Self, IdxRecordsError> {
        let path = path.canonicalize().map_err(io(path))?;
        let meta = std::fs::metadata(&path).map_err(io(&path))?;
        let modified_ns = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
        Ok(Self { path, bytes: meta.len(), modified_ns })
    }
}

/// `source.json`: what a cache folder was packed from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Manifest {
    layout: u32,
    images: SourceFile,
    labels: SourceFile,
    /// Black pixels around every image.
    border: u32,
}

/// An IDX set's record file in the cache.
#[derive(Debug, Clone, PartialEq)]
pub struct Packed {
    /// The record file (`…/train.rec`, labels and means beside it).
    pub records: PathBuf,
    /// Packed by an earlier run (false: packed just now).
    pub reused: bool,
}

/// The cache folder of `prefix` packed with a `border`: the prefix's last two components (readable) and a
/// hash of its full path (unique).
fn folder_name(images: &Path, prefix: &Path, border: u32) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    images.hash(&mut h);
    let parts: Vec<String> = prefix.components().rev().take(2).map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    let readable: String = parts
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("-")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .collect();
    let border = if border > 0 { format!("-border{border}") } else { String::new() };
    format!("{readable}-{:016x}{border}", h.finish())
}

fn read_manifest(dir: &Path) -> Option<Manifest> {
    serde_json::from_slice(&std::fs::read(dir.join("source.json")).ok()?).ok()
}

/// `img` in the middle of a black canvas `border` pixels wider on every side.
fn bordered(img: &DynamicImage, border: u32) -> DynamicImage {
    let grey = img.to_luma8();
    let mut canvas = GrayImage::new(grey.width() + 2 * border, grey.height() + 2 * border);
    data::image::imageops::replace(&mut canvas, &grey, border as i64, border as i64);
    DynamicImage::ImageLuma8(canvas)
}

/// The record file of the IDX set at `prefix` with a `border` of black pixels around every image, from the
/// cache under `root` when an earlier run packed the same files, else packed now (and kept there).
pub fn packed_records(prefix: &Path, border: u32, root: &Path) -> Result<Packed, IdxRecordsError> {
    let (images, labels) = data::idx::idx_files(prefix)?;
    let want = Manifest { layout: LAYOUT, images: SourceFile::of(&images)?, labels: SourceFile::of(&labels)?, border };
    let parent = root.join("idx");
    let dir = parent.join(folder_name(&want.images.path, prefix, border));
    let records = DatasetDir::new(&dir).records("train");
    if read_manifest(&dir).as_ref() == Some(&want) && records.is_file() {
        return Ok(Packed { records, reused: true });
    }
    std::fs::create_dir_all(&parent).map_err(io(&parent))?;
    // Packed into a folder of its own, then renamed into place: a run that stops half-way leaves no
    // half-written cache, and two runs packing the same set at once do not write into one folder.
    let nanos = std::time::SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let tmp = parent.join(format!(".{}.{}-{nanos}.tmp", dir.file_name().expect("a folder name").to_string_lossy(), std::process::id()));
    let mut prepared = build(&IdxOptions { train: prefix.to_path_buf(), test: None, labels: None, val_fraction: 0.0, seed: 0 })
        .map_err(|source| IdxRecordsError::Build { prefix: prefix.to_path_buf(), source: Box::new(source) })?;
    if border > 0 {
        for item in prepared.splits.iter_mut().flat_map(|s| s.items.iter_mut()) {
            if let Source::Image(img) = &item.source {
                item.source = Source::Image(bordered(img, border));
            }
        }
    }
    let opts = PackOptions { short_side: 0, jpeg_quality: 0, grayscale: true };
    data::prepare::write(prepared, &tmp, &opts, false).map_err(|source| IdxRecordsError::Pack {
        prefix: prefix.to_path_buf(),
        dir: dir.clone(),
        source: Box::new(source),
    })?;
    let manifest = tmp.join("source.json");
    std::fs::write(&manifest, serde_json::to_vec_pretty(&want).expect("a manifest is JSON")).map_err(io(&manifest))?;
    if dir.exists() {
        // packed from files that have changed since (or by an older layout)
        std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
    }
    if let Err(e) = std::fs::rename(&tmp, &dir) {
        let _ = std::fs::remove_dir_all(&tmp);
        // another run packed the same set at the same time and was first
        if read_manifest(&dir).as_ref() != Some(&want) {
            return Err(IdxRecordsError::Io { path: dir, source: e });
        }
    }
    Ok(Packed { records, reused: false })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_idx(prefix: &Path, n: usize, value: impl Fn(usize) -> u8) {
        let header = |kind: u8, dims: &[u32]| -> Vec<u8> { [0, 0, 8, kind].into_iter().chain(dims.iter().flat_map(|d| d.to_be_bytes())).collect() };
        let pixels: Vec<u8> = (0..n).flat_map(|i| vec![value(i); 4 * 5]).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 3) as u8).collect();
        std::fs::write(format!("{}-images-idx3-ubyte", prefix.display()), [header(3, &[n as u32, 4, 5]), pixels].concat()).unwrap();
        std::fs::write(format!("{}-labels-idx1-ubyte", prefix.display()), [header(1, &[n as u32]), labels].concat()).unwrap();
    }

    #[test]
    fn a_set_is_packed_once_and_packed_again_when_its_files_change() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let (prefix, cache) = (dir.join("set"), dir.join("cache"));
        write_idx(&prefix, 6, |i| 10 * i as u8);
        let first = packed_records(&prefix, 0, &cache).unwrap();
        assert!(!first.reused && first.records.is_file() && first.records.starts_with(cache.join("idx")), "{first:?}");
        let file = data::records::RecordFile::open(&first.records).unwrap();
        assert_eq!(file.len(), 6);
        let again = packed_records(&prefix, 0, &cache).unwrap();
        assert_eq!(again, Packed { records: first.records.clone(), reused: true });

        // a border is another packing: images 2 pixels larger on every side, black around the original
        let framed = packed_records(&prefix, 2, &cache).unwrap();
        assert!(!framed.reused && framed.records != first.records);
        let file = data::records::RecordFile::open(&framed.records).unwrap();
        let mut middles = vec![];
        for i in 0..file.len() {
            let img = data::image::load_from_memory(&file.read(i).unwrap().image).unwrap().to_luma8();
            assert_eq!(img.dimensions(), (5 + 4, 4 + 4));
            for (x, y, p) in img.enumerate_pixels() {
                let inside = (2..7).contains(&x) && (2..6).contains(&y);
                assert_eq!(p[0], if inside { img.get_pixel(2, 2)[0] } else { 0 }, "record {i} at ({x}, {y})");
            }
            middles.push(img.get_pixel(2, 2)[0]);
        }
        middles.sort();
        assert_eq!(middles, [0, 10, 20, 30, 40, 50], "every image once, in the middle of its border");

        // other pixels (another size): the cache folder is packed again, with the new values
        std::thread::sleep(std::time::Duration::from_millis(20));
        write_idx(&prefix, 7, |i| 20 * i as u8);
        let changed = packed_records(&prefix, 0, &cache).unwrap();
        assert_eq!((changed.reused, &changed.records), (false, &first.records));
        assert_eq!(data::records::RecordFile::open(&changed.records).unwrap().len(), 7);
        // no temporary folders are left behind
        let left: Vec<String> = std::fs::read_dir(cache.join("idx")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        assert!(left.iter().all(|n| !n.ends_with(".tmp")), "{left:?}");
    }
}
