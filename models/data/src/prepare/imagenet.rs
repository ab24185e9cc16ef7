//! ImageNet (ILSVRC2015 CLS-LOC) in its real layout → train / val / test splits (book.md §4, ImageNet
//! Bundle ch. 4).
//!
//! The tree under `ROOT` as it comes out of the archives:
//! ```text
//! Data/CLS-LOC/train/nXXXXXXXX/nXXXXXXXX_NNNN.JPEG     1,000 synset folders
//! Data/CLS-LOC/val/ILSVRC2012_val_00000001.JPEG        flat, 50,000 images
//! ImageSets/CLS-LOC/train_cls.txt                      "n01440764/n01440764_10026 1"
//!                                                      (path without extension, running counter)
//! ImageSets/CLS-LOC/val.txt                            "ILSVRC2012_val_00000001 1"
//!                                                      (name without extension, 1-based image number)
//! devkit/data/map_clsloc.txt                           "n02119789 1 kit_fox"
//!                                                      (WordNet id, 1-based class, label with underscores)
//! devkit/data/ILSVRC2015_clsloc_validation_ground_truth.txt   one 1-based class per line, row i ↔ val.txt row i
//! devkit/data/ILSVRC2015_clsloc_validation_blacklist.txt      one 1-based val image number per line
//! ```
//!
//! The splits follow the book: the official validation set (minus the blacklisted images) becomes `val`,
//! and since the official test labels are not public, `test` is carved out of the training rows —
//! exactly `test_per_class` images of every class, drawn with a seeded shuffle — and the rest is `train`.
//! Class `c` (0-based) is the class numbered `c + 1` in `map_clsloc.txt`, so `labels.txt` follows the
//! devkit's order; label names have their underscores turned into spaces ("kit fox").
//!
//! The book's bug, avoided here: the WordNet id of a training row is the **first** component of its
//! partial path (`n01440764` in `n01440764/n01440764_10026`), i.e. the synset folder the image lives in.
//! The last component is the file stem, which is not a WordNet id; deriving the class from it only works
//! by accident of the file naming and breaks for any file whose name does not start with its folder's id.
//!
//! Nothing is decoded here: the builder only checks that each image file exists (by listing each folder
//! once, which is much cheaper than a `stat` per image on 1.3 million files). Everything it reads is
//! accounted for: `read` = train rows + val rows, and every row ends up either in a split or in
//! `dropped` with its reason — blacklisted, unknown WordNet id, ground-truth class out of range, missing
//! file, duplicate or malformed line. A validation row whose ground-truth class is not in
//! `map_clsloc.txt` (or is not a number) is dropped, not an error, like a training row with an unknown
//! WordNet id. Structural problems are errors naming the file and line: a missing or malformed label
//! map, a malformed blacklist, a ground truth whose length differs from `val.txt`, or a class with
//! fewer training images than `test_per_class`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::records::{Item, Source};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::error::{io, read_text};
use super::{PrepareError, Prepared, Split};

/// Where the tree is and how to carve the test split.
#[derive(Debug, Clone)]
pub struct ImagenetOptions {
    /// The folder holding `Data/`, `ImageSets/` and `devkit/`.
    pub root: PathBuf,
    /// Training images of every class moved to the `test` split.
    pub test_per_class: usize,
    /// Seed of the test-split draw.
    pub seed: u64,
}

impl Default for ImagenetOptions {
    fn default() -> Self {
        Self { root: PathBuf::new(), test_per_class: 50, seed: 42 }
    }
}

const TRAIN_DIR: &str = "Data/CLS-LOC/train";
const VAL_DIR: &str = "Data/CLS-LOC/val";
const TRAIN_LIST: &str = "ImageSets/CLS-LOC/train_cls.txt";
const VAL_LIST: &str = "ImageSets/CLS-LOC/val.txt";
const MAP: &str = "devkit/data/map_clsloc.txt";
const GROUND_TRUTH: &str = "devkit/data/ILSVRC2015_clsloc_validation_ground_truth.txt";
const BLACKLIST: &str = "devkit/data/ILSVRC2015_clsloc_validation_blacklist.txt";
const EXT: &str = "JPEG";

/// One class of `map_clsloc.txt`.
struct Class {
    wnid: String,
    name: String,
    /// Line of the map that defines it (for messages).
    line: usize,
}

/// Reads the ImageNet tree under `o.root` into train / val / test splits (see the module doc).
pub fn build(o: &ImagenetOptions) -> Result<Prepared, PrepareError> {
    let root = &o.root;
    let classes = read_map(&root.join(MAP))?;
    let by_wnid: HashMap<&str, usize> = classes.iter().enumerate().map(|(i, c)| (c.wnid.as_str(), i)).collect();
    let mut files = Listing::new(root);
    let mut read = 0usize;
    let mut dropped: Vec<(String, String)> = vec![];

    // --- training rows: (row order, item)
    let mut train_rows: Vec<Item> = vec![];
    {
        let text = read_text(&root.join(TRAIN_LIST))?;
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (n, line) in numbered_rows(&text) {
            read += 1;
            let partial = match parse_row(line) {
                Ok((partial, _counter)) => partial,
                Err(why) => {
                    dropped.push((format!("{TRAIN_LIST}:{n}"), format!("line {n}: {why}")));
                    continue;
                }
            };
            let key = format!("{TRAIN_DIR}/{partial}.{EXT}");
            if let Some(first) = seen.get(&key) {
                dropped.push((key, format!("line {n}: duplicate of line {first}")));
                continue;
            }
            seen.insert(key.clone(), n);
            // The synset folder, i.e. the FIRST path component (see the module doc).
            let wnid = partial.split('/').next().unwrap_or(partial);
            let Some(&class) = by_wnid.get(wnid) else {
                dropped.push((key, format!("unknown WordNet id {wnid}")));
                continue;
            };
            if !files.exists(&key)? {
                dropped.push((key, "missing file".into()));
                continue;
            }
            train_rows.push(item(root, key, class));
        }
    }

    // --- validation rows
    let mut val = vec![];
    {
        let val_path = root.join(VAL_LIST);
        let gt_path = root.join(GROUND_TRUTH);
        let text = read_text(&val_path)?;
        let gt_text = read_text(&gt_path)?;
        let blacklist = read_blacklist(&root.join(BLACKLIST))?;
        let rows: Vec<(usize, &str)> = numbered_rows(&text).collect();
        let truth: Vec<(usize, &str)> = numbered_rows(&gt_text).collect();
        if rows.len() != truth.len() {
            let where_ = if truth.len() < rows.len() {
                format!("it ends before {} line {}", val_path.display(), rows[truth.len()].0)
            } else {
                format!("its line {} has no row in {}", truth[rows.len()].0, val_path.display())
            };
            let reason = format!("{} class numbers, but {} has {} rows ({where_})", truth.len(), val_path.display(), rows.len());
            return Err(PrepareError::Format { path: gt_path, reason });
        }
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (&(n, line), &(gt_n, gt_line)) in rows.iter().zip(&truth) {
            read += 1;
            let (partial, number) = match parse_row(line) {
                Ok(r) => r,
                Err(why) => {
                    dropped.push((format!("{VAL_LIST}:{n}"), format!("line {n}: {why}")));
                    continue;
                }
            };
            let key = format!("{VAL_DIR}/{partial}.{EXT}");
            if let Some(first) = seen.get(&key) {
                dropped.push((key, format!("line {n}: duplicate of line {first}")));
                continue;
            }
            seen.insert(key.clone(), n);
            if blacklist.contains(&number) {
                dropped.push((key, "blacklisted in the devkit".into()));
                continue;
            }
            let class = match gt_line.parse::<usize>() {
                Ok(c) if (1..=classes.len()).contains(&c) => c - 1,
                Ok(c) => {
                    let why = format!("ground truth line {gt_n}: class {c} is not in {MAP} (1–{})", classes.len());
                    dropped.push((key, why));
                    continue;
                }
                Err(_) => {
                    dropped.push((key, format!("ground truth line {gt_n}: '{gt_line}' is not a class number")));
                    continue;
                }
            };
            if !files.exists(&key)? {
                dropped.push((key, "missing file".into()));
                continue;
            }
            val.push(item(root, key, class));
        }
    }

    // --- the stratified test split, carved out of the training rows
    let mut by_class: BTreeMap<usize, Vec<Item>> = (0..classes.len()).map(|c| (c, vec![])).collect();
    for it in train_rows {
        by_class.entry(it.label as usize).or_default().push(it);
    }
    let mut rng = StdRng::seed_from_u64(o.seed);
    let (mut train, mut test) = (vec![], vec![]);
    for (c, rows) in by_class {
        if rows.len() < o.test_per_class {
            let k = &classes[c];
            return Err(PrepareError::TooFewTrainImages {
                list: root.join(TRAIN_LIST),
                wnid: k.wnid.clone(),
                name: k.name.clone(),
                map: MAP,
                map_line: k.line,
                have: rows.len(),
                want: o.test_per_class,
            });
        }
        let mut order: Vec<usize> = (0..rows.len()).collect();
        order.shuffle(&mut rng);
        let mut chosen: Vec<bool> = vec![false; rows.len()];
        for &i in &order[..o.test_per_class] {
            chosen[i] = true;
        }
        for (it, is_test) in rows.into_iter().zip(chosen) {
            if is_test {
                test.push(it);
            } else {
                train.push(it);
            }
        }
    }
    // train_cls.txt is sorted by class; keep the packed order independent of it
    train.shuffle(&mut rng);

    let splits = [("train", train), ("val", val), ("test", test)]
        .into_iter()
        .filter(|(_, items)| !items.is_empty())
        .map(|(name, items)| Split { name: name.into(), items })
        .collect();
    Ok(Prepared { kind: "imagenet".into(), labels: classes.into_iter().map(|c| c.name).collect(), splits, read, dropped, grayscale: false })
}

fn item(root: &Path, key: String, class: usize) -> Item {
    Item { source: Source::File(root.join(&key)), key, label: class as i32, boxes: vec![] }
}

/// Non-blank lines with their 1-based line numbers (CR and surrounding blanks trimmed).
fn numbered_rows(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())).filter(|(_, l)| !l.is_empty())
}

/// A `train_cls.txt` / `val.txt` row: a partial path and a positive integer.
fn parse_row(line: &str) -> Result<(&str, usize), String> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let [partial, number] = f.as_slice() else {
        return Err(format!("expected '<partial path> <number>', got '{line}'"));
    };
    let number: usize = number.parse().map_err(|_| format!("'{number}' is not a row number"))?;
    if partial.starts_with('/') || partial.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(format!("'{partial}' is not a relative image path"));
    }
    Ok((partial, number))
}

/// `map_clsloc.txt`: classes in the order of their 1-based numbers, which must be 1..=N, each once.
fn read_map(path: &Path) -> Result<Vec<Class>, PrepareError> {
    let text = read_text(path)?;
    let mut slots: Vec<Option<Class>> = vec![];
    let mut wnids: HashMap<String, usize> = HashMap::new();
    let mut rows = 0usize;
    for (n, line) in numbered_rows(&text) {
        rows += 1;
        let bad = |reason: String| PrepareError::Parse { path: path.to_path_buf(), line: n, reason };
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 {
            return Err(bad(format!("expected '<WordNet id> <class number> <label>', got '{line}'")));
        }
        let wnid = f[0].to_string();
        let number: usize = f[1].parse().map_err(|_| bad(format!("'{}' is not a class number", f[1])))?;
        if number == 0 {
            return Err(bad("class numbers start at 1".into()));
        }
        if let Some(first) = wnids.insert(wnid.clone(), n) {
            return Err(bad(format!("WordNet id {wnid} already defined on line {first}")));
        }
        if slots.len() < number {
            slots.resize_with(number, || None);
        }
        if let Some(prev) = &slots[number - 1] {
            return Err(bad(format!("class number {number} already used on line {}", prev.line)));
        }
        let name = f[2..].join(" ").replace('_', " ");
        slots[number - 1] = Some(Class { wnid, name, line: n });
    }
    if rows == 0 {
        return Err(PrepareError::Format { path: path.to_path_buf(), reason: "no classes".into() });
    }
    let missing = |i: usize| PrepareError::Format { path: path.to_path_buf(), reason: format!("class number {} is missing", i + 1) };
    slots.into_iter().enumerate().map(|(i, c)| c.ok_or_else(|| missing(i))).collect()
}

/// The blacklist: 1-based val image numbers.
fn read_blacklist(path: &Path) -> Result<HashSet<usize>, PrepareError> {
    let text = read_text(path)?;
    let bad = |line: usize, l: &str| PrepareError::Parse { path: path.to_path_buf(), line, reason: format!("'{l}' is not a validation image number") };
    numbered_rows(&text).map(|(n, l)| l.parse::<usize>().map_err(|_| bad(n, l))).collect()
}

/// Which files exist, one `read_dir` per folder.
struct Listing<'a> {
    root: &'a Path,
    dirs: HashMap<PathBuf, HashSet<OsString>>,
}

impl<'a> Listing<'a> {
    fn new(root: &'a Path) -> Self {
        Self { root, dirs: HashMap::new() }
    }

    /// Whether `key` (relative to the root) is a file.
    fn exists(&mut self, key: &str) -> Result<bool, PrepareError> {
        let path = self.root.join(key);
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Ok(false);
        };
        if !self.dirs.contains_key(dir) {
            let listed = list_files(dir)?;
            self.dirs.insert(dir.to_path_buf(), listed);
        }
        Ok(self.dirs.get(dir).is_some_and(|names| names.contains(name)))
    }
}

/// The names of the regular files (or links to them) in `dir`; a folder that is not there has none.
fn list_files(dir: &Path) -> Result<HashSet<OsString>, PrepareError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.kind() == std::io::ErrorKind::NotADirectory => return Ok(HashSet::new()),
        Err(e) => return Err(io("listing", dir)(e)),
    };
    let mut names = HashSet::new();
    for e in entries {
        let e = e.map_err(io("listing", dir))?;
        let ft = e.file_type().map_err(io("reading", &e.path()))?;
        if ft.is_file() || (ft.is_symlink() && e.path().is_file()) {
            names.insert(e.file_name());
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WNIDS: [&str; 3] = ["n02119789", "n02100735", "n02110185"];

    /// A tiny tree in the real layout, under a fresh temp folder named after the test.
    ///
    /// Train (class: existing rows): kit fox 6 (one of them `n02119789/n02100735_77`, named like an
    /// English setter but in the kit-fox folder), English setter 5, Siberian husky 4 + 1 row whose file
    /// is missing; plus a row of an unknown synset (its file exists) and a malformed line → 18 rows.
    /// Val: 6 rows; image 3 is blacklisted and image 5's ground truth is class 4 (out of range).
    struct Fixture {
        /// Removes the tree when the fixture drops.
        _scratch: tempfile::TempDir,
        root: PathBuf,
    }

    impl Fixture {
        fn new(name: &str) -> Self {
            let scratch = tempfile::Builder::new().prefix(&format!("dlcv-imagenet-{name}-")).tempdir().unwrap();
            let f = Fixture { root: scratch.path().to_path_buf(), _scratch: scratch };
            f.write(MAP, "n02119789 1 kit_fox\nn02100735 2 English_setter\nn02110185 3 Siberian_husky\n");
            let mut train = String::new();
            let mut counter = 0;
            let mut row = |partial: &str, create: bool, train: &mut String| {
                counter += 1;
                train.push_str(&format!("{partial} {counter}\n"));
                if create {
                    f.write(&format!("{TRAIN_DIR}/{partial}.{EXT}"), "not decoded");
                }
            };
            for (wnid, n) in WNIDS.iter().zip([5, 5, 4]) {
                for i in 0..n {
                    row(&format!("{wnid}/{wnid}_{}", 100 + i), true, &mut train);
                }
            }
            row("n02119789/n02100735_77", true, &mut train);
            row("n02110185/n02110185_999", false, &mut train);
            row("n99999999/n99999999_1", true, &mut train);
            train.push_str("garbage\n\n");
            f.write(TRAIN_LIST, &train);
            let mut val = String::new();
            for i in 1..=6 {
                let name = format!("ILSVRC2012_val_{i:08}");
                val.push_str(&format!("{name} {i}\n"));
                f.write(&format!("{VAL_DIR}/{name}.{EXT}"), "not decoded");
            }
            f.write(VAL_LIST, &val);
            f.write(GROUND_TRUTH, "1\n2\n3\n1\n4\n3\n");
            f.write(BLACKLIST, "3\n");
            f
        }

        fn write(&self, rel: &str, text: &str) {
            let p = self.root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }

        fn opts(&self, test_per_class: usize, seed: u64) -> ImagenetOptions {
            ImagenetOptions { root: self.root.clone(), test_per_class, seed }
        }
    }

    fn split<'a>(p: &'a Prepared, name: &str) -> &'a Split {
        p.splits.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no split {name}"))
    }

    fn per_class(items: &[Item]) -> Vec<usize> {
        let mut n = vec![0; 3];
        for it in items {
            n[it.label as usize] += 1;
        }
        n
    }

    fn keys(items: &[Item]) -> Vec<String> {
        let mut k: Vec<String> = items.iter().map(|i| i.key.clone()).collect();
        k.sort();
        k
    }

    #[test]
    fn builds_the_splits_from_the_real_layout() {
        let f = Fixture::new("splits");
        let p = build(&f.opts(2, 42)).unwrap();
        assert_eq!(p.kind, "imagenet");
        assert_eq!(p.labels, ["kit fox", "English setter", "Siberian husky"]);
        let names: Vec<&str> = p.splits.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["train", "val", "test"]);
        let (train, val, test) = (split(&p, "train"), split(&p, "val"), split(&p, "test"));
        assert_eq!((train.items.len(), val.items.len(), test.items.len()), (9, 4, 6));
        assert_eq!(per_class(&test.items), [2, 2, 2]);
        assert_eq!(per_class(&train.items), [4, 3, 2]);

        // keys, sources, labels
        for it in p.splits.iter().flat_map(|s| &s.items) {
            assert!(it.boxes.is_empty());
            let Source::File(path) = &it.source else { panic!("{} is not a file source", it.key) };
            assert_eq!(path, &f.root.join(&it.key));
        }
        let all: Vec<&Item> = train.items.iter().chain(&test.items).collect();
        let find = |key: &str| all.iter().find(|i| i.key == key).unwrap_or_else(|| panic!("no {key}"));
        assert_eq!(find("Data/CLS-LOC/train/n02100735/n02100735_100.JPEG").label, 1);
        // the class comes from the folder (first component), not from the file name
        assert_eq!(find("Data/CLS-LOC/train/n02119789/n02100735_77.JPEG").label, 0);
        let val_labels: Vec<(String, i32)> = val.items.iter().map(|i| (i.key.clone(), i.label)).collect();
        assert_eq!(
            val_labels,
            [
                ("Data/CLS-LOC/val/ILSVRC2012_val_00000001.JPEG".to_string(), 0),
                ("Data/CLS-LOC/val/ILSVRC2012_val_00000002.JPEG".to_string(), 1),
                ("Data/CLS-LOC/val/ILSVRC2012_val_00000004.JPEG".to_string(), 0),
                ("Data/CLS-LOC/val/ILSVRC2012_val_00000006.JPEG".to_string(), 2),
            ]
        );

        // everything read is either an item or dropped, with its reason
        assert_eq!(p.read, 18 + 6);
        let items: usize = p.splits.iter().map(|s| s.items.len()).sum();
        assert_eq!(p.read, items + p.dropped.len());
        let mut dropped: Vec<(&str, &str)> = p.dropped.iter().map(|(w, r)| (w.as_str(), r.as_str())).collect();
        dropped.sort();
        assert_eq!(
            dropped,
            [
                ("Data/CLS-LOC/train/n02110185/n02110185_999.JPEG", "missing file"),
                ("Data/CLS-LOC/train/n99999999/n99999999_1.JPEG", "unknown WordNet id n99999999"),
                ("Data/CLS-LOC/val/ILSVRC2012_val_00000003.JPEG", "blacklisted in the devkit"),
                ("Data/CLS-LOC/val/ILSVRC2012_val_00000005.JPEG", "ground truth line 5: class 4 is not in devkit/data/map_clsloc.txt (1–3)"),
                ("ImageSets/CLS-LOC/train_cls.txt:18", "line 18: expected '<partial path> <number>', got 'garbage'"),
            ]
        );
    }

    #[test]
    fn test_split_is_stratified_and_seeded() {
        let f = Fixture::new("seeds");
        let draw = |seed: u64| {
            let p = build(&f.opts(2, seed)).unwrap();
            let (train, test) = (split(&p, "train"), split(&p, "test"));
            assert_eq!(per_class(&test.items), [2, 2, 2], "seed {seed}");
            let mut all = keys(&train.items);
            all.extend(keys(&test.items));
            all.sort();
            all.dedup();
            assert_eq!(all.len(), 15, "train and test overlap for seed {seed}");
            (keys(&test.items), train.items.iter().map(|i| i.key.clone()).collect::<Vec<_>>())
        };
        let first = draw(42);
        assert_eq!(first, draw(42), "same seed, same draw and order");
        let others: Vec<_> = (0..8).map(|s| draw(s).0).collect();
        assert!(others.iter().any(|t| *t != first.0), "the test split does not depend on the seed");

        // no test split asked for: all usable rows train
        let p = build(&f.opts(0, 42)).unwrap();
        let names: Vec<&str> = p.splits.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["train", "val"]);
        assert_eq!(per_class(&split(&p, "train").items), [6, 5, 4]);
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let err = |f: &Fixture, tpc: usize| format!("{:#}", build(&f.opts(tpc, 42)).err().expect("an error"));

        let f = Fixture::new("too-few");
        let e = err(&f, 5);
        assert!(e.contains("train_cls.txt") && e.contains("n02110185") && e.contains("map_clsloc.txt line 3"), "{e}");
        assert!(e.contains("has 4 usable training images"), "{e}");

        let f = Fixture::new("no-map");
        std::fs::remove_file(f.root.join(MAP)).unwrap();
        let e = err(&f, 2);
        assert!(e.contains("map_clsloc.txt"), "{e}");

        let f = Fixture::new("bad-map");
        f.write(MAP, "n02119789 1 kit_fox\nn02100735 two English_setter\n");
        let e = err(&f, 2);
        assert!(e.contains("map_clsloc.txt:2") && e.contains("'two'"), "{e}");

        let f = Fixture::new("gap-map");
        f.write(MAP, "n02119789 1 kit_fox\nn02100735 3 English_setter\n");
        let e = err(&f, 2);
        assert!(e.contains("map_clsloc.txt") && e.contains("class number 2 is missing"), "{e}");

        let f = Fixture::new("short-gt");
        f.write(GROUND_TRUTH, "1\n2\n3\n1\n2\n");
        let e = err(&f, 2);
        assert!(e.contains("ILSVRC2015_clsloc_validation_ground_truth.txt") && e.contains("5 class numbers"), "{e}");
        assert!(e.contains("val.txt has 6 rows") && e.contains("val.txt line 6"), "{e}");

        let f = Fixture::new("bad-blacklist");
        f.write(BLACKLIST, "3\nthree\n");
        let e = err(&f, 2);
        assert!(e.contains("ILSVRC2015_clsloc_validation_blacklist.txt:2"), "{e}");
    }
}
