//! EmotionVGGNet, the book's FER2013 network (Ch. 10, Keras; a VGG-style net after Simonyan & Zisserman).
//!
//! Three blocks of (conv 3x3 "same" -> ELU -> BN) x2 -> max pool 2x2 -> dropout 0.25 with 32, 64, 128
//! filters, then flatten -> (dense 64 -> ELU -> BN -> dropout 0.5) x2 -> dense (classes). This is the
//! book's final Exp. 4 (ELU and He-normal initialisation; Exp. 1-3 used ReLU and Glorot).
//! Keras defaults made explicit: ELU alpha 1.0, BatchNormalization eps 1e-3, momentum 0.99 (torch 0.01).
//! Layout: our graphs are channels-first, so the flatten order is C, H, W where Keras (channels-last) had
//! H, W, C; the parameter count is the same. Default 6 classes (disgust merged into angry, as the book
//! does); 585,958 weights with 6 classes.

use super::blocks::{Order, Unit, VggStyle};
use super::ModelOptions;
use crate::builder::{conv, max_pool, BN_KERAS, ELU_KERAS};
use crate::graph::{GraphError, Init, Network};

pub(crate) fn build(o: &ModelOptions) -> Result<Network, GraphError> {
    VggStyle {
        name: "emotion-vgg",
        side: 48,
        init: Init::HeNormal,
        unit: Unit { act: ELU_KERAS, bn: BN_KERAS, order: Order::ActBn },
        // [32, 24, 24] -> [64, 12, 12] -> [128, 6, 6] after each pool
        blocks: [32, 64, 128].map(|f| vec![conv(f, 3).pad(1); 2]).into(),
        number_single: true,
        pool: max_pool(2, 2, 0),
        block_dropout: 0.25,
        fc: &[64, 64], // after flatten [4608]
        fc_dropout: 0.5,
    }
    .build(o)
}
