//! SSD (Liu et al. 2016, "SSD: Single Shot MultiBox Detector"): class scores and box codes from 3×3
//! convolutions on several feature maps, one row per default box ([`DetectorSpec`]).
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
const BN: Op = Op::BatchNorm { eps: 1e-5, momentum: 0.1, fix_gamma: false };

/// conv 3×3 (stride `s`) → BN → ReLU.
fn unit(b: &mut GraphBuilder, name: &str, x: NodeId, out: usize, s: usize) -> NodeId {
    let mut u = b.scope(name);
    let x = u.then("conv", conv(out, 3).stride(s).pad(1).no_bias(), x);
    let x = u.then("bn", BN, x);
    u.then("relu", Op::Relu, x)
}

pub(crate) fn tiny(o: &ModelOptions) -> Result<Network, GraphError> {
    let side = 128;
    let mut b = GraphBuilder::new("ssd-tiny", [o.in_channels, side, side], Init::HeNormal);
    let x = b.input();
    let x = unit(&mut b, "stem1", x, 16, 2); // 64
    let x = unit(&mut b, "stem2", x, 32, 2); // 32
    let x = unit(&mut b, "stem3", x, 32, 1);
    let f8 = unit(&mut b, "stage8", x, 64, 2); // 16
    let f16 = unit(&mut b, "stage16", f8, 96, 2); // 8
    let f32_ = unit(&mut b, "stage32", f16, 128, 2); // 4
    let priors = SsdPriors {
        aspect_ratios: vec![vec![2.0], vec![2.0, 3.0], vec![2.0, 3.0]],
        min_ratio: 0.15,
        max_ratio: 0.7,
        scales: Some(vec![0.15, 0.3, 0.5, 0.7]),
        steps: None,
        clip: true,
    };
    let spec = DetectorSpec::ssd(priors, vec![[16, 16], [8, 8], [4, 4]], [side, side]);
    heads(b, &[f8, f16, f32_], o.num_classes + 1, spec)
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
