//! AlexNet as the book trains it on ImageNet (Ch. 5, `MxAlexNet`; Krizhevsky et al. 2012).
//!
//! Deviations of the book from the paper, kept here: no LRN and no grouped convolutions; BatchNorm in
//! every block; dropout 0.25 after every pooling layer as well as 0.5 in the classifier; input 227x227.
//! The three experiments differ only in each unit's order: Exp. 1 conv -> BN -> ReLU, Exp. 2
//! conv -> ReLU -> BN, Exp. 3 (the final one, `alexnet`) conv -> ELU -> BN.
//! mxnet defaults made explicit: ELU alpha 0.25, BatchNorm eps 1e-3, momentum 0.9, gamma fixed at 1.
//! Initialiser: Xavier (uniform). With 1000 classes: 62,378,344 weights + 19,136 BN gamma/beta.

use super::{unit, ModelOptions, Order};
use crate::builder::{conv, max_pool, GraphBuilder, BN_MXNET, ELU_MXNET};
use crate::graph::{Graph, GraphError, Init, Op};

#[derive(Debug, Clone, Copy)]
pub(crate) enum Variant {
    BnRelu,
    ReluBn,
    EluBn,
}

pub(crate) fn build(o: &ModelOptions, v: Variant) -> Result<Graph, GraphError> {
    let (name, act, order) = match v {
        Variant::BnRelu => ("alexnet-bn-relu", Op::Relu, Order::BnAct),
        Variant::ReluBn => ("alexnet-relu-bn", Op::Relu, Order::ActBn),
        Variant::EluBn => ("alexnet", ELU_MXNET, Order::ActBn),
    };
    let mut b = GraphBuilder::new(name, [o.in_channels, 227, 227], Init::XavierUniform);
    let mut x = b.input();
    // (block, [(filters, kernel, stride, pad)]) — every block ends with MaxPool 3x3/2 and Dropout 0.25.
    type Block<'a> = (&'a str, &'a [(usize, usize, usize, usize)]);
    let blocks: [Block; 3] = [
        ("block1", &[(96, 11, 4, 0)]),                                 // [96, 55, 55] -> [96, 27, 27]
        ("block2", &[(256, 5, 1, 2)]),                                 // [256, 27, 27] -> [256, 13, 13]
        ("block3", &[(384, 3, 1, 1), (384, 3, 1, 1), (256, 3, 1, 1)]), // [256, 13, 13] -> [256, 6, 6]
    ];
    for (scope, convs) in blocks {
        b.push(scope);
        for (i, &(f, k, s, p)) in convs.iter().enumerate() {
            let sfx = if convs.len() == 1 { String::new() } else { (i + 1).to_string() };
            x = unit(&mut b, x, &format!("conv{sfx}"), conv(f, k).stride(s).pad(p).build(), act.clone(), BN_MXNET, order, &sfx);
        }
        x = b.then("pool", max_pool(3, 2, 0), x);
        x = b.dropout("drop", x, 0.25);
        b.pop();
    }
    x = b.flatten("flatten", x); // [9216]
    for fc in ["fc1", "fc2"] {
        b.push(fc);
        x = unit(&mut b, x, "linear", Op::Linear { out_features: 4096, bias: true }, act.clone(), BN_MXNET, order, "");
        x = b.dropout("drop", x, 0.5);
        b.pop();
    }
    let logits = b.linear("classifier", x, o.num_classes);
    b.finish(logits)
}
