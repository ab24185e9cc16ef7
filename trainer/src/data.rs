//! Small datasets held in memory as tensors: IDX sets (parsed by `data::idx`).

use std::path::Path;

pub use data::idx::{idx_files, read_idx, DataError};

use tch::{Kind, Tensor};

/// An in-memory image classification set: `images` u8 `[N, C, H, W]`, `labels` i64 `[N]`.
pub struct ImageSet {
    pub images: Tensor,
    pub labels: Tensor,
    pub num_classes: usize,
    pub source: String,
}

impl ImageSet {
    pub fn len(&self) -> usize {
        self.labels.size()[0] as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Loads an IDX image set (see [`data::idx::load`]) into tensors; `limit` keeps the first N samples (0 = all).
pub fn load_idx(prefix: &Path, limit: usize) -> Result<ImageSet, DataError> {
    let set = data::idx::load(prefix, limit)?;
    let (n, h, w) = (set.n as i64, set.height as i64, set.width as i64);
    let images = Tensor::from_slice(&set.pixels).view([n, 1, h, w]);
    let labels = Tensor::from_slice(&set.labels).to_kind(Kind::Int64);
    Ok(ImageSet { images, labels, num_classes: set.num_classes(), source: prefix.display().to_string() })
}
