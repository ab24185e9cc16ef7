//! Adience as the book uses it (ImageNet Bundle, ch. 13): age-bin and gender recognition from aligned faces.
//!
//! The download is laid out as
//! ```text
//! ROOT/aligned/<user_id>/landmark_aligned_face.<face_id>.<original_image>
//! FOLDS/fold_0_data.txt … fold_4_data.txt            (or fold_frontal_0_data.txt … fold_frontal_4_data.txt)
//! ```
//! where `FOLDS` is [`AdienceOptions::folds`], by default `ROOT/folds` when that directory exists, else `ROOT`.
//! When both kinds of fold files are present, the full `fold_N_data.txt` set is used (the frontal files are
//! a subset of the same faces, so reading both would count faces twice).
//!
//! Fold files are tab-separated with a header naming the columns; the builder locates `user_id`,
//! `original_image`, `face_id`, `age` and `gender` by name (they are the first five in the real files).
//!
//! Labels, per task (only the task's own column is checked; the other may hold anything):
//! * [`AdienceTask::Age`]: the age must be exactly one of the 8 bins `(0, 2)`, `(4, 6)`, `(8, 12)`, `(15, 20)`,
//!   `(25, 32)`, `(38, 43)`, `(48, 53)`, `(60, 100)` (surrounding whitespace ignored); anything else, such as
//!   `(8, 23)`, `35` or `None`, is dropped. Classes in bin order (ordinal, as one-off accuracy needs):
//!   `0-2`, `4-6`, `8-12`, `15-20`, `25-32`, `38-43`, `48-53`, `60-100`.
//! * [`AdienceTask::Gender`]: the gender must be `f` or `m`; `u`, empty and the rest are dropped. The book's
//!   `LabelEncoder` sorts the names, so `f` = 0 (`female`) and `m` = 1 (`male`).
//!
//! A row whose image does not exist is dropped too (images are not decoded here; packing does that). Every
//! dropped row is listed as (`fold_2_data.txt:14`, reason), where 14 is the line in that file (the header is
//! line 1). Blank lines are neither read nor dropped. `read` counts the data rows over all fold files, so
//! `read` = items over all splits + `dropped.len()`.
//!
//! The kept items are split stratified by class: 80% train, 10% val, 10% test, shuffled with `seed`.

use std::path::{Path, PathBuf};

use crate::records::{Item, Source};

use super::error::io;
use super::{stratified_split, PrepareError, Prepared};

/// Fraction of each class held out for validation.
pub const VAL_FRACTION: f64 = 0.10;
/// Fraction of each class held out for testing.
pub const TEST_FRACTION: f64 = 0.10;

/// The age bins exactly as the fold files write them, in ordinal order; index = class.
pub const AGE_BINS: [&str; 8] = ["(0, 2)", "(4, 6)", "(8, 12)", "(15, 20)", "(25, 32)", "(38, 43)", "(48, 53)", "(60, 100)"];
/// Class names of the age task, in bin order.
pub const AGE_LABELS: [&str; 8] = ["0-2", "4-6", "8-12", "15-20", "25-32", "38-43", "48-53", "60-100"];
/// Class names of the gender task: `f` = 0, `m` = 1 (sorted, like the book's `LabelEncoder`).
pub const GENDER_LABELS: [&str; 2] = ["female", "male"];

/// Which label to predict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdienceTask {
    Age,
    Gender,
}

impl AdienceTask {
    /// The class names, line i = class i.
    pub fn labels(self) -> Vec<String> {
        let names: &[&str] = match self {
            AdienceTask::Age => &AGE_LABELS,
            AdienceTask::Gender => &GENDER_LABELS,
        };
        names.iter().map(|s| s.to_string()).collect()
    }

    fn kind(self) -> &'static str {
        match self {
            AdienceTask::Age => "adience-age",
            AdienceTask::Gender => "adience-gender",
        }
    }
}

/// Where the Adience download is, which task to build and how to split it.
#[derive(Debug, Clone)]
pub struct AdienceOptions {
    /// The dataset root: holds `aligned/`.
    pub root: PathBuf,
    /// The directory with the fold files; default `ROOT/folds` if it exists, else `ROOT`.
    pub folds: Option<PathBuf>,
    pub task: AdienceTask,
    /// Seed of the stratified split.
    pub seed: u64,
}

impl AdienceOptions {
    /// The directory this run looks for fold files in.
    pub fn folds_dir(&self) -> PathBuf {
        match &self.folds {
            Some(d) => d.clone(),
            None if self.root.join("folds").is_dir() => self.root.join("folds"),
            None => self.root.clone(),
        }
    }
}

/// The label of `age` (one of the 8 bins, written exactly as in the fold files), if it is one.
pub fn age_label(age: &str) -> Option<i32> {
    AGE_BINS.iter().position(|b| *b == age.trim()).map(|i| i as i32)
}

/// The label of `gender` (`f` = 0, `m` = 1), if it is one of those.
pub fn gender_label(gender: &str) -> Option<i32> {
    match gender.trim() {
        "f" => Some(0),
        "m" => Some(1),
        _ => None,
    }
}

/// The fold number of `fold_N_data.txt` (frontal = false) or `fold_frontal_N_data.txt` (frontal = true).
fn fold_number(name: &str) -> Option<(bool, u32)> {
    let middle = name.strip_prefix("fold_")?.strip_suffix("_data.txt")?;
    let (frontal, n) = match middle.strip_prefix("frontal_") {
        Some(n) => (true, n),
        None => (false, middle),
    };
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((frontal, n.parse().ok()?))
}

/// The fold files in `dir`, in fold order: the `fold_N_data.txt` set if there is one, else the frontal set.
pub fn fold_files(dir: &Path) -> Result<Vec<PathBuf>, PrepareError> {
    let entries = std::fs::read_dir(dir).map_err(io("reading the Adience fold directory", dir))?;
    let (mut full, mut frontal) = (vec![], vec![]);
    for e in entries {
        let e = e.map_err(io("reading the Adience fold directory", dir))?;
        let name = e.file_name();
        let Some((is_frontal, n)) = name.to_str().and_then(fold_number) else { continue };
        if is_frontal {
            frontal.push((n, e.path()));
        } else {
            full.push((n, e.path()));
        }
    }
    let mut files = if full.is_empty() { frontal } else { full };
    if files.is_empty() {
        return Err(PrepareError::NoFoldFiles { dir: dir.to_path_buf() });
    }
    files.sort();
    Ok(files.into_iter().map(|(_, p)| p).collect())
}

/// Column positions of the fields the builder uses.
struct Columns {
    user_id: usize,
    original_image: usize,
    face_id: usize,
    age: usize,
    gender: usize,
}

impl Columns {
    fn from_header(header: &str, file: &Path, line: usize) -> Result<Self, PrepareError> {
        let names: Vec<&str> = header.split('\t').map(str::trim).collect();
        let find = |col: &str| {
            let reason = || format!("the header has no '{col}' column (found: {})", names.join(", "));
            names.iter().position(|n| *n == col).ok_or_else(|| PrepareError::Parse { path: file.to_path_buf(), line, reason: reason() })
        };
        Ok(Self { user_id: find("user_id")?, original_image: find("original_image")?, face_id: find("face_id")?, age: find("age")?, gender: find("gender")? })
    }

    fn needed(&self) -> usize {
        1 + [self.user_id, self.original_image, self.face_id, self.age, self.gender].into_iter().max().unwrap_or(0)
    }
}

/// Reads every fold file, keeps the rows with a valid label for the task and an existing image, and splits
/// 80/10/10 stratified by class.
pub fn build(o: &AdienceOptions) -> Result<Prepared, PrepareError> {
    let files = fold_files(&o.folds_dir())?;
    let mut read = 0usize;
    let mut dropped = vec![];
    let mut items = vec![];
    for file in &files {
        let text = std::fs::read_to_string(file).map_err(io("reading the Adience fold file", file))?;
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| file.display().to_string());
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim_end_matches('\r')));
        let Some((header_line, header)) = lines.find(|(_, l)| !l.trim().is_empty()) else {
            return Err(PrepareError::Format { path: file.clone(), reason: "empty fold file (no header)".into() });
        };
        let cols = Columns::from_header(header, file, header_line)?;
        for (line, row) in lines.filter(|(_, l)| !l.trim().is_empty()) {
            read += 1;
            match parse_row(row, &cols, o) {
                Ok(item) => items.push(item),
                Err(reason) => dropped.push((format!("{name}:{line}"), reason)),
            }
        }
    }
    let splits = stratified_split(items, VAL_FRACTION, TEST_FRACTION, o.seed);
    Ok(Prepared { kind: o.task.kind().into(), labels: o.task.labels(), splits, read, dropped, grayscale: false })
}

/// Validates one data row; the error is the reason it is dropped.
fn parse_row(row: &str, cols: &Columns, o: &AdienceOptions) -> Result<Item, String> {
    let f: Vec<&str> = row.split('\t').map(str::trim).collect();
    if f.len() < cols.needed() {
        return Err(format!("too few columns ({}, needs {})", f.len(), cols.needed()));
    }
    let label = match o.task {
        AdienceTask::Age => age_label(f[cols.age]).ok_or_else(|| format!("age '{}' is not one of the 8 bins", f[cols.age]))?,
        AdienceTask::Gender => gender_label(f[cols.gender]).ok_or_else(|| format!("gender '{}' is not 'm' or 'f'", f[cols.gender]))?,
    };
    let (user, image, face) = (f[cols.user_id], f[cols.original_image], f[cols.face_id]);
    if user.is_empty() || image.is_empty() || face.is_empty() {
        return Err("empty user_id, original_image or face_id".to_string());
    }
    let key = format!("aligned/{user}/landmark_aligned_face.{face}.{image}");
    let path = o.root.join(&key);
    if !path.is_file() {
        return Err(format!("missing file {key}"));
    }
    Ok(Item { source: Source::File(path), key, label, boxes: vec![] })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const HEADER: &str = "user_id\toriginal_image\tface_id\tage\tgender\tx\ty\tdx\tdy\ttilt_ang\tfiducial_yaw_angle\tfiducial_score";

    /// One fold-file row in the real format, with its image written unless `image` is false.
    fn row(root: &Path, user: &str, face: usize, age: &str, gender: &str, image: bool) -> String {
        let original = format!("{}_{face:04}_o.jpg", 10000 + face);
        if image {
            let dir = root.join("aligned").join(user);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("landmark_aligned_face.{face}.{original}")), b"face").unwrap();
        }
        format!("{user}\t{original}\t{face}\t{age}\t{gender}\t301\t105\t640\t641\t0\t94\t1\n")
    }

    /// 5 fold files in `ROOT/folds`; fold k holds, for every age bin and both genders, 2 good rows
    /// (so 8 bins × 2 genders × 2 × 5 = 160 good rows, 20 per bin, 80 per gender), then bad rows:
    /// fold 0: age "(8, 23)" (gender m) and a missing image (age (25, 32), gender f);
    /// fold 1: age "None" with gender "u", and age "35" with gender "f";
    /// fold 2: a row with too few columns. Returns the root, a scratch folder removed when it drops.
    fn fixture() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let folds = root.join("folds");
        std::fs::create_dir_all(&folds).unwrap();
        let mut face = 0;
        for k in 0..5 {
            let user = format!("{}@N0{k}", 7153718 + k);
            let mut text = format!("{HEADER}\n");
            for bin in AGE_BINS {
                for g in ["m", "f"] {
                    for _ in 0..2 {
                        face += 1;
                        text.push_str(&row(&root, &user, face, bin, g, true));
                    }
                }
            }
            face += 1;
            match k {
                0 => {
                    text.push_str(&row(&root, &user, face, "(8, 23)", "m", true));
                    face += 1;
                    text.push_str(&row(&root, &user, face, "(25, 32)", "f", false));
                }
                1 => {
                    text.push_str(&row(&root, &user, face, "None", "u", true));
                    face += 1;
                    text.push_str(&row(&root, &user, face, "35", "f", true));
                }
                2 => text.push_str(&format!("{user}\t{face}.jpg\n")),
                _ => {}
            }
            std::fs::write(folds.join(format!("fold_{k}_data.txt")), text).unwrap();
        }
        dir
    }

    fn opts(root: &Path, task: AdienceTask, seed: u64) -> AdienceOptions {
        AdienceOptions { root: root.to_path_buf(), folds: None, task, seed }
    }

    fn total(p: &Prepared) -> usize {
        p.splits.iter().map(|s| s.items.len()).sum()
    }

    fn per_class(items: &[Item]) -> BTreeMap<i32, usize> {
        let mut m = BTreeMap::new();
        for it in items {
            *m.entry(it.label).or_insert(0) += 1;
        }
        m
    }

    #[test]
    fn adience_age_labels_counts_and_dropped_rows() {
        let scratch = fixture();
        let root = scratch.path().to_path_buf();
        let p = build(&opts(&root, AdienceTask::Age, 3)).unwrap();
        assert_eq!(p.kind, "adience-age");
        assert_eq!(p.labels, ["0-2", "4-6", "8-12", "15-20", "25-32", "38-43", "48-53", "60-100"]);
        assert_eq!(p.read, 165);
        // gender is not checked for the age task: the "None"/"u" row is dropped for its age
        assert_eq!(total(&p), 160);
        assert_eq!(p.read, total(&p) + p.dropped.len());
        let dropped: BTreeMap<&str, &str> = p.dropped.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(dropped.len(), 5);
        // fold rows: header is line 1, 32 good rows on lines 2..=33, bad rows from line 34
        assert_eq!(dropped["fold_0_data.txt:34"], "age '(8, 23)' is not one of the 8 bins");
        assert!(dropped["fold_0_data.txt:35"].starts_with("missing file aligned/7153718@N00/landmark_aligned_face."), "{dropped:?}");
        assert_eq!(dropped["fold_1_data.txt:34"], "age 'None' is not one of the 8 bins");
        assert_eq!(dropped["fold_1_data.txt:35"], "age '35' is not one of the 8 bins");
        assert!(dropped["fold_2_data.txt:34"].starts_with("too few columns"), "{dropped:?}");
        let all: Vec<Item> = p.splits.iter().flat_map(|s| s.items.clone()).collect();
        assert_eq!(per_class(&all), (0..8).map(|c| (c, 20)).collect());
        for it in &all {
            let Source::File(f) = &it.source else { panic!("adience items are files: {}", it.key) };
            assert!(f.is_file());
            assert_eq!(f, &root.join(&it.key));
        }
    }

    #[test]
    fn adience_gender_labels_counts_and_dropped_rows() {
        let scratch = fixture();
        let root = scratch.path().to_path_buf();
        let p = build(&opts(&root, AdienceTask::Gender, 3)).unwrap();
        assert_eq!(p.kind, "adience-gender");
        assert_eq!(p.labels, ["female", "male"]);
        assert_eq!(p.read, 165);
        // kept: 160 good rows, "(8, 23)"/m and "35"/f (age is not checked for gender)
        assert_eq!(total(&p), 162);
        assert_eq!(p.read, total(&p) + p.dropped.len());
        let reasons: Vec<(&str, &str)> = p.dropped.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(reasons.len(), 3);
        assert_eq!(reasons[0].0, "fold_0_data.txt:35");
        assert!(reasons[0].1.starts_with("missing file"));
        assert_eq!(reasons[1], ("fold_1_data.txt:34", "gender 'u' is not 'm' or 'f'"));
        assert_eq!(reasons[2].0, "fold_2_data.txt:34");
        let all: Vec<Item> = p.splits.iter().flat_map(|s| s.items.clone()).collect();
        // f = 0, m = 1
        assert_eq!(per_class(&all), [(0, 81), (1, 81)].into_iter().collect());
    }

    #[test]
    fn adience_splits_are_stratified_and_deterministic() {
        let scratch = fixture();
        let root = scratch.path().to_path_buf();
        let a = build(&opts(&root, AdienceTask::Age, 11)).unwrap();
        let b = build(&opts(&root, AdienceTask::Age, 11)).unwrap();
        let c = build(&opts(&root, AdienceTask::Age, 12)).unwrap();
        let names: Vec<&str> = a.splits.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["train", "val", "test"]);
        // 20 per bin: 2 val, 2 test, 16 train in every bin
        for (s, want) in a.splits.iter().zip([16, 2, 2]) {
            assert_eq!(per_class(&s.items), (0..8).map(|c| (c, want)).collect(), "{}", s.name);
        }
        let keys = |p: &Prepared| -> Vec<Vec<String>> { p.splits.iter().map(|s| s.items.iter().map(|i| i.key.clone()).collect()).collect() };
        assert_eq!(keys(&a), keys(&b));
        assert_ne!(keys(&a), keys(&c));
        let mut all = keys(&a).concat();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 160);
    }

    #[test]
    fn adience_fold_discovery() {
        // frontal files alone are used; when both sets exist the full set wins; folds can sit in ROOT
        let scratch = tempfile::tempdir().unwrap();
        let root = scratch.path().to_path_buf();
        let r = row(&root, "u1", 1, "(0, 2)", "f", true);
        std::fs::write(root.join("fold_frontal_1_data.txt"), format!("{HEADER}\n{r}")).unwrap();
        std::fs::write(root.join("fold_frontal_0_data.txt"), format!("{HEADER}\n{r}{r}")).unwrap();
        std::fs::write(root.join("notes.txt"), "not a fold").unwrap();
        let files = fold_files(&root).unwrap();
        let names: Vec<String> = files.iter().map(|f| f.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["fold_frontal_0_data.txt", "fold_frontal_1_data.txt"]);
        let p = build(&opts(&root, AdienceTask::Gender, 0)).unwrap();
        assert_eq!(p.read, 3);
        std::fs::write(root.join("fold_0_data.txt"), format!("{HEADER}\n{r}\n\n")).unwrap();
        let p = build(&opts(&root, AdienceTask::Gender, 0)).unwrap();
        assert_eq!(p.read, 1, "blank lines are not rows; frontal files ignored when the full set exists");
        assert_eq!(total(&p), 1);
        assert_eq!(fold_number("fold_12_data.txt"), Some((false, 12)));
        assert_eq!(fold_number("fold_frontal_3_data.txt"), Some((true, 3)));
        assert_eq!(fold_number("fold_x_data.txt"), None);
    }

    #[test]
    fn adience_errors_name_the_file() {
        let scratch = tempfile::tempdir().unwrap();
        let root = scratch.path().to_path_buf();
        let err = build(&opts(&root, AdienceTask::Age, 0)).err().expect("no fold files");
        let msg = format!("{err:#}");
        assert!(msg.contains("no Adience fold files") && msg.contains(&root.display().to_string()), "{msg}");

        let folds = root.join("elsewhere");
        std::fs::create_dir_all(&folds).unwrap();
        std::fs::write(folds.join("fold_0_data.txt"), format!("{HEADER}\n")).unwrap();
        std::fs::write(folds.join("fold_1_data.txt"), "user_id\toriginal_image\tface_id\tgender\n").unwrap();
        let o = AdienceOptions { folds: Some(folds.clone()), ..opts(&root, AdienceTask::Age, 0) };
        let msg = format!("{:#}", build(&o).err().expect("header lacks age"));
        assert!(msg.contains("fold_1_data.txt") && msg.contains("'age'"), "{msg}");

        std::fs::write(folds.join("fold_1_data.txt"), "").unwrap();
        let msg = format!("{:#}", build(&o).err().expect("empty file"));
        assert!(msg.contains("fold_1_data.txt"), "{msg}");

        let missing = AdienceOptions { folds: Some(root.join("nope")), ..opts(&root, AdienceTask::Age, 0) };
        let msg = format!("{:#}", build(&missing).err().expect("no such dir"));
        assert!(msg.contains("nope"), "{msg}");
    }

    #[test]
    fn adience_label_parsers() {
        assert_eq!(age_label("(0, 2)"), Some(0));
        assert_eq!(age_label(" (60, 100) "), Some(7));
        assert_eq!(age_label("(8, 23)"), None);
        assert_eq!(age_label("(8,12)"), None);
        assert_eq!(age_label("35"), None);
        assert_eq!(age_label("None"), None);
        assert_eq!(gender_label("f"), Some(0));
        assert_eq!(gender_label("m"), Some(1));
        assert_eq!(gender_label("u"), None);
        assert_eq!(gender_label(""), None);
        assert_eq!(AdienceTask::Age.labels().len(), AGE_BINS.len());
    }
}
