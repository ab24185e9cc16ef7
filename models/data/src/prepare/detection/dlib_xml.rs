//! dlib imglab XML files such as the front-and-rear vehicles (book ch. 17): `training.xml` and optionally
//! `testing.xml`, a predefined split; boxes are clipped to the image, whose size comes from the XML or
//! from the image header.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::records::{BoundingBox, Item};

use super::{drop_box, image_dimensions, splits_of, Images};
use crate::prepare::error::read_text;
use crate::prepare::{PrepareError, Prepared};

/// Options of [`build_dlib_xml`].
#[derive(Debug, Clone)]
pub struct DlibXmlOptions {
    /// `training.xml`; its labels define the classes.
    pub train_xml: PathBuf,
    /// `testing.xml`, the predefined test split.
    pub test_xml: Option<PathBuf>,
    /// The class name of unlabelled boxes when the training file labels none (default "object"; dlib's
    /// faces are "face", so that face detectors' classes match them by name).
    pub unlabelled: Option<String>,
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

/// Parses the text of one XML file (the document borrows it) and checks it is a dlib `<dataset>`.
fn parse_xml<'i>(path: &Path, text: &'i str) -> Result<roxmltree::Document<'i>, PrepareError> {
    let doc = roxmltree::Document::parse(text).map_err(|source| {
        let pos = source.pos();
        PrepareError::Xml { path: path.to_path_buf(), line: pos.row, column: pos.col, source }
    })?;
    let root = doc.root_element();
    let format = |reason: String| PrepareError::Format { path: path.to_path_buf(), reason };
    if root.tag_name().name() != "dataset" {
        return Err(format(format!("the root element is <{}>, expected <dataset>", root.tag_name().name())));
    }
    if element(root, "images").next().is_none() {
        return Err(format("<dataset> has no <images> element".into()));
    }
    Ok(doc)
}

fn image_nodes<'a, 'i>(doc: &'a roxmltree::Document<'i>) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> + 'a {
    element(doc.root_element(), "images").flat_map(|imgs| element(imgs, "image"))
}

/// The image size from `width`/`height` attributes of `<image>` when both are positive integers, else from
/// the file's header.
fn dlib_image_size(node: roxmltree::Node, path: &Path) -> Result<(u32, u32), String> {
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
fn dlib_box(b: roxmltree::Node, class: u32, (w, h): (u32, u32)) -> Result<BoundingBox, String> {
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
/// box at all, every unlabeled box is class 0, `unlabelled` (default "object"). Boxes are `x0 = left`, `y0 = top`,
/// `x1 = left + width`, `y1 = top + height`, clipped to the image. `read` counts `<box>` elements; each
/// dropped box is `("FILE.xml:LINE", reason)` (ignore flag, degenerate after clipping, unknown or
/// missing label, missing or unreadable image), so `read` = boxes kept + `dropped.len()`. An image listed
/// without boxes is kept (a negative) when its file exists.
pub fn build_dlib_xml(o: &DlibXmlOptions) -> Result<Prepared, PrepareError> {
    let train_text = read_text(&o.train_xml)?;
    let train_doc = parse_xml(&o.train_xml, &train_text)?;
    let test_text = o.test_xml.as_deref().map(read_text).transpose()?;
    let test_doc = match (&o.test_xml, &test_text) {
        (Some(p), Some(t)) => Some(parse_xml(p, t)?),
        (Some(_), None) | (None, Some(_)) | (None, None) => None,
    };

    let train_boxes = || image_nodes(&train_doc).flat_map(|i| element(i, "box"));
    let mut labels: Vec<String> = train_boxes().filter(|b| !is_ignored(*b)).filter_map(box_label).collect::<BTreeSet<_>>().into_iter().collect();
    let unlabeled = if train_boxes().all(|b| box_label(b).is_none()) {
        labels = vec![o.unlabelled.clone().unwrap_or_else(|| "object".into())];
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

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::IMAGE_DROPPED;
    use super::*;
    use crate::records::Source;

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
        let scratch = tempfile::tempdir().unwrap();
        let d = scratch.path();
        std::fs::create_dir_all(d.join("img")).unwrap();
        std::fs::write(d.join("img/a.png"), png(100, 80)).unwrap();
        std::fs::write(d.join("img/b.jpg"), jpeg(64, 48)).unwrap();
        std::fs::write(d.join("img/all_ignored.png"), png(10, 10)).unwrap();
        std::fs::write(d.join("img/sized.bin"), b"not an image").unwrap();
        std::fs::write(d.join("img/negative.png"), png(10, 10)).unwrap();
        std::fs::write(d.join("training.xml"), TRAIN_XML).unwrap();
        std::fs::write(d.join("testing.xml"), TEST_XML).unwrap();
        let p = build_dlib_xml(&DlibXmlOptions { train_xml: d.join("training.xml"), test_xml: Some(d.join("testing.xml")), unlabelled: None }).unwrap();
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
        let scratch = tempfile::tempdir().unwrap();
        let d = scratch.path();
        std::fs::write(d.join("f.png"), png(20, 20)).unwrap();
        std::fs::write(d.join("faces.xml"), "<dataset><images><image file='f.png'><box top='1' left='2' width='3' height='4'/></image></images></dataset>")
            .unwrap();
        let p = build_dlib_xml(&DlibXmlOptions { train_xml: d.join("faces.xml"), test_xml: None, unlabelled: None }).unwrap();
        assert_eq!(p.labels, ["object"]);
        assert_eq!(p.splits.len(), 1);
        assert_eq!(split(&p, "train")[0].boxes, [bb(0, 2., 1., 5., 5.)]);
    }

    #[test]
    fn dlib_errors_name_the_file() {
        let scratch = tempfile::tempdir().unwrap();
        let d = scratch.path();
        std::fs::write(d.join("broken.xml"), "<dataset>\n<images>\n<image file='a.png'>\n</images>\n</dataset>").unwrap();
        let e = build_dlib_xml(&DlibXmlOptions { train_xml: d.join("broken.xml"), test_xml: None, unlabelled: None }).err().unwrap().to_string();
        assert!(e.contains("broken.xml") && e.contains("4:"), "{e}");
        std::fs::write(d.join("other.xml"), "<annotation/>").unwrap();
        let e = build_dlib_xml(&DlibXmlOptions { train_xml: d.join("other.xml"), test_xml: None, unlabelled: None }).err().unwrap().to_string();
        assert!(e.contains("other.xml") && e.contains("<annotation>"), "{e}");
        std::fs::write(d.join("ok.xml"), "<dataset><images/></dataset>").unwrap();
        let e = build_dlib_xml(&DlibXmlOptions { train_xml: d.join("ok.xml"), test_xml: Some(d.join("nope.xml")), unlabelled: None }).err().unwrap();
        assert!(format!("{e:#}").contains("nope.xml"), "{e:#}");
    }
}
