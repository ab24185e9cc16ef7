//! Classification metrics as the book reports them: rank-1, rank-5, one-off (ordinal labels such as age
//! bins: the prediction is at most one class away), plus per-class precision / recall / F1 and the
//! confusion matrix.

use std::fmt;

use serde::Serialize;

/// Running counts over an evaluation.
#[derive(Debug, Clone)]
pub struct Counts {
    classes: usize,
    /// `confusion[truth * classes + predicted]`.
    confusion: Vec<u64>,
    rank5: u64,
    one_off: u64,
    n: u64,
}

/// One class's line in the report.
#[derive(Debug, Clone, Serialize)]
pub struct ClassReport {
    pub label: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: u64,
}

/// The summary `runtime eval` prints and writes as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub samples: u64,
    pub rank1: f64,
    pub rank5: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub one_off: Option<f64>,
    pub per_class: Vec<ClassReport>,
    /// Rows: true class; columns: predicted class.
    pub confusion: Vec<Vec<u64>>,
}

impl Counts {
    pub fn new(classes: usize) -> Self {
        Self { classes, confusion: vec![0; classes * classes], rank5: 0, one_off: 0, n: 0 }
    }

    /// Adds one sample: its probability row and true class.
    pub fn add(&mut self, probs: &[f32], truth: usize) {
        let k = self.classes;
        debug_assert_eq!(probs.len(), k);
        let score = probs[truth.min(k - 1)];
        // rank of the true class: how many classes score strictly higher (ties go to the lower index)
        let better = probs.iter().enumerate().filter(|&(i, &p)| p > score || (p == score && i < truth)).count();
        let pred = crate::model::top_k(probs, 1)[0].0;
        self.confusion[truth * k + pred] += 1;
        self.rank5 += u64::from(better < 5);
        self.one_off += u64::from(pred.abs_diff(truth) <= 1);
        self.n += 1;
    }

    pub fn samples(&self) -> u64 {
        self.n
    }

    pub fn summary(&self, labels: &[String], one_off: bool) -> Summary {
        let k = self.classes;
        let n = self.n.max(1) as f64;
        let row = |t: usize| &self.confusion[t * k..(t + 1) * k];
        let correct: u64 = (0..k).map(|i| row(i)[i]).sum();
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let per_class = (0..k)
            .map(|c| {
                let tp = row(c)[c];
                let support: u64 = row(c).iter().sum();
                let predicted: u64 = (0..k).map(|t| row(t)[c]).sum();
                let (precision, recall) = (ratio(tp, predicted), ratio(tp, support));
                let f1 = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
                ClassReport { label: labels.get(c).cloned().unwrap_or_else(|| c.to_string()), precision, recall, f1, support }
            })
            .collect();
        Summary {
            samples: self.n,
            rank1: correct as f64 / n,
            rank5: self.rank5 as f64 / n,
            one_off: one_off.then(|| self.one_off as f64 / n),
            per_class,
            confusion: (0..k).map(|t| row(t).to_vec()).collect(),
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

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
