//! Stanford Cars as the book uses it (ImageNet Bundle, ch. 12): fine-grained make/model recognition.
//!
//! The download is laid out as
//! ```text
//! ROOT/car_ims/000001.jpg … 016185.jpg
//! ROOT/complete_dataset.csv    header row, then: image filename (relative to ROOT, e.g. car_ims/000090.jpg),
//!                              make, model, type, year
//! ```
//! Each row becomes one item labelled `"make:model"` (e.g. `"Audi:A5"`). The classes are the distinct labels
//! sorted alphabetically (byte order, which is what the book's `LabelEncoder` does), 164 on the real data.
//! Only the first three columns are used, so a row needs at least those three; type and year are ignored.
//!
//! Rows are numbered from 1 after the header (`row 1` is the first data row). A row is dropped, with a
//! reason naming it, when it has too few columns, an empty filename/make/model, cannot be read as UTF-8,
//! or names an image that does not exist (images are not decoded here; packing does that).
//! `read` counts the data rows, so `read` = items over all splits + `dropped.len()`.
//!
//! The kept items are split stratified by class: 70% train, 15% val, 15% test, shuffled with `seed`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crate::records::{Item, Source};

use super::error::{csv_err, io};
use super::{stratified_split, PrepareError, Prepared};

/// Fraction of each class held out for validation.
pub const VAL_FRACTION: f64 = 0.15;
/// Fraction of each class held out for testing.
pub const TEST_FRACTION: f64 = 0.15;

/// Where the Stanford Cars download is and how to split it.
#[derive(Debug, Clone)]
pub struct CarsOptions {
    /// The dataset root: holds `car_ims/` (and by default `complete_dataset.csv`).
    pub root: PathBuf,
    /// The label CSV; default `ROOT/complete_dataset.csv`.
    pub csv: Option<PathBuf>,
    /// Seed of the stratified split.
    pub seed: u64,
}

impl CarsOptions {
    /// The CSV this run reads.
    pub fn csv_path(&self) -> PathBuf {
        self.csv.clone().unwrap_or_else(|| self.root.join("complete_dataset.csv"))
    }
}

/// A row that survived validation: its image (relative name and full path) and its `make:model` label.
struct Row {
    key: String,
    path: PathBuf,
    label: String,
}

/// Reads `complete_dataset.csv`, checks that every image exists, and splits 70/15/15 stratified by make:model.
pub fn build(o: &CarsOptions) -> Result<Prepared, PrepareError> {
    let csv_path = o.csv_path();
    let file = std::fs::File::open(&csv_path).map_err(io("opening the Stanford Cars CSV", &csv_path))?;
    let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(true).trim(csv::Trim::All).from_reader(file);
    // Reading the header up front turns an empty or unreadable file into an error naming it.
    reader.byte_headers().map_err(csv_err("reading the header of", &csv_path))?;

    let mut read = 0usize;
    let mut dropped = vec![];
    let mut rows = vec![];
    for (i, record) in reader.byte_records().enumerate() {
        let row = format!("row {}", i + 1);
        read += 1;
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                dropped.push((row.clone(), format!("{row}: unreadable CSV record: {e}")));
                continue;
            }
        };
        match parse_row(&record, o) {
            Ok(r) => rows.push(r),
            Err(reason) => dropped.push((row.clone(), format!("{row}: {reason}"))),
        }
    }

    let names: BTreeSet<&str> = rows.iter().map(|r| r.label.as_str()).collect();
    let labels: Vec<String> = names.into_iter().map(String::from).collect();
    let index: BTreeMap<&str, i32> = labels.iter().enumerate().map(|(i, l)| (l.as_str(), i as i32)).collect();
    let items: Vec<Item> =
        rows.iter().map(|r| Item { source: Source::File(r.path.clone()), key: r.key.clone(), label: index[r.label.as_str()], boxes: vec![] }).collect();
    let splits = stratified_split(items, VAL_FRACTION, TEST_FRACTION, o.seed);
    Ok(Prepared { kind: "cars".into(), labels, splits, read, dropped, grayscale: false })
}

/// Validates one data row; the error is the reason it is dropped (without the row number).
fn parse_row(record: &csv::ByteRecord, o: &CarsOptions) -> Result<Row, String> {
    if record.len() < 3 {
        return Err(format!("too few columns ({}; needs image filename, make, model)", record.len()));
    }
    let field = |i: usize, what: &str| -> Result<String, String> {
        let s = std::str::from_utf8(&record[i]).map_err(|_| format!("{what} is not valid UTF-8"))?;
        if s.is_empty() {
            return Err(format!("empty {what}"));
        }
        Ok(s.to_string())
    };
    let key = field(0, "image filename")?;
    let make = field(1, "make")?;
    let model = field(2, "model")?;
    let path = o.root.join(&key);
    if !path.is_file() {
        return Err(format!("missing file {key}"));
    }
    Ok(Row { key, path, label: format!("{make}:{model}") })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::path::Path;

    /// Writes a fixture in the real layout: `per_class` images for each (make, model), one row with too few
    /// columns, one row whose image is missing, one with an empty model. Returns the root, a scratch folder
    /// removed when it drops.
    fn fixture(per_class: usize) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        std::fs::create_dir_all(root.join("car_ims")).unwrap();
        let classes = [("Audi", "A5", "Coupe"), ("BMW", "M3", "Sedan"), ("Aston Martin", "Vanquish", "Coupe"), ("Audi", "A4", "Sedan")];
        let mut csv = String::from("Image Filename,Make,Model,Vehicle Type,Year\n");
        let mut n = 0;
        for k in 0..per_class {
            for (make, model, kind) in classes {
                n += 1;
                let file = format!("car_ims/{n:06}.jpg");
                std::fs::write(root.join(&file), b"not really a jpeg").unwrap();
                csv.push_str(&format!("{file},{make},{model},{kind},{}\n", 2008 + k % 5));
            }
        }
        // the bad rows: data rows n+1, n+2, n+3
        csv.push_str(&format!("car_ims/{:06}.jpg,Audi\n", n + 1));
        csv.push_str(&format!("car_ims/{:06}.jpg,Audi,A5,Coupe,2012\n", n + 2)); // no image on disk
        std::fs::write(root.join(format!("car_ims/{:06}.jpg", n + 3)), b"x").unwrap();
        csv.push_str(&format!("car_ims/{:06}.jpg,BMW,,Sedan,2012\n", n + 3));
        std::fs::write(root.join("complete_dataset.csv"), csv).unwrap();
        dir
    }

    fn opts(root: &Path, seed: u64) -> CarsOptions {
        CarsOptions { root: root.to_path_buf(), csv: None, seed }
    }

    fn total(p: &Prepared) -> usize {
        p.splits.iter().map(|s| s.items.len()).sum()
    }

    #[test]
    fn cars_labels_counts_and_dropped_rows() {
        let scratch = fixture(20);
        let root = scratch.path().to_path_buf();
        let p = build(&opts(&root, 7)).unwrap();
        assert_eq!(p.kind, "cars");
        assert!(!p.grayscale);
        assert_eq!(p.labels, vec!["Aston Martin:Vanquish", "Audi:A4", "Audi:A5", "BMW:M3"]);
        assert_eq!(p.read, 83);
        assert_eq!(total(&p), 80);
        assert_eq!(p.dropped.len(), 3);
        assert_eq!(p.read, total(&p) + p.dropped.len());
        let (what, why) = &p.dropped[0];
        assert_eq!(what, "row 81");
        assert!(why.starts_with("row 81: too few columns"), "{why}");
        assert_eq!(p.dropped[1], ("row 82".to_string(), "row 82: missing file car_ims/000082.jpg".to_string()));
        assert!(p.dropped[2].1.contains("empty model"), "{:?}", p.dropped[2]);
        // labels follow the CSV: file n has class (n-1) % 4 in the fixture's order
        let by_class = ["Audi:A5", "BMW:M3", "Aston Martin:Vanquish", "Audi:A4"];
        for it in p.splits.iter().flat_map(|s| &s.items) {
            let n: usize = it.key.trim_start_matches("car_ims/").trim_end_matches(".jpg").parse().unwrap();
            assert_eq!(p.labels[it.label as usize], by_class[(n - 1) % 4], "{}", it.key);
            let Source::File(f) = &it.source else { panic!("cars items are files: {}", it.key) };
            assert_eq!(f, &root.join(&it.key));
            assert!(it.boxes.is_empty());
        }
    }

    #[test]
    fn cars_splits_are_stratified_and_deterministic() {
        let scratch = fixture(20);
        let root = scratch.path().to_path_buf();
        let a = build(&opts(&root, 1)).unwrap();
        let b = build(&opts(&root, 1)).unwrap();
        let c = build(&opts(&root, 2)).unwrap();
        let names: Vec<&str> = a.splits.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["train", "val", "test"]);
        for (s, want) in a.splits.iter().zip([14, 3, 3]) {
            let mut per: HashMap<i32, usize> = HashMap::new();
            for it in &s.items {
                *per.entry(it.label).or_default() += 1;
            }
            assert_eq!(per.len(), 4, "{}", s.name);
            assert!(per.values().all(|&v| v == want), "{}: {per:?}", s.name);
        }
        let keys = |p: &Prepared| -> Vec<Vec<String>> { p.splits.iter().map(|s| s.items.iter().map(|i| i.key.clone()).collect()).collect() };
        assert_eq!(keys(&a), keys(&b));
        assert_ne!(keys(&a), keys(&c));
        let mut all: Vec<String> = keys(&a).concat();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 80, "every kept row lands in exactly one split");
    }

    #[test]
    fn cars_explicit_csv_and_missing_csv_error() {
        let scratch = fixture(2);
        let root = scratch.path().to_path_buf();
        let moved = root.join("labels.csv");
        std::fs::rename(root.join("complete_dataset.csv"), &moved).unwrap();
        let err = build(&opts(&root, 0)).err().expect("no default CSV");
        let msg = format!("{err:#}");
        assert!(msg.contains("complete_dataset.csv"), "{msg}");
        let p = build(&CarsOptions { csv: Some(moved), ..opts(&root, 0) }).unwrap();
        assert_eq!(p.read, 11);
        assert_eq!(total(&p), 8);
    }
}
