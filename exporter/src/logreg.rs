//! `exporter export-head`: a `trainer logreg` model and the frozen network its features came from, as
//! one verified ONNX file (the `verify` feature; book ch. 11, the orientation case study).
//!
//! The model's `features` record says which run, epoch and layer gave its features and how images
//! became network inputs. The file is that network cut at the layer, then `Flatten` and the fitted head
//! with its standardisation folded in (`crate::head`), then the softmax: `probabilities` over the
//! model's labels, as any exported classifier, with the run's preprocessing in its metadata, so
//! `runtime predict` and `edge-demo orientation` serve it with no special path.
//!
//! Parity, as for every export (`crate::parity`): the reference is what `trainer orientation-correct`
//! computes, libtorch's float32 features of the checkpoint as trained through the logistic model in f64
//! (`Model::predict_proba`, standardisation and all); the file runs in ONNX Runtime. Both see the 4
//! fixed pseudo-random inputs and, when the record file the training features came from is here, its
//! first `samples` records through the evaluation transform. Above the tolerance (1e-4 by default) the
//! file is removed.

use std::fmt;
use std::path::PathBuf;

use models::meta::{parity_key, Crop, Layout, ModelMeta, Preprocessing, Task};
use trainer::dataset::labels_beside;
use trainer::device::DeviceSpec;
use trainer::features::{Extractor, FeatureInfo, FeatureSet};
use trainer::logreg::Model;

use crate::head::{self, LinearHead};
use crate::lower::{self, LowerOptions};
use crate::parity::{fixed_inputs, Comparison, Report, Variant};
use crate::pipeline::{file_probabilities, read_samples, run_err, PipelineError, FIXED_INPUTS, FIXED_SEED};

type Result<T, E = PipelineError> = std::result::Result<T, E>;

/// The shorter side `trainer orientation-correct` resizes to when the model does not record one
/// (`trainer prepare`'s default); the export writes the same.
pub const DEFAULT_SHORT_SIDE: u32 = 256;

/// What to export and how (the `exporter export-head` flags).
#[derive(Debug, Clone)]
pub struct HeadExportOptions {
    /// The model from `trainer logreg fit`.
    pub logreg: PathBuf,
    pub out: PathBuf,
    /// The run of the frozen network (default: the one the model's features came from).
    pub run: Option<PathBuf>,
    /// Its checkpoint (default: the model's, when `run` is its run; else the latest).
    pub epoch: Option<usize>,
    pub opset: i64,
    pub logits: bool,
    /// `None`: 1e-4 (the file computes the same function in float32).
    pub tolerance: Option<f32>,
    /// Records of the training features' record file to compare on (0: none).
    pub samples: usize,
    /// The `resize_short_side` written (default: the model's features' `short_side`, else 256).
    pub short_side: Option<u32>,
}

/// What an export wrote and how it compared with libtorch plus the logistic model.
#[derive(Debug, Clone)]
pub struct HeadExportReport {
    /// The logistic model and the checkpoint exported with it, and the file written.
    pub logreg: PathBuf,
    pub checkpoint: PathBuf,
    pub out: PathBuf,
    pub epoch: usize,
    /// The registry model of the run, the layer cut at, and its per-sample shape.
    pub model: String,
    pub layer: String,
    pub layer_shape: Vec<usize>,
    pub classes: usize,
    /// The standardisation was folded into the head (false: the model was fitted on raw features).
    pub standardized: bool,
    /// `[C, H, W]`.
    pub input: [usize; 3],
    pub opset: i64,
    /// The metadata written into the file (with the parity report).
    pub meta: ModelMeta,
    pub parity: Report,
}

impl fmt::Display for HeadExportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [c, h, w] = self.input;
        let folded = if self.standardized { ", standardisation folded in" } else { "" };
        write!(
            f,
            "{} + {} → {} ({} cut at {} {:?}, then a linear head over {} classes{folded}; input {c}x{h}x{w}, opset {}, fp32)",
            self.checkpoint.display(),
            self.logreg.display(),
            self.out.display(),
            self.model,
            self.layer,
            self.layer_shape,
            self.classes,
            self.opset
        )?;
        for set in std::iter::once(&self.parity.fixed_inputs).chain(&self.parity.samples) {
            write!(f, "\nparity vs libtorch features + logistic model on {}: {}", set.inputs, set.summary(Some(self.parity.tolerance)))?;
        }
        if let Some(note) = &self.parity.samples_note {
            write!(f, "\nno parity check on real samples: {note}")?;
        }
        Ok(())
    }
}

/// The logistic model's probabilities (f64, rounded to f32) on libtorch's features of a batch.
fn reference(ex: &Extractor, model: &Model, x: &[f32], shape: [usize; 4]) -> Result<Vec<f32>> {
    let data = ex.features_f32(x, shape).map_err(run_err)?;
    let n = shape[0];
    let set = FeatureSet { data, n, dim: model.dim(), labels: vec![-1; n], keys: vec![String::new(); n], label_names: model.labels.clone(), info: None };
    Ok(model.predict_proba(&set).map_err(run_err)?.into_iter().flatten().map(|p| p as f32).collect())
}

/// Exports the logistic model `a.logreg` with its frozen network to `a.out` and proves it against
/// libtorch plus the model (see the module's text). A file that fails the check is removed.
pub fn export(a: &HeadExportOptions) -> Result<HeadExportReport> {
    let model = Model::load(&a.logreg).map_err(run_err)?;
    let Some(trained): Option<&FeatureInfo> = model.features.as_ref() else {
        return Err(PipelineError::Run(format!(
            "{}: the model does not say which network its features came from (fit it on a features file from `trainer features`)",
            a.logreg.display()
        )));
    };
    let run = a.run.clone().unwrap_or_else(|| trained.run.clone());
    let epoch = a.epoch.or_else(|| (trained.run == run).then_some(trained.epoch));
    // the network exactly as `trainer orientation-correct` runs it (float32, on the CPU)
    let ex = Extractor::open(&run, epoch, Some(&trained.layer), DeviceSpec::Cpu).map_err(run_err)?;
    let info = ex.info().clone();
    let head = LinearHead::new(&model.weights, &model.bias)?;
    let head = match &model.standardize {
        Some(s) => head.fold_standardization(&s.mean, &s.scale)?,
        None => head,
    };
    let graph = head::with_head(ex.graph(), &info.layer, &head)?;
    let classes = head.classes;
    if model.labels.len() != classes {
        return Err(PipelineError::Run(format!("{}: {} labels for {classes} weight rows", a.logreg.display(), model.labels.len())));
    }

    let ckpt = trainer::train::checkpoint_paths(&run, info.epoch).0;
    let mut weights = lower::read_safetensors(&ckpt)?;
    weights.extend(head.weights());
    let short_side = match a.short_side.or(trained.short_side) {
        Some(s) => s,
        None => {
            tracing::warn!("{}: the model does not record how its images were resized; writing a short side of {DEFAULT_SHORT_SIDE}, as `trainer orientation-correct` uses (set --short-side)", a.logreg.display());
            DEFAULT_SHORT_SIDE
        }
    };
    let preprocessing = Preprocessing {
        input: info.input,
        layout: Layout::Nchw,
        mean: info.mean.clone(),
        std: info.std.clone(),
        resize_short_side: short_side,
        crop: Crop::Center,
    };
    let mut meta = ModelMeta::new(&format!("{}+logreg", info.model), Task::Classification, model.labels.clone(), preprocessing);
    meta.run = run.display().to_string();
    meta.epoch = info.epoch;
    let tolerance = a.tolerance.unwrap_or(Variant::default().default_tolerance());

    let opts = LowerOptions { opset: a.opset, logits: a.logits, metadata: meta.to_props(), fp16: false };
    let mut onnx = lower::lower(&graph, &weights, &opts)?;
    drop(weights);
    lower::save(&onnx, &a.out)?;

    let input = info.input;
    let shape = [FIXED_INPUTS, input[0], input[1], input[2]];
    let checked = (|| -> Result<Report> {
        let x = fixed_inputs(shape.iter().product(), FIXED_SEED);
        let expected = reference(&ex, &model, &x, shape)?;
        let got = file_probabilities(&a.out, x, shape, classes)?;
        let fixed = Comparison::new(&format!("{FIXED_INPUTS} fixed pseudo-random images"), &expected, &got, classes, None);
        let samples = if a.samples == 0 {
            Err("not requested (--samples 0)".to_string())
        } else if !trained.source.is_file() {
            Err(format!("the training features' record file is not here: {}", trained.source.display()))
        } else {
            let s = read_samples(&trained.source, input, &info.mean, &info.std, a.samples)?;
            let shape = [s.labels.len(), input[0], input[1], input[2]];
            let expected = reference(&ex, &model, &s.data, shape)?;
            let got = file_probabilities(&a.out, s.data, shape, classes)?;
            // the records' labels are the model's classes when they come with the same labels.txt
            let labels = (labels_beside(&trained.source).map_err(run_err)?.as_ref() == Some(&model.labels)).then_some(s.labels.as_slice());
            Ok(Comparison::new(&format!("{} samples of {}", s.labels.len(), s.source.display()), &expected, &got, classes, labels))
        };
        let mut report = Report::new(Variant::default(), None, tolerance, fixed, samples);
        report.reference =
            format!("libtorch, float32, the checkpoint as trained cut at {}, then the logistic regression model in f64 (standardisation unfolded)", info.layer);
        Ok(report)
    })();
    let report = match checked {
        Ok(r) => r,
        Err(e) => {
            let _ = std::fs::remove_file(&a.out);
            return Err(e);
        }
    };
    if let Err(why) = report.check() {
        let _ = std::fs::remove_file(&a.out);
        return Err(PipelineError::Parity { why, out: a.out.clone() });
    }
    meta.parity = Some(report.to_json());
    lower::set_metadata(&mut onnx, &parity_key(), &report.to_json());
    lower::save(&onnx, &a.out)?;
    Ok(HeadExportReport {
        logreg: a.logreg.clone(),
        checkpoint: ckpt,
        out: a.out.clone(),
        epoch: info.epoch,
        model: info.model.clone(),
        layer: info.layer.clone(),
        layer_shape: info.layer_shape.clone(),
        classes,
        standardized: model.standardize.is_some(),
        input,
        opset: a.opset,
        meta,
        parity: report,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use data::metrics::softmax;
    use trainer::logreg::{Standardize, FORMAT};

    fn uniform(n: usize, seed: u64, lo: f64, hi: f64) -> Vec<f64> {
        fixed_inputs(n, seed).into_iter().map(|v| lo + (v as f64 + 2.0) / 4.0 * (hi - lo)).collect()
    }

    /// For random W, b, μ, σ and x: softmax(W'x + b') with the folded head as the file stores it (f32)
    /// is the logistic model's `predict_proba` on x (which standardises, then applies W and b).
    #[test]
    fn the_folded_head_in_f32_is_the_logistic_model_to_1e_6() {
        for (trial, (k, d)) in [(4, 3136), (4, 50), (7, 13), (2, 1)].into_iter().enumerate() {
            let seed = 1 + 10 * trial as u64;
            let weights: Vec<Vec<f64>> = uniform(k * d, seed, -0.05, 0.05).chunks(d).map(<[f64]>::to_vec).collect();
            let bias = uniform(k, seed + 1, -1.0, 1.0);
            let mean = uniform(d, seed + 2, -3.0, 3.0);
            let scale = uniform(d, seed + 3, 0.05, 4.0);
            let model = Model {
                format: FORMAT.into(),
                labels: (0..k).map(|i| (90 * i).to_string()).collect(),
                c: 1.0,
                standardize: Some(Standardize { mean: mean.clone(), scale: scale.clone() }),
                weights: weights.clone(),
                bias: bias.clone(),
                train_samples: 0,
                cv: vec![],
                folds: 0,
                features: None,
            };
            let n = 16;
            let x: Vec<f32> = uniform(n * d, seed + 4, -6.0, 6.0).into_iter().map(|v| v as f32).collect();
            let set =
                FeatureSet { data: x.clone(), n, dim: d, labels: vec![-1; n], keys: vec![String::new(); n], label_names: model.labels.clone(), info: None };
            let want = model.predict_proba(&set).unwrap();
            let folded = LinearHead::new(&weights, &bias).unwrap().fold_standardization(&mean, &scale).unwrap();
            // what the file holds: the folded parameters rounded to f32 once
            let stored = folded.weights();
            let (w32, b32) = (&stored["logreg.weight"].1, &stored["logreg.bias"].1);
            let mut worst = 0f64;
            for (i, p) in want.iter().enumerate() {
                let row = &x[i * d..(i + 1) * d];
                let logits: Vec<f64> = (0..k).map(|c| b32[c] as f64 + (0..d).map(|j| w32[c * d + j] as f64 * row[j] as f64).sum::<f64>()).collect();
                let q = softmax(&logits);
                // and the f64 fold itself is exact up to rounding
                let exact = softmax(&folded.logits(&row.iter().map(|&v| v as f64).collect::<Vec<_>>()));
                for c in 0..k {
                    worst = worst.max((p[c] - q[c]).abs());
                    assert!((p[c] - exact[c]).abs() < 1e-12, "{k}x{d} row {i}: {p:?} vs {exact:?}");
                }
            }
            assert!(worst < 1e-6, "{k}x{d}: max |Δp| {worst:e}");
        }
    }

    #[test]
    fn a_model_without_standardisation_keeps_its_head() {
        let w = vec![vec![1.0, -2.0], vec![0.5, 0.25]];
        let head = LinearHead::new(&w, &[0.1, -0.1]).unwrap();
        assert_eq!(head.weight, [1.0, -2.0, 0.5, 0.25]);
        assert_eq!(head.logits(&[1.0, 1.0]), [1.0 - 2.0 + 0.1, 0.75 - 0.1]);
    }
}
