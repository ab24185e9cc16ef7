//! `trainer prepare dlib-xml` on real imglab files: dlib's face-detection example set
//! (`examples/faces/training.xml` and `testing.xml`, PASCAL VOC photos with unlabelled face boxes),
//! extracted from Debian's dlib source package by scripts/dlib_faces.sh. What the records hold is checked
//! against the XML read here by plain text scanning (not the product's parser): which images, in which
//! order, at which size, and every box as `left, top, left + width, top + height`. The real files mark
//! no box ignored, so a copy with `ignore='1'` set on three boxes checks that those are dropped and counted.

use std::path::{Path, PathBuf};
use std::process::Command;

use data::image::GenericImageView;
use data::records::{BoundingBox, RecordFile};
use tests::{fresh_dir, repo_root, run_bin, s, text};

/// One `<box>` as the XML states it.
#[derive(Debug, Clone, PartialEq)]
struct XmlBox {
    top: f32,
    left: f32,
    width: f32,
    height: f32,
    ignore: bool,
    /// 1-based line of the `<box` in its file.
    line: usize,
}

/// One `<image>` with its boxes.
#[derive(Debug, Clone)]
struct XmlImage {
    file: String,
    width: u32,
    height: u32,
    boxes: Vec<XmlBox>,
}

/// The value of `name='…'` (or `"…"`) in the text of one tag.
fn attr<'t>(tag: &'t str, name: &str) -> Option<&'t str> {
    for q in ['\'', '"'] {
        let key = format!(" {name}={q}");
        if let Some(at) = tag.find(&key) {
            let rest = &tag[at + key.len()..];
            return rest.find(q).map(|end| &rest[..end]);
        }
    }
    None
}

fn num<T: std::str::FromStr>(tag: &str, name: &str) -> T {
    attr(tag, name).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no numeric {name} in {tag}"))
}

/// The images of an imglab file, by scanning its tags: the files are one tag per line, as imglab writes them.
fn scan(xml: &Path) -> Vec<XmlImage> {
    let body = std::fs::read_to_string(xml).unwrap();
    let mut images: Vec<XmlImage> = vec![];
    for (i, line) in body.lines().enumerate() {
        let tag = line.trim();
        if tag.starts_with("<image ") {
            let file = attr(tag, "file").unwrap_or_else(|| panic!("no file in {tag}")).to_string();
            images.push(XmlImage { file, width: num(tag, "width"), height: num(tag, "height"), boxes: vec![] });
        } else if tag.starts_with("<box ") {
            let b = XmlBox {
                top: num(tag, "top"),
                left: num(tag, "left"),
                width: num(tag, "width"),
                height: num(tag, "height"),
                ignore: attr(tag, "ignore") == Some("1"),
                line: i + 1,
            };
            images.last_mut().expect("a <box> inside an <image>").boxes.push(b);
        }
    }
    assert_eq!(images.len(), body.matches("<image ").count(), "{}: one <image> per line", xml.display());
    assert_eq!(images.iter().map(|i| i.boxes.len()).sum::<usize>(), body.matches("<box ").count(), "{}: one <box> per line", xml.display());
    images
}

/// What the product must make of a kept box: corners `left, top, left + width, top + height` (dlib's
/// rectangles are inclusive, the records' are not), clipped to the image, class 0 ("object").
fn expected(b: &XmlBox, w: u32, h: u32) -> BoundingBox {
    BoundingBox { class: 0, x0: b.left.max(0.0), y0: b.top.max(0.0), x1: (b.left + b.width).min(w as f32), y1: (b.top + b.height).min(h as f32) }
}

fn faces(dir: &Path) -> PathBuf {
    let o = Command::new("bash").arg(repo_root().join("scripts/dlib_faces.sh")).arg(dir).output().unwrap();
    let out = dir.join("faces");
    assert!(o.status.success() && out.join("training.xml").is_file() && out.join("testing.xml").is_file(), "{}", text(&o));
    out
}

fn prepare(args: &[&str]) -> serde_json::Value {
    let o = run_bin("trainer", &["prepare", "dlib-xml"].into_iter().chain(args.iter().copied()).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", text(&o));
    let out = args.iter().position(|a| *a == "--out").map(|i| PathBuf::from(args[i + 1])).unwrap();
    serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap()
}

/// Checks the record file of one split against the images the XML keeps: same order and keys, each
/// image decoding at the size the XML and the jpg's header give (--short-side 0), every kept box
/// exactly. Returns the number of boxes read back.
fn check_split(rec: &Path, faces: &Path, images: &[XmlImage]) -> usize {
    let kept: Vec<&XmlImage> = images.iter().filter(|i| i.boxes.iter().any(|b| !b.ignore)).collect();
    let f = RecordFile::open(rec).unwrap_or_else(|e| panic!("{}: {e}", rec.display()));
    assert_eq!(f.len(), kept.len(), "{}: one record per image with a kept box", rec.display());
    let mut boxes = 0;
    for (i, img) in kept.iter().enumerate() {
        let r = f.read(i).unwrap();
        assert_eq!(r.key, img.file, "record {i} of {}", rec.display());
        assert_eq!(r.label, -1, "{}: detection records have no image label", img.file);
        assert_eq!(data::image::image_dimensions(faces.join(&img.file)).unwrap(), (img.width, img.height), "{}: the XML's size is the jpg's", img.file);
        let pixels = data::image::load_from_memory(&r.image).unwrap_or_else(|e| panic!("{}: {e}", img.file));
        assert_eq!(pixels.dimensions(), (img.width, img.height), "{}: --short-side 0 keeps the size", img.file);
        let want: Vec<BoundingBox> = img.boxes.iter().filter(|b| !b.ignore).map(|b| expected(b, img.width, img.height)).collect();
        assert_eq!(r.boxes, want, "{}: boxes in XML order", img.file);
        boxes += r.boxes.len();
    }
    boxes
}

#[test]
fn prepare_dlib_xml_keeps_every_face_box_of_dlibs_example_set() {
    let scratch = fresh_dir("dlib-faces");
    let dir = scratch.path();
    let faces = faces(dir);
    let (train_xml, test_xml) = (faces.join("training.xml"), faces.join("testing.xml"));
    let (train, test) = (scan(&train_xml), scan(&test_xml));

    // dlib's example set as shipped: 4 + 5 photos, 18 + 25 boxes, none labelled, none ignored
    let count = |v: &[XmlImage]| v.iter().map(|i| i.boxes.len()).sum::<usize>();
    assert_eq!((train.len(), test.len(), count(&train), count(&test)), (4, 5, 18, 25));
    assert!(train.iter().chain(&test).flat_map(|i| &i.boxes).all(|b| !b.ignore));
    assert!(!std::fs::read_to_string(&train_xml).unwrap().contains("<label>"), "dlib's faces carry no labels");
    // the first box of the first training image, in full, so a misread XML cannot pass unnoticed
    assert_eq!((train[0].file.as_str(), train[0].width, train[0].height), ("2007_007763.jpg", 500, 375));
    assert_eq!(expected(&train[0].boxes[0], 500, 375), BoundingBox { class: 0, x0: 194.0, y0: 90.0, x1: 231.0, y1: 127.0 });

    let out = dir.join("prepared");
    let report = prepare(&[s(&train_xml), "--test-xml", s(&test_xml), "--out", s(&out), "--short-side", "0"]);
    assert_eq!(report["kind"], "dlib_xml");
    assert_eq!(report["read"], count(&train) + count(&test), "read counts <box> elements: {report}");
    assert_eq!(report["dropped"].as_array().map(Vec::len), Some(0), "every box lies inside its image: {report}");
    assert_eq!(report["short_side"], 0);
    assert_eq!(report["classes"], 1);
    // unlabelled boxes are one class, which the product names "object"
    assert_eq!(std::fs::read_to_string(out.join("labels.txt")).unwrap().lines().collect::<Vec<_>>(), ["object"]);
    for (split, images) in [("train", &train), ("test", &test)] {
        let r = report["splits"].as_array().unwrap().iter().find(|r| r["name"] == split).unwrap_or_else(|| panic!("no {split} split: {report}"));
        assert_eq!((&r["read"], &r["written"]), (&images.len().into(), &images.len().into()), "{r}");
        let lst = std::fs::read_to_string(out.join(format!("{split}.lst"))).unwrap();
        let keys: Vec<&str> = lst.lines().map(|l| l.rsplit('\t').next().unwrap()).collect();
        assert_eq!(keys, images.iter().map(|i| i.file.as_str()).collect::<Vec<_>>(), "{split}.lst");
        assert_eq!(check_split(&out.join(format!("{split}.rec")), &faces, images), count(images), "{split} boxes");
    }
}

#[test]
fn prepare_dlib_xml_drops_and_counts_ignored_face_boxes() {
    let scratch = fresh_dir("dlib-faces-ignore");
    let dir = scratch.path();
    let faces = faces(dir);
    // a copy of training.xml beside it (image paths are relative to the XML) with ignore='1' as imglab
    // writes it on the first box of 2007_007763.jpg and on both boxes of 2008_001009.jpg
    let original = std::fs::read_to_string(faces.join("training.xml")).unwrap();
    let (mut image, mut nth) = (String::new(), 0);
    let mut marked = String::new();
    for line in original.lines() {
        let t = line.trim();
        if t.starts_with("<image ") {
            (image, nth) = (attr(t, "file").unwrap().to_string(), 0);
        }
        let ignore = t.starts_with("<box ") && ((image == "2007_007763.jpg" && nth == 0) || image == "2008_001009.jpg");
        nth += usize::from(t.starts_with("<box "));
        marked.push_str(&if ignore { line.replacen("/>", " ignore='1'/>", 1) } else { line.to_string() });
        marked.push('\n');
    }
    let xml = faces.join("training_ignore.xml");
    std::fs::write(&xml, &marked).unwrap();
    let images = scan(&xml);
    let ignored: Vec<(&str, usize)> = images.iter().flat_map(|i| i.boxes.iter().filter(|b| b.ignore).map(|b| (i.file.as_str(), b.line))).collect();
    assert_eq!(ignored.iter().map(|(f, _)| *f).collect::<Vec<_>>(), ["2007_007763.jpg", "2008_001009.jpg", "2008_001009.jpg"]);

    let out = dir.join("prepared");
    let report = prepare(&[s(&xml), "--out", s(&out), "--short-side", "0", "--quality", "0"]);
    assert_eq!(report["read"], 18, "ignored boxes are read: {report}");
    let dropped = report["dropped"].as_array().unwrap();
    let got: Vec<(&str, &str)> = dropped.iter().map(|d| (d["item"].as_str().unwrap(), d["reason"].as_str().unwrap())).collect();
    let all_gone = format!("ignore flag{}", data::prepare::detection::IMAGE_DROPPED);
    let want: Vec<(String, &str)> = ignored
        .iter()
        .map(|(f, line)| (format!("training_ignore.xml:{line}"), if *f == "2008_001009.jpg" { all_gone.as_str() } else { "ignore flag" }))
        .collect();
    assert_eq!(got, want.iter().map(|(a, b)| (a.as_str(), *b)).collect::<Vec<_>>(), "each ignored box dropped with its line; {report}");
    let train = report["splits"].as_array().unwrap().iter().find(|r| r["name"] == "train").unwrap();
    assert_eq!((&train["read"], &train["written"]), (&3.into(), &3.into()), "the image whose boxes are all ignored is dropped: {train}");
    // 18 boxes read = 15 kept + 3 dropped
    assert_eq!(check_split(&out.join("train.rec"), &faces, &images), 15);
    assert_eq!(std::fs::read_to_string(out.join("labels.txt")).unwrap(), "object\n");
}

/// The book's sanity check before a long run: a detector must be able to learn a handful of real
/// photos by heart. ssd-tiny (RGB) on dlib's 4 training photos, no augmentation, then exported and
/// evaluated by ONNX Runtime on the same records: the colour path through trainer, exporter and runtime.
#[test]
fn ssd_tiny_overfits_dlibs_four_training_photos_and_the_export_agrees() {
    let scratch = fresh_dir("dlib-overfit");
    let dir = scratch.path();
    let faces = faces(dir);
    let out = dir.join("prepared");
    prepare(&[s(&faces.join("training.xml")), "--test-xml", s(&faces.join("testing.xml")), "--out", s(&out), "--short-side", "0"]);
    let (train, run) = (out.join("train.rec"), dir.join("run"));
    let config = dir.join("overfit.toml");
    std::fs::write(
        &config,
        format!(
            "[model]\nname = \"ssd-tiny\"\nin_channels = 3\n\n[data]\ntrain = \"{t}\"\nval = \"{t}\"\nmean = 85.0\nstd = 60.0\n\n\
             [train]\nbatch_size = 4\nepochs = 40\nlr = 0.003\nseed = 1\ndevice = \"cpu\"\nlog_every = 0\ncheckpoint_every = 40\nrun = \"{r}\"\n\n\
             [optimizer]\nname = \"adam\"\nweight_decay = 0.0\n\n[schedule]\nname = \"constant\"\n\n\
             [augment]\nflip = false\ncrop = false\nexpand = 1.0\nphotometric = false\n",
            t = s(&train),
            r = s(&run)
        ),
    )
    .unwrap();
    let o = run_bin("trainer", &["-q", "train", "--config", s(&config)]);
    assert!(o.status.success(), "{}", text(&o));
    let metrics: Vec<serde_json::Value> = std::fs::read_to_string(run.join("metrics-from-0000.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v.get("val").is_some())
        .collect();
    let map = |i: usize| metrics[i]["val"]["map"].as_f64().unwrap();
    assert_eq!(metrics.len(), 40);
    // it starts knowing nothing and ends knowing the 18 faces
    assert!(map(0) < 0.1 && map(39) >= 0.95, "mAP@0.5 {} after epoch 1, {} after 40", map(0), map(39));
    assert_eq!(metrics[39]["val"]["ap"][0]["objects"], 18);

    let onnx = dir.join("faces.onnx");
    let o = run_bin("exporter", &["export", "--run", s(&run), "--out", s(&onnx)]);
    assert!(o.status.success() && text(&o).contains("matched"), "{}", text(&o));
    let report = dir.join("eval.json");
    let o = run_bin("runtime", &["eval", "-m", s(&onnx), "--data", s(&train), "--json", s(&report)]);
    assert!(o.status.success(), "{}", text(&o));
    let ran: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert!((ran["map"].as_f64().unwrap() - map(39)).abs() < 1e-4, "runtime eval {} vs trainer {}", ran["map"], map(39));
    assert_eq!(ran["per_class"][0]["label"], "object");
}
