//! The proof that an exported Faster R-CNN computes what the trainer computes, stage by stage, on the
//! fixed pseudo-random images and on the run's own samples:
//!
//! 1. the RPN: objectness (as probabilities) and box codes against libtorch's, within the tolerance;
//! 2. the proposals: per image the same count, each box within tolerance × the image side (pixels)
//!    of `trainer::rcnn::proposals`' (decode, clip, min size, the Rust NMS, top-N), in order;
//! 3. the head on fixed proposals: libtorch's second stage fed the file's own proposals, its softmax
//!    scores and class-wise codes against the file's, within the tolerance;
//! 4. on the samples (trained weights, where ties are not expected), the file's final detections
//!    against `trainer::rcnn::rcnn_detections` with [`crate::detect_export`]'s rule: the same number
//!    per image, each with the same class, IoU > 0.99, |Δscore| < 1e-4.

use models::detect::Bbox;
use serde::Serialize;

use crate::detect_export::{file_detections, file_outputs, sample_batch, Check, DetectionParity, Outputs};
use crate::detect_tail::RAW_OUTPUTS;
use crate::parity::{fixed_inputs, max_abs_diff, nan_max, Comparison, Report};
use crate::pipeline::{run_err, PipelineError, FIXED_INPUTS, FIXED_SEED};
use crate::rcnn_export::RAW_RPN_OUTPUTS;

type Result<T, E = PipelineError> = std::result::Result<T, E>;

/// The two stages before the detections, against libtorch (every compared set together).
#[derive(Debug, Clone, Default, Serialize)]
pub struct StageParity {
    /// Largest difference of an anchor's objectness probability.
    pub rpn_objectness_max_abs_diff: f32,
    pub rpn_codes_max_abs_diff: f32,
    /// Proposals of the reference, and of them found at the same rank within `proposal_bound_px`.
    pub proposals: usize,
    pub proposals_matched: usize,
    pub proposal_max_abs_diff_px: f32,
    pub proposal_bound_px: f32,
    /// The head's class-wise codes on the file's proposals.
    pub head_codes_max_abs_diff: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_difference: Option<String>,
}

fn sigmoid(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| 1.0 / (1.0 + (-x).exp())).collect()
}

/// The file's proposals of each image (its valid rows).
fn file_proposals(outs: &Outputs, n: usize) -> Vec<Vec<Bbox>> {
    let (boxes, valid) = (&outs[RAW_RPN_OUTPUTS[2]], &outs[RAW_RPN_OUTPUTS[3]].1);
    let rows = boxes.0[1];
    (0..n)
        .map(|i| {
            (0..rows)
                .filter(|&r| valid[i * rows + r] > 0.5)
                .map(|r| {
                    let b = &boxes.1[(i * rows + r) * 4..(i * rows + r) * 4 + 4];
                    [b[0], b[1], b[2], b[3]]
                })
                .collect()
        })
        .collect()
}

/// The file's rows of the valid proposals of `name` (`[N, R, width]`), images in order.
fn valid_rows(outs: &Outputs, name: &str, n: usize) -> Vec<f32> {
    let (dims, v) = &outs[name];
    let (rows, width) = (dims[1], dims[2]);
    let valid = &outs[RAW_RPN_OUTPUTS[3]].1;
    (0..n * rows).filter(|&k| valid[k] > 0.5).flat_map(|k| v[k * width..(k + 1) * width].iter().copied()).collect()
}

pub(crate) fn check(k: Check) -> Result<Report> {
    let Check { a, c, graph, ckpt, file, spec, classes, tolerance, variant, fold } = k;
    let input = graph.input_shape();
    let mut net = trainer::net::Net::new_cpu(graph.clone(), 0).map_err(run_err)?;
    net.load(ckpt).map_err(run_err)?;
    let bound_px = tolerance * spec.image[0].max(spec.image[1]) as f32;
    let mut stages = StageParity { proposal_bound_px: bound_px, ..StageParity::default() };
    // stages 1-3 on one batch; returns the head comparison, the file's outputs and libtorch's detections
    let mut compare = |what: &str, x: &[f32], n: usize, keys: &[String]| -> Result<(Comparison, Outputs, Vec<Vec<models::detect::Detection>>)> {
        let shape = [n, input[0], input[1], input[2]];
        let outs = file_outputs(file, x.to_vec(), shape)?;
        let regions = file_proposals(&outs, n);
        let r = trainer::rcnn::rcnn_reference(&net, x, shape, Some(&regions)).map_err(run_err)?;
        let st = &mut stages;
        st.rpn_objectness_max_abs_diff = nan_max(st.rpn_objectness_max_abs_diff, max_abs_diff(&sigmoid(&r.rpn_scores), &sigmoid(&outs[RAW_RPN_OUTPUTS[0]].1)));
        st.rpn_codes_max_abs_diff = nan_max(st.rpn_codes_max_abs_diff, max_abs_diff(&r.rpn_codes, &outs[RAW_RPN_OUTPUTS[1]].1));
        for (i, (want, got)) in r.proposals.iter().zip(&regions).enumerate() {
            st.proposals += want.len();
            for (k, w) in want.iter().enumerate() {
                let d = got.get(k).map_or(f32::INFINITY, |g| max_abs_diff(w, g));
                st.proposal_max_abs_diff_px = nan_max(st.proposal_max_abs_diff_px, d);
                if d <= bound_px {
                    st.proposals_matched += 1;
                } else if st.first_difference.is_none() {
                    st.first_difference = Some(format!("{what}, image {i} ({}), proposal {k}: reference {w:?}, file {:?}", keys[i], got.get(k)));
                }
            }
            if got.len() != want.len() && st.first_difference.is_none() {
                st.first_difference = Some(format!("{what}, image {i} ({}): {} proposals in the file, {} in the reference", keys[i], got.len(), want.len()));
            }
        }
        let (head_probs, head_codes) = r.head.expect("regions were given");
        let file_probs = models::detect::nms::softmax_rows(&valid_rows(&outs, RAW_OUTPUTS[0], n), classes);
        st.head_codes_max_abs_diff = nan_max(st.head_codes_max_abs_diff, max_abs_diff(&head_codes, &valid_rows(&outs, RAW_OUTPUTS[1], n)));
        let cmp = Comparison::new(
            &format!("{what} (the head's scores on the file's {} proposals)", head_probs.len() / classes),
            &head_probs,
            &file_probs,
            classes,
            None,
        );
        Ok((cmp, outs, r.detections))
    };
    let x = fixed_inputs(FIXED_INPUTS * input.iter().product::<usize>(), FIXED_SEED);
    let keys: Vec<String> = (0..FIXED_INPUTS).map(|i| format!("fixed image {i}")).collect();
    let (fixed, ..) = compare(&format!("{FIXED_INPUTS} fixed pseudo-random images"), &x, FIXED_INPUTS, &keys)?;
    let mut detections = None;
    let samples = match sample_batch(a, c, input)? {
        Err(note) => Err(note),
        Ok((batch, src)) => {
            let what = format!("{} samples of {}", batch.n, src.display());
            let (cmp, outs, reference) = compare(&what, &batch.data, batch.n, &batch.keys)?;
            let m = spec.postprocess.max_detections;
            let mut d =
                DetectionParity { images: batch.n, reference: 0, matched: 0, first_difference: None, codes_max_abs_diff: stages.head_codes_max_abs_diff };
            for (i, want) in reference.iter().enumerate() {
                d.compare_exact(want, &file_detections(&outs, i, m), &format!("image {i} ({})", batch.keys[i]));
            }
            detections = Some(d);
            Ok(cmp)
        }
    };
    let mut report = Report::new(variant, fold, tolerance, fixed, samples);
    report.output = "RPN objectness and codes, proposals, the head on the file's proposals (softmax, codes); detections vs the trainer's".into();
    let fails = [
        report.check().err(),
        (stages.rpn_objectness_max_abs_diff.is_nan() || stages.rpn_objectness_max_abs_diff > tolerance)
            .then(|| format!("in the RPN's objectness by {:e} (> {tolerance:e})", stages.rpn_objectness_max_abs_diff)),
        (stages.rpn_codes_max_abs_diff.is_nan() || stages.rpn_codes_max_abs_diff > tolerance)
            .then(|| format!("in the RPN's box codes by {:e} (> {tolerance:e})", stages.rpn_codes_max_abs_diff)),
        stages.first_difference.as_ref().map(|f| format!("in the proposals ({} of {} matched; first: {f})", stages.proposals_matched, stages.proposals)),
        (stages.head_codes_max_abs_diff.is_nan() || stages.head_codes_max_abs_diff > tolerance)
            .then(|| format!("in the head's box codes by {:e} (> {tolerance:e})", stages.head_codes_max_abs_diff)),
        detections
            .as_ref()
            .and_then(|d| d.first_difference.as_ref().map(|f| format!("in the detections ({} of {} matched; first: {f})", d.matched, d.reference))),
    ];
    report.detections = Some(serde_json::json!({ "stages": stages, "detections": detections }));
    if let Some(why) = fails.into_iter().flatten().next() {
        return Err(PipelineError::Parity { why, out: a.out.clone() });
    }
    Ok(report)
}
