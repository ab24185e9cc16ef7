//! MNIST-format IDX files (plain or gzip), as Fashion-MNIST ships them.

use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {reason}")]
    Bad { path: PathBuf, reason: String },
}

fn bad(path: &Path, reason: impl Into<String>) -> DataError {
    DataError::Bad { path: path.to_path_buf(), reason: reason.into() }
}

fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(|e| bad(path, e.to_string()))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..]).read_to_end(&mut out).map_err(|e| bad(path, format!("gzip: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Parses an IDX file: returns its dimensions and its u8 payload. Only unsigned-byte data
/// (type 0x08) exists in the MNIST family.
pub fn read_idx(path: &Path) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let b = read_maybe_gz(path)?;
    if b.len() < 4 || b[0] != 0 || b[1] != 0 {
        return Err(bad(path, "not an IDX file (bad magic number)"));
    }
    if b[2] != 0x08 {
        return Err(bad(path, format!("IDX element type 0x{:02x} is not unsigned bytes (0x08)", b[2])));
    }
    let rank = b[3] as usize;
    let header = 4 + 4 * rank;
    if b.len() < header {
        return Err(bad(path, "truncated IDX header"));
    }
    let dims: Vec<usize> = (0..rank).map(|i| be_u32(&b, 4 + 4 * i) as usize).collect();
    let expected: usize = dims.iter().product();
    let payload = &b[header..];
    if payload.len() != expected {
        return Err(bad(path, format!("IDX header {dims:?} promises {expected} bytes of data, the file has {}", payload.len())));
    }
    Ok((dims, payload.to_vec()))
}

/// The images and labels files for an IDX prefix: `PREFIX-images-idx3-ubyte[.gz]` and
/// `PREFIX-labels-idx1-ubyte[.gz]` (e.g. `/usr/share/datasets/fashion-mnist/train`).
pub fn idx_files(prefix: &Path) -> Result<(PathBuf, PathBuf), DataError> {
    let find = |stem: &str| -> Result<PathBuf, DataError> {
        let base = format!("{}-{stem}", prefix.display());
        [format!("{base}.gz"), base.clone()]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or_else(|| bad(Path::new(&base), "no such file (with or without .gz)"))
    };
    Ok((find("images-idx3-ubyte")?, find("labels-idx1-ubyte")?))
}

/// An IDX image set: `n` grey images of `height` x `width` bytes, row-major, and one label byte each.
#[derive(Debug, Clone)]
pub struct IdxSet {
    pub images: PathBuf,
    pub labels_file: PathBuf,
    pub n: usize,
    pub height: usize,
    pub width: usize,
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
}

impl IdxSet {
    /// Classes seen: the largest label + 1.
    pub fn num_classes(&self) -> usize {
        self.labels.iter().copied().max().map_or(0, |m| m as usize + 1)
    }

    /// The pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let len = self.height * self.width;
        &self.pixels[i * len..(i + 1) * len]
    }
}

/// Loads the IDX image set at `prefix`; `limit` keeps only the first N samples (0 = all).
pub fn load(prefix: &Path, limit: usize) -> Result<IdxSet, DataError> {
    let (img_path, lbl_path) = idx_files(prefix)?;
    let (idims, mut pixels) = read_idx(&img_path)?;
    let (ldims, mut labels) = read_idx(&lbl_path)?;
    if idims.len() != 3 {
        return Err(bad(&img_path, format!("expected [N, rows, cols] images, got {idims:?}")));
    }
    if ldims.len() != 1 || ldims[0] != idims[0] {
        return Err(bad(&lbl_path, format!("{} labels for {} images in {}", ldims.first().unwrap_or(&0), idims[0], img_path.display())));
    }
    let n = if limit > 0 { limit.min(idims[0]) } else { idims[0] };
    let (height, width) = (idims[1], idims[2]);
    pixels.truncate(n * height * width);
    labels.truncate(n);
    Ok(IdxSet { images: img_path, labels_file: lbl_path, n, height, width, pixels, labels })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn reads_plain_and_gzipped_idx_and_rejects_damage() {
        let scratch = tempfile::tempdir().unwrap();
        let dir = scratch.path();
        let pixels: Vec<u8> = (0..3 * 2 * 2).map(|i| i as u8).collect();
        std::fs::write(dir.join("t-images-idx3-ubyte"), idx(&[3, 2, 2], &pixels)).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &idx(&[3], &[2, 0, 1])).unwrap();
        std::fs::write(dir.join("t-labels-idx1-ubyte.gz"), gz.finish().unwrap()).unwrap();
        let set = load(&dir.join("t"), 0).unwrap();
        assert_eq!((set.n, set.height, set.width), (3, 2, 2));
        assert_eq!(set.image(2), [8, 9, 10, 11]);
        assert_eq!(set.labels, [2, 0, 1]);
        assert_eq!(set.num_classes(), 3);
        assert_eq!(load(&dir.join("t"), 2).unwrap().n, 2);

        std::fs::write(dir.join("t-images-idx3-ubyte"), idx(&[3, 2, 2], &pixels[..10])).unwrap();
        let err = load(&dir.join("t"), 0).err().unwrap().to_string();
        assert!(err.contains("t-images-idx3-ubyte") && err.contains("promises 12 bytes"), "{err}");
        let err = load(&dir.join("missing"), 0).err().unwrap().to_string();
        assert!(err.contains("missing-images-idx3-ubyte"), "{err}");
    }
}
