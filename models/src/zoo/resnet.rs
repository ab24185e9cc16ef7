//! ResNet as the book trains it on ImageNet (Ch. 8, `MxResNet`; He et al. 2016, "Identity Mappings in
//! Deep Residual Networks" — the pre-activation form).
//!
//! The book's `resnet50`: the input is batch-normalised first (gamma fixed at 1), then conv 7x7/2 (64,
//! no bias) -> BN -> ReLU -> max pool 3x3/2 pad 1; four stages of pre-activation bottlenecks
//! (BN -> ReLU -> conv 1x1 (K/4) -> BN -> ReLU -> conv 3x3 (K/4, the stage's stride) -> BN -> ReLU ->
//! conv 1x1 (K)), stages (3, 4, 6, 3) with K = 256, 512, 1024, 2048; the first unit of each stage has a
//! 1x1 projection shortcut applied to the unit's first activation (not to its raw input, as the book's
//! code does); then BN -> ReLU -> average pool 7x7 -> FC. No convolution has a bias; BatchNorm eps 2e-5,
//! momentum 0.9 (torch 0.1), gamma learned except on the input BN. Initialiser: MSRAPrelu.
//! Stage outputs: [256, 56, 56], [512, 28, 28], [1024, 14, 14], [2048, 7, 7].
//!
//! `resnet101` and `resnet152` use the same bottlenecks with stages (3, 4, 23, 3) and (3, 8, 36, 3).
//! `resnet18` and `resnet34` follow the same paper with pre-activation basic blocks (two 3x3 convs of K
//! filters, K = 64, 128, 256, 512) over the same stem and head; the book has no code for them. A
//! projection shortcut is used where the stride or the width changes (for the bottleneck nets that is
//! exactly the book's "first unit of every stage").

use super::ModelOptions;
use crate::builder::{avg_pool, conv, max_pool, GraphBuilder};
use crate::graph::{GraphError, Init, Network, NodeId, Op};

#[derive(Debug, Clone, Copy)]
pub(crate) struct Config {
    stages: [usize; 4],
    /// Stem width, then each stage's output width.
    filters: [usize; 5],
    bottleneck: bool,
}

pub(crate) const RESNET18: Config = Config { stages: [2, 2, 2, 2], filters: [64, 64, 128, 256, 512], bottleneck: false };
pub(crate) const RESNET34: Config = Config { stages: [3, 4, 6, 3], filters: [64, 64, 128, 256, 512], bottleneck: false };
pub(crate) const RESNET50: Config = Config { stages: [3, 4, 6, 3], filters: [64, 256, 512, 1024, 2048], bottleneck: true };
pub(crate) const RESNET101: Config = Config { stages: [3, 4, 23, 3], filters: [64, 256, 512, 1024, 2048], bottleneck: true };
pub(crate) const RESNET152: Config = Config { stages: [3, 8, 36, 3], filters: [64, 256, 512, 1024, 2048], bottleneck: true };

const BN: Op = Op::BatchNorm { eps: 2e-5, momentum: 0.1, fix_gamma: false };
const BN_INPUT: Op = Op::BatchNorm { eps: 2e-5, momentum: 0.1, fix_gamma: true };

/// One pre-activation residual unit in the current scope; returns the sum node.
fn residual(b: &mut GraphBuilder, x: NodeId, k: usize, stride: usize, project: bool, bottleneck: bool) -> NodeId {
    let bn1 = b.then("bn1", BN, x);
    let act1 = b.then("act1", Op::Relu, bn1);
    let body = if bottleneck {
        let c1 = b.then("conv1", conv(k / 4, 1).no_bias(), act1);
        let a2 = {
            let t = b.then("bn2", BN, c1);
            b.then("act2", Op::Relu, t)
        };
        let c2 = b.then("conv2", conv(k / 4, 3).stride(stride).pad(1).no_bias(), a2);
        let a3 = {
            let t = b.then("bn3", BN, c2);
            b.then("act3", Op::Relu, t)
        };
        b.then("conv3", conv(k, 1).no_bias(), a3)
    } else {
        let c1 = b.then("conv1", conv(k, 3).stride(stride).pad(1).no_bias(), act1);
        let a2 = {
            let t = b.then("bn2", BN, c1);
            b.then("act2", Op::Relu, t)
        };
        b.then("conv2", conv(k, 3).pad(1).no_bias(), a2)
    };
    let shortcut = if project { b.then("shortcut", conv(k, 1).stride(stride).no_bias(), act1) } else { x };
    b.add_op("add", Op::Add, &[body, shortcut])
}

pub(crate) fn build(o: &ModelOptions, name: &str, cfg: Config) -> Result<Network, GraphError> {
    let mut b = GraphBuilder::new(name, [o.in_channels, 224, 224], Init::MsraPrelu { slope: 0.25 });
    let x = b.input();
    let mut x = {
        let mut stem = b.scope("stem");
        let x = stem.then("bn0", BN_INPUT, x);
        let x = stem.then("conv", conv(cfg.filters[0], 7).stride(2).pad(3).no_bias(), x); // [64, 112, 112]
        let x = stem.then("bn", BN, x);
        let x = stem.then("act", Op::Relu, x);
        stem.then("pool", max_pool(3, 2, 1), x) // [64, 56, 56]
    };
    let mut width = cfg.filters[0];
    for (i, &n) in cfg.stages.iter().enumerate() {
        let k = cfg.filters[i + 1];
        for j in 0..n {
            let stride = if i > 0 && j == 0 { 2 } else { 1 };
            x = residual(&mut b.scope(&format!("stage{}.unit{}", i + 1, j + 1)), x, k, stride, stride != 1 || width != k, cfg.bottleneck);
            width = k;
        }
    }
    let x = {
        let mut post = b.scope("post");
        let x = post.then("bn", BN, x);
        post.then("act", Op::Relu, x)
    };
    let x = b.then("avgpool", avg_pool(7, 1), x); // [2048, 1, 1]
    let x = b.flatten("flatten", x);
    let logits = b.linear("classifier", x, o.num_classes);
    b.finish(logits)
}
