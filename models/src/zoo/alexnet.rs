//! AlexNet as the book trains it on ImageNet (Ch. 5, `MxAlexNet`; Krizhevsky et al. 2012).
//!
//! Deviations of the book from the paper, kept here: no LRN and no grouped convolutions; BatchNorm in
//! every block; dropout 0.25 after every pooling layer as well as 0.5 in the classifier; input 227x227.
//! The three experiments differ only in each unit's order: Exp. 1 conv -> BN -> ReLU, Exp. 2
//! conv -> ReLU -> BN, Exp. 3 (the final one, `alexnet`) conv -> ELU -> BN.
//! mxnet defaults made explicit: ELU alpha 0.25, BatchNorm eps 1e-3, momentum 0.9, gamma fixed at 1.
//! Initialiser: Xavier (uniform). With 1000 classes: 62,378,344 weights + 19,136 BN gamma/beta.

use super::blocks::{Order, Unit, VggStyle};
use super::ModelOptions;
use crate::builder::{conv, max_pool, BN_MXNET, ELU_MXNET};
use crate::graph::{GraphError, Init, Network, Op};

#[derive(Debug, Clone, Copy)]
pub(crate) enum Variant {
    BnRelu,
    ReluBn,
    EluBn,
}

pub(crate) fn build(o: &ModelOptions, v: Variant) -> Result<Network, GraphError> {
    let (name, act, order) = match v {
        Variant::BnRelu => ("alexnet-bn-relu", Op::Relu, Order::BnAct),
        Variant::ReluBn => ("alexnet-relu-bn", Op::Relu, Order::ActBn),
        Variant::EluBn => ("alexnet", ELU_MXNET, Order::ActBn),
    };
    VggStyle {
        name,
        side: 227,
        init: Init::XavierUniform,
        unit: Unit { act, bn: BN_MXNET, order },
        blocks: vec![
            vec![conv(96, 11).stride(4)],                                        // [96, 55, 55] -> pool [96, 27, 27]
            vec![conv(256, 5).pad(2)],                                           // [256, 27, 27] -> pool [256, 13, 13]
            vec![conv(384, 3).pad(1), conv(384, 3).pad(1), conv(256, 3).pad(1)], // [256, 13, 13] -> pool [256, 6, 6]
        ],
        number_single: false,
        pool: max_pool(3, 2, 0),
        block_dropout: 0.25,
        fc: &[4096, 4096], // after flatten [9216]
        fc_dropout: 0.5,
    }
    .build(o)
}
