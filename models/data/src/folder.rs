//! The prepared-dataset folder: what `trainer prepare` writes and training, evaluation, feature
//! extraction and export read back. One type, [`DatasetDir`], owns every file name and both directions.
//!
//! ```text
//! labels.txt            one label name per line, line i = class i          (crate::labels)
//! {split}.lst           index<TAB>label<TAB>path-or-key, one line per written record
//! {split}.rec, .idx     the record file and its index                      (crate::records)
//! mean.json             per-channel means of the train split (0–255), {"R","G","B"} or {"gray"}
//! report.json           read / written / skipped (with reasons) per split; read = written + skipped
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::labels::{self, LabelsError};

#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {reason}", path.display())]
    Format { path: PathBuf, reason: String },
    #[error(transparent)]
    Labels(#[from] LabelsError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FolderError + '_ {
    move |source| FolderError::Io { path: path.to_path_buf(), source }
}

/// Something read but not used, and why: a CSV row, an image file, a box, a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "SkippedRepr")]
pub struct Skipped {
    pub item: String,
    pub reason: String,
}

impl Skipped {
    pub fn new(item: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { item: item.into(), reason: reason.into() }
    }
}

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.item, self.reason)
    }
}

/// Reads both the object written now and the `[item, reason]` pair that reports written before it.
#[derive(Deserialize)]
#[serde(untagged)]
enum SkippedRepr {
    Object { item: String, reason: String },
    Pair(String, String),
}

impl From<SkippedRepr> for Skipped {
    fn from(r: SkippedRepr) -> Self {
        match r {
            SkippedRepr::Object { item, reason } | SkippedRepr::Pair(item, reason) => Self { item, reason },
        }
    }
}

/// The channel means of the train split in 0–255 pixel units (`mean.json`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Means {
    Rgb {
        #[serde(rename = "R")]
        r: f64,
        #[serde(rename = "G")]
        g: f64,
        #[serde(rename = "B")]
        b: f64,
    },
    Gray {
        gray: f64,
    },
}

impl Means {
    /// From per-channel values (1 or 3); `None` for any other count.
    pub fn from_values(v: &[f64]) -> Option<Self> {
        match *v {
            [gray] => Some(Self::Gray { gray }),
            [r, g, b] => Some(Self::Rgb { r, g, b }),
            _ => None,
        }
    }

    pub fn values(&self) -> Vec<f64> {
        match *self {
            Self::Rgb { r, g, b } => vec![r, g, b],
            Self::Gray { gray } => vec![gray],
        }
    }
}

/// One split of `report.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitReport {
    pub name: String,
    pub read: usize,
    pub written: usize,
    pub skipped: Vec<Skipped>,
    pub per_class: BTreeMap<String, usize>,
}

/// `report.json`: what a builder read, dropped and wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub kind: String,
    pub out: PathBuf,
    pub classes: usize,
    /// Entries the builder read, and those it dropped before packing.
    pub read: usize,
    pub dropped: Vec<Skipped>,
    pub splits: Vec<SplitReport>,
    pub train_means: Vec<f64>,
    /// The shorter side images were resized to (0: kept), which evaluation must repeat.
    pub short_side: u32,
}

impl Report {
    /// Images written over all splits.
    pub fn written(&self) -> usize {
        self.splits.iter().map(|s| s.written).sum()
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{} → {} ({} classes)", self.kind, self.out.display(), self.classes)?;
        writeln!(f, "read {} entries, dropped {} before packing", self.read, self.dropped.len())?;
        for d in self.dropped.iter().take(5) {
            writeln!(f, "  dropped {d}")?;
        }
        for s in &self.splits {
            writeln!(f, "{:<12} read {:>8}  written {:>8}  skipped {:>5}", s.name, s.read, s.written, s.skipped.len())?;
            for k in s.skipped.iter().take(5) {
                writeln!(f, "  skipped {k}")?;
            }
        }
        let means: Vec<String> = self.train_means.iter().map(|m| format!("{m:.3}")).collect();
        write!(f, "train channel means {}", means.join(", "))
    }
}

/// A prepared-dataset folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetDir {
    pub root: PathBuf,
}

impl DatasetDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The folder a record file of it lies in.
    pub fn of_records(rec: &Path) -> Self {
        Self::new(rec.parent().unwrap_or(Path::new(".")))
    }

    pub fn labels_path(&self) -> PathBuf {
        self.root.join("labels.txt")
    }
    pub fn means_path(&self) -> PathBuf {
        self.root.join("mean.json")
    }
    pub fn report_path(&self) -> PathBuf {
        self.root.join("report.json")
    }
    pub fn records(&self, split: &str) -> PathBuf {
        self.root.join(format!("{split}.rec"))
    }
    pub fn list(&self, split: &str) -> PathBuf {
        self.root.join(format!("{split}.lst"))
    }

    /// The class names, `None` when the folder has no `labels.txt`.
    pub fn labels(&self) -> Result<Option<Vec<String>>, FolderError> {
        let p = self.labels_path();
        if !p.is_file() {
            return Ok(None);
        }
        Ok(Some(labels::read(&p)?))
    }

    /// The train-split means, `None` without a `mean.json`.
    pub fn means(&self) -> Result<Option<Means>, FolderError> {
        read_json(&self.means_path(), MEANS_EXPECTED)
    }

    /// The builder's report, `None` without a `report.json`.
    pub fn report(&self) -> Result<Option<Report>, FolderError> {
        read_json(&self.report_path(), "not a prepare report")
    }

    /// The shorter side the images were stored at (0: as found), from the report.
    pub fn short_side(&self) -> Result<Option<u32>, FolderError> {
        Ok(self.report()?.map(|r| r.short_side))
    }

    pub fn create(&self) -> Result<(), FolderError> {
        std::fs::create_dir_all(&self.root).map_err(io(&self.root))
    }

    pub fn write_labels(&self, labels: &[String]) -> Result<(), FolderError> {
        Ok(labels::write(&self.labels_path(), labels)?)
    }

    pub fn write_means(&self, m: Option<Means>) -> Result<(), FolderError> {
        let p = self.means_path();
        let text = match m {
            Some(m) => serde_json::to_string_pretty(&m).expect("means serialise"),
            None => "{}".into(),
        };
        std::fs::write(&p, text).map_err(io(&p))
    }

    pub fn write_report(&self, r: &Report) -> Result<(), FolderError> {
        let p = self.report_path();
        std::fs::write(&p, serde_json::to_string_pretty(r).expect("report serialises")).map_err(io(&p))
    }

    pub fn write_list(&self, split: &str, text: &str) -> Result<(), FolderError> {
        let p = self.list(split);
        std::fs::write(&p, text).map_err(io(&p))
    }
}

const MEANS_EXPECTED: &str = "expected {\"R\", \"G\", \"B\"} or {\"gray\"}";

/// Reads a means file (`mean.json` of a prepared folder, or any file of that form a config names).
pub fn read_means(path: &Path) -> Result<Means, FolderError> {
    read_json(path, MEANS_EXPECTED)?.ok_or_else(|| FolderError::Io { path: path.to_path_buf(), source: std::io::ErrorKind::NotFound.into() })
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path, expected: &str) -> Result<Option<T>, FolderError> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    serde_json::from_str(&text).map(Some).map_err(|e| FolderError::Format { path: path.to_path_buf(), reason: format!("{expected} ({e})") })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_round_trips_and_old_reports_still_read() {
        let tmp = tempfile::tempdir().unwrap();
        let d = DatasetDir::new(tmp.path().join("ds"));
        d.create().unwrap();
        assert_eq!((d.labels().unwrap(), d.means().unwrap(), d.report().unwrap()), (None, None, None));
        d.write_labels(&["cat".into(), "dog".into()]).unwrap();
        d.write_means(Means::from_values(&[1.0, 2.0, 3.0])).unwrap();
        let r = Report {
            kind: "folder".into(),
            out: d.root.clone(),
            classes: 2,
            read: 5,
            dropped: vec![Skipped::new("row 3", "unknown class")],
            splits: vec![SplitReport {
                name: "train".into(),
                read: 4,
                written: 3,
                skipped: vec![Skipped::new("a.jpg", "not an image")],
                per_class: [("cat".into(), 3)].into(),
            }],
            train_means: vec![1.0, 2.0, 3.0],
            short_side: 36,
        };
        d.write_report(&r).unwrap();
        assert_eq!(d.labels().unwrap().unwrap(), ["cat", "dog"]);
        assert_eq!(d.means().unwrap().unwrap().values(), [1.0, 2.0, 3.0]);
        assert_eq!(d.report().unwrap().unwrap(), r);
        assert_eq!(d.short_side().unwrap(), Some(36));
        assert_eq!(DatasetDir::of_records(&d.records("val")), d);
        // a skipped item is an object in the file
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.report_path()).unwrap()).unwrap();
        assert_eq!(v["dropped"][0], serde_json::json!({"item": "row 3", "reason": "unknown class"}));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(d.means_path()).unwrap()).unwrap(),
            serde_json::json!({"R": 1.0, "G": 2.0, "B": 3.0})
        );
        // reports written before skipped items were objects: [item, reason] pairs
        let old = serde_json::to_string(&v).unwrap().replace(r#"{"item":"row 3","reason":"unknown class"}"#, r#"["row 3","unknown class"]"#);
        assert!(old.contains(r#"["row 3","#));
        std::fs::write(d.report_path(), old).unwrap();
        assert_eq!(d.report().unwrap().unwrap(), r);
        d.write_means(Means::from_values(&[7.5])).unwrap();
        assert_eq!(d.means().unwrap(), Some(Means::Gray { gray: 7.5 }));
        std::fs::write(d.means_path(), r#"{"red": 1}"#).unwrap();
        let e = d.means().unwrap_err().to_string();
        assert!(e.contains("mean.json") && e.contains("\"gray\""), "{e}");
    }
}
