//! Exporting a detector: one ONNX file, the image in and the TFOD contract out
//! ([`crate::detect_tail`]), proved on the way out. The raw heads (softmax scores and box codes) must
//! equal libtorch's on fixed inputs and on the run's own samples within the tolerance, and the file's
//! final detections on those samples must be the Rust reference post-process of libtorch's heads
//! ([`models::detect::postprocess`]): the same number per image, each with the same class, IoU > 0.99
//! and |Δscore| < 1e-4. (Detections are compared on trained weights: the ties of a fresh random
//! initialisation legitimately reorder.) A float16 file is held to its own tolerance instead: every
//! reference detection of score ≥ 0.5 is in the file with its class, IoU > 0.95 and |Δscore| within
//! the tolerance.

use std::path::{Path, PathBuf};

use data::records::RecordFile;
use data::{Loader, LoaderOptions};
use models::detect::{iou, postprocess, Detection, DetectorSpec};
use models::graph::Network;
use models::meta::{parity_key, Crop, Layout, ModelMeta, Preprocessing, Task};
use serde::Serialize;
use trainer::train::Config;

use crate::detect_tail::{OUTPUTS, RAW_OUTPUTS};
use crate::fold::fold_batchnorm;
use crate::lower::{self, LowerOptions, Weights};
use crate::parity::{fixed_inputs, max_abs_diff, nan_max, Comparison, FoldCounts, Report, Variant};
use crate::pipeline::{run_err, ExportOptions, ExportReport, PipelineError, FIXED_INPUTS, FIXED_SEED};

type Result<T, E = PipelineError> = std::result::Result<T, E>;

/// How the file's detections compared with the reference post-process of libtorch's heads.
#[derive(Debug, Clone, Serialize)]
pub struct DetectionParity {
    pub images: usize,
    /// Detections of the reference (all images).
    pub reference: usize,
    /// Of them, found in the file at the same rank with the same class, IoU > 0.99, |Δscore| < 1e-4.
    pub matched: usize,
    /// The first difference, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_difference: Option<String>,
    /// The largest box-code difference between the two sets of heads.
    pub codes_max_abs_diff: f32,
}

impl DetectionParity {
    /// Counts `want` (the reference's detections of one image, `what`) against the file's `got` by
    /// the exact rule: the same number, each at its rank with the same class, IoU > 0.99 and
    /// |Δscore| < 1e-4; the first difference is kept.
    pub(crate) fn compare_exact(&mut self, want: &[Detection], got: &[Detection], what: &str) {
        self.reference += want.len();
        for (k, w) in want.iter().enumerate() {
            if got.get(k).is_some_and(|g| g.class == w.class && iou(&g.bbox, &w.bbox) > 0.99 && (g.score - w.score).abs() < 1e-4) {
                self.matched += 1;
            } else if self.first_difference.is_none() {
                self.first_difference = Some(format!("{what}, detection {k}: reference {w:?}, file {:?}", got.get(k)));
            }
        }
        if got.len() != want.len() && self.first_difference.is_none() {
            self.first_difference = Some(format!("{what}: {} detections in the file, {} in the reference", got.len(), want.len()));
        }
    }
}

/// A file's outputs by name: (dims, values).
pub(crate) type Outputs = std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Every output of the file on a batch, by name.
pub(crate) fn file_outputs(path: &Path, x: Vec<f32>, shape: [usize; 4]) -> Result<Outputs> {
    let outs = runtime::engine::infer(path, &runtime::SessionOptions::default(), x, &shape)?;
    Ok(outs.into_iter().map(|(n, d, v)| (n, (d, v))).collect())
}

/// Softmax over each `classes`-wide row.
fn softmax(v: &[f32], classes: usize) -> Vec<f32> {
    models::detect::nms::softmax_rows(v, classes)
}

/// The file's detections of image `i` from its four outputs.
pub(crate) fn file_detections(outs: &Outputs, i: usize, m: usize) -> Vec<Detection> {
    let (boxes, scores, classes, num) = (&outs[OUTPUTS[0]].1, &outs[OUTPUTS[1]].1, &outs[OUTPUTS[2]].1, &outs[OUTPUTS[3]].1);
    (0..num[i] as usize)
        .map(|k| {
            let at = i * m + k;
            let b = &boxes[at * 4..at * 4 + 4];
            Detection { class: classes[at] as usize, score: scores[at], bbox: [b[0], b[1], b[2], b[3]] }
        })
        .collect()
}

/// Exports the detector of the run (called by [`crate::pipeline::export`] when the graph has a spec).
pub(crate) fn export(a: &ExportOptions, c: &Config, epoch: usize, graph: Network, weights: Weights, ckpt: &Path) -> Result<ExportReport> {
    let spec: DetectorSpec = graph.detector.clone().expect("a detector");
    let input = graph.input_shape();
    let classes = *graph.shape(graph.output).last().expect("scores have a class axis");
    let t = trainer::detection::detect_transform(c, input, false).map_err(run_err)?;
    let preprocessing = Preprocessing { input, layout: Layout::Nchw, mean: t.mean.clone(), std: t.std.clone(), resize_short_side: 0, crop: Crop::Stretch };
    let labels = if spec.labels.is_empty() { (0..classes).map(|k| spec.label(k)).collect() } else { spec.labels.clone() };
    let mut meta = ModelMeta::new(&c.model.name, Task::Detection, labels, preprocessing);
    meta.run = a.run.display().to_string();
    meta.epoch = epoch;
    meta.detector = Some(spec.clone());
    let variant = Variant { fp16: a.fp16, fold_bn: a.fold_bn };
    let tolerance = a.tolerance.unwrap_or(variant.default_tolerance());
    let (graph_out, weights_out, fold) = if a.fold_bn {
        let (folded, fw, report) = fold_batchnorm(&graph, &weights)?;
        (folded, fw, Some(FoldCounts { folded: report.folded.len(), kept: report.kept.len() }))
    } else {
        (graph.clone(), weights, None)
    };
    // the checked file carries the raw heads too; the written one only with --logits
    let lower_with = |raw: bool| lower::lower(&graph_out, &weights_out, &LowerOptions { opset: a.opset, logits: raw, metadata: meta.to_props(), fp16: a.fp16 });
    let checked = a.out.with_extension("parity.onnx");
    lower::save(&lower_with(true)?, &checked)?;
    let k = Check { a, c, graph: &graph, ckpt, file: &checked, spec: &spec, classes, tolerance, variant, fold };
    let result = if spec.rcnn.is_some() { crate::rcnn_parity::check(k) } else { check(k) };
    let _ = std::fs::remove_file(&checked);
    let report = result?;
    let mut model = lower_with(a.logits)?;
    meta.parity = Some(report.to_json());
    lower::set_metadata(&mut model, &parity_key(), &report.to_json());
    lower::save(&model, &a.out)?;
    Ok(ExportReport { checkpoint: ckpt.to_path_buf(), out: a.out.clone(), epoch, classes, input, opset: a.opset, variant, fold, meta, parity: report })
}

/// The first `--samples` images of the run's validation (else training) records through the
/// evaluation preprocessing, with the file they came from; `Err` says why there are none.
pub(crate) fn sample_batch(a: &ExportOptions, c: &Config, input: [usize; 3]) -> Result<std::result::Result<(data::Batch, PathBuf), String>> {
    let source = c.data.val.iter().chain([&c.data.train]).find(|p| p.is_file()).cloned();
    match (a.samples, source) {
        (0, _) => Ok(Err("not requested (--samples 0)".to_string())),
        (_, None) => Ok(Err("the run's record files are not here".to_string())),
        (n, Some(src)) => {
            let t = trainer::detection::detect_transform(c, input, false).map_err(run_err)?;
            let file_set = RecordFile::open(&src).map_err(run_err)?;
            let opts = LoaderOptions { batch_size: n, workers: 1, prefetch: 1, ..LoaderOptions::default() };
            let Some(batch) = Loader::detection(file_set, t, opts).epoch(0).next() else {
                return Err(PipelineError::Run(format!("{}: no records", src.display())));
            };
            let batch = batch.map_err(|e| PipelineError::Run(format!("reading {}: {e}", src.display())))?;
            Ok(Ok((batch, src)))
        }
    }
}

/// What a detector's parity check reads: the export's options, the run's config and graph, the
/// checkpoint, the file to check, the spec, the score columns, the bound and the variant.
#[derive(Clone, Copy)]
pub(crate) struct Check<'a> {
    pub a: &'a ExportOptions,
    pub c: &'a Config,
    pub graph: &'a Network,
    pub ckpt: &'a Path,
    pub file: &'a Path,
    pub spec: &'a DetectorSpec,
    pub classes: usize,
    pub tolerance: f32,
    pub variant: Variant,
    pub fold: Option<FoldCounts>,
}

fn check(k: Check) -> Result<Report> {
    let Check { a, c, graph, ckpt, file, spec, classes, tolerance, variant, fold } = k;
    let input = graph.input_shape();
    let mut net = trainer::net::Net::new_cpu(graph.clone(), 0).map_err(run_err)?;
    net.load(ckpt).map_err(run_err)?;
    let mut codes_diff = 0f32;
    let mut compare_heads = |what: &str, x: &[f32], shape: [usize; 4]| -> Result<(Comparison, Vec<f32>, Vec<f32>, Outputs)> {
        let (probs, codes) = trainer::detection::heads_f32(&net, x, shape);
        let outs = file_outputs(file, x.to_vec(), shape)?;
        let file_probs = softmax(&outs[RAW_OUTPUTS[0]].1, classes);
        codes_diff = nan_max(codes_diff, max_abs_diff(&codes, &outs[RAW_OUTPUTS[1]].1));
        Ok((Comparison::new(what, &probs, &file_probs, classes, None), probs, codes, outs))
    };
    let shape = [FIXED_INPUTS, input[0], input[1], input[2]];
    let x = fixed_inputs(shape.iter().product(), FIXED_SEED);
    let (fixed, ..) = compare_heads(&format!("{FIXED_INPUTS} fixed pseudo-random images (scores per prior)"), &x, shape)?;
    let mut detections = None;
    let samples = match sample_batch(a, c, input)? {
        Err(note) => Err(note),
        Ok((batch, src)) => {
            let shape = [batch.n, input[0], input[1], input[2]];
            let what = format!("{} samples of {} (scores per prior)", batch.n, src.display());
            let (cmp, probs, codes, outs) = compare_heads(&what, &batch.data, shape)?;
            let priors = spec.prior_boxes().map_err(|e| PipelineError::Run(e.to_string()))?;
            let m = spec.postprocess.max_detections;
            let p = priors.len();
            let mut d = DetectionParity { images: batch.n, reference: 0, matched: 0, first_difference: None, codes_max_abs_diff: 0.0 };
            for i in 0..batch.n {
                let want = postprocess(
                    &probs[i * p * classes..(i + 1) * p * classes],
                    &codes[i * p * 4..(i + 1) * p * 4],
                    &priors,
                    &spec.coder,
                    spec.image,
                    &spec.postprocess,
                )
                .map_err(|e| PipelineError::Run(e.to_string()))?;
                let got = file_detections(&outs, i, m);
                if variant.fp16 {
                    // float16 moves scores by up to the tolerance, which reorders near-equal ones and
                    // moves some across the score threshold: every confident reference detection
                    // (score ≥ 0.5) must be in the file, of its class, IoU > 0.95, |Δscore| ≤ tolerance
                    for (k, w) in want.iter().enumerate().filter(|(_, w)| w.score >= 0.5) {
                        d.reference += 1;
                        if got.iter().any(|g| g.class == w.class && iou(&g.bbox, &w.bbox) > 0.95 && (g.score - w.score).abs() <= tolerance) {
                            d.matched += 1;
                        } else if d.first_difference.is_none() {
                            d.first_difference = Some(format!("image {i} ({}), detection {k}: reference {w:?} is not in the file", batch.keys[i]));
                        }
                    }
                    continue;
                }
                d.compare_exact(&want, &got, &format!("image {i} ({})", batch.keys[i]));
            }
            detections = Some(d);
            Ok(cmp)
        }
    };
    let mut report = Report::new(variant, fold, tolerance, fixed, samples);
    let mut d = detections.unwrap_or(DetectionParity { images: 0, reference: 0, matched: 0, first_difference: None, codes_max_abs_diff: 0.0 });
    d.codes_max_abs_diff = codes_diff;
    report.output = "raw_scores (softmax), raw_box_codes; detections vs the reference post-process".into();
    let fails = [
        report.check().err(),
        (codes_diff.is_nan() || codes_diff > tolerance).then(|| format!("in the box codes by {codes_diff:e} (> {tolerance:e})")),
        d.first_difference.as_ref().map(|f| format!("in the detections ({} of {} matched; first: {f})", d.matched, d.reference)),
    ];
    report.detections = Some(serde_json::to_value(&d).expect("plain numbers"));
    if let Some(why) = fails.into_iter().flatten().next() {
        return Err(PipelineError::Parity { why, out: a.out.clone() });
    }
    Ok(report)
}
