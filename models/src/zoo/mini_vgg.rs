//! MiniVGGNet, the small VGG-style network of the book's Starter Bundle, for 28x28 grey images.
//!
//! (conv 3x3 "same" -> ReLU -> BN) x2 (32 filters) -> max pool 2x2 -> dropout 0.25;
//! (conv 3x3 "same" -> ReLU -> BN) x2 (64 filters) -> max pool 2x2 -> dropout 0.25;
//! flatten (3,136) -> FC 512 -> ReLU -> BN -> dropout 0.5 -> FC (classes).
//! This is the network CI trains on real data (Fashion-MNIST, 10 classes). Keras defaults made
//! explicit: BatchNormalization eps 1e-3, momentum 0.99 (torch 0.01). Initialiser: Xavier (Keras'
//! default glorot_uniform).

use super::blocks::{Order, Unit, VggStyle};
use super::ModelOptions;
use crate::builder::{conv, max_pool, BN_KERAS};
use crate::graph::{GraphError, Init, Network, Op};

pub(crate) fn build(o: &ModelOptions) -> Result<Network, GraphError> {
    VggStyle {
        name: "mini-vgg",
        side: 28,
        init: Init::XavierUniform,
        unit: Unit { act: Op::Relu, bn: BN_KERAS, order: Order::ActBn },
        // [32, 14, 14] -> [64, 7, 7] after each pool
        blocks: [32, 64].map(|f| vec![conv(f, 3).pad(1); 2]).into(),
        number_single: true,
        pool: max_pool(2, 2, 0),
        block_dropout: 0.25,
        fc: &[512], // after flatten [3136]
        fc_dropout: 0.5,
    }
    .build(o)
}
