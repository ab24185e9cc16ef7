//! MxAgeGenderNet, the book's Adience network (Ch. 13; after Levi & Hassner 2015).
//!
//! conv 7x7/4 (96) -> ReLU -> BN -> max pool 3x3/2 -> dropout 0.25; conv 5x5 pad 2 (256) -> ReLU -> BN ->
//! max pool 3x3/2 -> dropout 0.25; conv 3x3 pad 1 (384) -> ReLU -> BN -> max pool 3x3/2 -> dropout 0.25;
//! flatten (13,824) -> (FC 512 -> ReLU -> BN -> dropout 0.5) x2 -> FC (classes).
//! Deviations of the book from the paper, kept: BatchNorm where the paper has LRN, dropout after every
//! pool. One instance per task: 8 age bins (the default) or 2 genders (`--num-classes 2`).
//! mxnet defaults made explicit: BatchNorm eps 1e-3, momentum 0.9, gamma fixed at 1. Initialiser: Xavier.

use super::{unit, ModelOptions, Order};
use crate::builder::{conv, max_pool, GraphBuilder, BN_MXNET};
use crate::graph::{Graph, GraphError, Init, Op};

pub(crate) fn build(o: &ModelOptions) -> Result<Graph, GraphError> {
    let mut b = GraphBuilder::new("age-gender", [o.in_channels, 227, 227], Init::XavierUniform);
    let mut x = b.input();
    // [96, 56, 56] -> [96, 27, 27]; [256, 27, 27] -> [256, 13, 13]; [384, 13, 13] -> [384, 6, 6]
    for (i, (f, k, s, p)) in [(96, 7, 4, 0), (256, 5, 1, 2), (384, 3, 1, 1)].into_iter().enumerate() {
        b.push(&format!("block{}", i + 1));
        x = unit(&mut b, x, "conv", conv(f, k).stride(s).pad(p).build(), Op::Relu, BN_MXNET, Order::ActBn, "");
        x = b.then("pool", max_pool(3, 2, 0), x);
        x = b.dropout("drop", x, 0.25);
        b.pop();
    }
    x = b.flatten("flatten", x); // [13824]
    for fc in ["fc1", "fc2"] {
        b.push(fc);
        x = unit(&mut b, x, "linear", Op::Linear { out_features: 512, bias: true }, Op::Relu, BN_MXNET, Order::ActBn, "");
        x = b.dropout("drop", x, 0.5);
        b.pop();
    }
    let logits = b.linear("classifier", x, o.num_classes);
    b.finish(logits)
}
