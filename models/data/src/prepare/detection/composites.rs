//! `trainer prepare fashion-detect`: detection scenes composed of real Fashion-MNIST items.
//!
//! Each scene is a dark canvas (seeded noise) with 1..=`max_objects` items of the chosen classes,
//! each scaled to a random side and drawn where its box overlaps no earlier box by more than
//! `max_overlap` (IoU); the drawn pixel is the brighter of canvas and item. A box is the tight
//! rectangle of the item's non-zero pixels after scaling, in pixel-edge coordinates, so the labels are
//! exact by construction. Train scenes use items of the train files, test scenes items of the test
//! files (objects never seen in training). Everything is drawn from `seed`.

use std::path::PathBuf;

use image::imageops::{resize, FilterType};
use image::{DynamicImage, GrayImage, Luma};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::splits_of;
use crate::prepare::idx::{labelled_images, FASHION_MNIST};
use crate::prepare::{PrepareError, Prepared};
use crate::records::{BoundingBox, Item, Source};

/// Where Debian's `dataset-fashion-mnist` installs the IDX files (`train-*`, `t10k-*`).
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

pub struct CompositeOptions {
    /// Prefix of the Fashion-MNIST train files (`…/train`).
    pub train: PathBuf,
    /// Prefix of the test files (`…/t10k`); without it test scenes use train items too.
    pub test: Option<PathBuf>,
    /// Fashion-MNIST class names to place; their order is the label order.
    pub classes: Vec<String>,
    /// Canvas side in pixels.
    pub canvas: u32,
    pub train_images: usize,
    pub test_images: usize,
    pub max_objects: usize,
    /// Item sides are drawn from min_side..=max_side (the 28-px items scaled).
    pub min_side: u32,
    pub max_side: u32,
    /// The largest IoU a new box may have with an earlier one of its scene.
    pub max_overlap: f32,
    /// Amplitude of the canvas noise (0: black).
    pub noise: u8,
    pub seed: u64,
}

impl CompositeOptions {
    /// Four classes of clearly different shapes, 128-px scenes of up to 3 items of 24–64 px.
    pub fn new(train: PathBuf, test: Option<PathBuf>) -> Self {
        CompositeOptions {
            train,
            test,
            classes: ["T-shirt/top", "Trouser", "Sneaker", "Bag"].map(String::from).to_vec(),
            canvas: 128,
            train_images: 3000,
            test_images: 500,
            max_objects: 3,
            min_side: 24,
            max_side: 64,
            max_overlap: 0.2,
            noise: 24,
            seed: 42,
        }
    }
}

/// Items of one IDX prefix, grouped by position in `classes`.
fn pools(prefix: &std::path::Path, classes: &[usize]) -> Result<Vec<Vec<GrayImage>>, PrepareError> {
    let (images, labels, lbl_path) = labelled_images(prefix)?;
    let mut out = vec![vec![]; classes.len()];
    for (img, label) in images.into_iter().zip(labels) {
        if let Some(k) = classes.iter().position(|&c| c == label as usize) {
            out[k].push(img);
        }
    }
    if let Some(k) = out.iter().position(Vec::is_empty) {
        return Err(PrepareError::Format { path: lbl_path, reason: format!("no item of class {} ({})", classes[k], FASHION_MNIST[classes[k]]) });
    }
    Ok(out)
}

/// The tight box of `img`'s non-zero pixels, `[x0, y0, x1, y1]` in pixel edges (None: all zero).
fn tight(img: &GrayImage) -> Option<[u32; 4]> {
    let mut b: Option<[u32; 4]> = None;
    for (x, y, p) in img.enumerate_pixels() {
        if p.0[0] > 0 {
            let r = b.get_or_insert([x, y, x + 1, y + 1]);
            *r = [r[0].min(x), r[1].min(y), r[2].max(x + 1), r[3].max(y + 1)];
        }
    }
    b
}

fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
}

/// One scene and its boxes.
fn scene(rng: &mut StdRng, pools: &[Vec<GrayImage>], o: &CompositeOptions) -> (GrayImage, Vec<BoundingBox>) {
    let n = o.canvas;
    let mut canvas = GrayImage::from_fn(n, n, |_, _| Luma([if o.noise > 0 { rng.gen_range(0..=o.noise) } else { 0 }]));
    let mut boxes: Vec<BoundingBox> = vec![];
    let objects = rng.gen_range(1..=o.max_objects);
    for _ in 0..objects {
        let class = rng.gen_range(0..pools.len());
        let item = &pools[class][rng.gen_range(0..pools[class].len())];
        let side = rng.gen_range(o.min_side..=o.max_side);
        let scaled = resize(item, side, side, FilterType::Triangle);
        let Some([tx0, ty0, tx1, ty1]) = tight(&scaled) else { continue };
        // up to 50 tries to find a place that overlaps the earlier boxes little enough
        for _ in 0..50 {
            let (ox, oy) = (rng.gen_range(0..=n - side), rng.gen_range(0..=n - side));
            let b = [(ox + tx0) as f32, (oy + ty0) as f32, (ox + tx1) as f32, (oy + ty1) as f32];
            if boxes.iter().any(|e| iou(&[e.x0, e.y0, e.x1, e.y1], &b) > o.max_overlap) {
                continue;
            }
            for (x, y, p) in scaled.enumerate_pixels() {
                let c = canvas.get_pixel_mut(ox + x, oy + y);
                c.0[0] = c.0[0].max(p.0[0]);
            }
            boxes.push(BoundingBox { class: class as u32, x0: b[0], y0: b[1], x1: b[2], y1: b[3] });
            break;
        }
    }
    (canvas, boxes)
}

/// Builds the "train" and "test" scenes (see the module's documentation).
pub fn build_composites(o: &CompositeOptions) -> Result<Prepared, PrepareError> {
    if o.classes.is_empty() {
        return Err(PrepareError::Setting { option: "classes", why: "at least one class".into() });
    }
    let mut ids = vec![];
    for c in &o.classes {
        match FASHION_MNIST.iter().position(|f| f == c) {
            Some(i) if !ids.contains(&i) => ids.push(i),
            _ => {
                return Err(PrepareError::Setting {
                    option: "classes",
                    why: format!("'{c}' is not a Fashion-MNIST class {FASHION_MNIST:?}, or is listed twice"),
                })
            }
        }
    }
    if o.min_side < 8 || o.min_side > o.max_side || o.max_side > o.canvas {
        return Err(PrepareError::Setting {
            option: "sides",
            why: format!("need 8 ≤ min side {} ≤ max side {} ≤ canvas {}", o.min_side, o.max_side, o.canvas),
        });
    }
    if o.max_objects == 0 {
        return Err(PrepareError::Setting { option: "max objects", why: "at least 1".into() });
    }
    if !(0.0..=1.0).contains(&o.max_overlap) {
        return Err(PrepareError::Fraction { option: "max overlap", value: o.max_overlap as f64 });
    }
    let train_pool = pools(&o.train, &ids)?;
    let test_pool = o.test.as_ref().map(|t| pools(t, &ids)).transpose()?;
    let mut rng = StdRng::seed_from_u64(o.seed);
    let mut make = |tag: &str, count: usize, pool: &[Vec<GrayImage>]| -> Vec<Item> {
        (0..count)
            .map(|i| {
                let (img, boxes) = scene(&mut rng, pool, o);
                Item { source: Source::Image(DynamicImage::ImageLuma8(img)), key: format!("{tag}#{i}"), label: -1, boxes }
            })
            .collect()
    };
    let train = make("train", o.train_images, &train_pool);
    let test = make("test", o.test_images, test_pool.as_deref().unwrap_or(&train_pool));
    Ok(Prepared {
        kind: "fashion-detect".into(),
        labels: o.classes.clone(),
        splits: splits_of(vec![("train", train), ("test", test)]),
        read: o.train_images + o.test_images,
        dropped: vec![],
        grayscale: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FASHION: &str = "/usr/share/datasets/fashion-mnist";

    fn options() -> CompositeOptions {
        let mut o = CompositeOptions::new(PathBuf::from(format!("{FASHION}/train")), Some(PathBuf::from(format!("{FASHION}/t10k"))));
        o.train_images = 40;
        o.test_images = 10;
        o
    }

    fn image(it: &Item) -> &GrayImage {
        let Source::Image(DynamicImage::ImageLuma8(g)) = &it.source else { panic!("{}: not a grayscale image", it.key) };
        g
    }

    #[test]
    fn boxes_are_the_tight_rectangles_of_the_drawn_items() {
        let mut o = options();
        o.noise = 0; // black canvas: every lit pixel belongs to an item
        let p = build_composites(&o).unwrap();
        assert_eq!(p.labels, ["T-shirt/top", "Trouser", "Sneaker", "Bag"]);
        assert_eq!((p.splits[0].items.len(), p.splits[1].items.len()), (40, 10));
        let mut objects = 0;
        let mut classes = std::collections::BTreeSet::new();
        for it in p.splits.iter().flat_map(|s| &s.items) {
            let img = image(it);
            assert!(!it.boxes.is_empty() && it.boxes.len() <= 3, "{}: {} boxes", it.key, it.boxes.len());
            let inside = |x: u32, y: u32| it.boxes.iter().any(|b| (x as f32) >= b.x0 && (x as f32) < b.x1 && (y as f32) >= b.y0 && (y as f32) < b.y1);
            for (x, y, px) in img.enumerate_pixels() {
                assert!(px.0[0] == 0 || inside(x, y), "{}: lit pixel ({x}, {y}) outside every box", it.key);
            }
            for (i, b) in it.boxes.iter().enumerate() {
                let (x0, y0, x1, y1) = (b.x0 as u32, b.y0 as u32, b.x1 as u32, b.y1 as u32);
                assert!(x1 <= 128 && y1 <= 128 && x0 < x1 && y0 < y1, "{}: {b:?}", it.key);
                let side = (x1 - x0).max(y1 - y0);
                assert!((8..=64).contains(&side), "{}: side {side}", it.key);
                // tight: each edge row and column of the box holds a lit pixel
                let lit = |x: u32, y: u32| img.get_pixel(x, y).0[0] > 0;
                assert!((x0..x1).any(|x| lit(x, y0)) && (x0..x1).any(|x| lit(x, y1 - 1)), "{}: box {i} not tight in y", it.key);
                assert!((y0..y1).any(|y| lit(x0, y)) && (y0..y1).any(|y| lit(x1 - 1, y)), "{}: box {i} not tight in x", it.key);
                for e in &it.boxes[..i] {
                    assert!(iou(&[e.x0, e.y0, e.x1, e.y1], &[b.x0, b.y0, b.x1, b.y1]) <= 0.2);
                }
                objects += 1;
                classes.insert(b.class);
            }
        }
        assert!(objects >= 80, "{objects} objects in 50 scenes");
        assert_eq!(classes.len(), 4);
    }

    #[test]
    fn scenes_follow_the_seed_and_options_are_checked() {
        let a = build_composites(&options()).unwrap();
        let b = build_composites(&options()).unwrap();
        let c = build_composites(&CompositeOptions { seed: 7, ..options() }).unwrap();
        let boxes = |p: &Prepared| p.splits.iter().flat_map(|s| &s.items).map(|i| i.boxes.clone()).collect::<Vec<_>>();
        let pixels = |p: &Prepared| image(&p.splits[0].items[0]).as_raw().clone();
        assert_eq!(boxes(&a), boxes(&b));
        assert_eq!(pixels(&a), pixels(&b));
        assert_ne!(boxes(&a), boxes(&c));
        let err = |o: CompositeOptions| build_composites(&o).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err(CompositeOptions { classes: vec!["Hat".into()], ..options() }).contains("Hat"));
        assert!(err(CompositeOptions { max_side: 200, ..options() }).contains("canvas 128"));
        assert!(err(CompositeOptions { max_objects: 0, ..options() }).contains("max objects"));
    }
}
