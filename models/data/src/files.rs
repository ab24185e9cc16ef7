//! Image files on disk: which extensions are images, and folders walked in a stable order.

use std::path::{Path, PathBuf};

/// File extensions taken as images (what the `image` crate and libjpeg-turbo decode here).
pub const IMAGE_EXTENSIONS: [&str; 9] = ["jpg", "jpeg", "png", "bmp", "gif", "tif", "tiff", "webp", "ppm"];

/// Whether `p` has an image extension (any case).
pub fn is_image(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The entries of `dir`, sorted by path.
pub fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, std::io::Error> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(dir).map_err(|e| std::io::Error::new(e.kind(), format!("reading {}: {e}", dir.display())))?.flatten().map(|e| e.path()).collect();
    v.sort();
    Ok(v)
}

/// Every file under `dir`, depth first, in sorted order.
pub fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), std::io::Error> {
    for p in sorted_entries(dir)? {
        if p.is_dir() {
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

/// `p` relative to `root`, as text (itself when it is not under `root`).
pub fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_sorted_and_knows_images() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("b/c")).unwrap();
        for f in ["b/c/z.PNG", "a.jpg", "b/y.txt"] {
            std::fs::write(t.path().join(f), b"").unwrap();
        }
        let mut files = vec![];
        walk(t.path(), &mut files).unwrap();
        let rels: Vec<String> = files.iter().map(|f| rel(t.path(), f)).collect();
        assert_eq!(rels, ["a.jpg", "b/c/z.PNG", "b/y.txt"]);
        assert_eq!(files.iter().filter(|f| is_image(f)).count(), 2);
        assert!(walk(&t.path().join("none"), &mut files).unwrap_err().to_string().contains("none"));
    }
}
