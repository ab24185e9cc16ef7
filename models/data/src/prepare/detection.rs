//! Object-detection datasets: one [`Item`] per IMAGE with all its kept boxes; `label` is -1 (there is no
//! image-level class) and the class of each object is in its [`BoundingBox`].
//!
//! * [`build_lisa`] — the LISA traffic signs (book ch. 15): `ROOT/allAnnotations.csv`, semicolon-separated,
//!   split at image level (75 % train / 25 % test by default) with a seed.
//! * [`build_dlib_xml`] — dlib imglab XML files such as the front-and-rear vehicles (book ch. 17):
//!   `training.xml` and optionally `testing.xml`, a predefined split.
//!
//! Counting: for both builders an entry is a BOX (an annotation row for LISA, a `<box>` element for
//! dlib), so `read` = boxes kept over all splits + `dropped.len()`. An image whose boxes were all dropped
//! is dropped too; it adds no entry of its own, instead the reasons of its dropped boxes end with
//! [`IMAGE_DROPPED`]. Images are not decoded here; only the dlib builder reads the PNG/JPEG header of an
//! image to learn its size for clipping ([`image_dimensions`]).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use crate::records::{BoundingBox, Item, Source};
use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::{Prepared, Split};

/// Appended to the reason of every dropped box of an image that kept no box at all.
pub const IMAGE_DROPPED: &str = " (the image has no kept box and is dropped)";

/// The classes the book keeps from LISA.
pub const LISA_BOOK_CLASSES: [&str; 3] = ["stop", "pedestrianCrossing", "signalAhead"];

const LISA_CSV: &str = "allAnnotations.csv";

/// The boxes gathered for one image, before it becomes an [`Item`].
struct ImageAcc {
    key: String,
    path: PathBuf,
    boxes: Vec<BoundingBox>,
    /// Indices into the builder's `dropped` of this image's dropped boxes.
    dropped: Vec<usize>,
    /// Whether the annotations listed any box for this image (kept or not).
    had_boxes: bool,
}

/// Ordered collection of images, merged by key.
#[derive(Default)]
struct Images {
    list: Vec<ImageAcc>,
    by_key: HashMap<String, usize>,
}

impl Images {
    fn get(&mut self, key: &str, path: PathBuf) -> &mut ImageAcc {
        let i = match self.by_key.get(key) {
            Some(&i) => i,
            None => {
                self.list.push(ImageAcc { key: key.to_string(), path, boxes: vec![], dropped: vec![], had_boxes: false });
                self.by_key.insert(key.to_string(), self.list.len() - 1);
                self.list.len() - 1
            }
        };
        &mut self.list[i]
    }

    /// Items of the images that kept a box (or never had one); marks the reasons of the others.
    fn finish(self, dropped: &mut [(String, String)]) -> Vec<Item> {
        let mut items = vec![];
        for img in self.list {
            if img.boxes.is_empty() && img.had_boxes {
                for &i in &img.dropped {
                    dropped[i].1.push_str(IMAGE_DROPPED);
                }
            } else {
                items.push(Item { source: Source::File(img.path), key: img.key, label: -1, boxes: img.boxes });
            }
        }
        items
    }
}

fn drop_box(dropped: &mut Vec<(String, String)>, img: Option<&mut ImageAcc>, at: String, why: String) {
    if let Some(img) = img {
        img.dropped.push(dropped.len());
        img.had_boxes = true;
    }
    dropped.push((at, why));
}

fn splits_of(parts: Vec<(&str, Vec<Item>)>) -> Vec<Split> {
    parts.into_iter().filter(|(_, v)| !v.is_empty()).map(|(name, items)| Split { name: name.into(), items }).collect()
}

// ---------------------------------------------------------------------------------------------------- LISA

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
fn parse_lisa_row(rec: &csv::StringRecord) -> std::result::Result<(String, [f32; 4]), String> {
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
pub fn build_lisa(o: &LisaOptions) -> Result<Prepared> {
    if !(0.0..=1.0).contains(&o.test_fraction) {
        bail!("test fraction {} is not between 0 and 1", o.test_fraction);
    }
    let mut seen = BTreeSet::new();
    for c in &o.classes {
        if c.trim().is_empty() || !seen.insert(c.as_str()) {
            bail!("class filter {:?}: '{c}' is empty or listed twice", o.classes);
        }
    }
    let file = o.root.join(LISA_CSV);
    let mut reader =
        csv::ReaderBuilder::new().delimiter(b';').has_headers(true).flexible(true).from_path(&file).with_context(|| format!("reading {}", file.display()))?;

    let mut read = 0;
    let mut dropped = vec![];
    let mut images = Images::default();
    let mut rows = vec![];
    for rec in reader.records() {
        let rec = rec.with_context(|| format!("reading {}", file.display()))?;
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

// ------------------------------------------------------------------------------------------------- dlib XML

/// Options of [`build_dlib_xml`].
#[derive(Debug, Clone)]
pub struct DlibXmlOptions {
    /// `training.xml`; its labels define the classes.
    pub train_xml: PathBuf,
    /// `testing.xml`, the predefined test split.
    pub test_xml: Option<PathBuf>,
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned())
}

fn element<'a, 'i>(n: roxmltree::Node<'a, 'i>, name: &str) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> + 'a {
    let name = name.to_string();
    n.children().filter(move |c| c.is_element() && c.tag_name().name() == name)
}

fn box_label(b: roxmltree::Node) -> Option<String> {
    element(b, "label").next().and_then(|l| l.text()).map(str::trim).filter(|t| !t.is_empty()).map(str::to_string)
}

fn is_ignored(b: roxmltree::Node) -> bool {
    b.attribute("ignore").is_some_and(|v| v.trim() == "1")
}

/// Reads and parses one XML file and returns its text (the document borrows it).
fn read_xml(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn parse_xml<'i>(path: &Path, text: &'i str) -> Result<roxmltree::Document<'i>> {
    // roxmltree's messages end with the position, "at ROW:COL".
    let doc = roxmltree::Document::parse(text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let root = doc.root_element();
    if root.tag_name().name() != "dataset" {
        bail!("{}: the root element is <{}>, expected <dataset>", path.display(), root.tag_name().name());
    }
    if element(root, "images").next().is_none() {
        bail!("{}: <dataset> has no <images> element", path.display());
    }
    Ok(doc)
}

fn image_nodes<'a, 'i>(doc: &'a roxmltree::Document<'i>) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> + 'a {
    element(doc.root_element(), "images").flat_map(|imgs| element(imgs, "image"))
}

/// The image size from `width`/`height` attributes of `<image>` when both are positive integers, else from
/// the file's header.
fn dlib_image_size(node: roxmltree::Node, path: &Path) -> std::result::Result<(u32, u32), String> {
    if !path.is_file() {
        return Err(format!("image file missing: {}", path.display()));
    }
    let attr = |k: &str| node.attribute(k).and_then(|v: &str| v.trim().parse::<u32>().ok()).filter(|&v| v > 0);
    if let (Some(w), Some(h)) = (attr("width"), attr("height")) {
        return Ok((w, h));
    }
    image_dimensions(path).map_err(|e| format!("cannot read the size of {}: {e}", path.display()))
}

/// The box of a `<box>` element clipped to a `w`×`h` image, or why it is dropped.
fn dlib_box(b: roxmltree::Node, class: u32, (w, h): (u32, u32)) -> std::result::Result<BoundingBox, String> {
    let mut v = [0f64; 4];
    for (k, name) in ["left", "top", "width", "height"].iter().enumerate() {
        let s = b.attribute(*name).ok_or_else(|| format!("no '{name}' attribute"))?;
        v[k] = s.trim().parse::<f64>().ok().filter(|x| x.is_finite()).ok_or_else(|| format!("{name} '{s}' is not a number"))?;
    }
    let [left, top, width, height] = v;
    let x0 = left.max(0.0);
    let y0 = top.max(0.0);
    let x1 = (left + width).min(w as f64);
    let y1 = (top + height).min(h as f64);
    if x1 <= x0 || y1 <= y0 {
        return Err(format!("degenerate box (left {left}, top {top}, width {width}, height {height}) in a {w}x{h} image"));
    }
    Ok(BoundingBox { class, x0: x0 as f32, y0: y0 as f32, x1: x1 as f32, y1: y1 as f32 })
}

/// The items of one XML file; counts its boxes into `read` and the dropped ones into `dropped`.
fn dlib_split(
    xml: &Path,
    doc: &roxmltree::Document,
    labels: &[String],
    unlabeled: Option<u32>,
    read: &mut usize,
    dropped: &mut Vec<(String, String)>,
) -> Vec<Item> {
    let dir = xml.parent().unwrap_or(Path::new(""));
    let name = file_name(xml);
    let mut images = Images::default();
    for node in image_nodes(doc) {
        let boxes: Vec<_> = element(node, "box").collect();
        *read += boxes.len();
        let at = |n: roxmltree::Node| format!("{name}:{}", doc.text_pos_at(n.range().start).row);
        let Some(file) = node.attribute("file").map(str::trim).filter(|f| !f.is_empty()) else {
            for b in boxes {
                drop_box(dropped, None, at(b), "its <image> has no file attribute".into());
            }
            continue;
        };
        let path = dir.join(file);
        if boxes.is_empty() {
            // an image annotated with no object: kept as a negative when it exists
            if path.is_file() {
                images.get(file, path);
            }
            continue;
        }
        let size = dlib_image_size(node, &path);
        let img = images.get(file, path);
        img.had_boxes = true;
        for b in boxes {
            let class = match box_label(b) {
                Some(l) => {
                    labels.iter().position(|x| *x == l).map(|c| c as u32).ok_or_else(|| format!("label '{l}' is not one of the training labels {labels:?}"))
                }
                None => unlabeled.ok_or_else(|| "box has no <label>".to_string()),
            };
            let kept = if is_ignored(b) { Err("ignore flag".to_string()) } else { size.clone().and_then(|s| class.and_then(|c| dlib_box(b, c, s))) };
            match kept {
                Ok(bb) => img.boxes.push(bb),
                Err(why) => drop_box(dropped, Some(&mut *img), at(b), why),
            }
        }
    }
    images.finish(dropped)
}

/// dlib imglab XML (`<dataset><images><image file=…><box top left width height [ignore]><label>…`) →
/// "train" (and "test" when `test_xml` is given) splits of images with their boxes.
///
/// Class ids index the sorted labels of the training file's non-ignored boxes; when that file labels no
/// box at all, every unlabeled box is class 0, "object". Boxes are `x0 = left`, `y0 = top`,
/// `x1 = left + width`, `y1 = top + height`, clipped to the image. `read` counts `<box>` elements; each
/// dropped box is `("FILE.xml:LINE", reason)` (ignore flag, degenerate after clipping, unknown or
/// missing label, missing or unreadable image), so `read` = boxes kept + `dropped.len()`. An image listed
/// without boxes is kept (a negative) when its file exists.
pub fn build_dlib_xml(o: &DlibXmlOptions) -> Result<Prepared> {
    let train_text = read_xml(&o.train_xml)?;
    let train_doc = parse_xml(&o.train_xml, &train_text)?;
    let test_text = o.test_xml.as_deref().map(read_xml).transpose()?;
    let test_doc = match (&o.test_xml, &test_text) {
        (Some(p), Some(t)) => Some(parse_xml(p, t)?),
        (Some(_), None) | (None, Some(_)) | (None, None) => None,
    };

    let train_boxes = || image_nodes(&train_doc).flat_map(|i| element(i, "box"));
    let mut labels: Vec<String> = train_boxes().filter(|b| !is_ignored(*b)).filter_map(box_label).collect::<BTreeSet<_>>().into_iter().collect();
    let unlabeled = if train_boxes().all(|b| box_label(b).is_none()) {
        labels = vec!["object".into()];
        Some(0)
    } else {
        None
    };

    let mut read = 0;
    let mut dropped = vec![];
    let train = dlib_split(&o.train_xml, &train_doc, &labels, unlabeled, &mut read, &mut dropped);
    let test = match (&o.test_xml, &test_doc) {
        (Some(p), Some(d)) => dlib_split(p, d, &labels, unlabeled, &mut read, &mut dropped),
        (Some(_), None) | (None, Some(_)) | (None, None) => vec![],
    };
    Ok(Prepared { kind: "dlib_xml".into(), labels, splits: splits_of(vec![("train", train), ("test", test)]), read, dropped, grayscale: false })
}

/// Width and height of an image file, from its header only (the `image` crate reads the header of
/// every format it decodes).
pub fn image_dimensions(path: &Path) -> std::result::Result<(u32, u32), String> {
    if !path.is_file() {
        return Err("file missing".into());
    }
    match image::image_dimensions(path) {
        Ok((0, _)) | Ok((_, 0)) => Err("image size 0".into()),
        Ok(wh) => Ok(wh),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("trainer-detection-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A real encoded image of `w`x`h` in `format`.
    fn encoded(w: u32, h: u32, format: image::ImageFormat) -> Vec<u8> {
        let mut b = std::io::Cursor::new(vec![]);
        image::RgbImage::from_pixel(w, h, image::Rgb([90, 120, 30])).write_to(&mut b, format).unwrap();
        b.into_inner()
    }

    fn png(w: u32, h: u32) -> Vec<u8> {
        encoded(w, h, image::ImageFormat::Png)
    }

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        encoded(w, h, image::ImageFormat::Jpeg)
    }

    fn split<'a>(p: &'a Prepared, name: &str) -> &'a [Item] {
        p.splits.iter().find(|s| s.name == name).map_or(&[], |s| s.items.as_slice())
    }

    fn kept(p: &Prepared) -> usize {
        p.splits.iter().flat_map(|s| &s.items).map(|i| i.boxes.len()).sum()
    }

    fn bb(class: u32, x0: f32, y0: f32, x1: f32, y1: f32) -> BoundingBox {
        BoundingBox { class, x0, y0, x1, y1 }
    }

    const LISA_HEADER: &str = "Filename;Annotation tag;Upper left corner X;Upper left corner Y;Lower right corner X;Lower right corner Y;Occluded,On another road;Origin file;Origin frame number;Origin track;Origin track frame number\n";

    #[test]
    fn dimensions_from_image_headers() {
        let d = tmp("dims");
        let img = image::RgbImage::from_pixel(5, 6, image::Rgb([1, 2, 3]));
        img.save(d.join("a.jpg")).unwrap();
        img.save(d.join("b.png")).unwrap();
        assert_eq!(image_dimensions(&d.join("a.jpg")), Ok((5, 6)));
        assert_eq!(image_dimensions(&d.join("b.png")), Ok((5, 6)));
        assert_eq!(image_dimensions(&d.join("none.png")), Err("file missing".into()));
        std::fs::write(d.join("c.jpg"), b"\xff\xd8 not really").unwrap();
        assert!(image_dimensions(&d.join("c.jpg")).is_err());
    }

    #[test]
    fn lisa_filter_classes_boxes_and_drops() {
        let root = tmp("lisa_filter");
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
        let root = tmp("lisa_all");
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
        let root = tmp("lisa_split");
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
        let root = tmp("lisa_err");
        let e = build_lisa(&LisaOptions::book(&root)).err().unwrap();
        assert!(format!("{e:#}").contains("allAnnotations.csv"), "{e:#}");
        let e = build_lisa(&LisaOptions { test_fraction: 1.5, ..LisaOptions::book(&root) }).err().unwrap();
        assert!(e.to_string().contains("1.5"));
        let e = build_lisa(&LisaOptions { classes: vec!["stop".into(), "stop".into()], ..LisaOptions::book(&root) }).err().unwrap();
        assert!(e.to_string().contains("twice"));
    }

    const TRAIN_XML: &str = r#"<?xml version='1.0' encoding='ISO-8859-1'?>
<?xml-stylesheet type='text/xsl' href='image_metadata_stylesheet.xsl'?>
<dataset>
<name>vehicles</name>
<images>
  <image file='img/a.png'>
    <box top='10' left='20' width='30' height='40'><label>rear</label></box>
    <box top='70' left='90' width='30' height='30'><label>front</label></box>
    <box top='-5' left='-10' width='20' height='15'><label>front</label></box>
    <box top='0' left='0' width='10' height='10' ignore='1'><label>rear</label></box>
    <box top='5' left='120' width='10' height='10'><label>rear</label></box>
  </image>
  <image file='img/b.jpg'>
    <box top='1' left='2' width='0' height='5'><label>rear</label></box>
    <box top='40' left='60' width='10' height='20'>
      <label>rear</label>
      <part name='0' x='1' y='2'/>
    </box>
  </image>
  <image file='img/missing.jpg'>
    <box top='1' left='2' width='3' height='4'><label>rear</label></box>
    <box top='1' left='2' width='3' height='4'><label>front</label></box>
  </image>
  <image file='img/all_ignored.png'>
    <box top='1' left='2' width='3' height='4' ignore='1'><label>front</label></box>
  </image>
  <image file='img/sized.bin' width='50' height='50'>
    <box top='40' left='40' width='20' height='20'><label>rear</label></box>
  </image>
  <image file='img/negative.png'/>
</images>
</dataset>
"#;

    const TEST_XML: &str = "<dataset><images>\n<image file='img/b.jpg'>\n<box top='0' left='0' width='64' height='48'><label>rear</label></box>\n<box top='0' left='0' width='5' height='5'><label>bus</label></box>\n</image>\n</images></dataset>\n";

    #[test]
    fn dlib_boxes_clipping_ignore_and_reconciliation() {
        let d = tmp("dlib");
        std::fs::create_dir_all(d.join("img")).unwrap();
        std::fs::write(d.join("img/a.png"), png(100, 80)).unwrap();
        std::fs::write(d.join("img/b.jpg"), jpeg(64, 48)).unwrap();
        std::fs::write(d.join("img/all_ignored.png"), png(10, 10)).unwrap();
        std::fs::write(d.join("img/sized.bin"), b"not an image").unwrap();
        std::fs::write(d.join("img/negative.png"), png(10, 10)).unwrap();
        std::fs::write(d.join("training.xml"), TRAIN_XML).unwrap();
        std::fs::write(d.join("testing.xml"), TEST_XML).unwrap();
        let p = build_dlib_xml(&DlibXmlOptions { train_xml: d.join("training.xml"), test_xml: Some(d.join("testing.xml")) }).unwrap();
        assert_eq!(p.kind, "dlib_xml");
        assert_eq!(p.labels, ["front", "rear"]);
        assert_eq!(p.read, 13);
        assert_eq!(p.read, kept(&p) + p.dropped.len());

        let train = split(&p, "train");
        let keys: Vec<&str> = train.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["img/a.png", "img/b.jpg", "img/sized.bin", "img/negative.png"]);
        assert!(matches!(&train[0].source, Source::File(f) if *f == d.join("img/a.png")));
        assert!(train.iter().all(|i| i.label == -1));
        // left/top/width/height → corners, clipped to 100x80
        assert_eq!(train[0].boxes, [bb(1, 20., 10., 50., 50.), bb(0, 90., 70., 100., 80.), bb(0, 0., 0., 10., 10.)]);
        assert_eq!(train[1].boxes, [bb(1, 60., 40., 64., 48.)]);
        assert_eq!(train[2].boxes, [bb(1, 40., 40., 50., 50.)]);
        assert!(train[3].boxes.is_empty());
        let test = split(&p, "test");
        assert_eq!(test.len(), 1);
        assert_eq!(test[0].boxes, [bb(1, 0., 0., 64., 48.)]);

        let dropped: Vec<(&str, &str)> = p.dropped.iter().map(|(a, w)| (a.as_str(), w.as_str())).collect();
        assert_eq!(dropped[0], ("training.xml:10", "ignore flag"));
        assert_eq!(dropped[1].0, "training.xml:11");
        assert!(dropped[1].1.starts_with("degenerate box (left 120"), "{}", dropped[1].1);
        assert!(dropped[2].1.starts_with("degenerate box") && dropped[2].0 == "training.xml:14");
        for k in [3, 4] {
            assert!(dropped[k].1.starts_with("image file missing") && dropped[k].1.ends_with(IMAGE_DROPPED), "{}", dropped[k].1);
        }
        assert_eq!(dropped[5], ("training.xml:25", &*format!("ignore flag{IMAGE_DROPPED}")));
        assert_eq!(dropped[6].0, "testing.xml:4");
        assert!(dropped[6].1.starts_with("label 'bus' is not one of the training labels"));
        assert_eq!(dropped.len(), 7);
    }

    #[test]
    fn dlib_unlabelled_dataset_is_one_class_and_train_only() {
        let d = tmp("dlib_single");
        std::fs::write(d.join("f.png"), png(20, 20)).unwrap();
        std::fs::write(d.join("faces.xml"), "<dataset><images><image file='f.png'><box top='1' left='2' width='3' height='4'/></image></images></dataset>")
            .unwrap();
        let p = build_dlib_xml(&DlibXmlOptions { train_xml: d.join("faces.xml"), test_xml: None }).unwrap();
        assert_eq!(p.labels, ["object"]);
        assert_eq!(p.splits.len(), 1);
        assert_eq!(split(&p, "train")[0].boxes, [bb(0, 2., 1., 5., 5.)]);
    }

    #[test]
    fn dlib_errors_name_the_file() {
        let d = tmp("dlib_err");
        std::fs::write(d.join("broken.xml"), "<dataset>\n<images>\n<image file='a.png'>\n</images>\n</dataset>").unwrap();
        let e = build_dlib_xml(&DlibXmlOptions { train_xml: d.join("broken.xml"), test_xml: None }).err().unwrap().to_string();
        assert!(e.contains("broken.xml") && e.contains("4:"), "{e}");
        std::fs::write(d.join("other.xml"), "<annotation/>").unwrap();
        let e = build_dlib_xml(&DlibXmlOptions { train_xml: d.join("other.xml"), test_xml: None }).err().unwrap().to_string();
        assert!(e.contains("other.xml") && e.contains("<annotation>"), "{e}");
        std::fs::write(d.join("ok.xml"), "<dataset><images/></dataset>").unwrap();
        let e = build_dlib_xml(&DlibXmlOptions { train_xml: d.join("ok.xml"), test_xml: Some(d.join("nope.xml")) }).err().unwrap();
        assert!(format!("{e:#}").contains("nope.xml"), "{e:#}");
    }
}
