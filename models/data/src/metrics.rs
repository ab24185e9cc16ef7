//! Classification metrics, written once for every crate that reports them (`runtime eval`, `trainer
//! logreg`, the exporter's parity check, the video CLI):
//!
//! - one row of scores: [`argmax`], [`top_k`], [`softmax`] (f32 or f64);
//! - [`Confusion`]: the confusion matrix, and what is read from it: accuracy and per-class precision,
//!   recall, F1 and support ([`ClassScores`]; a class never predicted has precision 0, as
//!   scikit-learn's `zero_division` default gives);
//! - [`Counts`]: the book's rank-1, rank-5 and one-off (ordinal labels such as age bins: the prediction
//!   is at most one class away) over probability rows, and its [`Summary`] (what `runtime eval` prints
//!   and writes as JSON);
//! - [`Report`]: scikit-learn's `classification_report` (per class, accuracy, macro and weighted
//!   averages), as `trainer logreg` prints it.

use std::cmp::Ordering;
use std::fmt;
use std::iter::Sum;
use std::ops::{DivAssign, Sub};

use serde::{Deserialize, Serialize};

/// A score type: `f32` or `f64`.
pub trait Score: Copy + PartialOrd + Sub<Output = Self> + DivAssign + Sum {
    const NEG_INFINITY: Self;
    fn total_cmp(&self, other: &Self) -> Ordering;
    fn exp(self) -> Self;
}

macro_rules! score {
    ($t:ty) => {
        impl Score for $t {
            const NEG_INFINITY: Self = <$t>::NEG_INFINITY;
            fn total_cmp(&self, other: &Self) -> Ordering {
                <$t>::total_cmp(self, other)
            }
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
        }
    };
}
score!(f32);
score!(f64);

/// Index of the largest value (in IEEE total order), the first on a tie; 0 for an empty row.
pub fn argmax<T: Score>(row: &[T]) -> usize {
    (1..row.len()).fold(0, |best, i| if row[i].total_cmp(&row[best]) == Ordering::Greater { i } else { best })
}

/// The `k` largest values of one row with their indices, largest first (the lower index first on a tie).
pub fn top_k<T: Score>(row: &[T], k: usize) -> Vec<(usize, T)> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    idx.into_iter().take(k).map(|i| (i, row[i])).collect()
}

/// Turns one row of scores into probabilities: `exp(v - max) / sum`, in the row's own precision.
pub fn softmax_in_place<T: Score>(row: &mut [T]) {
    let max = row.iter().copied().fold(T::NEG_INFINITY, |m, v| if v > m { v } else { m });
    for v in row.iter_mut() {
        *v = (*v - max).exp();
    }
    let sum: T = row.iter().copied().sum();
    row.iter_mut().for_each(|v| *v /= sum);
}

/// The probabilities of one row of scores (see [`softmax_in_place`]).
pub fn softmax<T: Score>(row: &[T]) -> Vec<T> {
    let mut p = row.to_vec();
    softmax_in_place(&mut p);
    p
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// How often each true class was predicted as each class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confusion {
    classes: usize,
    /// `counts[truth * classes + predicted]`.
    counts: Vec<u64>,
}

/// One class's scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassScores {
    pub label: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Samples of this class.
    pub support: u64,
}

impl Confusion {
    pub fn new(classes: usize) -> Self {
        Self { classes, counts: vec![0; classes * classes] }
    }

    /// The matrix of `truth[i]` predicted as `predicted[i]`.
    ///
    /// # Panics
    /// When a class is not below `classes`.
    pub fn from_predictions(truth: &[usize], predicted: &[usize], classes: usize) -> Self {
        let mut c = Self::new(classes);
        truth.iter().zip(predicted).for_each(|(&t, &p)| c.add(t, p));
        c
    }

    /// Counts one sample of class `truth` predicted as `predicted`.
    pub fn add(&mut self, truth: usize, predicted: usize) {
        assert!(truth < self.classes && predicted < self.classes, "class {truth} predicted as {predicted}: there are {} classes", self.classes);
        self.counts[truth * self.classes + predicted] += 1;
    }

    pub fn classes(&self) -> usize {
        self.classes
    }

    fn row(&self, truth: usize) -> &[u64] {
        &self.counts[truth * self.classes..(truth + 1) * self.classes]
    }

    pub fn samples(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn correct(&self) -> u64 {
        (0..self.classes).map(|c| self.row(c)[c]).sum()
    }

    /// Correct / samples (0 without samples).
    pub fn accuracy(&self) -> f64 {
        ratio(self.correct(), self.samples())
    }

    /// `rows()[t][p]`: samples of class t predicted as p.
    pub fn rows(&self) -> Vec<Vec<u64>> {
        (0..self.classes).map(|t| self.row(t).to_vec()).collect()
    }

    /// Precision, recall, F1 and support of every class, named by `labels` (by number past its end).
    pub fn class_scores(&self, labels: &[String]) -> Vec<ClassScores> {
        let k = self.classes;
        (0..k)
            .map(|c| {
                let tp = self.row(c)[c];
                let support: u64 = self.row(c).iter().sum();
                let predicted: u64 = (0..k).map(|t| self.row(t)[c]).sum();
                let (precision, recall) = (ratio(tp, predicted), ratio(tp, support));
                let f1 = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
                ClassScores { label: labels.get(c).cloned().unwrap_or_else(|| c.to_string()), precision, recall, f1, support }
            })
            .collect()
    }
}

/// Running counts over an evaluation of probability rows: the confusion of the top class, rank-5 and
/// one-off hits.
#[derive(Debug, Clone)]
pub struct Counts {
    confusion: Confusion,
    rank5: u64,
    one_off: u64,
}

/// The summary `runtime eval` prints and writes as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub samples: u64,
    pub rank1: f64,
    pub rank5: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub one_off: Option<f64>,
    pub per_class: Vec<ClassScores>,
    /// Rows: true class; columns: predicted class.
    pub confusion: Vec<Vec<u64>>,
}

impl Counts {
    pub fn new(classes: usize) -> Self {
        Self { confusion: Confusion::new(classes), rank5: 0, one_off: 0 }
    }

    /// Adds one sample: its probability row and true class.
    pub fn add(&mut self, probs: &[f32], truth: usize) {
        let k = self.confusion.classes();
        debug_assert_eq!(probs.len(), k);
        let score = probs[truth.min(k - 1)];
        // rank of the true class: how many classes score strictly higher (ties go to the lower index)
        let better = probs.iter().enumerate().filter(|&(i, &p)| p > score || (p == score && i < truth)).count();
        let pred = argmax(probs);
        self.confusion.add(truth, pred);
        self.rank5 += u64::from(better < 5);
        self.one_off += u64::from(pred.abs_diff(truth) <= 1);
    }

    pub fn samples(&self) -> u64 {
        self.confusion.samples()
    }

    pub fn confusion(&self) -> &Confusion {
        &self.confusion
    }

    pub fn summary(&self, labels: &[String], one_off: bool) -> Summary {
        let n = self.samples().max(1) as f64;
        Summary {
            samples: self.samples(),
            rank1: self.confusion.correct() as f64 / n,
            rank5: self.rank5 as f64 / n,
            one_off: one_off.then(|| self.one_off as f64 / n),
            per_class: self.confusion.class_scores(labels),
            confusion: self.confusion.rows(),
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} samples: rank-1 {:.2}%  rank-5 {:.2}%", self.samples, 100.0 * self.rank1, 100.0 * self.rank5)?;
        if let Some(o) = self.one_off {
            write!(f, "  one-off {:.2}%", 100.0 * o)?;
        }
        let w = self.per_class.iter().map(|c| c.label.chars().count()).max().unwrap_or(5).clamp(5, 24);
        writeln!(f, "\n\n{:>w$}  precision  recall     f1  support", "class")?;
        for c in &self.per_class {
            writeln!(f, "{:>w$}  {:>9.4}  {:>6.4}  {:>5.4}  {:>7}", c.label, c.precision, c.recall, c.f1, c.support)?;
        }
        if self.confusion.len() <= 20 {
            writeln!(f, "\nconfusion matrix (rows: true class, columns: predicted)")?;
            let cw = self.confusion.iter().flatten().max().map_or(1, |m| m.to_string().len()).max(3);
            for (c, row) in self.per_class.iter().zip(&self.confusion) {
                let cells: Vec<String> = row.iter().map(|v| format!("{v:>cw$}")).collect();
                writeln!(f, "{:>w$}  {}", c.label, cells.join(" "))?;
            }
        }
        Ok(())
    }
}

/// scikit-learn's `classification_report`: per class, then accuracy, macro and weighted averages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub classes: Vec<ClassScores>,
    pub accuracy: f64,
    pub macro_avg: ClassScores,
    pub weighted_avg: ClassScores,
    pub samples: u64,
    /// `confusion[t][p]`: rows of class t predicted as p.
    pub confusion: Vec<Vec<u64>>,
}

impl Report {
    /// The report of predictions `pred` of samples of classes `truth`, one class per label.
    pub fn new(truth: &[usize], pred: &[usize], labels: &[String]) -> Self {
        Self::from_confusion(&Confusion::from_predictions(truth, pred, labels.len()), labels)
    }

    pub fn from_confusion(confusion: &Confusion, labels: &[String]) -> Self {
        let classes = confusion.class_scores(labels);
        let n = confusion.samples();
        let avg = |label: &str, weight: &dyn Fn(&ClassScores) -> f64| {
            let total: f64 = classes.iter().map(weight).sum();
            let mean = |f: fn(&ClassScores) -> f64| if total > 0.0 { classes.iter().map(|c| f(c) * weight(c)).sum::<f64>() / total } else { 0.0 };
            ClassScores { label: label.into(), precision: mean(|c| c.precision), recall: mean(|c| c.recall), f1: mean(|c| c.f1), support: n }
        };
        let macro_avg = avg("macro avg", &|_| 1.0);
        let weighted_avg = avg("weighted avg", &|c| c.support as f64);
        Self { accuracy: confusion.accuracy(), classes, macro_avg, weighted_avg, samples: n, confusion: confusion.rows() }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self.classes.iter().map(|c| c.label.len()).max().unwrap_or(0).max("weighted avg".len());
        writeln!(f, "{:>w$}  {:>9}  {:>9}  {:>9}  {:>9}", "", "precision", "recall", "f1-score", "support")?;
        let line = |f: &mut fmt::Formatter<'_>, c: &ClassScores| {
            writeln!(f, "{:>w$}  {:>9.4}  {:>9.4}  {:>9.4}  {:>9}", c.label, c.precision, c.recall, c.f1, c.support)
        };
        for c in &self.classes {
            line(f, c)?;
        }
        writeln!(f)?;
        writeln!(f, "{:>w$}  {:>9}  {:>9}  {:>9.4}  {:>9}", "accuracy", "", "", self.accuracy, self.samples)?;
        line(f, &self.macro_avg)?;
        line(f, &self.weighted_avg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_argmax_and_top_k() {
        let mut r = vec![1.0f32, 3.0, 2.0];
        softmax_in_place(&mut r);
        assert!((r.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        let e = [1f32.exp(), 3f32.exp(), 2f32.exp()];
        assert!((r[1] - e[1] / e.iter().sum::<f32>()).abs() < 1e-6);
        assert_eq!(top_k(&r, 2).iter().map(|p| p.0).collect::<Vec<_>>(), vec![1, 2]);
        // f64, and large scores that would overflow exp without the max taken off
        let p = softmax(&[1000.0f64, 1000.0 + 2f64.ln()]);
        assert!((p[0] - 1.0 / 3.0).abs() < 1e-12 && (p[1] - 2.0 / 3.0).abs() < 1e-12, "{p:?}");
        // ties go to the first index, everywhere
        assert_eq!(argmax(&[0.2f32, 0.4, 0.4, 0.1]), 1);
        assert_eq!(top_k(&[0.2f64, 0.4, 0.4, 0.1], 3), [(1, 0.4), (2, 0.4), (0, 0.2)]);
        assert_eq!(argmax(&[-3.0f64, -1.0, -2.0]), 1);
        assert_eq!(argmax::<f32>(&[]), 0);
    }

    #[test]
    fn counts_match_a_hand_worked_example() {
        let mut c = Counts::new(3);
        c.add(&[0.7, 0.2, 0.1], 0); // right
        c.add(&[0.1, 0.3, 0.6], 1); // wrong (2), one off, rank 2
        c.add(&[0.5, 0.1, 0.4], 2); // wrong (0), two off, rank 2
        c.add(&[0.2, 0.2, 0.6], 2); // right
        let labels: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let s = c.summary(&labels, true);
        assert_eq!(s.rank1, 0.5);
        assert_eq!(s.rank5, 1.0);
        assert_eq!(s.one_off, Some(0.75));
        assert_eq!(s.confusion, vec![vec![1, 0, 0], vec![0, 0, 1], vec![1, 0, 1]]);
        // class c: predicted 2 times (1 right), 2 true samples (1 right)
        assert_eq!((s.per_class[2].precision, s.per_class[2].recall, s.per_class[2].f1), (0.5, 0.5, 0.5));
        // class a: predicted twice, once right; recall 1
        assert_eq!((s.per_class[0].precision, s.per_class[0].recall), (0.5, 1.0));
        assert!((s.per_class[0].f1 - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(s.per_class[1].f1, 0.0);
        assert!(s.to_string().contains("rank-1 50.00%"));
    }

    #[test]
    fn rank5_counts_the_true_class_among_the_best_five() {
        let mut c = Counts::new(7);
        let p = [0.3, 0.2, 0.15, 0.12, 0.1, 0.08, 0.05];
        c.add(&p, 4); // fifth best: a hit
        c.add(&p, 5); // sixth: a miss
        let s = c.summary(&[], false);
        assert_eq!((s.rank1, s.rank5, s.one_off), (0.0, 0.5, None));
        assert_eq!(s.per_class[4].label, "4", "classes without labels are named by number");
    }

    #[test]
    fn the_report_matches_scores_counted_by_hand() {
        // truth a a a b b c; predicted a a b b c c
        let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let r = Report::new(&[0, 0, 0, 1, 1, 2], &[0, 0, 1, 1, 2, 2], &names);
        // a: tp 2, predicted 2, support 3 -> p 1, r 2/3, f1 0.8
        // b: tp 1, predicted 2, support 2 -> p 0.5, r 0.5, f1 0.5
        // c: tp 1, predicted 2, support 1 -> p 0.5, r 1, f1 2/3
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        let c = &r.classes;
        assert!(close(c[0].precision, 1.0) && close(c[0].recall, 2.0 / 3.0) && close(c[0].f1, 0.8));
        assert!(close(c[1].precision, 0.5) && close(c[1].recall, 0.5) && close(c[1].f1, 0.5));
        assert!(close(c[2].precision, 0.5) && close(c[2].recall, 1.0) && close(c[2].f1, 2.0 / 3.0));
        assert_eq!([c[0].support, c[1].support, c[2].support], [3, 2, 1]);
        assert!(close(r.accuracy, 4.0 / 6.0));
        assert!(close(r.macro_avg.precision, 2.0 / 3.0) && close(r.macro_avg.f1, (0.8 + 0.5 + 2.0 / 3.0) / 3.0));
        assert!(close(r.weighted_avg.recall, 4.0 / 6.0), "weighted recall is accuracy");
        assert!(close(r.weighted_avg.precision, (3.0 * 1.0 + 2.0 * 0.5 + 0.5) / 6.0));
        assert_eq!(r.confusion, [[2, 1, 0], [0, 1, 1], [0, 0, 1]]);
        let text = r.to_string();
        assert!(text.contains("precision") && text.contains("weighted avg") && text.lines().count() == 8, "{text}");
        // a class never predicted scores 0, not NaN
        let r = Report::new(&[0, 1], &[0, 0], &names[..2]);
        assert_eq!((r.classes[1].precision, r.classes[1].f1), (0.0, 0.0));
    }

    #[test]
    fn both_reports_read_the_same_matrix() {
        // the same samples through `runtime eval`'s counts and `trainer logreg`'s report
        let rows: [([f32; 3], usize); 5] = [([0.6, 0.3, 0.1], 0), ([0.2, 0.5, 0.3], 0), ([0.1, 0.1, 0.8], 2), ([0.3, 0.4, 0.3], 1), ([0.5, 0.1, 0.4], 1)];
        let mut counts = Counts::new(3);
        rows.iter().for_each(|(p, t)| counts.add(p, *t));
        let truth: Vec<usize> = rows.iter().map(|r| r.1).collect();
        let pred: Vec<usize> = rows.iter().map(|r| argmax(&r.0)).collect();
        let labels: Vec<String> = ["x", "y", "z"].map(String::from).to_vec();
        let (summary, report) = (counts.summary(&labels, false), Report::new(&truth, &pred, &labels));
        assert_eq!(summary.confusion, report.confusion);
        assert_eq!(summary.confusion, [[1, 1, 0], [1, 1, 0], [0, 0, 1]]);
        assert_eq!(summary.per_class, report.classes);
        assert_eq!(summary.rank1, report.accuracy);
    }
}
