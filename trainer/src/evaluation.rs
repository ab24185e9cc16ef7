//! Evaluation: loss, rank-1, rank-5 (and one-off accuracy for ordinal labels) of a network on a record
//! set, the metrics of a training epoch, and `trainer eval`.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::batches::{batch_spec, BatchError, RecordBatches};
use crate::net::Net;
use crate::run_dir::{RunDir, RunError};
use crate::run_files::{load_checkpoint_info, restore, RunFilesError};
use crate::train::{net_for, BuildError};

/// Why `trainer eval` could not evaluate a checkpoint (each names the run file or data it is about).
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Batches(#[from] BatchError),
    #[error(transparent)]
    RunFiles(#[from] RunFilesError),
    #[error(transparent)]
    RunDir(#[from] RunError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Detector(Box<crate::train::TrainError>),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub lr: f64,
    #[serde(deserialize_with = "nan_from_null")]
    pub train_loss: f64,
    /// (A detector has no rank-1/rank-5: NaN, written as `null`.)
    #[serde(deserialize_with = "nan_from_null")]
    pub train_rank1: f64,
    #[serde(deserialize_with = "nan_from_null")]
    pub train_rank5: f64,
    pub val: Option<EvalMetrics>,
    pub seconds: f64,
    pub samples_per_sec: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EvalMetrics {
    pub samples: usize,
    #[serde(deserialize_with = "nan_from_null")]
    pub loss: f64,
    #[serde(deserialize_with = "nan_from_null")]
    pub rank1: f64,
    #[serde(deserialize_with = "nan_from_null")]
    pub rank5: f64,
    /// For ordinal labels: predictions at most one class away from the truth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_off: Option<f64>,
    /// For detectors: mAP@0.5 as the book measures it (TFOD's PASCAL evaluator), over the classes
    /// with ground truth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map: Option<f64>,
    /// For detectors: COCO's AP@[.5:.95] (pycocotools' COCOeval), the second metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coco_ap: Option<f64>,
    /// For detectors: AP@0.5 of every class (`null` for a class with no ground truth in the set).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ap: Vec<ClassAp>,
}

pub use models::detect::ClassAp;

/// A diverged loss (NaN or infinite) is written to JSON as `null`; it reads back as NaN, so the
/// checkpoint of an epoch that diverged still loads (to be resumed at a lower rate, say).
fn nan_from_null<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Correct rank-1 and rank-5 predictions in a batch.
pub(crate) fn rank_hits(logits: &Tensor, labels: &Tensor) -> (i64, i64) {
    let (r1, r5) = crate::step::rank_hit_sums(logits, labels);
    (r1.double_value(&[]) as i64, r5.double_value(&[]) as i64)
}

/// Loss, rank-1 and rank-5 of `net` on `set` in eval mode.
pub fn evaluate(net: &Net, set: &RecordBatches, ordinal: bool) -> Result<EvalMetrics, BatchError> {
    let _guard = tch::no_grad_guard();
    let (mut loss, mut r1, mut r5, mut n, mut off) = (0.0, 0i64, 0i64, 0i64, 0i64);
    for b in set.batches(0, 0, net.device) {
        let (x, y) = b?;
        let len = y.size()[0];
        let logits = net.forward(&x, false);
        loss += logits.cross_entropy_for_logits(&y).double_value(&[]) * len as f64;
        let (a, bb) = rank_hits(&logits, &y);
        r1 += a;
        r5 += bb;
        n += len;
        if ordinal {
            off += (logits.argmax(1, false) - &y).abs().le(1).sum(Kind::Int64).int64_value(&[]);
        }
    }
    let n_f = n.max(1) as f64;
    let one_off = ordinal.then(|| off as f64 / n_f);
    Ok(EvalMetrics { samples: n as usize, loss: loss / n_f, rank1: r1 as f64 / n_f, rank5: r5 as f64 / n_f, one_off, map: None, coco_ap: None, ap: vec![] })
}

/// `trainer eval`: a checkpoint (the latest when `epoch` is None) on a record file or an IDX set.
pub fn eval(run: &Path, epoch: Option<usize>, data: &Path, batch: usize) -> Result<(usize, EvalMetrics), EvalError> {
    let dir = RunDir::new(run);
    let epoch = dir.epoch_or_latest(epoch)?;
    let info = load_checkpoint_info(run, epoch)?;
    let c = &info.config;
    let graph = dir.graph(&c.model.name, c.model.in_channels, epoch)?;
    if graph.detector.is_some() {
        let mut net = net_for(c, graph)?;
        restore(run, epoch, &mut net, None)?;
        let m = crate::detection::eval_detector(&net, c, data, batch).map_err(|e| EvalError::Detector(Box::new(e)))?;
        return Ok((epoch, m));
    }
    let spec = batch_spec(c, graph.input_shape(), false)?;
    let set = RecordBatches::open(data, 0, &spec, batch, 0, false)?;
    let mut net = net_for(c, graph)?;
    restore(run, epoch, &mut net, None)?;
    Ok((epoch, evaluate(&net, &set, c.data.ordinal)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diverged_losses_survive_the_side_file() {
        // serde_json writes NaN and infinities as null; reading them back used to fail the checkpoint
        let m = EpochMetrics {
            epoch: 1,
            lr: 0.1,
            train_loss: f64::INFINITY,
            train_rank1: 0.5,
            train_rank5: 1.0,
            val: Some(EvalMetrics { samples: 3, loss: f64::NAN, rank1: 0.0, rank5: 1.0, one_off: None, map: None, coco_ap: None, ap: vec![] }),
            seconds: 1.0,
            samples_per_sec: 2.0,
        };
        let text = serde_json::to_string(&m).unwrap();
        assert!(text.contains("\"train_loss\":null"), "{text}");
        let back: EpochMetrics = serde_json::from_str(&text).unwrap();
        assert!(back.train_loss.is_nan() && back.val.unwrap().loss.is_nan());
        assert_eq!(back.train_rank1, 0.5);
    }
}
