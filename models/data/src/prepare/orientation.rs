//! `trainer prepare orientation`: any image folder (searched recursively) → copies turned by 0, 90, 180
//! or 270 degrees, labelled by the angle (book ch. 11); each image gets one random angle (seeded), or
//! all four.

use std::path::PathBuf;

use crate::files::{is_image, rel, walk};
use crate::records::{Item, Source};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::error::io;
use super::{stratified_split, PrepareError, Prepared};

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

/// Walks `o.root`, samples up to `o.limit` images and labels each rotated copy by its angle.
pub fn build(o: &OrientationOptions) -> Result<Prepared, PrepareError> {
    let mut files = vec![];
    walk(&o.root, &mut files).map_err(io("walking the image tree", &o.root))?;
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

    #[test]
    fn orientation_rotates_and_labels_by_angle() {
        let scratch = tempfile::tempdir().unwrap();
        let d = scratch.path();
        // a 30x20 image whose top-left pixel is bright: its rotations are told apart by shape and corner
        for i in 0..8 {
            let mut img = image::RgbImage::from_pixel(30, 20, image::Rgb([0, 0, 0]));
            img.put_pixel(0, 0, image::Rgb([255, 255, 255]));
            let p = d.join(format!("imgs/sub/{i}.png"));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            img.save(&p).unwrap();
        }
        let p = build(&OrientationOptions { root: d.join("imgs"), limit: 0, all_angles: true, val_fraction: 0.0, test_fraction: 0.25, seed: 3 }).unwrap();
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
        let sampled = build(&OrientationOptions { root: d.join("imgs"), limit: 5, all_angles: false, val_fraction: 0.0, test_fraction: 0.0, seed: 3 }).unwrap();
        assert_eq!(sampled.splits.iter().map(|s| s.items.len()).sum::<usize>(), 5);
        assert_eq!(sampled.dropped.len(), 3);
    }
}
