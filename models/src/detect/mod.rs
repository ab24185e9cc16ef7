//! Detection geometry shared by every crate (pure Rust: no libtorch, no ONNX Runtime): boxes and IoU,
//! SSD priors and grid anchors, the box coder, the matchers, NMS with ONNX Runtime's semantics, the
//! detectors' post-process, the mAP evaluator the book measures with, COCO's AP@[.5:.95], and face detectors with keypoints
//! (MediaPipe's BlazeFace anchors, decoding and weighted NMS) with the letterbox they take.
//!
//! Boxes are `[x0, y0, x1, y1]` in `f32` (pixels, or image-relative where said), as torchvision
//! keeps them; arithmetic is done in `f32` in the order torchvision and ONNX Runtime do it, so the
//! trainer, the exported graph and this reference agree to the last bits where the operations are
//! exact (+, −, ×, ÷, √) and within a few ulps where libm and libtorch differ (exp, log).

pub mod boxes;
pub mod coco;
pub mod coder;
pub mod face;
pub mod map;
pub mod matcher;
pub mod nms;
pub mod priors;
pub mod spec;

pub use boxes::{iou, iou_matrix, scale_box, Bbox};
pub use coco::{CocoEvaluator, CocoResult};
pub use coder::BoxCoder;
pub use face::{weighted_nms, BlazeFace, Face, Letterbox};
pub use map::{ap_table, match_classes, ApResult, ClassAp, GroundTruth, MapEvaluator};
pub use matcher::Matcher;
pub use nms::{nms, postprocess, Detection, PostProcess};
pub use priors::{GridAnchors, SsdPriors};
pub use spec::{BoxFormat, DetectorSpec, Priors, RcnnSpec};

/// Why a detection computation was refused; each names the setting or input that is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DetectError {
    #[error("{what}: {why}")]
    Setting { what: String, why: String },
    #[error("{what}: expected {expected} values, got {got}")]
    Length { what: String, expected: usize, got: usize },
}

pub(crate) fn setting(what: impl Into<String>, why: impl Into<String>) -> DetectError {
    DetectError::Setting { what: what.into(), why: why.into() }
}
