//! `trainer prepare KIND … --out DIR`: raw datasets in their real formats → lists, a label map, the
//! train-set channel means, record files and a report (book.md §4–5).
//!
//! Every builder returns a [`Prepared`]: the label names and, per split, the items to pack, plus what it
//! read and what it dropped before packing (invalid rows, unknown classes) with the reason.
//! [`write`] then packs each split in parallel and writes the prepared folder ([`crate::folder`]).
//! What stops a builder is a [`PrepareError`] naming the file, line or option.

pub mod adience;
pub mod cars;
pub mod detection;
mod error;
pub mod fer2013;
pub mod folder;
pub mod idx;
pub mod imagenet;
pub mod orientation;
pub mod simple;

use std::collections::BTreeMap;
use std::path::Path;

use crate::folder::{DatasetDir, Means, Skipped};
pub use crate::folder::{Report, SplitReport};
use crate::records::{pack, Item, PackOptions, PackReport};
pub use error::PrepareError;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

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

/// Packs every split of `p` into `out` and writes the lists, label map, means and report.
pub fn write(p: Prepared, out: &Path, opts: &PackOptions, progress: bool) -> Result<Report, PrepareError> {
    let dir = DatasetDir::new(out);
    dir.create()?;
    dir.write_labels(&p.labels)?;
    let opts = PackOptions { grayscale: p.grayscale || opts.grayscale, ..*opts };
    let mut splits = vec![];
    let mut train_means = vec![];
    for split in &p.splits {
        let rec = dir.records(&split.name);
        let r: PackReport = pack(&split.items, &rec, &opts, progress).map_err(|source| PrepareError::Pack { path: rec.clone(), source })?;
        let skipped: std::collections::HashSet<&str> = r.skipped.iter().map(|(k, _)| k.as_str()).collect();
        let mut lst = String::new();
        let mut per_class = BTreeMap::new();
        for it in split.items.iter().filter(|it| !skipped.contains(it.key.as_str())) {
            lst.push_str(&format!("{}\t{}\t{}\n", per_class.values().sum::<usize>(), it.label, it.key));
            let name = p.labels.get(it.label as usize).cloned().unwrap_or_else(|| it.label.to_string());
            *per_class.entry(name).or_insert(0) += 1;
        }
        dir.write_list(&split.name, &lst)?;
        if split.name.ends_with("train") && train_means.is_empty() {
            train_means = r.channel_means.clone();
        }
        let skipped = r.skipped.into_iter().map(|(item, reason)| Skipped { item, reason }).collect();
        splits.push(SplitReport { name: split.name.clone(), read: r.read, written: r.written, skipped, per_class });
    }
    dir.write_means(Means::from_values(&train_means))?;
    let report = Report {
        kind: p.kind,
        out: out.to_path_buf(),
        classes: p.labels.len(),
        read: p.read,
        dropped: p.dropped.into_iter().map(|(item, reason)| Skipped { item, reason }).collect(),
        splits,
        train_means,
        short_side: opts.short_side,
    };
    dir.write_report(&report)?;
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
