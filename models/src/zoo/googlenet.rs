//! GoogLeNet (Inception v1) as the book trains it on ImageNet (Ch. 7, `MxGoogLeNet`; Szegedy et al. 2014).
//!
//! Deviations of the book from the paper, kept: every convolution is a `conv_module`, conv -> BN -> ReLU
//! (BN before the activation); no LRN; no auxiliary classifiers. The stem is conv 7x7/2 (64) -> max pool
//! 3x3/2 pad 1 -> conv 1x1 (64) -> conv 3x3 (192) -> max pool 3x3/2 pad 1, as the book's code has it.
//! Each inception module concatenates [1x1, 3x3 (after a 1x1 reduce), 5x5 (after a 1x1 reduce),
//! 3x3 max pool stride 1 -> 1x1 projection] along channels; the widths after 3a..5b are 256, 480, 512,
//! 512, 512, 528, 832, 832, 1024. The head is AvgPool 7x7 -> Dropout 0.4 -> FC.
//! mxnet defaults made explicit: BatchNorm eps 1e-3, momentum 0.9, gamma fixed at 1. Initialiser: Xavier.

use super::blocks::{Order, Unit};
use super::ModelOptions;
use crate::builder::{avg_pool, conv, max_pool, GraphBuilder, BN_MXNET};
use crate::graph::{GraphError, Init, Network, NodeId, Op};

#[allow(clippy::too_many_arguments)] // the book's conv_module signature, argument for argument
/// conv -> BN -> ReLU, named `{name}`, `bn{sfx}`, `act{sfx}` in the current scope.
fn conv_module(b: &mut GraphBuilder, x: NodeId, name: &str, sfx: &str, filters: usize, k: usize, stride: usize, pad: usize) -> NodeId {
    const UNIT: Unit = Unit { act: Op::Relu, bn: BN_MXNET, order: Order::BnAct };
    UNIT.add(b, x, name, conv(filters, k).stride(stride).pad(pad), sfx)
}

/// (num1x1, num3x3Reduce, num3x3, num5x5Reduce, num5x5, num1x1Proj), as in the book's code.
type Inception = (usize, usize, usize, usize, usize, usize);

fn inception(b: &mut GraphBuilder, x: NodeId, scope: &str, c: Inception) -> NodeId {
    let (n1, r3, n3, r5, n5, proj) = c;
    let b = &mut b.scope(scope);
    let b1 = conv_module(b, x, "conv1x1", "_1x1", n1, 1, 1, 0);
    let b2 = conv_module(b, x, "conv3x3_reduce", "_3x3_reduce", r3, 1, 1, 0);
    let b2 = conv_module(b, b2, "conv3x3", "_3x3", n3, 3, 1, 1);
    let b3 = conv_module(b, x, "conv5x5_reduce", "_5x5_reduce", r5, 1, 1, 0);
    let b3 = conv_module(b, b3, "conv5x5", "_5x5", n5, 5, 1, 2);
    let b4 = b.then("pool", max_pool(3, 1, 1), x);
    let b4 = conv_module(b, b4, "proj", "_proj", proj, 1, 1, 0);
    b.add_op("concat", Op::Concat, &[b1, b2, b3, b4])
}

pub(crate) fn build(o: &ModelOptions) -> Result<Network, GraphError> {
    let mut b = GraphBuilder::new("googlenet", [o.in_channels, 224, 224], Init::XavierUniform);
    let x = b.input();
    let mut x = {
        let stem = &mut b.scope("stem");
        let x = conv_module(stem, x, "conv1", "1", 64, 7, 2, 3); // [64, 112, 112]
        let x = stem.then("pool1", max_pool(3, 2, 1), x); // [64, 56, 56]
        let x = conv_module(stem, x, "conv2", "2", 64, 1, 1, 0); // [64, 56, 56]
        let x = conv_module(stem, x, "conv3", "3", 192, 3, 1, 1); // [192, 56, 56]
        stem.then("pool2", max_pool(3, 2, 1), x) // [192, 28, 28]
    };
    let stages: [(&str, Inception); 9] = [
        ("inception3a", (64, 96, 128, 16, 32, 32)),     // [256, 28, 28]
        ("inception3b", (128, 128, 192, 32, 96, 64)),   // [480, 28, 28] -> pool [480, 14, 14]
        ("inception4a", (192, 96, 208, 16, 48, 64)),    // [512, 14, 14]
        ("inception4b", (160, 112, 224, 24, 64, 64)),   // [512, 14, 14]
        ("inception4c", (128, 128, 256, 24, 64, 64)),   // [512, 14, 14]
        ("inception4d", (112, 144, 288, 32, 64, 64)),   // [528, 14, 14]
        ("inception4e", (256, 160, 320, 32, 128, 128)), // [832, 14, 14] -> pool [832, 7, 7]
        ("inception5a", (256, 160, 320, 32, 128, 128)), // [832, 7, 7]
        ("inception5b", (384, 192, 384, 48, 128, 128)), // [1024, 7, 7]
    ];
    for (scope, c) in stages {
        x = inception(&mut b, x, scope, c);
        if scope == "inception3b" || scope == "inception4e" {
            x = b.then(&format!("pool_{}", &scope[9..]), max_pool(3, 2, 1), x);
        }
    }
    let x = b.then("avgpool", avg_pool(7, 1), x); // [1024, 1, 1]
    let x = b.dropout("drop", x, 0.4);
    let x = b.flatten("flatten", x);
    let logits = b.linear("classifier", x, o.num_classes);
    b.finish(logits)
}
