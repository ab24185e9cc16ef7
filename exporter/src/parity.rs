//! The parity check's arithmetic and its rule: how an exported file's class probabilities are compared
//! with libtorch's on the same inputs, what is reported, and when the file is refused.
//!
//! The reference is always the checkpoint as trained: libtorch, float32, unfolded BatchNorm. An exact
//! export (float32, BatchNorm kept) must match it to 1e-4 (max absolute difference of a probability).
//! A derived export (`--fp16`, `--fold-bn`) computes a rounded version of the same function, so it is
//! held to a bound that rounding stays within but a lowering mistake does not: 1e-3 for BatchNorm folding
//! in float32 (the folded weights are rounded once more), 1e-2 for float16 (weights and activations carry
//! 11 significant bits, about 5e-4 relative). Top-1 agreement is reported for every check but never
//! refuses a file: when every probability is within the bound, a top-1 flip can only happen where
//! libtorch's two best classes are closer than twice the bound, a near-tie that rounding may legitimately
//! break, while a wrong lowering moves probabilities far beyond the bound anyway.

use serde::Serialize;

/// `n` pseudo-random values in [-2, 2), the same on every machine for a given nonzero `seed`
/// (`data::rng`'s xorshift64 from state `seed`): the check's fixed inputs.
pub fn fixed_inputs(n: usize, seed: u64) -> Vec<f32> {
    data::rng::Xorshift64::new(seed).uniform(n, -2.0, 2.0)
}

/// The larger of two differences, NaN when either is (`f32::max` would drop a NaN, which must fail).
pub fn nan_max(m: f32, v: f32) -> f32 {
    if v.is_nan() || m.is_nan() {
        f32::NAN
    } else {
        m.max(v)
    }
}

/// max |a − b|, NaN when either holds one or the lengths differ.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::NAN;
    }
    a.iter().zip(b).map(|(p, q)| (p - q).abs()).fold(0f32, nan_max)
}

/// What an export changes relative to the checkpoint run in libtorch float32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Variant {
    pub fp16: bool,
    pub fold_bn: bool,
}

impl Variant {
    /// The default bound on the max absolute probability difference (see the module's text).
    pub fn default_tolerance(self) -> f32 {
        if self.fp16 {
            1e-2
        } else if self.fold_bn {
            1e-3
        } else {
            1e-4
        }
    }

    pub fn precision(self) -> &'static str {
        if self.fp16 {
            "fp16"
        } else {
            "fp32"
        }
    }
}

/// Libtorch and the exported file on one set of inputs.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// What the inputs were.
    pub inputs: String,
    pub samples: usize,
    /// Largest |p_file - p_libtorch| over every class probability; NaN when either side produced one.
    pub max_abs_diff: f32,
    /// Samples whose most probable class is the same on both sides.
    pub top1_agree: usize,
    /// `top1_agree / samples`.
    pub top1_agreement: f64,
    /// Accuracy against the samples' labels, of libtorch and of the file (real samples only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy_libtorch: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy_file: Option<f64>,
}

/// The most probable class of every `classes`-wide row.
fn argmax(v: &[f32], classes: usize) -> Vec<usize> {
    v.chunks(classes.max(1)).map(data::metrics::argmax).collect()
}

impl Comparison {
    /// Compares `[n, classes]` probabilities (row-major) of libtorch (`reference`) and the file (`got`);
    /// `labels` (one per sample) adds each side's accuracy.
    pub fn new(inputs: &str, reference: &[f32], got: &[f32], classes: usize, labels: Option<&[i64]>) -> Self {
        let mut max_abs_diff = if reference.len() == got.len() { 0f32 } else { f32::NAN };
        for (p, q) in got.iter().zip(reference) {
            let d = (p - q).abs();
            // f32::max would drop a NaN; a NaN must fail the check
            if d.is_nan() || d > max_abs_diff {
                max_abs_diff = d;
                if d.is_nan() {
                    break;
                }
            }
        }
        let (top_ref, top_got) = (argmax(reference, classes), argmax(got, classes));
        let samples = top_ref.len();
        let top1_agree = top_ref.iter().zip(&top_got).filter(|(a, b)| a == b).count();
        let accuracy = |top: &[usize]| labels.map(|l| top.iter().zip(l).filter(|(t, l)| **t as i64 == **l).count() as f64 / samples.max(1) as f64);
        Self {
            inputs: inputs.into(),
            samples,
            max_abs_diff,
            top1_agree,
            top1_agreement: top1_agree as f64 / samples.max(1) as f64,
            accuracy_libtorch: accuracy(&top_ref),
            accuracy_file: accuracy(&top_got),
        }
    }

    /// Within the bound (a NaN never is).
    pub fn passes(&self, tolerance: f32) -> bool {
        self.max_abs_diff <= tolerance
    }

    /// `max |Δp| 2.4e-7 ≤ 1e-4, top-1 agreement 4/4` (the bound when given, the accuracies when there
    /// are labels).
    pub fn summary(&self, tolerance: Option<f32>) -> String {
        let bound = tolerance.map(|t| format!(" {} {t:.0e}", if self.passes(t) { "≤" } else { ">" })).unwrap_or_default();
        let mut s = format!("max |Δp| {:.2e}{bound}, top-1 agreement {}/{}", self.max_abs_diff, self.top1_agree, self.samples);
        if let (Some(t), Some(f)) = (self.accuracy_libtorch, self.accuracy_file) {
            s += &format!(" (accuracy libtorch {t:.3}, file {f:.3})");
        }
        s
    }
}

/// BatchNorms folded into their layers and kept as nodes.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct FoldCounts {
    pub folded: usize,
    pub kept: usize,
}

/// The parity result written to `dlcv.parity`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What the file is compared with.
    pub reference: String,
    /// The compared output.
    pub output: String,
    /// The file's weights and compute (`fp32` or `fp16`).
    pub precision: String,
    /// Present for `--fold-bn` exports.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fold_bn: Option<FoldCounts>,
    /// The bound on `max_abs_diff` above which the file is refused.
    pub tolerance: f32,
    /// The largest difference over every compared set.
    pub max_abs_diff: f32,
    /// Fixed pseudo-random inputs (the same on every machine).
    pub fixed_inputs: Comparison,
    /// Real samples of the run's data through the evaluation preprocessing, when the run has data.
    pub samples: Option<Comparison>,
    /// Why there are no real samples.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub samples_note: Option<String>,
    /// A detector's final detections against the reference post-process
    /// (`exporter::detect_export::DetectionParity`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detections: Option<serde_json::Value>,
}

impl Report {
    pub fn new(variant: Variant, fold_bn: Option<FoldCounts>, tolerance: f32, fixed_inputs: Comparison, samples: Result<Comparison, String>) -> Self {
        let (samples, samples_note) = match samples {
            Ok(c) => (Some(c), None),
            Err(note) => (None, Some(note)),
        };
        let sets = std::iter::once(&fixed_inputs).chain(&samples);
        let max_abs_diff = sets.map(|c| c.max_abs_diff).fold(0f32, nan_max);
        Self {
            reference: "libtorch, float32, the checkpoint as trained".into(),
            output: "probabilities".into(),
            precision: variant.precision().into(),
            fold_bn,
            tolerance,
            max_abs_diff,
            fixed_inputs,
            samples,
            samples_note,
            detections: None,
        }
    }

    /// `Err` naming the first set above the tolerance.
    pub fn check(&self) -> Result<(), String> {
        for c in std::iter::once(&self.fixed_inputs).chain(&self.samples) {
            if !c.passes(self.tolerance) {
                return Err(format!("on {}: {}", c.inputs, c.summary(Some(self.tolerance))));
            }
        }
        Ok(())
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("the report serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_reports_and_refuses() {
        // two samples, three classes; the second sample's top class flips in a near-tie
        let reference = [0.7, 0.2, 0.1, 0.4, 0.39, 0.21];
        let got = [0.69, 0.21, 0.1, 0.39, 0.40, 0.21];
        let c = Comparison::new("t", &reference, &got, 3, Some(&[0, 1]));
        assert!((c.max_abs_diff - 0.01).abs() < 1e-6, "{}", c.max_abs_diff);
        assert_eq!((c.top1_agree, c.samples, c.top1_agreement), (1, 2, 0.5));
        assert_eq!((c.accuracy_libtorch, c.accuracy_file), (Some(0.5), Some(1.0)));
        assert!(c.passes(2e-2) && !c.passes(1e-4));

        // a NaN anywhere fails, even though f32::max would skip it
        let mut bad = got;
        bad[4] = f32::NAN;
        let n = Comparison::new("nan", &reference, &bad, 3, None);
        assert!(n.max_abs_diff.is_nan() && !n.passes(f32::INFINITY));

        let v = Variant { fp16: true, fold_bn: true };
        assert_eq!(v.default_tolerance(), 1e-2);
        assert_eq!(Variant { fp16: false, fold_bn: true }.default_tolerance(), 1e-3);
        assert_eq!(Variant::default().default_tolerance(), 1e-4);
        let r = Report::new(v, Some(FoldCounts { folded: 3, kept: 1 }), 5e-3, c.clone(), Err("no data".into()));
        let err = r.check().unwrap_err();
        assert!(err.starts_with("on t: max |Δp| 1.00e-2 > 5e-3, top-1 agreement 1/2"), "{err}");
        let r = Report::new(v, None, 2e-2, c.clone(), Ok(n));
        assert!(r.max_abs_diff.is_nan() && r.check().unwrap_err().starts_with("on nan:"));
        let json: serde_json::Value = serde_json::from_str(&Report::new(v, None, 1e-2, c, Err("none".into())).to_json()).unwrap();
        assert_eq!((json["precision"].as_str(), json["samples_note"].as_str()), (Some("fp16"), Some("none")));
        assert!(json["samples"].is_null() && json.get("fold_bn").is_none());
    }
}
