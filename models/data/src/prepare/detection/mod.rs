//! Object-detection datasets: one [`Item`] per IMAGE with all its kept boxes; `label` is -1 (there is no
//! image-level class) and the class of each object is in its [`BoundingBox`](crate::records::BoundingBox).
//!
//! * [`build_lisa`] (`lisa.rs`) — the LISA traffic signs (book ch. 15): `ROOT/allAnnotations.csv`,
//!   semicolon-separated, split at image level (75 % train / 25 % test by default) with a seed.
//! * [`build_composites`] (`composites.rs`) — detection scenes made of real Fashion-MNIST items placed
//!   on canvases, boxes exact by construction: the data a tiny detector trains on here in minutes.
//! * [`build_dlib_xml`] (`dlib_xml.rs`) — dlib imglab XML files such as the front-and-rear vehicles (book
//!   ch. 17): `training.xml` and optionally `testing.xml`, a predefined split.
//!
//! This file holds what both share: the per-image box accumulator and the image-header size reader.
//!
//! Counting: for both builders an entry is a BOX (an annotation row for LISA, a `<box>` element for
//! dlib), so `read` = boxes kept over all splits + `dropped.len()`. An image whose boxes were all dropped
//! is dropped too; it adds no entry of its own, instead the reasons of its dropped boxes end with
//! [`IMAGE_DROPPED`]. Images are not decoded here; only the dlib builder reads the PNG/JPEG header of an
//! image to learn its size for clipping ([`image_dimensions`]).

mod composites;
mod dlib_xml;
mod lisa;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::records::{BoundingBox, Item, Source};

use super::Split;

pub use composites::{build_composites, CompositeOptions, FASHION_MNIST_DIR};
pub use dlib_xml::{build_dlib_xml, DlibXmlOptions};
pub use lisa::{build_lisa, LisaOptions, LISA_BOOK_CLASSES};

/// Appended to the reason of every dropped box of an image that kept no box at all.
pub const IMAGE_DROPPED: &str = " (the image has no kept box and is dropped)";

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

/// Why [`image_dimensions`] has no size for a file; its text becomes part of a dropped box's reason.
#[derive(Debug, thiserror::Error)]
pub enum ImageSizeError {
    #[error("file missing")]
    Missing,
    #[error("image size 0")]
    Empty,
    /// The header is not one the `image` crate reads.
    #[error(transparent)]
    Header(#[from] image::ImageError),
}

/// Width and height of an image file, from its header only (the `image` crate reads the header of
/// every format it decodes).
pub fn image_dimensions(path: &Path) -> Result<(u32, u32), ImageSizeError> {
    if !path.is_file() {
        return Err(ImageSizeError::Missing);
    }
    match image::image_dimensions(path)? {
        (0, _) | (_, 0) => Err(ImageSizeError::Empty),
        wh => Ok(wh),
    }
}

#[cfg(test)]
mod testutil {
    use super::*;
    use crate::prepare::Prepared;

    /// A real encoded image of `w`x`h` in `format`.
    pub(super) fn encoded(w: u32, h: u32, format: image::ImageFormat) -> Vec<u8> {
        let mut b = std::io::Cursor::new(vec![]);
        image::RgbImage::from_pixel(w, h, image::Rgb([90, 120, 30])).write_to(&mut b, format).unwrap();
        b.into_inner()
    }

    pub(super) fn png(w: u32, h: u32) -> Vec<u8> {
        encoded(w, h, image::ImageFormat::Png)
    }

    pub(super) fn jpeg(w: u32, h: u32) -> Vec<u8> {
        encoded(w, h, image::ImageFormat::Jpeg)
    }

    pub(super) fn split<'a>(p: &'a Prepared, name: &str) -> &'a [Item] {
        p.splits.iter().find(|s| s.name == name).map_or(&[], |s| s.items.as_slice())
    }

    pub(super) fn kept(p: &Prepared) -> usize {
        p.splits.iter().flat_map(|s| &s.items).map(|i| i.boxes.len()).sum()
    }

    pub(super) fn bb(class: u32, x0: f32, y0: f32, x1: f32, y1: f32) -> BoundingBox {
        BoundingBox { class, x0, y0, x1, y1 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dimensions_from_image_headers() {
        let scratch = tempfile::tempdir().unwrap();
        let d = scratch.path();
        let img = image::RgbImage::from_pixel(5, 6, image::Rgb([1, 2, 3]));
        img.save(d.join("a.jpg")).unwrap();
        img.save(d.join("b.png")).unwrap();
        assert_eq!(image_dimensions(&d.join("a.jpg")).unwrap(), (5, 6));
        assert_eq!(image_dimensions(&d.join("b.png")).unwrap(), (5, 6));
        let missing = image_dimensions(&d.join("none.png"));
        assert!(matches!(missing, Err(ImageSizeError::Missing)), "{missing:?}");
        assert_eq!(missing.unwrap_err().to_string(), "file missing");
        std::fs::write(d.join("c.jpg"), b"\xff\xd8 not really").unwrap();
        assert!(matches!(image_dimensions(&d.join("c.jpg")), Err(ImageSizeError::Header(_))));
    }
}
