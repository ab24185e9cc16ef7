//! SSD (Liu et al. 2016, "SSD: Single Shot MultiBox Detector"): class scores and box codes from 3×3
//! convolutions on several feature maps, one row per default box ([`DetectorSpec`]).
//!
//! - `ssd300-vgg16`: the paper's SSD300, torchvision's `ssd300_vgg16` layout: VGG16's convolutions
//!   (pool3 in ceil mode, so conv4_3 is 38×38), conv4_3 L2-normalised with a learned scale of 20, pool5
//!   3×3 stride 1, conv6 dilated 6 and conv7 1×1 (the fc6/fc7 of the paper), four extra stages to 10,
//!   5, 3 and 1, and 4 or 6 priors per location on the six maps ([`SsdPriors::ssd300`], 8,732 priors).
//! - `ssdlite-tiny`: `ssd-tiny`'s maps with SSDLite's layers (Sandler et al. 2018, §6.2): depthwise
//!   separable convolutions with ReLU6 in the backbone and in the heads (3×3 depthwise → BN → ReLU6 →
//!   1×1), the fast one where depthwise kernels are fast (on two CPU cores the dense `ssd-tiny`
//!   trains about 4× faster per image).
//!
//! `ssd-tiny` is the detector that trains in minutes on two CPU cores (the book's SSD is TFOD's
//! `ssd_inception_v2` trained on a GPU for hours): a plain stack of dense 3×3 conv → BN → ReLU units
//! (dense convolutions trained about 4× faster per image than depthwise ones on this CPU), three
//! feature maps at strides 8, 16 and 32, priors of scales 0.15–0.7 with aspect ratios 2 (and 3), sized
//! for objects of 15–60 % of the image, such as the Fashion-MNIST composites of
//! `trainer prepare fashion-detect`.

use super::ModelOptions;
use crate::builder::{conv, GraphBuilder};
use crate::detect::{DetectorSpec, SsdPriors};
use crate::graph::{GraphError, Init, Network, NodeId, Op};

/// BatchNorm as torchvision's detection backbones train it (eps 1e-5, momentum 0.1).
pub(super) const BN: Op = Op::BatchNorm { eps: 1e-5, momentum: 0.1, fix_gamma: false };

/// conv 3×3 (stride `s`) → BN → ReLU.
pub(super) fn unit(b: &mut GraphBuilder, name: &str, x: NodeId, out: usize, s: usize) -> NodeId {
    let mut u = b.scope(name);
    let x = u.then("conv", conv(out, 3).stride(s).pad(1).no_bias(), x);
    let x = u.then("bn", BN, x);
    u.then("relu", Op::Relu, x)
}

pub(crate) fn tiny(o: &ModelOptions) -> Result<Network, GraphError> {
    let side = 128;
    let mut b = GraphBuilder::new("ssd-tiny", [o.in_channels, side, side], Init::HeNormal);
    let x = b.input();
    let (f8, f16) = tiny_backbone(&mut b, x);
    let f32_ = unit(&mut b, "stage32", f16, 128, 2); // 4
    let spec = DetectorSpec::ssd(tiny_priors(), vec![[16, 16], [8, 8], [4, 4]], [side, side]);
    heads(b, &[f8, f16, f32_], o.num_classes + 1, spec)
}

/// `ssd-tiny`'s dense stack on a 128-px input: the maps at strides 8 (64 channels, 16×16) and 16
/// (96 channels, 8×8); `rcnn-tiny` shares it.
pub(super) fn tiny_backbone(b: &mut GraphBuilder, x: NodeId) -> (NodeId, NodeId) {
    let x = unit(b, "stem1", x, 16, 2); // 64
    let x = unit(b, "stem2", x, 32, 2); // 32
    let x = unit(b, "stem3", x, 32, 1);
    let f8 = unit(b, "stage8", x, 64, 2); // 16
    let f16 = unit(b, "stage16", f8, 96, 2); // 8
    (f8, f16)
}

/// The priors of the 128-px detectors: scales 0.15–0.7 on maps of 16, 8 and 4.
fn tiny_priors() -> SsdPriors {
    SsdPriors {
        aspect_ratios: vec![vec![2.0], vec![2.0, 3.0], vec![2.0, 3.0]],
        min_ratio: 0.15,
        max_ratio: 0.7,
        scales: Some(vec![0.15, 0.3, 0.5, 0.7]),
        steps: None,
        clip: true,
    }
}

/// A 3×3 score head and a 3×3 box head on each feature map, their rows concatenated in the priors'
/// order.
fn heads(mut b: GraphBuilder, maps: &[NodeId], classes: usize, spec: DetectorSpec) -> Result<Network, GraphError> {
    let per = spec.per_location();
    let (mut scores, mut codes) = (vec![], vec![]);
    for (k, (&m, a)) in maps.iter().zip(per).enumerate() {
        let mut h = b.scope(&format!("head{k}"));
        let s = h.then("scores", conv(a * classes, 3).pad(1), m);
        scores.push(h.then("score_rows", Op::AnchorRows { columns: classes }, s));
        let c = h.then("codes", conv(a * 4, 3).pad(1), m);
        codes.push(h.then("code_rows", Op::AnchorRows { columns: 4 }, c));
    }
    let s = b.add_op("scores", Op::ConcatRows, &scores);
    let c = b.add_op("box_codes", Op::ConcatRows, &codes);
    b.finish_detector(s, c, spec)
}

/// depthwise 3×3 (stride `s`) → BN → ReLU6 → pointwise 1×1 → BN → ReLU6 (MobileNet's separable unit).
fn separable(b: &mut GraphBuilder, name: &str, x: NodeId, inp: usize, out: usize, s: usize) -> NodeId {
    let mut u = b.scope(name);
    let x = u.then("dw", conv(inp, 3).stride(s).pad(1).groups(inp).no_bias(), x);
    let x = u.then("dw_bn", BN, x);
    let x = u.then("dw_relu6", RELU6, x);
    let x = u.then("pw", conv(out, 1).no_bias(), x);
    let x = u.then("pw_bn", BN, x);
    u.then("pw_relu6", RELU6, x)
}

const RELU6: Op = Op::Clip { min: 0.0, max: 6.0 };

pub(crate) fn lite_tiny(o: &ModelOptions) -> Result<Network, GraphError> {
    let side = 128;
    let mut b = GraphBuilder::new("ssdlite-tiny", [o.in_channels, side, side], Init::HeNormal);
    let x = b.input();
    let x = {
        let mut u = b.scope("stem");
        let x = u.then("conv", conv(16, 3).stride(2).pad(1).no_bias(), x); // 64
        let x = u.then("bn", BN, x);
        u.then("relu6", RELU6, x)
    };
    let x = separable(&mut b, "block1", x, 16, 32, 2); // 32
    let x = separable(&mut b, "block2", x, 32, 32, 1);
    let f8 = separable(&mut b, "stage8", x, 32, 64, 2); // 16
    let f16 = separable(&mut b, "stage16", f8, 64, 96, 2); // 8
    let f32_ = separable(&mut b, "stage32", f16, 96, 128, 2); // 4
    let spec = DetectorSpec::ssd(tiny_priors(), vec![[16, 16], [8, 8], [4, 4]], [side, side]);
    let (classes, per) = (o.num_classes + 1, spec.per_location());
    let (mut scores, mut codes) = (vec![], vec![]);
    for (k, ((&m, a), c)) in [f8, f16, f32_].iter().zip(per).zip([64, 96, 128]).enumerate() {
        let mut h = b.scope(&format!("head{k}"));
        // SSDLite's head: depthwise 3×3 → BN → ReLU6 → 1×1
        let lite = |h: &mut GraphBuilder, what: &str, out: usize| {
            let x = h.then(&format!("{what}_dw"), conv(c, 3).pad(1).groups(c).no_bias(), m);
            let x = h.then(&format!("{what}_bn"), BN, x);
            let x = h.then(&format!("{what}_relu6"), RELU6, x);
            h.then(what, conv(out, 1), x)
        };
        let s = lite(&mut h, "scores", a * classes);
        scores.push(h.then("score_rows", Op::AnchorRows { columns: classes }, s));
        let cd = lite(&mut h, "codes", a * 4);
        codes.push(h.then("code_rows", Op::AnchorRows { columns: 4 }, cd));
    }
    let s = b.add_op("scores", Op::ConcatRows, &scores);
    let c = b.add_op("box_codes", Op::ConcatRows, &codes);
    b.finish_detector(s, c, spec)
}

/// conv (k×k, stride, padding, dilation) → ReLU, as VGG and SSD's extra layers have them.
fn conv_relu(b: &mut GraphBuilder, name: &str, x: NodeId, c: crate::graph::Conv2d) -> NodeId {
    let x = b.then(name, c, x);
    b.then(&format!("{name}_relu"), Op::Relu, x)
}

pub(crate) fn ssd300_vgg16(o: &ModelOptions) -> Result<Network, GraphError> {
    let mut b = GraphBuilder::new("ssd300-vgg16", [o.in_channels, 300, 300], Init::XavierUniform);
    let mut x = b.input();
    let pool = |ceil| Op::MaxPool { kernel: [2, 2], stride: [2, 2], padding: [0, 0], ceil_mode: ceil };
    // VGG16 to conv4_3: 300 → 150 → 75 → 38 (pool3 in ceil mode)
    for (stage, (convs, width)) in [(2, 64), (2, 128), (3, 256), (3, 512)].into_iter().enumerate() {
        for i in 1..=convs {
            x = conv_relu(&mut b, &format!("conv{}_{i}", stage + 1), x, conv(width, 3).pad(1));
        }
        if stage < 3 {
            x = b.then(&format!("pool{}", stage + 1), pool(stage == 2), x);
        }
    }
    let map38 = b.then("conv4_3_norm", Op::L2Norm { scale: 20.0 }, x);
    x = b.then("pool4", pool(false), x); // 19
    for i in 1..=3 {
        x = conv_relu(&mut b, &format!("conv5_{i}"), x, conv(512, 3).pad(1));
    }
    x = b.then("pool5", Op::MaxPool { kernel: [3, 3], stride: [1, 1], padding: [1, 1], ceil_mode: false }, x);
    x = conv_relu(&mut b, "conv6", x, conv(1024, 3).pad(6).dilation(6));
    let map19 = conv_relu(&mut b, "conv7", x, conv(1024, 1));
    let mut maps = vec![map38, map19];
    x = map19;
    // the extra layers: 19 → 10 → 5 → 3 → 1
    for (k, (mid, out, s, p)) in [(256, 512, 2, 1), (128, 256, 2, 1), (128, 256, 1, 0), (128, 256, 1, 0)].into_iter().enumerate() {
        x = conv_relu(&mut b, &format!("conv{}_1", k + 8), x, conv(mid, 1));
        x = conv_relu(&mut b, &format!("conv{}_2", k + 8), x, conv(out, 3).stride(s).pad(p));
        maps.push(x);
    }
    let spec = DetectorSpec::ssd(SsdPriors::ssd300(), vec![[38, 38], [19, 19], [10, 10], [5, 5], [3, 3], [1, 1]], [300, 300]);
    heads(b, &maps, o.num_classes + 1, spec)
}
