//! `trainer logreg`: multinomial logistic regression on extracted features, with a cross-validated
//! grid search over the regularisation C (book ch. 11, `train_model.py`: scikit-learn's
//! `GridSearchCV(LogisticRegression(), {"C": [...]}, cv=3)`, then `classification_report`).
//!
//! - The objective is scikit-learn's: minimise `C * sum_i -log p(y_i | x_i) + ||W||^2 / 2` (the bias
//!   is not penalised), i.e. linfa-logistic's `sum_i -log p + alpha/2 ||W||^2` with `alpha = 1/C`,
//!   solved with L-BFGS. Larger C, weaker regularisation.
//! - Features are standardised by default (mean 0, standard deviation 1 per feature, measured on the
//!   data being fitted; constant features are only centred), which makes one C grid fit networks whose
//!   activations have very different scales. The statistics are part of the model.
//! - Cross-validation: stratified k folds (every class spread as evenly as it goes over the folds,
//!   after a seeded shuffle within the class), scored by accuracy; the standardisation is refitted on
//!   each training part, so no statistic of a held-out fold leaks into its score. The best C is the one
//!   with the highest mean score, the first in grid order on a tie (as GridSearchCV ranks them); the
//!   model is then refitted on all training rows with it.
//! - The model is JSON: labels, C, standardisation, weights `[K][D]`, bias `[K]`, the CV table and
//!   where the features came from (so `trainer orientation-correct` can repeat the extraction).
//!   serde_json (as built here, without `float_roundtrip`) may read a weight back one ulp away from
//!   what it wrote, so `trainer logreg fit` reports on the model as reloaded from its file: `trainer
//!   logreg eval` of that file then gives exactly the same numbers.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use linfa::traits::Fit;
use linfa_logistic::MultiLogisticRegression;
use ndarray::{Array1, Array2};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::features::{FeatureInfo, FeatureSet};

/// Index of the largest value (the first on a tie), kept here for the orientation correction.
pub use data::metrics::argmax;
use data::metrics::softmax;
/// The classification report (scikit-learn's `classification_report`) is the one in `data::metrics`.
pub use data::metrics::{ClassScores, Report};

/// Why a model cannot be fitted, read, written or applied; messages name the file, row, class or C.
#[derive(Debug, thiserror::Error)]
pub enum LogregError {
    #[error("the features have {features} values per row, the model expects {model}")]
    Dim { features: usize, model: usize },
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a logistic regression model", path.display())]
    NotModel {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: format '{format}' is not {}", path.display(), FORMAT)]
    Format { path: PathBuf, format: String },
    #[error("{}: {why}", path.display())]
    Shape { path: PathBuf, why: String },
    #[error("row {row} ({key}) has label {label}, not one of the {classes} classes {names:?}")]
    BadLabel { row: usize, key: String, label: i64, classes: usize, names: Vec<String> },
    #[error("class '{class}' has {rows} training rows; {min} folds need at least {min} of every class")]
    FewRows { class: String, rows: usize, min: usize },
    #[error("a grid search needs at least one C and 2 folds (got {cs} C values, {folds} folds)")]
    Grid { cs: usize, folds: usize },
    #[error("C must be a positive number, got {0}")]
    BadC(f64),
    #[error("fold {fold}: {scores} scores for {cs} values of C")]
    FoldScores { fold: usize, scores: usize, cs: usize },
    #[error("logistic regression with C={c}: {reason}")]
    Solver { c: f64, reason: String },
    #[error("C={c}: the rows fitted hold {held} of the {classes} classes")]
    MissingClasses { c: f64, held: usize, classes: usize },
    #[error("the features' classes {features:?} are not the model's {model:?}")]
    Classes { features: Vec<String>, model: Vec<String> },
    #[error("{}: the model cannot be serialised", path.display())]
    Serialise {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("fold {fold} of {folds}")]
    Fold {
        fold: usize,
        folds: usize,
        #[source]
        source: Box<LogregError>,
    },
}

type Result<T, E = LogregError> = std::result::Result<T, E>;

/// The `format` of model files.
pub const FORMAT: &str = "dlcv-logreg/1";

/// The book's grid (`train_model.py`).
pub const BOOK_GRID: [f64; 7] = [0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0];

/// Per-feature standardisation: `(x - mean) / scale`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standardize {
    pub mean: Vec<f64>,
    pub scale: Vec<f64>,
}

/// One feature row as the model reads it: standardised when `s` is given, else as it is.
fn scaled_row<'a>(s: Option<&Standardize>, row: &[f32], out: impl IntoIterator<Item = &'a mut f64>) {
    for (j, (o, &v)) in out.into_iter().zip(row).enumerate() {
        *o = match s {
            Some(s) => (v as f64 - s.mean[j]) / s.scale[j],
            None => v as f64,
        };
    }
}

impl Standardize {
    /// Mean and population standard deviation of `rows` of `x` (scale 1 where a feature is constant,
    /// as scikit-learn's StandardScaler does).
    fn fit(x: &FeatureSet, rows: &[usize]) -> Self {
        let (d, n) = (x.dim, rows.len().max(1) as f64);
        let (mut mean, mut sq) = (vec![0f64; d], vec![0f64; d]);
        for &r in rows {
            for (m, &v) in mean.iter_mut().zip(x.row(r)) {
                *m += v as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n);
        for &r in rows {
            for ((s, &v), m) in sq.iter_mut().zip(x.row(r)).zip(&mean) {
                *s += (v as f64 - m).powi(2);
            }
        }
        let scale = sq.iter().map(|s| (s / n).sqrt()).map(|s| if s > 1e-12 { s } else { 1.0 }).collect();
        Self { mean, scale }
    }
}

/// One C of the grid: accuracy on each held-out fold, their mean and (population) standard deviation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CvScore {
    pub c: f64,
    pub folds: Vec<f64>,
    pub mean: f64,
    pub std: f64,
}

/// A fitted model (what `--out MODEL.json` holds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    pub format: String,
    /// Class names; row k of `weights` scores class k.
    pub labels: Vec<String>,
    pub c: f64,
    pub standardize: Option<Standardize>,
    /// `[K][D]`.
    pub weights: Vec<Vec<f64>>,
    /// `[K]`.
    pub bias: Vec<f64>,
    pub train_samples: usize,
    /// The grid search that chose `c` (empty when fitted without one).
    #[serde(default)]
    pub cv: Vec<CvScore>,
    #[serde(default)]
    pub folds: usize,
    /// Where the training features came from.
    pub features: Option<FeatureInfo>,
}

impl Model {
    pub fn dim(&self) -> usize {
        self.weights.first().map_or(0, Vec::len)
    }

    /// Class probabilities of every row of `x`, row-major `[n][K]` (softmax of `W x + b`).
    pub fn predict_proba(&self, x: &FeatureSet) -> Result<Vec<Vec<f64>>> {
        if x.dim != self.dim() {
            return Err(LogregError::Dim { features: x.dim, model: self.dim() });
        }
        let mut z = vec![0f64; x.dim];
        Ok((0..x.n)
            .map(|i| {
                scaled_row(self.standardize.as_ref(), x.row(i), z.iter_mut());
                let logits: Vec<f64> = self.weights.iter().zip(&self.bias).map(|(w, b)| b + w.iter().zip(&z).map(|(a, b)| a * b).sum::<f64>()).collect();
                softmax(&logits)
            })
            .collect())
    }

    /// The most probable class of every row.
    pub fn predict(&self, x: &FeatureSet) -> Result<Vec<usize>> {
        Ok(self.predict_proba(x)?.iter().map(|p| argmax(p)).collect())
    }

    /// The classification report of the model on labelled features.
    pub fn report(&self, x: &FeatureSet) -> Result<Report> {
        if x.label_names != self.labels {
            return Err(LogregError::Classes { features: x.label_names.clone(), model: self.labels.clone() });
        }
        let truth = class_indices(x, 0)?;
        Ok(Report::new(&truth, &self.predict(x)?, &self.labels))
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_vec(self).map_err(|source| LogregError::Serialise { path: path.to_path_buf(), source })?;
        std::fs::write(path, text).map_err(|source| LogregError::Io { what: "writing", path: path.to_path_buf(), source })
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| LogregError::Io { what: "reading", path: path.to_path_buf(), source })?;
        let m: Model = serde_json::from_str(&text).map_err(|source| LogregError::NotModel { path: path.to_path_buf(), source })?;
        if m.format != FORMAT {
            return Err(LogregError::Format { path: path.to_path_buf(), format: m.format });
        }
        let shape = |why: String| LogregError::Shape { path: path.to_path_buf(), why };
        let (k, d) = (m.labels.len(), m.dim());
        if m.weights.len() != k || m.bias.len() != k || m.weights.iter().any(|w| w.len() != d) {
            return Err(shape(format!("{k} labels need {k} weight rows of one length and {k} biases")));
        }
        if m.standardize.as_ref().is_some_and(|s| s.mean.len() != d || s.scale.len() != d) {
            return Err(shape(format!("the standardisation does not have {d} values")));
        }
        Ok(m)
    }
}

/// Solver settings and the grid.
#[derive(Debug, Clone)]
pub struct FitOptions {
    pub cs: Vec<f64>,
    pub folds: usize,
    pub standardize: bool,
    /// L-BFGS iterations (scikit-learn's max_iter, 100 there too).
    pub max_iter: u64,
    /// L-BFGS stops when the gradient norm of the mean loss (scikit-learn's scaling) is below this.
    pub tol: f64,
    /// Seed of the fold assignment.
    pub seed: u64,
    /// Folds fitted at once (0: one per core), as the book's `--jobs`.
    pub jobs: usize,
}

impl Default for FitOptions {
    fn default() -> Self {
        Self { cs: BOOK_GRID.to_vec(), folds: 3, standardize: true, max_iter: 100, tol: 1e-4, seed: 42, jobs: 0 }
    }
}

/// The training labels as class indices, checked: every row labelled, every class of `label_names`
/// present at least `min_per_class` times.
fn class_indices(x: &FeatureSet, min_per_class: usize) -> Result<Vec<usize>> {
    let k = x.label_names.len();
    let mut count = vec![0usize; k];
    let mut y = Vec::with_capacity(x.n);
    for (i, &l) in x.labels.iter().enumerate() {
        if l < 0 || l as usize >= k {
            return Err(LogregError::BadLabel { row: i, key: x.keys[i].clone(), label: l, classes: k, names: x.label_names.clone() });
        }
        count[l as usize] += 1;
        y.push(l as usize);
    }
    if let Some(c) = (0..k).find(|&c| count[c] < min_per_class) {
        return Err(LogregError::FewRows { class: x.label_names[c].clone(), rows: count[c], min: min_per_class });
    }
    Ok(y)
}

/// Stratified k-fold assignment: the fold of every row. Within each class the rows are shuffled (from
/// `seed`) and dealt to the folds in turn, so each fold holds `count/k` or one more of every class.
pub fn stratified_folds(y: &[usize], k: usize, seed: u64) -> Vec<usize> {
    let classes = y.iter().copied().max().map_or(0, |m| m + 1);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut fold = vec![0; y.len()];
    // continue the dealing where the previous class stopped, so fold sizes stay within one of each other
    let mut next = 0;
    for c in 0..classes {
        let mut rows: Vec<usize> = (0..y.len()).filter(|&i| y[i] == c).collect();
        rows.shuffle(&mut rng);
        for r in rows {
            fold[r] = next % k;
            next += 1;
        }
    }
    fold
}

/// The grid search's choice from `by_fold[f][i]`, the held-out score of C `cs[i]` on fold `f`: the
/// index of the best C (highest mean, the first on a tie) and the table.
pub fn grid_search(cs: &[f64], by_fold: &[Vec<f64>]) -> Result<(usize, Vec<CvScore>)> {
    let folds = by_fold.len();
    if cs.is_empty() || folds < 2 {
        return Err(LogregError::Grid { cs: cs.len(), folds });
    }
    if let Some(c) = cs.iter().find(|c| !(c.is_finite() && **c > 0.0)) {
        return Err(LogregError::BadC(*c));
    }
    if let Some(f) = by_fold.iter().position(|s| s.len() != cs.len()) {
        return Err(LogregError::FoldScores { fold: f, scores: by_fold[f].len(), cs: cs.len() });
    }
    let table: Vec<CvScore> = cs
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let scores: Vec<f64> = by_fold.iter().map(|s| s[i]).collect();
            let mean = scores.iter().sum::<f64>() / folds as f64;
            let std = (scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / folds as f64).sqrt();
            CvScore { c, folds: scores, mean, std }
        })
        .collect();
    let best = table.iter().enumerate().fold(0, |b, (i, s)| if s.mean > table[b].mean { i } else { b });
    Ok((best, table))
}

/// The rows one model is fitted on, standardised once and reused for every C.
pub struct Design<'a> {
    x: &'a FeatureSet,
    a: Array2<f64>,
    targets: Array1<usize>,
    standardize: Option<Standardize>,
    k: usize,
}

impl<'a> Design<'a> {
    /// `rows` of `x` with class indices `y` (`k` classes, every one present in `rows`).
    pub fn new(x: &'a FeatureSet, y: &[usize], k: usize, rows: &[usize], standardize: bool) -> Self {
        let standardize = standardize.then(|| Standardize::fit(x, rows));
        let mut a = Array2::<f64>::zeros((rows.len(), x.dim));
        for (mut out, &r) in a.rows_mut().into_iter().zip(rows) {
            scaled_row(standardize.as_ref(), x.row(r), out.iter_mut());
        }
        let targets = Array1::from_iter(rows.iter().map(|&r| y[r]));
        Self { x, a, targets, standardize, k }
    }

    /// Fits with `c`, starting L-BFGS from `warm` (a model of these rows with a nearby C) if given.
    pub fn fit(&self, c: f64, o: &FitOptions, warm: Option<&Model>) -> Result<Model> {
        let (n, d, k) = (self.a.nrows(), self.x.dim, self.k);
        // linfa's objective is a sum over rows; scikit-learn's tolerance is on the mean (its objective
        // divided by n), so the same tol means n times more here
        let mut params = MultiLogisticRegression::default().alpha(1.0 / c).max_iterations(o.max_iter).gradient_tolerance(o.tol * n.max(1) as f64);
        if let Some(w) = warm {
            // linfa's parameter layout: [D + 1, K], the intercept in the last row
            params = params.initial_params(Array2::from_shape_fn((d + 1, k), |(j, c)| if j < d { w.weights[c][j] } else { w.bias[c] }));
        }
        let data = linfa::DatasetBase::new(self.a.view(), self.targets.view());
        let fitted = params.fit(&data).map_err(|e| LogregError::Solver { c, reason: e.to_string() })?;
        if fitted.classes().len() != k {
            return Err(LogregError::MissingClasses { c, held: fitted.classes().len(), classes: k });
        }
        // linfa numbers the classes it saw; put them back in label order
        let (w, b) = (fitted.params(), fitted.intercept());
        let mut weights = vec![vec![0f64; d]; k];
        let mut bias = vec![0f64; k];
        for (col, &class) in fitted.classes().iter().enumerate() {
            weights[class] = w.column(col).to_vec();
            bias[class] = b[col];
        }
        Ok(Model {
            format: FORMAT.into(),
            labels: self.x.label_names.clone(),
            c,
            standardize: self.standardize.clone(),
            weights,
            bias,
            train_samples: n,
            cv: vec![],
            folds: 0,
            features: self.x.info.clone(),
        })
    }
}

/// What `fit` found.
#[derive(Debug, Clone)]
pub struct Fitted {
    pub model: Model,
    /// Out-of-fold predictions of the best C for every training row (each row predicted by the model
    /// of the folds that did not hold it).
    pub out_of_fold: Vec<usize>,
    pub truth: Vec<usize>,
}

/// One fold of the grid search: the held-out rows, and for every C its predictions for them and its
/// accuracy.
struct FoldResult {
    test: Vec<usize>,
    predictions: Vec<Vec<usize>>,
    scores: Vec<f64>,
}

/// Fits every C on all folds but `f` and scores it on fold `f`. The training rows are standardised
/// once, and the Cs are fitted from the smallest up, each starting from the previous solution (a warm
/// start along the regularisation path, as scikit-learn's path solvers do): the optimum does not
/// depend on the start, the iterations needed to reach it do.
fn run_fold(x: &FeatureSet, y: &[usize], fold: &[usize], f: usize, o: &FitOptions) -> Result<FoldResult> {
    let (train, test): (Vec<usize>, Vec<usize>) = (0..x.n).partition(|&i| fold[i] != f);
    let design = Design::new(x, y, x.label_names.len(), &train, o.standardize);
    let held_out = subset(x, &test);
    let mut order: Vec<usize> = (0..o.cs.len()).collect();
    order.sort_by(|&a, &b| o.cs[a].total_cmp(&o.cs[b]));
    let (mut predictions, mut scores) = (vec![vec![]; o.cs.len()], vec![0.0; o.cs.len()]);
    let mut warm: Option<Model> = None;
    for ci in order {
        let m = design.fit(o.cs[ci], o, warm.as_ref()).map_err(|e| LogregError::Fold { fold: f + 1, folds: o.folds, source: Box::new(e) })?;
        let pred = m.predict(&held_out)?;
        scores[ci] = test.iter().zip(&pred).filter(|(&r, &p)| y[r] == p).count() as f64 / test.len().max(1) as f64;
        predictions[ci] = pred;
        warm = Some(m);
    }
    Ok(FoldResult { test, predictions, scores })
}

/// The grid search over `o.cs` with `o.folds` stratified folds (folds fitted in parallel on `o.jobs`
/// threads), then the refit on all rows with the best C.
pub fn fit(x: &FeatureSet, o: &FitOptions) -> Result<Fitted> {
    let y = class_indices(x, o.folds)?;
    let fold = stratified_folds(&y, o.folds, o.seed);
    let jobs = if o.jobs == 0 { std::thread::available_parallelism().map_or(1, |n| n.get()) } else { o.jobs };
    let next = AtomicUsize::new(0);
    let mut done: Vec<(usize, Result<FoldResult>)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..jobs.clamp(1, o.folds.max(1)))
            .map(|_| {
                s.spawn(|| {
                    let mut out = vec![];
                    loop {
                        let f = next.fetch_add(1, Ordering::SeqCst);
                        if f >= o.folds {
                            break out;
                        }
                        out.push((f, run_fold(x, &y, &fold, f, o)));
                    }
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("a fold thread panicked")).collect()
    });
    done.sort_by_key(|(f, _)| *f);
    let folds: Vec<FoldResult> = done.into_iter().map(|(_, r)| r).collect::<Result<_>>()?;
    let by_fold: Vec<Vec<f64>> = folds.iter().map(|r| r.scores.clone()).collect();
    let (best, table) = grid_search(&o.cs, &by_fold)?;
    let mut out_of_fold = vec![0; x.n];
    for r in &folds {
        for (&row, &p) in r.test.iter().zip(&r.predictions[best]) {
            out_of_fold[row] = p;
        }
    }
    let all: Vec<usize> = (0..x.n).collect();
    let mut model = Design::new(x, &y, x.label_names.len(), &all, o.standardize).fit(o.cs[best], o, None)?;
    model.cv = table;
    model.folds = o.folds;
    Ok(Fitted { model, out_of_fold, truth: y })
}

/// The rows `rows` of `x` as a set of their own.
pub fn subset(x: &FeatureSet, rows: &[usize]) -> FeatureSet {
    FeatureSet {
        data: rows.iter().flat_map(|&r| x.row(r).iter().copied()).collect(),
        n: rows.len(),
        dim: x.dim,
        labels: rows.iter().map(|&r| x.labels[r]).collect(),
        keys: rows.iter().map(|&r| x.keys[r].clone()).collect(),
        label_names: x.label_names.clone(),
        info: x.info.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(rows: &[[f32; 2]], labels: &[i64], names: &[&str]) -> FeatureSet {
        FeatureSet {
            data: rows.iter().flatten().copied().collect(),
            n: rows.len(),
            dim: 2,
            labels: labels.to_vec(),
            keys: (0..rows.len()).map(|i| format!("r{i}")).collect(),
            label_names: names.iter().map(|s| s.to_string()).collect(),
            info: None,
        }
    }

    #[test]
    fn stratified_folds_partition_every_class_evenly_and_repeat_from_the_seed() {
        // 10 of class 0, 7 of class 1, 3 of class 2
        let y: Vec<usize> = [vec![0; 10], vec![1; 7], vec![2; 3]].concat();
        let f = stratified_folds(&y, 3, 7);
        assert_eq!(f, stratified_folds(&y, 3, 7));
        assert_ne!(f, stratified_folds(&y, 3, 8), "another seed deals other rows");
        for c in 0..3 {
            let per: Vec<usize> = (0..3).map(|k| (0..y.len()).filter(|&i| y[i] == c && f[i] == k).count()).collect();
            let (lo, hi) = (per.iter().min().unwrap(), per.iter().max().unwrap());
            assert!(hi - lo <= 1, "class {c} over the folds: {per:?}");
            assert_eq!(per.iter().sum::<usize>(), y.iter().filter(|&&v| v == c).count());
        }
        let sizes: Vec<usize> = (0..3).map(|k| f.iter().filter(|&&v| v == k).count()).collect();
        assert_eq!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap(), 1, "{sizes:?}");
    }

    #[test]
    fn grid_search_takes_the_best_mean_and_the_first_on_a_tie() {
        // scores: C=0.1 -> (0.5, 0.7), C=1 -> (0.9, 0.7), C=10 -> (0.7, 0.9): 1 and 10 tie at 0.8
        let by_fold = [vec![0.5, 0.9, 0.7], vec![0.7, 0.7, 0.9]];
        let (best, table) = grid_search(&[0.1, 1.0, 10.0], &by_fold).unwrap();
        assert_eq!(best, 1);
        assert_eq!(table[0].folds, [0.5, 0.7]);
        assert_eq!(table[2].folds, [0.7, 0.9]);
        assert!((table[0].mean - 0.6).abs() < 1e-12 && (table[0].std - 0.1).abs() < 1e-12, "{:?}", table[0]);
        // the same scores with the grid listed the other way round: C=10 comes first now
        let reversed = [vec![0.7, 0.9, 0.5], vec![0.9, 0.7, 0.7]];
        let (best, table) = grid_search(&[10.0, 1.0, 0.1], &reversed).unwrap();
        assert_eq!((best, table[0].c), (0, 10.0));
        assert!(grid_search(&[1.0, -1.0], &[vec![0.0; 2], vec![0.0; 2]]).unwrap_err().to_string().contains("-1"));
        assert!(grid_search(&[1.0], &[vec![0.0]]).is_err(), "one fold is no cross-validation");
        assert!(grid_search(&[1.0, 2.0], &[vec![0.0], vec![0.0, 1.0]]).unwrap_err().to_string().contains("fold 0"));
    }

    #[test]
    fn the_solution_matches_the_optimum_computed_by_hand() {
        // Two rows, x = -1 (class a) and x = +1 (class b), no standardisation. By symmetry the optimum
        // has b = 0 and w_b = -w_a = w, and the objective is
        //   C * 2 * log(1 + e^{-2w}) + w^2   (||W||^2 / 2 = w^2)
        // whose derivative vanishes where 2 C sigma(-2w) = w. Solved here by bisection.
        for c in [0.1, 1.0, 10.0] {
            let g = |w: f64| 2.0 * c / (1.0 + (2.0 * w).exp()) - w;
            let (mut lo, mut hi) = (0.0, 2.0 * c + 1.0);
            for _ in 0..200 {
                let mid = (lo + hi) / 2.0;
                if g(mid) > 0.0 {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            let x = set(&[[-1.0, 0.0], [1.0, 0.0]], &[0, 1], &["a", "b"]);
            let o = FitOptions { standardize: false, max_iter: 500, tol: 1e-10, ..FitOptions::default() };
            let design = Design::new(&x, &[0, 1], 2, &[0, 1], false);
            let m = design.fit(c, &o, None).unwrap();
            assert!((m.weights[1][0] - lo).abs() < 1e-5 && (m.weights[0][0] + lo).abs() < 1e-5, "C={c}: {:?}, expected ±{lo}", m.weights);
            assert!(m.bias[0].abs() < 1e-5 && m.bias[1].abs() < 1e-5, "{:?}", m.bias);
            assert!(m.weights[0][1].abs() < 1e-9, "a feature that is always 0 gets no weight");
            // and the probabilities are the softmax of those logits: p(b | x=1) = sigma(2w)
            let p = m.predict_proba(&x).unwrap();
            assert!((p[1][1] - 1.0 / (1.0 + (-2.0 * lo).exp())).abs() < 1e-5, "{p:?}");
            // a warm start from another C's solution reaches the same optimum
            let warm = design.fit(c * 3.0, &o, None).unwrap();
            let again = design.fit(c, &o, Some(&warm)).unwrap();
            assert!((again.weights[1][0] - lo).abs() < 1e-5, "C={c} from a warm start: {:?}", again.weights);
        }
    }

    #[test]
    fn separable_blobs_are_learned_exactly_and_the_model_reloads_identically() {
        // four classes at the corners of a square, small jitter: linearly separable
        let mut rows = vec![];
        let mut labels = vec![];
        for i in 0..60 {
            let c = i % 4;
            let (cx, cy) = [(3.0, 3.0), (-3.0, 3.0), (-3.0, -3.0), (3.0, -3.0)][c];
            let j = (i as f32 * 0.37).sin() * 0.8;
            rows.push([cx + j, cy - j * 0.5]);
            labels.push(c as i64);
        }
        let x = set(&rows, &labels, &["ne", "nw", "sw", "se"]);
        let o = FitOptions { cs: vec![0.001, 1.0, 100.0], folds: 3, ..FitOptions::default() };
        let fitted = fit(&x, &o).unwrap();
        let m = &fitted.model;
        let one_thread = fit(&x, &FitOptions { jobs: 1, ..o.clone() }).unwrap();
        assert_eq!((&one_thread.model, &one_thread.out_of_fold), (m, &fitted.out_of_fold), "folds in parallel or one by one: the same");
        assert_eq!(m.cv.len(), 3);
        assert!(m.cv.iter().all(|s| s.folds.len() == 3));
        assert!(m.cv[1].mean == 1.0 && m.cv[2].mean == 1.0, "{:?}", m.cv);
        assert!(o.cs.contains(&m.c));
        assert_eq!(m.train_samples, 60);
        let s = m.standardize.as_ref().unwrap();
        let mean_x: f64 = rows.iter().map(|r| r[0] as f64).sum::<f64>() / 60.0;
        assert!((s.mean[0] - mean_x).abs() < 1e-9);
        let r = m.report(&x).unwrap();
        assert_eq!(r.accuracy, 1.0);
        assert!(r.classes.iter().all(|c| c.precision == 1.0 && c.recall == 1.0 && c.support == 15), "{r}");
        assert_eq!(Report::new(&fitted.truth, &fitted.out_of_fold, &m.labels).accuracy, m.cv.iter().find(|s| s.c == m.c).unwrap().mean);
        // the weights point each class to its corner: class ne has positive weights on both axes
        assert!(m.weights[0][0] > 0.0 && m.weights[0][1] > 0.0 && m.weights[2][0] < 0.0 && m.weights[2][1] < 0.0, "{:?}", m.weights);
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("logreg.json");
        m.save(&path).unwrap();
        let back = Model::load(&path).unwrap();
        assert_eq!((&back.labels, back.c, &back.cv, back.train_samples), (&m.labels, m.c, &m.cv, m.train_samples));
        // serde_json (without its float_roundtrip feature) may read a value back one ulp away
        let (p, q) = (back.predict_proba(&x).unwrap(), m.predict_proba(&x).unwrap());
        assert!(p.iter().flatten().zip(q.iter().flatten()).all(|(a, b)| (a - b).abs() < 1e-12));
        assert_eq!(back.report(&x).unwrap(), r);
        // too few rows of a class for the folds is an error naming the class
        let err = fit(&subset(&x, &[0, 1, 2, 3, 4, 5, 6]), &o).unwrap_err().to_string();
        assert!(err.contains("class 'ne' has 2 training rows") && err.contains("3 folds"), "{err}");
    }
}
