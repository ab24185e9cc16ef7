//! `trainer prepare folder | fer2013 | orientation`.
//!
//! - `folder`: one sub-folder per class (`ROOT/<class>/*.jpg`), classes sorted by name, split by
//!   stratified fractions.
//! - `fer2013`: the Kaggle CSV (`emotion,pixels,Usage`; 2,304 grey values per row; Training → train,
//!   PrivateTest → val, PublicTest → test, as the book uses them), optionally merging disgust into angry
//!   (the book's 6-class variant: angry, fear, happy, sad, surprise, neutral).
//! - `orientation`: any image folder (searched recursively) → copies turned by 0, 90, 180 or 270 degrees,
//!   labelled by the angle (book ch. 11); each image gets one random angle (seeded), or all four.

use std::path::PathBuf;

use crate::records::{Item, Source};
use anyhow::{bail, Context, Result};
use image::{DynamicImage, GrayImage};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::{stratified_split, Prepared, Split};

pub use crate::files::{is_image, rel, IMAGE_EXTENSIONS};
use crate::files::{sorted_entries, walk};

pub struct FolderOptions {
    pub root: PathBuf,
    pub val_fraction: f64,
    pub test_fraction: f64,
    pub seed: u64,
}

pub fn build_folder(o: &FolderOptions) -> Result<Prepared> {
    let classes: Vec<PathBuf> = sorted_entries(&o.root)?.into_iter().filter(|p| p.is_dir()).collect();
    if classes.is_empty() {
        bail!("{}: no class sub-folders (expected ROOT/<class>/<images>)", o.root.display());
    }
    let labels: Vec<String> = classes.iter().map(|c| c.file_name().unwrap_or_default().to_string_lossy().into_owned()).collect();
    let (mut items, mut dropped, mut read) = (vec![], vec![], 0);
    for (label, dir) in classes.iter().enumerate() {
        for f in sorted_entries(dir)? {
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

pub const FER_LABELS: [&str; 7] = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"];

pub struct Fer2013Options {
    pub csv: PathBuf,
    /// The book's 6-class variant: disgust becomes angry.
    pub merge_disgust: bool,
}

pub fn build_fer2013(o: &Fer2013Options) -> Result<Prepared> {
    // the csv crate, as for Stanford Cars: quoting, CRLF and blank lines are its business, not ours
    let mut rdr = csv::ReaderBuilder::new().flexible(true).trim(csv::Trim::All).from_path(&o.csv).with_context(|| format!("reading {}", o.csv.display()))?;
    let cols: Vec<String> = rdr.headers().with_context(|| format!("{}:1: unreadable header", o.csv.display()))?.iter().map(str::to_ascii_lowercase).collect();
    let col = |name: &str| cols.iter().position(|c| c == name).with_context(|| format!("{}:1: no '{name}' column in the header", o.csv.display()));
    let (ce, cp, cu) = (col("emotion")?, col("pixels")?, col("usage")?);
    let name = o.csv.file_name().map_or("fer2013.csv".into(), |n| n.to_string_lossy().into_owned());
    let (mut train, mut val, mut test, mut dropped, mut read) = (vec![], vec![], vec![], vec![], 0);
    for row in rdr.records() {
        read += 1;
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                dropped.push((format!("{name}:{line}"), format!("unreadable CSV record: {e}")));
                continue;
            }
        };
        let at = format!("{name}:{}", row.position().map_or(0, |p| p.line()));
        let Some((e, p, u)) = (row.len() > ce.max(cp).max(cu)).then(|| (&row[ce], &row[cp], &row[cu])) else {
            dropped.push((at, format!("{} fields, expected {}", row.len(), cols.len())));
            continue;
        };
        let Ok(mut label) = e.parse::<i32>() else {
            dropped.push((at, format!("emotion '{e}' is not a number")));
            continue;
        };
        if !(0..7).contains(&label) {
            dropped.push((at, format!("emotion {label} is not in 0..=6")));
            continue;
        }
        let px: Result<Vec<u8>, _> = p.split_whitespace().map(str::parse::<u8>).collect();
        let px = match px {
            Ok(px) if px.len() == 48 * 48 => px,
            Ok(px) => {
                dropped.push((at, format!("{} pixels, expected 2304 (48x48)", px.len())));
                continue;
            }
            Err(_) => {
                dropped.push((at, "pixels are not grey values 0-255".into()));
                continue;
            }
        };
        if o.merge_disgust {
            label = match label {
                0 | 1 => 0,
                other => other - 1,
            };
        }
        let split = match u.to_ascii_lowercase().as_str() {
            "training" => &mut train,
            "privatetest" => &mut val,
            "publictest" => &mut test,
            other => {
                dropped.push((at, format!("usage '{other}' is not Training, PrivateTest or PublicTest")));
                continue;
            }
        };
        let img = GrayImage::from_raw(48, 48, px).expect("2304 pixels");
        split.push(Item { source: Source::Image(DynamicImage::ImageLuma8(img)), key: at, label, boxes: vec![] });
    }
    let labels: Vec<String> = FER_LABELS.iter().filter(|l| !(o.merge_disgust && **l == "disgust")).map(|s| s.to_string()).collect();
    let splits =
        [("train", train), ("val", val), ("test", test)].into_iter().filter(|(_, v)| !v.is_empty()).map(|(n, items)| Split { name: n.into(), items }).collect();
    Ok(Prepared { kind: "fer2013".into(), labels, splits, read, dropped, grayscale: true })
}

pub struct OrientationOptions {
    pub root: PathBuf,
    /// Sample at most this many images (0 = all), as the book samples 10,000.
    pub limit: usize,
    /// Write all four rotations of every image instead of one random one.
    pub all_angles: bool,
    pub val_fraction: f64,
    pub test_fraction: f64,
    pub seed: u64,
}

pub const ANGLES: [u32; 4] = [0, 90, 180, 270];

pub fn build_orientation(o: &OrientationOptions) -> Result<Prepared> {
    let mut files = vec![];
    walk(&o.root, &mut files)?;
    let read = files.len();
    let mut dropped = vec![];
    let mut images: Vec<PathBuf> = files
        .into_iter()
        .filter(|f| {
            let ok = is_image(f);
            if !ok {
                dropped.push((rel(&o.root, f), "not an image file extension".to_string()));
            }
            ok
        })
        .collect();
    let mut rng = StdRng::seed_from_u64(o.seed);
    // shuffle before sampling (the book sliced before shuffling, Appendix A.9)
    images.shuffle(&mut rng);
    if o.limit > 0 && images.len() > o.limit {
        for f in images.split_off(o.limit) {
            dropped.push((rel(&o.root, &f), format!("not sampled (--limit {})", o.limit)));
        }
    }
    let mut items = vec![];
    for f in images {
        let angles: Vec<u32> = if o.all_angles { ANGLES.to_vec() } else { vec![ANGLES[rng.gen_range(0..4)]] };
        for a in angles {
            let label = ANGLES.iter().position(|&x| x == a).expect("known angle") as i32;
            items.push(Item { key: format!("{}@{a}", rel(&o.root, &f)), source: Source::FileRotated(f.clone(), a), label, boxes: vec![] });
        }
    }
    let splits = stratified_split(items, o.val_fraction, o.test_fraction, o.seed);
    Ok(Prepared { kind: "orientation".into(), labels: ANGLES.iter().map(|a| a.to_string()).collect(), splits, read, dropped, grayscale: false })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prepare::write;
    use crate::records::{PackOptions, RecordFile};
    use std::path::Path;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("dlcv-prep-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn png(path: &Path, w: u32, h: u32, value: u8) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        DynamicImage::ImageRgb8(image::RgbImage::from_pixel(w, h, image::Rgb([value, value / 2, 7]))).save(path).unwrap();
    }

    #[test]
    fn folder_splits_by_class_skips_broken_images_and_reconciles() {
        let d = tmp("folder");
        let root = d.join("data");
        for i in 0..10 {
            png(&root.join(format!("cat/{i}.png")), 20, 10, 200);
        }
        for i in 0..6 {
            png(&root.join(format!("dog/{i}.png")), 20, 10, 100);
        }
        std::fs::write(root.join("dog/broken.jpg"), b"\xff\xd8\xff not really").unwrap();
        std::fs::write(root.join("dog/notes.txt"), b"hi").unwrap();
        let p = build_folder(&FolderOptions { root: root.clone(), val_fraction: 0.2, test_fraction: 0.2, seed: 1 }).unwrap();
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

    #[test]
    fn fer2013_rows_map_to_splits_and_bad_rows_are_dropped() {
        let d = tmp("fer");
        let px = |v: u8| vec![v.to_string(); 2304].join(" ");
        let csv = format!(
            "emotion,pixels,Usage\n0,{},Training\n1,{},Training\n3,{},PrivateTest\n6,{},PublicTest\n9,{},Training\n2,1 2 3,Training\n4,{},Elsewhere\n",
            px(10),
            px(20),
            px(30),
            px(40),
            px(50),
            px(60)
        );
        let f = d.join("fer2013.csv");
        std::fs::write(&f, csv).unwrap();
        let p = build_fer2013(&Fer2013Options { csv: f.clone(), merge_disgust: false }).unwrap();
        assert_eq!(p.labels.len(), 7);
        assert_eq!((p.read, p.dropped.len()), (7, 3));
        assert!(p.dropped.iter().any(|(at, why)| at == "fer2013.csv:6" && why.contains("not in 0..=6")), "{:?}", p.dropped);
        assert!(p.dropped.iter().any(|(_, why)| why.contains("3 pixels")));
        let sizes: Vec<(String, usize)> = p.splits.iter().map(|s| (s.name.clone(), s.items.len())).collect();
        assert_eq!(sizes, [("train".into(), 2), ("val".into(), 1), ("test".into(), 1)]);
        let merged = build_fer2013(&Fer2013Options { csv: f, merge_disgust: true }).unwrap();
        assert_eq!(merged.labels, ["angry", "fear", "happy", "sad", "surprise", "neutral"]);
        let train_labels: Vec<i32> = merged.splits[0].items.iter().map(|i| i.label).collect();
        assert_eq!(train_labels, [0, 0], "disgust merged into angry");
        assert_eq!(merged.splits[2].items[0].label, 5, "neutral shifts from 6 to 5");
        let out = d.join("out");
        let r = write(merged, &out, &PackOptions { short_side: 0, jpeg_quality: 0, grayscale: true }, false).unwrap();
        assert!((r.train_means[0] - 15.0).abs() < 1e-9, "{:?}", r.train_means);
        let rec = RecordFile::open(&out.join("val.rec")).unwrap().read(0).unwrap();
        let img = image::load_from_memory(&rec.image).unwrap();
        assert_eq!((img.width(), img.height(), img.to_luma8().get_pixel(5, 5).0[0]), (48, 48, 30));
    }

    #[test]
    fn orientation_rotates_and_labels_by_angle() {
        let d = tmp("orient");
        // a 30x20 image whose top-left pixel is bright: its rotations are told apart by shape and corner
        for i in 0..8 {
            let mut img = image::RgbImage::from_pixel(30, 20, image::Rgb([0, 0, 0]));
            img.put_pixel(0, 0, image::Rgb([255, 255, 255]));
            let p = d.join(format!("imgs/sub/{i}.png"));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            img.save(&p).unwrap();
        }
        let p = build_orientation(&OrientationOptions { root: d.join("imgs"), limit: 0, all_angles: true, val_fraction: 0.0, test_fraction: 0.25, seed: 3 })
            .unwrap();
        assert_eq!(p.labels, ["0", "90", "180", "270"]);
        let out = d.join("out");
        let r = write(p, &out, &PackOptions { short_side: 0, jpeg_quality: 0, grayscale: false }, false).unwrap();
        assert_eq!(r.written(), 32);
        let f = RecordFile::open(&out.join("train.rec")).unwrap();
        for i in 0..f.len() {
            let rec = f.read(i).unwrap();
            let img = image::load_from_memory(&rec.image).unwrap().to_rgb8();
            let (w, h) = img.dimensions();
            let bright = |x: u32, y: u32| img.get_pixel(x, y).0[0] == 255;
            let expected = match rec.label {
                0 => (w, h) == (30, 20) && bright(0, 0),
                1 => (w, h) == (20, 30) && bright(19, 0), // 90 clockwise: top-left goes to top-right
                2 => (w, h) == (30, 20) && bright(29, 19),
                3 => (w, h) == (20, 30) && bright(0, 29),
                other => panic!("label {other}"),
            };
            assert!(expected, "record {i} label {} is not rotated as labelled", rec.label);
        }
        let sampled =
            build_orientation(&OrientationOptions { root: d.join("imgs"), limit: 5, all_angles: false, val_fraction: 0.0, test_fraction: 0.0, seed: 3 })
                .unwrap();
        assert_eq!(sampled.splits.iter().map(|s| s.items.len()).sum::<usize>(), 5);
        assert_eq!(sampled.dropped.len(), 3);
    }
}
