//! `trainer prepare folder`: one sub-folder per class (`ROOT/<class>/*.jpg`), classes sorted by name,
//! split by stratified fractions. (Not to be confused with [`crate::folder`], the prepared folder it
//! is written to.)

use std::path::PathBuf;

use crate::files::{is_image, rel, sorted_entries};
use crate::records::{Item, Source};

use super::error::io;
use super::{stratified_split, PrepareError, Prepared};

pub struct FolderOptions {
    pub root: PathBuf,
    pub val_fraction: f64,
    pub test_fraction: f64,
    pub seed: u64,
}

/// Every image file under a class sub-folder of `o.root` is one item of that class; other files are
/// dropped.
pub fn build(o: &FolderOptions) -> Result<Prepared, PrepareError> {
    let classes: Vec<PathBuf> = sorted_entries(&o.root).map_err(io("listing the dataset root", &o.root))?.into_iter().filter(|p| p.is_dir()).collect();
    if classes.is_empty() {
        return Err(PrepareError::NoClassFolders { root: o.root.clone() });
    }
    let labels: Vec<String> = classes.iter().map(|c| c.file_name().unwrap_or_default().to_string_lossy().into_owned()).collect();
    let (mut items, mut dropped, mut read) = (vec![], vec![], 0);
    for (label, dir) in classes.iter().enumerate() {
        for f in sorted_entries(dir).map_err(io("listing the class folder", dir))? {
            if f.is_dir() {
                continue;
            }
            read += 1;
            if is_image(&f) {
                items.push(Item { key: rel(&o.root, &f), source: Source::File(f), label: label as i32, boxes: vec![] });
            } else {
                dropped.push((rel(&o.root, &f), "not an image file extension".to_string()));
            }
        }
    }
    let splits = stratified_split(items, o.val_fraction, o.test_fraction, o.seed);
    Ok(Prepared { kind: "folder".into(), labels, splits, read, dropped, grayscale: false })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prepare::write;
    use crate::records::{PackOptions, RecordFile};
    use image::DynamicImage;
    use std::path::Path;

    fn png(path: &Path, w: u32, h: u32, value: u8) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        DynamicImage::ImageRgb8(image::RgbImage::from_pixel(w, h, image::Rgb([value, value / 2, 7]))).save(path).unwrap();
    }

    #[test]
    fn folder_splits_by_class_skips_broken_images_and_reconciles() {
        let scratch = tempfile::tempdir().unwrap();
        let d = scratch.path();
        let root = d.join("data");
        for i in 0..10 {
            png(&root.join(format!("cat/{i}.png")), 20, 10, 200);
        }
        for i in 0..6 {
            png(&root.join(format!("dog/{i}.png")), 20, 10, 100);
        }
        std::fs::write(root.join("dog/broken.jpg"), b"\xff\xd8\xff not really").unwrap();
        std::fs::write(root.join("dog/notes.txt"), b"hi").unwrap();
        let p = build(&FolderOptions { root: root.clone(), val_fraction: 0.2, test_fraction: 0.2, seed: 1 }).unwrap();
        assert_eq!(p.labels, ["cat", "dog"]);
        assert_eq!((p.read, p.dropped.len()), (18, 1));
        let out = d.join("out");
        let r = write(p, &out, &PackOptions { short_side: 0, jpeg_quality: 0, grayscale: false }, false).unwrap();
        let by = |n: &str| r.splits.iter().find(|s| s.name == n).unwrap();
        // cat: 10 -> 2 val, 2 test, 6 train; dog: 7 images -> 1 val (round 1.4), 1 test, 5 train (one broken)
        assert_eq!((by("val").per_class["cat"], by("test").per_class["cat"], by("train").per_class["cat"]), (2, 2, 6));
        let total_items: usize = r.splits.iter().map(|s| s.read).sum();
        assert_eq!(r.read, total_items + r.dropped.len(), "read = items + dropped");
        assert_eq!(total_items, r.written() + r.splits.iter().map(|s| s.skipped.len()).sum::<usize>(), "items = written + skipped");
        assert_eq!(r.splits.iter().map(|s| s.skipped.len()).sum::<usize>(), 1);
        // means over the train split, computed independently: R is 200 for cats and 100 for dogs
        let train = by("train");
        let (cats, dogs) = (train.per_class["cat"] as f64, train.per_class.get("dog").copied().unwrap_or(0) as f64);
        assert!((r.train_means[0] - (200.0 * cats + 100.0 * dogs) / (cats + dogs)).abs() < 1e-9, "{:?}", r.train_means);
        assert_eq!(std::fs::read_to_string(out.join("labels.txt")).unwrap(), "cat\ndog\n");
        let lst = std::fs::read_to_string(out.join("train.lst")).unwrap();
        assert_eq!(lst.lines().count(), train.written);
        assert!(lst.lines().next().unwrap().starts_with("0\t"));
        assert_eq!(RecordFile::open(&out.join("train.rec")).unwrap().len(), train.written);
    }
}
