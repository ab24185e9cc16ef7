//! The graph IR: a network as a value.
//!
//! A [`Graph`] is a list of [`Node`]s in topological order; node 0 is the input. Each node applies one
//! [`Op`] from a closed set to the outputs of earlier nodes. Every back end (libtorch in the trainer,
//! ONNX in the exporter, shape inference here) matches on [`Op`] without a catch-all arm, so a new op does
//! not compile until every back end handles it.
//!
//! [`Graph::validate`] checks a graph once and returns a [`Network`]: the graph with every node's output
//! shape and every parameter ([`ParamSpec`]: its node, shape, kind and initial value), which is what the
//! interpreters and the tests read.
//!
//! Shapes leave out the batch dimension: `[C, H, W]` for feature maps, `[F]` after `Flatten`/`Linear`.
//! Parameter names are the node's dotted scope plus a suffix (`block1.conv1.weight`); the same name is
//! used by the trainer's VarStore, the safetensors checkpoints and the ONNX initializers.

use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// Index of a node in [`Graph::nodes`].
pub type NodeId = usize;

/// A per-sample shape (no batch dimension).
pub type Shape = Vec<usize>;

/// The closed set of operations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// The graph input, `[channels, height, width]`. Exactly one, at node 0.
    Input {
        channels: usize,
        height: usize,
        width: usize,
    },
    /// A 2-d convolution (the spec, with PyTorch's defaults, comes from [`conv`](crate::builder::conv)).
    Conv2d(Conv2d),
    /// Batch normalisation over channels (or features after `Flatten`). `momentum` is in torch's
    /// convention (weight of the new batch statistic: mxnet/Keras momentum 0.9 is 0.1 here).
    /// `fix_gamma` keeps the scale at 1 and untrained, as mxnet's `BatchNorm` does by default.
    BatchNorm {
        eps: f64,
        momentum: f64,
        fix_gamma: bool,
    },
    Relu,
    Elu {
        alpha: f64,
    },
    /// Parametric ReLU with one learned slope per channel, initialised to `init`.
    Prelu {
        init: f64,
    },
    LeakyRelu {
        slope: f64,
    },
    /// Local response normalisation across channels (AlexNet 2012 style).
    Lrn {
        size: usize,
        alpha: f64,
        beta: f64,
        k: f64,
    },
    MaxPool {
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        ceil_mode: bool,
    },
    /// Average pooling; padded positions are excluded from the average (`count_include_pad = false`).
    AvgPool {
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: [usize; 2],
        ceil_mode: bool,
    },
    /// Mean over the whole spatial extent: `[C, H, W]` -> `[C, 1, 1]`.
    GlobalAvgPool,
    Linear {
        out_features: usize,
        bias: bool,
    },
    /// Dropout with drop probability `p` (training only; removed at export).
    Dropout {
        p: f64,
    },
    /// `[C, H, W]` -> `[C*H*W]` in C-major order.
    Flatten,
    /// Concatenation along the channel axis.
    Concat,
    /// Element-wise sum of two or more inputs of one shape.
    Add,
    /// Softmax over the last axis.
    Softmax,
    /// Clamps every value into `[min, max]` (ReLU6 is `Clip { min: 0, max: 6 }`, the activation of
    /// MobileNet's SSD-lite heads).
    Clip {
        min: f64,
        max: f64,
    },
    /// A detection head's map `[A·K, H, W]` as rows, one per location and anchor: `[H·W·A, K]`.
    /// Row `(y·W + x)·A + a` holds channels `a·K .. a·K + K` at `(y, x)`: the order in which
    /// [`SsdPriors`](crate::detect::SsdPriors) and [`GridAnchors`](crate::detect::GridAnchors) list
    /// their boxes (torchvision's SSD head reshapes the same way).
    AnchorRows {
        columns: usize,
    },
    /// The rows of several heads one after another: `[R1, K], [R2, K], … → [R1 + R2 + …, K]`.
    ConcatRows,
    /// Each location's channel vector scaled to unit L2 norm (at least 1e-12), then times a learned
    /// per-channel scale that starts at `scale` (Liu et al. 2016 on VGG16's conv4_3, after ParseNet:
    /// torchvision's SSD300 uses 20).
    L2Norm {
        scale: f64,
    },
    /// Region-of-interest pooling (He et al. 2017's RoIAlign; torchvision's `roi_align`, ONNX's
    /// `RoiAlign` in `avg` mode): each region `[x0, y0, x1, y1]` (input pixels, times
    /// `spatial_scale` on the `[C, H, W]` feature map) cut into an `output` grid of cells, each the
    /// mean of `sampling_ratio`² bilinear samples: `[C, oh, ow]` per region. `aligned` shifts the
    /// samples by half a pixel (ONNX's `half_pixel`; otherwise `output_half_pixel`, torchvision's
    /// `aligned=False`, where regions are at least one cell wide). The regions come from outside the
    /// graph (a Faster R-CNN's proposals), so every node after this one computes per region and reads
    /// only this node and those after it.
    RoiAlign {
        output: [usize; 2],
        spatial_scale: f64,
        sampling_ratio: usize,
        aligned: bool,
    },
}

/// The arguments of a convolution. In `graph.json` its fields sit beside `"op": "conv2d"`, as the
/// fields of a struct variant would (serde writes an internally tagged newtype variant that way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conv2d {
    pub out_channels: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
    pub bias: bool,
}

impl From<Conv2d> for Op {
    fn from(c: Conv2d) -> Self {
        Op::Conv2d(c)
    }
}

/// What a parameter is, so that initialisers, weight decay and counts can tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamKind {
    /// Convolution or linear weight.
    Weight,
    /// Convolution or linear bias.
    Bias,
    /// BatchNorm scale γ.
    BnGamma,
    /// BatchNorm shift β.
    BnBeta,
    /// BatchNorm running mean (a buffer: not trained by the optimizer).
    BnRunningMean,
    /// BatchNorm running variance (a buffer).
    BnRunningVar,
    /// PReLU slopes.
    PreluSlope,
    /// A learned per-channel scale (L2Norm's, SSD300's conv4_3).
    Scale,
}

impl ParamKind {
    /// Buffers are saved and exported but never touched by the optimizer.
    pub fn is_buffer(self) -> bool {
        match self {
            Self::BnRunningMean | Self::BnRunningVar => true,
            Self::Weight | Self::Bias | Self::BnGamma | Self::BnBeta | Self::PreluSlope | Self::Scale => false,
        }
    }
}

/// How a parameter's values start.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamInit {
    /// Drawn by the graph's [`Init`] scheme from the parameter's fans (convolution and linear weights).
    Scheme,
    /// Biases, BatchNorm β and running means.
    Zeros,
    /// BatchNorm γ and running variances.
    Ones,
    /// Every value the same: PReLU slopes at their op's `init`.
    Const(f64),
}

/// One parameter tensor of a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamSpec {
    /// Full dotted name: `<node name>.<suffix>`.
    pub name: String,
    pub shape: Vec<usize>,
    pub kind: ParamKind,
    /// False for buffers and for a BatchNorm γ held at 1 (`fix_gamma`).
    pub trainable: bool,
    /// Fan-in and fan-out for weight initialisers (`Weight` only; zero otherwise).
    pub fan_in: usize,
    pub fan_out: usize,
    /// The node that owns it.
    pub node: NodeId,
    pub init: ParamInit,
}

impl ParamSpec {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// How a model's weights start (the book's choice for each network is part of its definition): it draws
/// every parameter whose [`ParamInit`] is `Scheme`. The others start where their spec says: biases at 0,
/// BatchNorm γ at 1 and β at 0, running statistics at 0 and 1, PReLU slopes at their op's `init`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "scheme", rename_all = "snake_case")]
pub enum Init {
    /// mxnet `Xavier()` (uniform, factor "avg", magnitude 3) = Glorot uniform:
    /// U(-a, a), a = sqrt(6 / (fan_in + fan_out)).
    XavierUniform,
    /// mxnet `MSRAPrelu()` (Gaussian, factor "avg", slope 0.25):
    /// N(0, s²), s = sqrt(2 / ((1 + slope²) (fan_in + fan_out) / 2)).
    MsraPrelu { slope: f64 },
    /// Keras `he_normal`: truncated normal (cut at 2σ), σ = sqrt(2 / fan_in).
    HeNormal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Unique dotted name, e.g. `stage2.unit1.conv1`.
    pub name: String,
    pub op: Op,
    pub inputs: Vec<NodeId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    pub name: String,
    pub nodes: Vec<Node>,
    /// The node whose value is the network's output (the logits, before any softmax).
    pub output: NodeId,
    pub init: Init,
    /// Outputs beside `output`, by name (a detector's box codes beside its class scores); none for
    /// a classifier, whose `graph.json` does not mention them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_outputs: Vec<NamedOutput>,
    /// What makes the graph a detector (its priors, coder, thresholds and labels); none for a
    /// classifier, whose `graph.json` does not mention it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detector: Option<crate::detect::DetectorSpec>,
}

/// A further output of a graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedOutput {
    pub name: String,
    pub node: NodeId,
}

/// Errors that name the node they are about.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GraphError {
    #[error("node '{node}': {reason}")]
    Node { node: String, reason: String },
    #[error("graph '{graph}': {reason}")]
    Graph { graph: String, reason: String },
}

fn node_err(node: &Node, reason: impl Into<String>) -> GraphError {
    GraphError::Node { node: node.name.clone(), reason: reason.into() }
}

/// Output size of a pooling or convolution window along one axis; `None` when the window does not fit.
fn window_out(size: usize, kernel: usize, stride: usize, pad: usize, dilation: usize, ceil: bool) -> Option<usize> {
    let span = dilation * (kernel - 1) + 1;
    let padded = size + 2 * pad;
    if stride == 0 || padded < span {
        return None;
    }
    let mut out = (padded - span) / stride + 1;
    // ceil mode: one more window when a partial one remains, unless it would start in the right padding.
    if ceil && !(padded - span).is_multiple_of(stride) && (out * stride) < size + pad {
        out += 1;
    }
    Some(out)
}

fn spatial(node: &Node, s: &Shape) -> Result<(usize, usize, usize), GraphError> {
    match s.as_slice() {
        [c, h, w] => Ok((*c, *h, *w)),
        _ => Err(node_err(node, format!("expects a [C, H, W] input, got {s:?}"))),
    }
}

fn pool_shape(node: &Node, s: &Shape, kernel: [usize; 2], stride: [usize; 2], padding: [usize; 2], ceil: bool) -> Result<Shape, GraphError> {
    let (c, h, w) = spatial(node, s)?;
    if padding[0] * 2 > kernel[0] || padding[1] * 2 > kernel[1] {
        return Err(node_err(node, format!("padding {padding:?} is more than half the kernel {kernel:?}")));
    }
    let oh = window_out(h, kernel[0], stride[0], padding[0], 1, ceil);
    let ow = window_out(w, kernel[1], stride[1], padding[1], 1, ceil);
    match (oh, ow) {
        (Some(oh), Some(ow)) => Ok(vec![c, oh, ow]),
        _ => Err(node_err(node, format!("kernel {kernel:?} does not fit the input {h}x{w} with padding {padding:?}"))),
    }
}

impl Op {
    /// The output shape for the given input shapes, or an error naming `node`.
    pub fn output_shape(&self, node: &Node, ins: &[&Shape]) -> Result<Shape, GraphError> {
        let arity = |n: usize| -> Result<&Shape, GraphError> {
            if ins.len() == n {
                Ok(ins[0])
            } else {
                Err(node_err(node, format!("takes {n} input(s), got {}", ins.len())))
            }
        };
        match self {
            Op::Input { channels, height, width } => {
                if !ins.is_empty() {
                    return Err(node_err(node, "the input node takes no inputs"));
                }
                if *channels == 0 || *height == 0 || *width == 0 {
                    return Err(node_err(node, "input dimensions must be positive"));
                }
                Ok(vec![*channels, *height, *width])
            }
            Op::Conv2d(Conv2d { out_channels, kernel, stride, padding, dilation, groups, .. }) => {
                let (c, h, w) = spatial(node, arity(1)?)?;
                if *groups == 0 || c % groups != 0 || out_channels % groups != 0 {
                    return Err(node_err(node, format!("groups {groups} must divide in ({c}) and out ({out_channels}) channels")));
                }
                if *out_channels == 0 || kernel.contains(&0) || dilation.contains(&0) {
                    return Err(node_err(node, "channels, kernel and dilation must be positive"));
                }
                let oh = window_out(h, kernel[0], stride[0], padding[0], dilation[0], false);
                let ow = window_out(w, kernel[1], stride[1], padding[1], dilation[1], false);
                match (oh, ow) {
                    (Some(oh), Some(ow)) => Ok(vec![*out_channels, oh, ow]),
                    _ => Err(node_err(node, format!("kernel {kernel:?} does not fit the input {h}x{w} with padding {padding:?}"))),
                }
            }
            Op::BatchNorm { eps, momentum, .. } => {
                let s = arity(1)?;
                if !eps.is_finite() || *eps <= 0.0 || !(0.0..=1.0).contains(momentum) {
                    return Err(node_err(node, format!("eps {eps} must be > 0 and momentum {momentum} in [0, 1]")));
                }
                if s.len() != 1 && s.len() != 3 {
                    return Err(node_err(node, format!("normalises [C, H, W] or [F] inputs, got {s:?}")));
                }
                Ok(s.clone())
            }
            Op::Relu | Op::Elu { .. } | Op::LeakyRelu { .. } | Op::Dropout { .. } | Op::Softmax => {
                if let Op::Dropout { p } = self {
                    if !(0.0..1.0).contains(p) {
                        return Err(node_err(node, format!("drop probability {p} must be in [0, 1)")));
                    }
                }
                Ok(arity(1)?.clone())
            }
            Op::Prelu { .. } => {
                let s = arity(1)?;
                if s.len() != 1 && s.len() != 3 {
                    return Err(node_err(node, format!("PReLU needs [C, H, W] or [F] input, got {s:?}")));
                }
                Ok(s.clone())
            }
            Op::Lrn { size, .. } => {
                let s = arity(1)?;
                spatial(node, s)?;
                if *size == 0 {
                    return Err(node_err(node, "LRN size must be positive"));
                }
                Ok(s.clone())
            }
            Op::MaxPool { kernel, stride, padding, ceil_mode } | Op::AvgPool { kernel, stride, padding, ceil_mode } => {
                pool_shape(node, arity(1)?, *kernel, *stride, *padding, *ceil_mode)
            }
            Op::GlobalAvgPool => {
                let (c, _, _) = spatial(node, arity(1)?)?;
                Ok(vec![c, 1, 1])
            }
            Op::Linear { out_features, .. } => match arity(1)?.as_slice() {
                [_] if *out_features > 0 => Ok(vec![*out_features]),
                [_] => Err(node_err(node, "out_features must be positive")),
                s => Err(node_err(node, format!("Linear needs a flat [F] input (add Flatten first), got {s:?}"))),
            },
            Op::Flatten => Ok(vec![arity(1)?.iter().product()]),
            Op::Concat => {
                if ins.len() < 2 {
                    return Err(node_err(node, "Concat needs at least two inputs"));
                }
                let (_, h, w) = spatial(node, ins[0])?;
                let mut c_total = 0;
                for s in ins {
                    let (c, hh, ww) = spatial(node, s)?;
                    if (hh, ww) != (h, w) {
                        return Err(node_err(node, format!("Concat inputs differ in spatial size: {h}x{w} vs {hh}x{ww}")));
                    }
                    c_total += c;
                }
                Ok(vec![c_total, h, w])
            }
            Op::Clip { min, max } => {
                if !(min.is_finite() && max.is_finite() && min < max) {
                    return Err(node_err(node, format!("Clip needs finite min {min} < max {max}")));
                }
                Ok(arity(1)?.clone())
            }
            Op::AnchorRows { columns } => {
                let (c, h, w) = spatial(node, arity(1)?)?;
                if *columns == 0 || c % columns != 0 {
                    return Err(node_err(node, format!("{c} channels are not a whole number of anchors of {columns} columns")));
                }
                Ok(vec![h * w * (c / columns), *columns])
            }
            Op::L2Norm { scale } => {
                if !scale.is_finite() {
                    return Err(node_err(node, format!("L2Norm needs a finite initial scale, got {scale}")));
                }
                let (c, h, w) = spatial(node, arity(1)?)?;
                Ok(vec![c, h, w])
            }
            Op::RoiAlign { output, spatial_scale, sampling_ratio, .. } => {
                let (c, _, _) = spatial(node, arity(1)?)?;
                if output.contains(&0) || *sampling_ratio == 0 {
                    return Err(node_err(node, format!("RoiAlign needs an output grid {output:?} and a sampling ratio {sampling_ratio} of at least 1")));
                }
                if !(spatial_scale.is_finite() && *spatial_scale > 0.0) {
                    return Err(node_err(node, format!("RoiAlign's spatial_scale {spatial_scale} must be a positive number")));
                }
                Ok(vec![c, output[0], output[1]])
            }
            Op::ConcatRows => {
                if ins.len() < 2 {
                    return Err(node_err(node, "ConcatRows needs at least two inputs"));
                }
                let mut rows = 0;
                for s in ins {
                    match s.as_slice() {
                        [r, k] if *k == ins[0][1] => rows += r,
                        _ => return Err(node_err(node, format!("ConcatRows joins [rows, K] inputs of one K, got {:?} and {s:?}", ins[0]))),
                    }
                }
                Ok(vec![rows, ins[0][1]])
            }
            Op::Add => {
                if ins.len() < 2 {
                    return Err(node_err(node, "Add needs at least two inputs"));
                }
                if let Some(s) = ins.iter().find(|s| **s != ins[0]) {
                    return Err(node_err(node, format!("Add inputs differ in shape: {:?} vs {s:?}", ins[0])));
                }
                Ok(ins[0].clone())
            }
        }
    }

    /// The parameters this op owns as node `node` named `node_name`, given its (single) input shape.
    pub fn params(&self, node: NodeId, node_name: &str, input: Option<&Shape>) -> Vec<ParamSpec> {
        let p = |suffix: &str, shape: Vec<usize>, kind: ParamKind, trainable: bool, fans: (usize, usize), init: ParamInit| ParamSpec {
            name: format!("{node_name}.{suffix}"),
            shape,
            kind,
            trainable,
            fan_in: fans.0,
            fan_out: fans.1,
            node,
            init,
        };
        let channels = input.and_then(|s| s.first().copied()).unwrap_or(0);
        match self {
            Op::Conv2d(Conv2d { out_channels, kernel, groups, bias, .. }) => {
                let in_per_group = channels / groups.max(&1);
                let receptive = kernel[0] * kernel[1];
                let fans = (in_per_group * receptive, out_channels / groups.max(&1) * receptive);
                let mut v = vec![p("weight", vec![*out_channels, in_per_group, kernel[0], kernel[1]], ParamKind::Weight, true, fans, ParamInit::Scheme)];
                if *bias {
                    v.push(p("bias", vec![*out_channels], ParamKind::Bias, true, (0, 0), ParamInit::Zeros));
                }
                v
            }
            Op::Linear { out_features, bias } => {
                let in_features = input.map(|s| s.iter().product()).unwrap_or(0);
                let fans = (in_features, *out_features);
                let mut v = vec![p("weight", vec![*out_features, in_features], ParamKind::Weight, true, fans, ParamInit::Scheme)];
                if *bias {
                    v.push(p("bias", vec![*out_features], ParamKind::Bias, true, (0, 0), ParamInit::Zeros));
                }
                v
            }
            Op::BatchNorm { fix_gamma, .. } => vec![
                p("weight", vec![channels], ParamKind::BnGamma, !fix_gamma, (0, 0), ParamInit::Ones),
                p("bias", vec![channels], ParamKind::BnBeta, true, (0, 0), ParamInit::Zeros),
                p("running_mean", vec![channels], ParamKind::BnRunningMean, false, (0, 0), ParamInit::Zeros),
                p("running_var", vec![channels], ParamKind::BnRunningVar, false, (0, 0), ParamInit::Ones),
            ],
            Op::Prelu { init } => vec![p("weight", vec![channels], ParamKind::PreluSlope, true, (0, 0), ParamInit::Const(*init))],
            Op::L2Norm { scale } => vec![p("weight", vec![channels], ParamKind::Scale, true, (0, 0), ParamInit::Const(*scale))],
            Op::Input { .. }
            | Op::Relu
            | Op::Elu { .. }
            | Op::LeakyRelu { .. }
            | Op::Lrn { .. }
            | Op::MaxPool { .. }
            | Op::AvgPool { .. }
            | Op::GlobalAvgPool
            | Op::Dropout { .. }
            | Op::Flatten
            | Op::Concat
            | Op::Add
            | Op::Softmax
            | Op::Clip { .. }
            | Op::AnchorRows { .. }
            | Op::ConcatRows
            | Op::RoiAlign { .. } => vec![],
        }
    }

    /// Whether the op pools over space (`trainer features` reads the last pooling layer by default).
    pub fn is_pool(&self) -> bool {
        match self {
            Op::MaxPool { .. } | Op::AvgPool { .. } | Op::GlobalAvgPool => true,
            Op::Input { .. }
            | Op::Conv2d(_)
            | Op::BatchNorm { .. }
            | Op::Relu
            | Op::Elu { .. }
            | Op::Prelu { .. }
            | Op::LeakyRelu { .. }
            | Op::Lrn { .. }
            | Op::Linear { .. }
            | Op::Dropout { .. }
            | Op::Flatten
            | Op::Concat
            | Op::Add
            | Op::Softmax
            | Op::Clip { .. }
            | Op::AnchorRows { .. }
            | Op::ConcatRows
            | Op::L2Norm { .. }
            | Op::RoiAlign { .. } => false,
        }
    }

    /// Whether the op is a weight layer, a convolution or a linear layer, `y = W x (+ b)` with one row
    /// of `W` per output channel: a BatchNorm reading only its output folds into `W` and `b` (the
    /// exporter's `--fold-bn`), and the last one of a network is its classifier head.
    pub fn is_weight_layer(&self) -> bool {
        match self {
            Op::Conv2d(_) | Op::Linear { .. } => true,
            Op::Input { .. }
            | Op::BatchNorm { .. }
            | Op::Relu
            | Op::Elu { .. }
            | Op::Prelu { .. }
            | Op::LeakyRelu { .. }
            | Op::Lrn { .. }
            | Op::MaxPool { .. }
            | Op::AvgPool { .. }
            | Op::GlobalAvgPool
            | Op::Dropout { .. }
            | Op::Flatten
            | Op::Concat
            | Op::Add
            | Op::Softmax
            | Op::Clip { .. }
            | Op::AnchorRows { .. }
            | Op::ConcatRows
            | Op::L2Norm { .. }
            | Op::RoiAlign { .. } => false,
        }
    }

    /// The same op with a bias, for a convolution or linear layer; any other op unchanged.
    pub fn with_bias(&self) -> Op {
        let mut op = self.clone();
        match &mut op {
            Op::Conv2d(Conv2d { bias, .. }) | Op::Linear { bias, .. } => *bias = true,
            Op::Input { .. }
            | Op::BatchNorm { .. }
            | Op::Relu
            | Op::Elu { .. }
            | Op::Prelu { .. }
            | Op::LeakyRelu { .. }
            | Op::Lrn { .. }
            | Op::MaxPool { .. }
            | Op::AvgPool { .. }
            | Op::GlobalAvgPool
            | Op::Dropout { .. }
            | Op::Flatten
            | Op::Concat
            | Op::Add
            | Op::Softmax
            | Op::Clip { .. }
            | Op::AnchorRows { .. }
            | Op::ConcatRows
            | Op::L2Norm { .. }
            | Op::RoiAlign { .. } => {}
        }
        op
    }

    /// A short name for tables and errors (`Conv2d`, `MaxPool`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Input { .. } => "Input",
            Op::Conv2d(_) => "Conv2d",
            Op::BatchNorm { .. } => "BatchNorm",
            Op::Relu => "ReLU",
            Op::Elu { .. } => "ELU",
            Op::Prelu { .. } => "PReLU",
            Op::LeakyRelu { .. } => "LeakyReLU",
            Op::Lrn { .. } => "LRN",
            Op::MaxPool { .. } => "MaxPool",
            Op::AvgPool { .. } => "AvgPool",
            Op::GlobalAvgPool => "GlobalAvgPool",
            Op::Linear { .. } => "Linear",
            Op::Dropout { .. } => "Dropout",
            Op::Flatten => "Flatten",
            Op::Concat => "Concat",
            Op::Add => "Add",
            Op::Softmax => "Softmax",
            Op::Clip { .. } => "Clip",
            Op::AnchorRows { .. } => "AnchorRows",
            Op::ConcatRows => "ConcatRows",
            Op::L2Norm { .. } => "L2Norm",
            Op::RoiAlign { .. } => "RoiAlign",
        }
    }
}

/// Parameter totals by kind, the way the book counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ParamCount {
    /// Convolution and linear weights and biases.
    pub weights: usize,
    /// BatchNorm γ and β.
    pub bn_affine: usize,
    /// BatchNorm running mean and variance (buffers).
    pub bn_stats: usize,
    /// PReLU slopes.
    pub prelu: usize,
    /// Parameters the optimizer updates (excludes buffers and fixed γ).
    pub trainable: usize,
}

impl ParamCount {
    /// Every stored value: what a checkpoint holds.
    pub fn total(&self) -> usize {
        self.weights + self.bn_affine + self.bn_stats + self.prelu
    }
}

impl Graph {
    /// The input shape `[C, H, W]`.
    pub fn input_shape(&self) -> [usize; 3] {
        match self.nodes.first().map(|n| &n.op) {
            Some(Op::Input { channels, height, width }) => [*channels, *height, *width],
            _ => [0, 0, 0],
        }
    }

    /// Checks the structure, infers every node's output shape and lists every parameter: the graph as
    /// a [`Network`], which every interpreter reads. This is the one place a graph is validated.
    pub fn validate(self) -> Result<Network, GraphError> {
        let shapes = self.infer_shapes()?;
        let mut params = Vec::new();
        let mut first_param = Vec::with_capacity(self.nodes.len() + 1);
        for (id, n) in self.nodes.iter().enumerate() {
            first_param.push(params.len());
            params.extend(n.op.params(id, &n.name, n.inputs.first().map(|&i| &shapes[i])));
        }
        first_param.push(params.len());
        Ok(Network { graph: self, shapes, params, first_param })
    }

    /// Checks the structure and infers every node's output shape (index = node id).
    fn infer_shapes(&self) -> Result<Vec<Shape>, GraphError> {
        let gerr = |reason: String| GraphError::Graph { graph: self.name.clone(), reason };
        match self.nodes.first() {
            Some(Node { op: Op::Input { .. }, .. }) => {}
            _ => return Err(gerr("node 0 must be the Input".into())),
        }
        if self.output >= self.nodes.len() {
            return Err(gerr(format!("output node {} does not exist ({} nodes)", self.output, self.nodes.len())));
        }
        let mut outputs = HashSet::new();
        for o in &self.extra_outputs {
            if o.node >= self.nodes.len() {
                return Err(gerr(format!("output '{}' reads node {}, which does not exist ({} nodes)", o.name, o.node, self.nodes.len())));
            }
            if o.name.is_empty() || !outputs.insert(o.name.as_str()) {
                return Err(gerr(format!("output names must be unique and non-empty ('{}')", o.name)));
            }
        }
        let mut names = HashSet::new();
        let mut roi: Option<NodeId> = None;
        let mut shapes: Vec<Shape> = Vec::with_capacity(self.nodes.len());
        for (id, node) in self.nodes.iter().enumerate() {
            if node.name.is_empty() || !names.insert(node.name.as_str()) {
                return Err(node_err(node, "node names must be unique and non-empty"));
            }
            if id > 0 && matches!(node.op, Op::Input { .. }) {
                return Err(node_err(node, "only node 0 may be an Input"));
            }
            if let Some(&bad) = node.inputs.iter().find(|&&i| i >= id) {
                return Err(node_err(node, format!("reads node {bad}, which does not come before it (node {id})")));
            }
            if let Some(r) = roi {
                if let Some(&bad) = node.inputs.iter().find(|&&i| i < r) {
                    return Err(node_err(
                        node,
                        format!("reads '{}', a per-image node before the RoiAlign '{}': nodes after a RoiAlign compute per region and read only it and what follows it", self.nodes[bad].name, self.nodes[r].name),
                    ));
                }
            }
            let ins: Vec<&Shape> = node.inputs.iter().map(|&i| &shapes[i]).collect();
            shapes.push(node.op.output_shape(node, &ins)?);
            if matches!(node.op, Op::RoiAlign { .. }) {
                if let Some(r) = roi {
                    return Err(node_err(node, format!("a second RoiAlign (the first is '{}'): a graph pools regions once", self.nodes[r].name)));
                }
                roi = Some(id);
            }
        }
        if let Some(d) = &self.detector {
            self.check_detector(d, &shapes).map_err(gerr)?;
        }
        Ok(shapes)
    }

    /// A detector's outputs are the rows of its priors: class logits `[P, C]` as the graph's output
    /// and box codes `[P, 4]` as its named output.
    fn check_detector(&self, d: &crate::detect::DetectorSpec, shapes: &[Shape]) -> Result<(), String> {
        if let Some(r) = &d.rcnn {
            return self.check_rcnn(d, r, shapes);
        }
        if let Some(r) = self.roi_node() {
            return Err(format!("'{}' pools regions, which an SSD has none of (a Faster R-CNN's spec has detector.rcnn)", self.nodes[r].name));
        }
        let priors = d.num_priors();
        let scores = &shapes[self.output];
        let [rows, classes] = scores[..] else {
            return Err(format!("a detector's output (node '{}') must be [priors, classes], not {scores:?}", self.nodes[self.output].name));
        };
        d.check(classes).map_err(|e| e.to_string())?;
        let Some(codes) = self.extra_outputs.iter().find(|o| o.name == d.codes_output) else {
            return Err(format!("the detector's box codes output '{}' is not one of the graph's outputs", d.codes_output));
        };
        let codes_shape = &shapes[codes.node];
        if rows != priors || codes_shape[..] != [priors, 4] {
            return Err(format!(
                "the heads give {rows} score rows and box codes {codes_shape:?}, but the detector has {priors} priors ({:?} per location on maps {:?}): rows must equal priors, 4 codes each",
                d.per_location(),
                d.grids
            ));
        }
        Ok(())
    }

    /// A Faster R-CNN's graph: the RPN's outputs per image before the RoiAlign, the second stage's
    /// after it; the RoiAlign reads the map the anchors sit on.
    fn check_rcnn(&self, d: &crate::detect::DetectorSpec, r: &crate::detect::RcnnSpec, shapes: &[Shape]) -> Result<(), String> {
        let Some(roi) = self.roi_node() else { return Err("a Faster R-CNN's graph pools its proposals with a RoiAlign node, and this one has none".into()) };
        let roi_name = &self.nodes[roi].name;
        let Op::RoiAlign { spatial_scale, .. } = self.nodes[roi].op else { unreachable!("roi_node finds a RoiAlign") };
        let [grid] = d.grids[..] else { return Err(format!("a Faster R-CNN's anchors sit on one feature map, not {:?}", d.grids)) };
        let map = &shapes[self.nodes[roi].inputs[0]];
        if map[1..] != grid {
            return Err(format!("'{roi_name}' pools a {:?} map, but the anchors sit on a {grid:?} grid (detector.grids)", &map[1..]));
        }
        for (axis, (g, i)) in ["height", "width"].iter().zip(grid.iter().zip(d.image)) {
            let want = *g as f64 / i as f64;
            if (spatial_scale - want).abs() > 1e-9 * want {
                return Err(format!("'{roi_name}' has spatial_scale {spatial_scale}, but the map's {axis} is {g} of the image's {i} ({want})"));
            }
        }
        let output = |name: &str, what: &str| -> Result<NodeId, String> {
            self.extra_outputs
                .iter()
                .find(|o| o.name == name)
                .map(|o| o.node)
                .ok_or_else(|| format!("the detector's {what} output '{name}' is not one of the graph's outputs"))
        };
        let anchors = d.num_priors();
        for (name, cols, what) in [(&r.scores_output, 1, "RPN objectness"), (&r.codes_output, 4, "RPN box codes")] {
            let node = output(name, what)?;
            if node > roi || shapes[node][..] != [anchors, cols] {
                return Err(format!(
                    "the {what} '{name}' (node '{}') must be per image, before '{roi_name}', and [{anchors}, {cols}] for {anchors} anchors ({:?} per location on {grid:?}), not {:?}",
                    self.nodes[node].name,
                    d.per_location(),
                    shapes[node]
                ));
            }
        }
        let scores = &shapes[self.output];
        let [classes] = scores[..] else {
            return Err(format!("a Faster R-CNN's output (node '{}') is its class logits per region, [classes], not {scores:?}", self.nodes[self.output].name));
        };
        d.check(classes).map_err(|e| e.to_string())?;
        let codes = output(&d.codes_output, "box codes")?;
        if self.output < roi || codes < roi || shapes[codes][..] != [4 * (classes - 1)] {
            return Err(format!(
                "the class logits '{}' {scores:?} and box codes '{}' {:?} must be per region, after '{roi_name}', the codes [4 × {} classes]",
                self.nodes[self.output].name,
                self.nodes[codes].name,
                shapes[codes],
                classes - 1
            ));
        }
        Ok(())
    }

    /// The RoiAlign node of a two-stage detector, if the graph has one.
    pub fn roi_node(&self) -> Option<NodeId> {
        self.nodes.iter().position(|n| matches!(n.op, Op::RoiAlign { .. }))
    }

    /// The node with this name.
    pub fn node(&self, name: &str) -> Option<(NodeId, &Node)> {
        self.nodes.iter().enumerate().find(|(_, n)| n.name == name)
    }

    /// Every output node: `output` first, then the named ones.
    pub fn output_nodes(&self) -> Vec<NodeId> {
        std::iter::once(self.output).chain(self.extra_outputs.iter().map(|o| o.node)).collect()
    }

    /// Ids of the nodes that read node `id`.
    pub fn consumers(&self, id: NodeId) -> Vec<NodeId> {
        self.nodes.iter().enumerate().filter(|(_, n)| n.inputs.contains(&id)).map(|(i, _)| i).collect()
    }
}

/// A validated [`Graph`] with every node's output shape and every parameter, inferred once (by
/// [`Graph::validate`] or [`GraphBuilder::finish`](crate::builder::GraphBuilder::finish)). It reads as
/// the graph it holds (`Deref`) and cannot be changed, so the shapes and parameters stay true. It
/// serialises exactly as its graph (`graph.json`), and deserialising validates.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    graph: Graph,
    shapes: Vec<Shape>,
    params: Vec<ParamSpec>,
    /// `params[first_param[id]..first_param[id + 1]]` belong to node `id`.
    first_param: Vec<usize>,
}

impl Network {
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    pub fn into_graph(self) -> Graph {
        self.graph
    }

    /// Every node's output shape (index = node id).
    pub fn shapes(&self) -> &[Shape] {
        &self.shapes
    }

    /// The output shape of node `id`.
    pub fn shape(&self, id: NodeId) -> &Shape {
        &self.shapes[id]
    }

    /// Every parameter of the graph in node order, with its full name.
    pub fn params(&self) -> &[ParamSpec] {
        &self.params
    }

    /// The parameters of node `id`.
    pub fn node_params(&self, id: NodeId) -> &[ParamSpec] {
        &self.params[self.first_param[id]..self.first_param[id + 1]]
    }

    /// The parameter with this full name.
    pub fn param(&self, name: &str) -> Option<&ParamSpec> {
        self.params.iter().find(|p| p.name == name)
    }

    pub fn param_count(&self) -> ParamCount {
        let mut c = ParamCount::default();
        for p in &self.params {
            let n = p.numel();
            match p.kind {
                ParamKind::Weight | ParamKind::Bias | ParamKind::Scale => c.weights += n,
                ParamKind::BnGamma | ParamKind::BnBeta => c.bn_affine += n,
                ParamKind::BnRunningMean | ParamKind::BnRunningVar => c.bn_stats += n,
                ParamKind::PreluSlope => c.prelu += n,
            }
            if p.trainable {
                c.trainable += n;
            }
        }
        c
    }
}

impl std::ops::Deref for Network {
    type Target = Graph;
    fn deref(&self) -> &Graph {
        &self.graph
    }
}

impl TryFrom<Graph> for Network {
    type Error = GraphError;
    fn try_from(g: Graph) -> Result<Self, GraphError> {
        g.validate()
    }
}

impl From<Network> for Graph {
    fn from(n: Network) -> Self {
        n.graph
    }
}

impl Serialize for Network {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.graph.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Graph::deserialize(d)?.validate().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_arithmetic_matches_torch() {
        // floor mode: (227 - 11) / 4 + 1 = 55; 55 -> 3x3/2 -> 27
        assert_eq!(window_out(227, 11, 4, 0, 1, false), Some(55));
        assert_eq!(window_out(55, 3, 2, 0, 1, false), Some(27));
        // GoogLeNet stem pooling with pad 1: 112 -> 56
        assert_eq!(window_out(112, 3, 2, 1, 1, false), Some(56));
        // ceil mode adds the partial window: torch MaxPool2d(3, 2, ceil_mode=True) on 112 gives 56, on 56 gives 28
        assert_eq!(window_out(112, 3, 2, 0, 1, true), Some(56));
        assert_eq!(window_out(56, 3, 2, 0, 1, false), Some(27));
        assert_eq!(window_out(56, 3, 2, 0, 1, true), Some(28));
        // dilation 2 on a 3x3 kernel spans 5
        assert_eq!(window_out(10, 3, 1, 0, 2, false), Some(6));
        assert_eq!(window_out(2, 3, 1, 0, 1, false), None);
    }

    #[test]
    fn every_op_infers_its_shape_and_parameters() {
        use crate::builder::{conv, GraphBuilder};
        let mut b = GraphBuilder::new("all-ops", [8, 9, 9], Init::XavierUniform);
        let x = b.input();
        let g2 = b.then("grouped", conv(16, 3).pad(2).dilation(2).groups(4).no_bias(), x); // [16, 9, 9]
        let lrn = b.then("lrn", Op::Lrn { size: 5, alpha: 1e-4, beta: 0.75, k: 2.0 }, g2);
        let leaky = b.then("leaky", Op::LeakyRelu { slope: 0.1 }, lrn);
        let ceil = b.then("ceil", Op::MaxPool { kernel: [2, 2], stride: [2, 2], padding: [0, 0], ceil_mode: true }, leaky); // [16, 5, 5]
        let avg = b.then("avg", Op::AvgPool { kernel: [3, 3], stride: [1, 1], padding: [1, 1], ceil_mode: false }, ceil); // [16, 5, 5]
        let gap = b.then("gap", Op::GlobalAvgPool, avg); // [16, 1, 1]
        let flat = b.flatten("flat", gap);
        let prelu = b.then("prelu", Op::Prelu { init: 0.25 }, flat);
        let fc = b.then("fc", Op::Linear { out_features: 4, bias: false }, prelu);
        let sm = b.then("softmax", Op::Softmax, fc);
        let g = b.finish(sm).unwrap();
        let shapes = g.shapes();
        assert_eq!(shapes[g2], vec![16, 9, 9]);
        assert_eq!(shapes[ceil], vec![16, 5, 5]);
        assert_eq!(shapes[avg], vec![16, 5, 5]);
        assert_eq!(shapes[gap], vec![16, 1, 1]);
        assert_eq!(shapes[sm], vec![4]);
        let params = g.params();
        let names: Vec<(&str, &[usize])> = params.iter().map(|p| (p.name.as_str(), p.shape.as_slice())).collect();
        // grouped conv: 8 in channels / 4 groups = 2 per group; no bias anywhere
        assert_eq!(names, [("grouped.weight", &[16, 2, 3, 3][..]), ("prelu.weight", &[16][..]), ("fc.weight", &[4, 16][..])]);
        assert_eq!((params[0].fan_in, params[0].fan_out), (2 * 9, 4 * 9));
        // each parameter knows its node and how it starts; the slope starts at the op's own value
        let owners: Vec<(NodeId, ParamInit)> = params.iter().map(|p| (p.node, p.init)).collect();
        assert_eq!(owners, [(g2, ParamInit::Scheme), (prelu, ParamInit::Const(0.25)), (fc, ParamInit::Scheme)]);
        assert_eq!(g.node_params(prelu), &params[1..2]);
        assert!(g.node_params(lrn).is_empty() && g.node_params(sm).is_empty());
    }

    #[test]
    fn batchnorm_and_bias_parameters_start_at_their_identity_values() {
        use crate::builder::{conv, GraphBuilder};
        let mut b = GraphBuilder::new("bn", [2, 4, 4], Init::HeNormal);
        let x = b.input();
        let c = b.then("c", conv(3, 1), x);
        let bn = b.then("bn", Op::BatchNorm { eps: 1e-5, momentum: 0.1, fix_gamma: true }, c);
        let g = b.finish(bn).unwrap();
        let got: Vec<(&str, NodeId, ParamInit, bool)> = g.params().iter().map(|p| (p.name.as_str(), p.node, p.init, p.trainable)).collect();
        assert_eq!(
            got,
            [
                ("c.weight", c, ParamInit::Scheme, true),
                ("c.bias", c, ParamInit::Zeros, true),
                ("bn.weight", bn, ParamInit::Ones, false),
                ("bn.bias", bn, ParamInit::Zeros, true),
                ("bn.running_mean", bn, ParamInit::Zeros, false),
                ("bn.running_var", bn, ParamInit::Ones, false),
            ]
        );
        assert_eq!(g.param("bn.running_var").map(|p| p.kind), Some(ParamKind::BnRunningVar));
        assert!(g.param("bn.nope").is_none());
    }

    #[test]
    fn a_convolution_serialises_as_the_struct_variant_it_was() {
        // graph.json written before `Op::Conv2d` held a `Conv2d` spec: the fields beside the tag
        let old = r#"{"op":"conv2d","out_channels":8,"kernel":[3,3],"stride":[2,2],"padding":[1,1],"dilation":[1,1],"groups":2,"bias":false}"#;
        let op: Op = serde_json::from_str(old).unwrap();
        let spec = Conv2d { out_channels: 8, kernel: [3, 3], stride: [2, 2], padding: [1, 1], dilation: [1, 1], groups: 2, bias: false };
        assert_eq!(op, Op::Conv2d(spec));
        assert_eq!(serde_json::to_string(&op).unwrap(), old);
    }

    #[test]
    fn op_facts() {
        use crate::builder::{avg_pool, conv, max_pool};
        let conv = Op::from(conv(4, 3).no_bias());
        let linear = Op::Linear { out_features: 4, bias: false };
        for pool in [max_pool(2, 2, 0), avg_pool(2, 2), Op::GlobalAvgPool] {
            assert!(pool.is_pool() && !pool.is_weight_layer(), "{pool:?}");
        }
        for op in [&conv, &linear] {
            assert!(op.is_weight_layer() && !op.is_pool(), "{op:?}");
        }
        for op in [Op::Relu, Op::Flatten, Op::Prelu { init: 0.25 }, Op::BatchNorm { eps: 1e-3, momentum: 0.1, fix_gamma: false }] {
            assert!(!op.is_weight_layer() && !op.is_pool(), "{op:?}");
            assert_eq!(op.with_bias(), op, "only layers gain a bias");
        }
        assert!(matches!(conv.with_bias(), Op::Conv2d(Conv2d { bias: true, out_channels: 4, .. })));
        assert_eq!(linear.with_bias(), Op::Linear { out_features: 4, bias: true });
    }

    #[test]
    fn detection_head_ops_have_shape_rules_and_named_outputs_validate() {
        use crate::builder::{conv, GraphBuilder};
        let mut b = GraphBuilder::new("heads", [3, 8, 8], Init::XavierUniform);
        let x = b.input();
        let x = b.then("act", Op::Clip { min: 0.0, max: 6.0 }, x);
        let big = b.then("cls_a", conv(2 * 5, 3).pad(1), x); // 2 anchors × 5 columns on 8×8
        let small = b.then("cls_b", conv(3 * 5, 3).pad(1).stride(2), x); // 3 anchors on 4×4
        let ra = b.then("rows_a", Op::AnchorRows { columns: 5 }, big);
        let rb = b.then("rows_b", Op::AnchorRows { columns: 5 }, small);
        let rows = b.add_op("rows", Op::ConcatRows, &[ra, rb]);
        let boxes = b.then("box", conv(2 * 4, 1), x);
        let boxes = b.then("box_rows", Op::AnchorRows { columns: 4 }, boxes);
        let g = b.finish_with(rows, &[("boxes", boxes)]).unwrap();
        assert_eq!(g.shape(ra), &vec![8 * 8 * 2, 5]);
        assert_eq!(g.shape(rows), &vec![128 + 48, 5]);
        assert_eq!(g.output_nodes(), vec![rows, boxes]);
        let json = serde_json::to_string(&g).unwrap();
        assert!(json.contains(r#""extra_outputs":[{"name":"boxes","node":"#), "{json}");
        assert_eq!(serde_json::from_str::<Network>(&json).unwrap(), g);
        // a classifier's graph.json does not mention them
        let plain = GraphBuilder::new("plain", [1, 2, 2], Init::XavierUniform).finish(0).unwrap();
        assert!(!serde_json::to_string(&plain).unwrap().contains("extra_outputs"));

        let input = Node { name: "input".into(), op: Op::Input { channels: 6, height: 2, width: 2 }, inputs: vec![] };
        let one = |op: Op, inputs: Vec<usize>| Node { name: "n".into(), op, inputs };
        let g = |nodes: Vec<Node>, extra: Vec<NamedOutput>| Graph {
            name: "g".into(),
            output: nodes.len() - 1,
            nodes,
            init: Init::XavierUniform,
            extra_outputs: extra,
            detector: None,
        };
        let err = |op: Op| g(vec![input.clone(), one(op, vec![0])], vec![]).validate().unwrap_err().to_string();
        assert!(err(Op::AnchorRows { columns: 4 }).contains("6 channels are not a whole number of anchors of 4 columns"));
        assert!(err(Op::Clip { min: 1.0, max: 1.0 }).contains("min 1 < max 1"));
        assert!(err(Op::ConcatRows).contains("at least two"));
        let flat = Node { name: "f".into(), op: Op::Flatten, inputs: vec![0] };
        let rows = Node { name: "r".into(), op: Op::AnchorRows { columns: 3 }, inputs: vec![0] };
        let e = g(vec![input.clone(), rows.clone(), flat, one(Op::ConcatRows, vec![1, 2])], vec![]).validate().unwrap_err().to_string();
        assert!(e.contains("ConcatRows joins [rows, K] inputs of one K"), "{e}");
        let e = g(vec![input.clone(), rows.clone()], vec![NamedOutput { name: "x".into(), node: 7 }]).validate().unwrap_err().to_string();
        assert!(e.contains("output 'x' reads node 7"), "{e}");
        let dup = vec![NamedOutput { name: "x".into(), node: 0 }, NamedOutput { name: "x".into(), node: 1 }];
        assert!(g(vec![input, rows], dup).validate().unwrap_err().to_string().contains("unique"));
    }

    #[test]
    fn structural_errors_are_reported() {
        let input = Node { name: "input".into(), op: Op::Input { channels: 1, height: 4, width: 4 }, inputs: vec![] };
        let relu = |name: &str, from: usize| Node { name: name.into(), op: Op::Relu, inputs: vec![from] };
        let g = |nodes: Vec<Node>| Graph { name: "g".into(), output: nodes.len() - 1, nodes, init: Init::XavierUniform, extra_outputs: vec![], detector: None };
        let err = g(vec![input.clone(), relu("a", 2), relu("b", 1)]).validate().unwrap_err();
        assert_eq!(err.to_string(), "node 'a': reads node 2, which does not come before it (node 1)");
        let err = g(vec![input.clone(), relu("a", 0), relu("a", 1)]).validate().unwrap_err();
        assert_eq!(err.to_string(), "node 'a': node names must be unique and non-empty");
        let err = g(vec![relu("a", 0)]).validate().unwrap_err();
        assert_eq!(err.to_string(), "graph 'g': node 0 must be the Input");
        let drop = Node { name: "drop".into(), op: Op::Dropout { p: 1.0 }, inputs: vec![0] };
        assert!(g(vec![input.clone(), drop]).validate().unwrap_err().to_string().contains("drop probability 1"));
        // deserialising a Network validates it; the error names the node
        let json = serde_json::to_string(&g(vec![input.clone(), relu("a", 2), relu("b", 1)])).unwrap();
        let err = serde_json::from_str::<Network>(&json).unwrap_err().to_string();
        assert!(err.contains("node 'a': reads node 2"), "{err}");
        let ok = g(vec![input, relu("a", 0)]).validate().unwrap();
        assert_eq!(serde_json::from_str::<Network>(&serde_json::to_string(&ok).unwrap()).unwrap(), ok);
    }
}
