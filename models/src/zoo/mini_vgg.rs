//! MiniVGGNet, the small VGG-style network of the book's Starter Bundle, for 28x28 grey images.
//!
//! (conv 3x3 "same" -> ReLU -> BN) x2 (32 filters) -> max pool 2x2 -> dropout 0.25;
//! (conv 3x3 "same" -> ReLU -> BN) x2 (64 filters) -> max pool 2x2 -> dropout 0.25;
//! flatten (3,136) -> FC 512 -> ReLU -> BN -> dropout 0.5 -> FC (classes).
//! This is the network CI trains on real data (Fashion-MNIST, 10 classes). Keras defaults made
//! explicit: BatchNormalization eps 1e-3, momentum 0.99 (torch 0.01). Initialiser: Xavier (Keras'
//! default glorot_uniform).

use super::{unit, ModelOptions, Order};
use crate::builder::{conv, max_pool, GraphBuilder, BN_KERAS};
use crate::graph::{Graph, GraphError, Init, Op};

pub(crate) fn build(o: &ModelOptions) -> Result<Graph, GraphError> {
    let mut b = GraphBuilder::new("mini-vgg", [o.in_channels, 28, 28], Init::XavierUniform);
    let mut x = b.input();
    // [32, 14, 14] -> [64, 7, 7]
    for (i, f) in [32, 64].into_iter().enumerate() {
        b.push(&format!("block{}", i + 1));
        for j in ["1", "2"] {
            x = unit(&mut b, x, &format!("conv{j}"), conv(f, 3).pad(1).build(), Op::Relu, BN_KERAS, Order::ActBn, j);
        }
        x = b.then("pool", max_pool(2, 2, 0), x);
        x = b.dropout("drop", x, 0.25);
        b.pop();
    }
    x = b.flatten("flatten", x); // [3136]
    b.push("fc1");
    x = unit(&mut b, x, "linear", Op::Linear { out_features: 512, bias: true }, Op::Relu, BN_KERAS, Order::ActBn, "");
    x = b.dropout("drop", x, 0.5);
    b.pop();
    let logits = b.linear("classifier", x, o.num_classes);
    b.finish(logits)
}
