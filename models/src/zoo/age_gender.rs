//! MxAgeGenderNet, the book's Adience network (Ch. 13; after Levi & Hassner 2015).
//!
//! conv 7x7/4 (96) -> ReLU -> BN -> max pool 3x3/2 -> dropout 0.25; conv 5x5 pad 2 (256) -> ReLU -> BN ->
//! max pool 3x3/2 -> dropout 0.25; conv 3x3 pad 1 (384) -> ReLU -> BN -> max pool 3x3/2 -> dropout 0.25;
//! flatten (13,824) -> (FC 512 -> ReLU -> BN -> dropout 0.5) x2 -> FC (classes).
//! Deviations of the book from the paper, kept: BatchNorm where the paper has LRN, dropout after every
//! pool. One instance per task: 8 age bins (the default) or 2 genders (`--num-classes 2`).
//! mxnet defaults made explicit: BatchNorm eps 1e-3, momentum 0.9, gamma fixed at 1. Initialiser: Xavier.

use super::blocks::{Order, Unit, VggStyle};
use super::ModelOptions;
use crate::builder::{conv, max_pool, BN_MXNET};
use crate::graph::{GraphError, Init, Network, Op};

pub(crate) fn build(o: &ModelOptions) -> Result<Network, GraphError> {
    VggStyle {
        name: "age-gender",
        side: 227,
        init: Init::XavierUniform,
        unit: Unit { act: Op::Relu, bn: BN_MXNET, order: Order::ActBn },
        blocks: vec![
            vec![conv(96, 7).stride(4)], // [96, 56, 56] -> pool [96, 27, 27]
            vec![conv(256, 5).pad(2)],   // [256, 27, 27] -> pool [256, 13, 13]
            vec![conv(384, 3).pad(1)],   // [384, 13, 13] -> pool [384, 6, 6]
        ],
        number_single: false,
        pool: max_pool(3, 2, 0),
        block_dropout: 0.25,
        fc: &[512, 512], // after flatten [13824]
        fc_dropout: 0.5,
    }
    .build(o)
}
