//! `trainer prepare KIND … --out DIR`: raw datasets in their real formats → lists, a label map, the
//! train-set channel means, record files and a report (book.md §4–5).
//!
//! Every builder returns a [`Prepared`]: the label names and, per split, the items to pack, plus what it
//! read and what it dropped before packing (invalid rows, unknown classes) with the reason.
//! [`write`] then packs each split in parallel and writes, in `DIR`:
//! ```text
//! labels.txt            one label name per line, line i = class i
//! {split}.lst           index<TAB>label<TAB>path-or-key, one line per written record
//! {split}.rec, .idx     the record file and its index (models::records)
//! mean.json             per-channel means of the train split (0–255), {"R","G","B"} or {"gray"}
//! report.json           read / written / skipped (with reasons) per split; read = written + skipped
//! ```

pub mod adience;
pub mod cars;
pub mod detection;
pub mod idx;
pub mod imagenet;
pub mod simple;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use models::records::{pack, Item, PackOptions, PackReport};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;

/// One split's items, before packing.
pub struct Split {
    /// `train`, `val` or `test` (or e.g. `age_train` for datasets with several tasks).
    pub name: String,
    pub items: Vec<Item>,
}

/// What a dataset builder found.
pub struct Prepared {
    pub kind: String,
    /// Class names; item labels index this list.
    pub labels: Vec<String>,
    pub splits: Vec<Split>,
    /// Entries (rows, files, boxes) the builder read.
    pub read: usize,
    /// Entries dropped before packing, with the reason (e.g. "age '(8, 23)' is not one of the 8 bins").
    pub dropped: Vec<(String, String)>,
    /// Pack single-channel images.
    pub grayscale: bool,
}

#[derive(Debug, Serialize)]
pub struct SplitReport {
    pub name: String,
    pub read: usize,
    pub written: usize,
    pub skipped: Vec<(String, String)>,
    pub per_class: BTreeMap<String, usize>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub kind: String,
    pub out: PathBuf,
    pub classes: usize,
    /// Entries the builder read, and those it dropped before packing.
    pub read: usize,
    pub dropped: Vec<(String, String)>,
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
        for (what, why) in self.dropped.iter().take(5) {
            writeln!(f, "  dropped {what}: {why}")?;
        }
        for s in &self.splits {
            writeln!(f, "{:<12} read {:>8}  written {:>8}  skipped {:>5}", s.name, s.read, s.written, s.skipped.len())?;
            for (what, why) in s.skipped.iter().take(5) {
                writeln!(f, "  skipped {what}: {why}")?;
            }
        }
        let means: Vec<String> = self.train_means.iter().map(|m| format!("{m:.3}")).collect();
        write!(f, "train channel means {}", means.join(", "))
    }
}

/// Packs every split of `p` into `out` and writes the lists, label map, means and report.
pub fn write(p: Prepared, out: &Path, opts: &PackOptions, progress: bool) -> Result<Report> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    std::fs::write(out.join("labels.txt"), p.labels.iter().map(|l| format!("{l}\n")).collect::<String>())?;
    let opts = PackOptions { grayscale: p.grayscale || opts.grayscale, ..*opts };
    let mut splits = vec![];
    let mut train_means = vec![];
    for split in &p.splits {
        let rec = out.join(format!("{}.rec", split.name));
        let r: PackReport = pack(&split.items, &rec, &opts, progress).with_context(|| format!("packing {}", rec.display()))?;
        let skipped: std::collections::HashSet<&str> = r.skipped.iter().map(|(k, _)| k.as_str()).collect();
        let mut lst = String::new();
        let mut per_class = BTreeMap::new();
        for it in split.items.iter().filter(|it| !skipped.contains(it.key.as_str())) {
            lst.push_str(&format!("{}\t{}\t{}\n", per_class.values().sum::<usize>(), it.label, it.key));
            let name = p.labels.get(it.label as usize).cloned().unwrap_or_else(|| it.label.to_string());
            *per_class.entry(name).or_insert(0) += 1;
        }
        std::fs::write(out.join(format!("{}.lst", split.name)), lst)?;
        if split.name.ends_with("train") && train_means.is_empty() {
            train_means = r.channel_means.clone();
        }
        splits.push(SplitReport { name: split.name.clone(), read: r.read, written: r.written, skipped: r.skipped, per_class });
    }
    let mean_json = match train_means.as_slice() {
        [g] => serde_json::json!({ "gray": g }),
        [r, g, b] => serde_json::json!({ "R": r, "G": g, "B": b }),
        _ => serde_json::json!({}),
    };
    std::fs::write(out.join("mean.json"), serde_json::to_string_pretty(&mean_json)?)?;
    let report = Report {
        kind: p.kind,
        out: out.to_path_buf(),
        classes: p.labels.len(),
        read: p.read,
        dropped: p.dropped,
        splits,
        train_means,
        short_side: opts.short_side,
    };
    std::fs::write(out.join("report.json"), serde_json::to_string_pretty(&report)?)?;
    Ok(report)
}

/// Splits `items` into train/val/test by the given fractions, stratified by label, shuffled with `seed`.
/// `fractions` are (val, test); the rest is train. Every class contributes its share (rounded).
pub fn stratified_split(items: Vec<Item>, val: f64, test: f64, seed: u64) -> Vec<Split> {
    let mut by_class: BTreeMap<i32, Vec<Item>> = BTreeMap::new();
    for it in items {
        by_class.entry(it.label).or_default().push(it);
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut tr, mut va, mut te) = (vec![], vec![], vec![]);
    for (_, mut v) in by_class {
        v.shuffle(&mut rng);
        let n = v.len();
        let n_test = (n as f64 * test).round() as usize;
        let n_val = ((n as f64 * val).round() as usize).min(n - n_test);
        let rest = v.split_off(n_test + n_val);
        let val_part = v.split_off(n_test);
        te.extend(v);
        va.extend(val_part);
        tr.extend(rest);
    }
    // keep the packed order independent of class order
    tr.shuffle(&mut rng);
    [("train", tr), ("val", va), ("test", te)].into_iter().filter(|(_, v)| !v.is_empty()).map(|(name, items)| Split { name: name.into(), items }).collect()
}
