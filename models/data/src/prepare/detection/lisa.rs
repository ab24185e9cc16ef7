//! The LISA traffic signs (book ch. 15): `ROOT/allAnnotations.csv`, semicolon-separated, one row per box,
//! split at image level with a seed.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::records::BoundingBox;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::{drop_box, splits_of, Images};
use crate::prepare::error::csv_err;
use crate::prepare::{PrepareError, Prepared};

/// The classes the book keeps from LISA.
pub const LISA_BOOK_CLASSES: [&str; 3] = ["stop", "pedestrianCrossing", "signalAhead"];

const LISA_CSV: &str = "allAnnotations.csv";

/// Options of [`build_lisa`].
#[derive(Debug, Clone)]
pub struct LisaOptions {
    /// The folder holding `allAnnotations.csv`; image paths are relative to it.
    pub root: PathBuf,
    /// Classes to keep, class id = index in this list; empty keeps every class (ids = sorted names).
    pub classes: Vec<String>,
    /// Share of the IMAGES that go to the test split.
    pub test_fraction: f64,
    pub seed: u64,
}

impl LisaOptions {
    /// The book's setup: stop, pedestrianCrossing and signalAhead, 25 % of the images for testing.
    pub fn book(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into(), classes: LISA_BOOK_CLASSES.iter().map(|c| c.to_string()).collect(), test_fraction: 0.25, seed: 42 }
    }
}

/// One annotation row that parsed and has a valid box.
struct LisaRow {
    at: String,
    image: String,
    class: String,
    corners: [f32; 4],
}

/// Parses the fields of one row: image path, tag, upper-left x, y, lower-right x, y, ….
fn parse_lisa_row(rec: &csv::StringRecord) -> Result<(String, [f32; 4]), String> {
    if rec.len() < 6 {
        return Err(format!("{} fields, expected at least 6 (path;tag;x0;y0;x1;y1)", rec.len()));
    }
    let class = rec[1].trim();
    if class.is_empty() {
        return Err("empty annotation tag".into());
    }
    let mut c = [0f32; 4];
    for (k, name) in ["upper-left x", "upper-left y", "lower-right x", "lower-right y"].iter().enumerate() {
        let s = rec[2 + k].trim();
        c[k] = s.parse::<f32>().ok().filter(|v| v.is_finite()).ok_or_else(|| format!("{name} '{s}' is not a number"))?;
    }
    if c[2] <= c[0] || c[3] <= c[1] {
        return Err(format!("degenerate box ({}, {})–({}, {})", c[0], c[1], c[2], c[3]));
    }
    Ok((class.to_string(), c))
}

/// LISA traffic signs: `ROOT/allAnnotations.csv` → "train" and "test" splits of images with their boxes.
///
/// `read` counts annotation rows; each dropped row is `("allAnnotations.csv:LINE", reason)` (a malformed
/// row, a degenerate box, a class outside the filter), so `read` = boxes kept + `dropped.len()`.
pub fn build_lisa(o: &LisaOptions) -> Result<Prepared, PrepareError> {
    if !(0.0..=1.0).contains(&o.test_fraction) {
        return Err(PrepareError::Fraction { option: "test fraction", value: o.test_fraction });
    }
    let mut seen = BTreeSet::new();
    for c in &o.classes {
        if c.trim().is_empty() || !seen.insert(c.as_str()) {
            return Err(PrepareError::ClassFilter { classes: o.classes.clone(), class: c.clone() });
        }
    }
    let file = o.root.join(LISA_CSV);
    let mut reader = csv::ReaderBuilder::new().delimiter(b';').has_headers(true).flexible(true).from_path(&file).map_err(csv_err("reading", &file))?;

    let mut read = 0;
    let mut dropped = vec![];
    let mut images = Images::default();
    let mut rows = vec![];
    for rec in reader.records() {
        let rec = rec.map_err(csv_err("reading", &file))?;
        read += 1;
        let line = rec.position().map_or(read + 1, |p| p.line() as usize);
        let at = format!("{LISA_CSV}:{line}");
        let image = rec.get(0).map(str::trim).unwrap_or("").to_string();
        if image.is_empty() {
            drop_box(&mut dropped, None, at, "empty image path".into());
            continue;
        }
        match parse_lisa_row(&rec) {
            Ok((class, corners)) => rows.push(LisaRow { at, image, class, corners }),
            Err(why) => {
                let img = images.get(&image, o.root.join(&image));
                drop_box(&mut dropped, Some(img), at, why);
            }
        }
    }

    let labels: Vec<String> =
        if o.classes.is_empty() { rows.iter().map(|r| r.class.clone()).collect::<BTreeSet<_>>().into_iter().collect() } else { o.classes.clone() };
    for r in rows {
        let img = images.get(&r.image, o.root.join(&r.image));
        match labels.iter().position(|l| *l == r.class) {
            Some(class) => {
                let [x0, y0, x1, y1] = r.corners;
                img.boxes.push(BoundingBox { class: class as u32, x0, y0, x1, y1 });
                img.had_boxes = true;
            }
            None => {
                let why = format!("class '{}' is not in the class filter {:?}", r.class, labels);
                drop_box(&mut dropped, Some(img), r.at, why);
            }
        }
    }

    let mut items = images.finish(&mut dropped);
    items.sort_by(|a, b| a.key.cmp(&b.key));
    items.shuffle(&mut StdRng::seed_from_u64(o.seed));
    let n_test = ((items.len() as f64 * o.test_fraction).round() as usize).min(items.len());
    let train = items.split_off(n_test);
    Ok(Prepared { kind: "lisa".into(), labels, splits: splits_of(vec![("train", train), ("test", items)]), read, dropped, grayscale: false })
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::IMAGE_DROPPED;
    use super::*;
    use crate::records::Source;

    const LISA_HEADER: &str = "Filename;Annotation tag;Upper left corner X;Upper left corner Y;Lower right corner X;Lower right corner Y;Occluded,On another road;Origin file;Origin frame number;Origin track;Origin track frame number\n";
    #[test]
    fn lisa_filter_classes_boxes_and_drops() {
        let scratch = tempfile::tempdir().unwrap();
        let root = scratch.path().to_path_buf();
        let csv = format!(
            "{LISA_HEADER}\
             a/1.png;stop;10;20;30;40;0,0;x;1;x;1\n\
             a/1.png;signalAhead;50;60;70;80;0,0;x;1;x;1\n\
             a/2.png;yield;1;2;3;4;0,0;x;1;x;1\n\
             a/3.png;pedestrianCrossing;5;5;5;9;0,0;x;1;x;1\n\
             a/3.png;pedestrianCrossing;5;6;7;8\n\
             a/4.png;stop;1;2\n\
             a/4.png;stop;1;two;3;4\n"
        );
        std::fs::write(root.join("allAnnotations.csv"), csv).unwrap();
        let p = build_lisa(&LisaOptions { test_fraction: 0.0, ..LisaOptions::book(&root) }).unwrap();
        assert_eq!(p.kind, "lisa");
        assert_eq!(p.labels, ["stop", "pedestrianCrossing", "signalAhead"]);
        assert_eq!(p.read, 7);
        assert_eq!(p.read, kept(&p) + p.dropped.len());
        let train = split(&p, "train");
        assert!(split(&p, "test").is_empty());
        let mut keys: Vec<&str> = train.iter().map(|i| i.key.as_str()).collect();
        keys.sort();
        assert_eq!(keys, ["a/1.png", "a/3.png"]);
        let one = train.iter().find(|i| i.key == "a/1.png").unwrap();
        assert_eq!(one.label, -1);
        assert_eq!(one.boxes, [bb(0, 10., 20., 30., 40.), bb(2, 50., 60., 70., 80.)]);
        assert!(matches!(&one.source, Source::File(f) if *f == root.join("a/1.png")));
        let three = train.iter().find(|i| i.key == "a/3.png").unwrap();
        assert_eq!(three.boxes, [bb(1, 5., 6., 7., 8.)]);

        let at: Vec<&str> = p.dropped.iter().map(|(a, _)| a.as_str()).collect();
        assert_eq!(at, ["allAnnotations.csv:5", "allAnnotations.csv:7", "allAnnotations.csv:8", "allAnnotations.csv:4"]);
        let why = |k: &str| p.dropped.iter().find(|(a, _)| a == k).unwrap().1.clone();
        assert!(why("allAnnotations.csv:4").starts_with("class 'yield' is not in the class filter"));
        assert!(why("allAnnotations.csv:4").ends_with(IMAGE_DROPPED));
        assert!(why("allAnnotations.csv:5").starts_with("degenerate box"));
        assert!(!why("allAnnotations.csv:5").ends_with(IMAGE_DROPPED), "a/3.png kept a box");
        assert!(why("allAnnotations.csv:7").contains("fields"));
        assert!(why("allAnnotations.csv:8").contains("'two' is not a number"));
        assert!(why("allAnnotations.csv:8").ends_with(IMAGE_DROPPED));
    }

    #[test]
    fn lisa_without_filter_uses_sorted_class_names() {
        let scratch = tempfile::tempdir().unwrap();
        let root = scratch.path().to_path_buf();
        let csv = format!("{LISA_HEADER}b.png;yield;1;2;3;4\na.png;stop;1;2;3;4\na.png;addedLane;0;0;9;9\n");
        std::fs::write(root.join("allAnnotations.csv"), csv).unwrap();
        let p = build_lisa(&LisaOptions { root, classes: vec![], test_fraction: 0.0, seed: 1 }).unwrap();
        assert_eq!(p.labels, ["addedLane", "stop", "yield"]);
        assert!(p.dropped.is_empty());
        let a = split(&p, "train").iter().find(|i| i.key == "a.png").unwrap();
        assert_eq!(a.boxes, [bb(1, 1., 2., 3., 4.), bb(0, 0., 0., 9., 9.)]);
    }

    #[test]
    fn lisa_splits_images_not_boxes_deterministically() {
        let scratch = tempfile::tempdir().unwrap();
        let root = scratch.path().to_path_buf();
        let mut csv = LISA_HEADER.to_string();
        let mut rows = 0;
        for i in 0..40 {
            for k in 0..(1 + i % 3) {
                csv.push_str(&format!("v/img{i:02}.png;{};{k};0;{};10\n", LISA_BOOK_CLASSES[k % 3], k + 5));
                rows += 1;
            }
        }
        std::fs::write(root.join("allAnnotations.csv"), csv).unwrap();
        let run = |seed| build_lisa(&LisaOptions { seed, ..LisaOptions::book(&root) }).unwrap();
        let keys = |p: &Prepared, s| split(p, s).iter().map(|i| i.key.clone()).collect::<Vec<_>>();
        let p = run(7);
        assert_eq!(p.read, rows);
        assert_eq!(kept(&p), rows);
        let (train, test) = (keys(&p, "train"), keys(&p, "test"));
        assert_eq!((train.len(), test.len()), (30, 10));
        assert!(train.iter().all(|k| !test.contains(k)), "an image in both splits");
        let mut all: Vec<_> = train.iter().chain(&test).cloned().collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 40);
        let again = run(7);
        assert_eq!((keys(&again, "train"), keys(&again, "test")), (train.clone(), test.clone()));
        let other = run(8);
        assert_ne!(keys(&other, "test"), test);
    }

    #[test]
    fn lisa_errors_name_the_file() {
        let scratch = tempfile::tempdir().unwrap();
        let root = scratch.path().to_path_buf();
        let e = build_lisa(&LisaOptions::book(&root)).err().unwrap();
        assert!(format!("{e:#}").contains("allAnnotations.csv"), "{e:#}");
        let e = build_lisa(&LisaOptions { test_fraction: 1.5, ..LisaOptions::book(&root) }).err().unwrap();
        assert!(e.to_string().contains("1.5"));
        let e = build_lisa(&LisaOptions { classes: vec!["stop".into(), "stop".into()], ..LisaOptions::book(&root) }).err().unwrap();
        assert!(e.to_string().contains("twice"));
    }
}
