//! `trainer prepare idx`: MNIST-format IDX files (MNIST, Fashion-MNIST) → records.
//! The official test files become the `test` split; `val` is a stratified fraction of the train files.

use std::path::{Path, PathBuf};

use crate::records::{Item, Source};
use image::{DynamicImage, GrayImage};

use super::{stratified_split, PrepareError, Prepared, Split};
use crate::idx::{idx_files, read_idx};

/// Fashion-MNIST's class names (its README), used when the path names Fashion-MNIST.
pub const FASHION_MNIST: [&str; 10] = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

pub struct IdxOptions {
    /// Prefix of the train files (`…/train` for `train-images-idx3-ubyte.gz`).
    pub train: PathBuf,
    /// Prefix of the test files (`…/t10k`).
    pub test: Option<PathBuf>,
    /// Class names, one per label; default: Fashion-MNIST's names for a path containing "fashion",
    /// else the label numbers.
    pub labels: Option<Vec<String>>,
    pub val_fraction: f64,
    pub seed: u64,
}

/// The images of one IDX prefix with their labels, and the labels file (for errors).
pub(crate) fn labelled_images(prefix: &Path) -> Result<(Vec<GrayImage>, Vec<u8>, PathBuf), PrepareError> {
    let (img_path, lbl_path) = idx_files(prefix)?;
    let (dims, pixels) = read_idx(&img_path)?;
    let (ldims, labels) = read_idx(&lbl_path)?;
    if dims.len() != 3 || ldims.len() != 1 || ldims[0] != dims[0] {
        return Err(PrepareError::IdxMismatch { images: img_path, image_dims: dims, labels: lbl_path, label_dims: ldims });
    }
    let (h, w) = (dims[1], dims[2]);
    if h * w == 0 {
        return Err(PrepareError::Format { path: img_path, reason: format!("images of {h}x{w} pixels") });
    }
    let images = pixels.chunks_exact(h * w).map(|px| GrayImage::from_raw(w as u32, h as u32, px.to_vec()).expect("sized buffer")).collect();
    Ok((images, labels, lbl_path))
}

fn items(prefix: &Path, tag: &str) -> Result<(Vec<Item>, usize), PrepareError> {
    let (images, labels, _) = labelled_images(prefix)?;
    let n = images.len();
    let items = images
        .into_iter()
        .enumerate()
        .map(|(i, img)| Item { source: Source::Image(DynamicImage::ImageLuma8(img)), key: format!("{tag}#{i}"), label: labels[i] as i32, boxes: vec![] })
        .collect();
    Ok((items, n))
}

pub fn build(o: &IdxOptions) -> Result<Prepared, PrepareError> {
    let (train, mut read) = items(&o.train, &o.train.file_name().map_or("train".into(), |n| n.to_string_lossy().into_owned()))?;
    let classes = train.iter().map(|i| i.label).max().map_or(0, |m| m as usize + 1);
    let labels = match &o.labels {
        Some(l) if l.len() < classes => return Err(PrepareError::LabelNames { given: l.len(), classes }),
        Some(l) => l.clone(),
        None if o.train.to_string_lossy().to_lowercase().contains("fashion") && classes == 10 => FASHION_MNIST.iter().map(|s| s.to_string()).collect(),
        None => (0..classes).map(|c| c.to_string()).collect(),
    };
    let mut splits: Vec<Split> = stratified_split(train, o.val_fraction, 0.0, o.seed);
    if let Some(test) = &o.test {
        let (items, n) = items(test, &test.file_name().map_or("test".into(), |n| n.to_string_lossy().into_owned()))?;
        read += n;
        splits.push(Split { name: "test".into(), items });
    }
    Ok(Prepared { kind: "idx".into(), labels, splits, read, dropped: vec![], grayscale: true })
}
