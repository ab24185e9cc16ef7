//! EmotionVGGNet, the book's FER2013 network (Ch. 10, Keras; a VGG-style net after Simonyan & Zisserman).
//!
//! Three blocks of (conv 3x3 "same" -> ELU -> BN) x2 -> max pool 2x2 -> dropout 0.25 with 32, 64, 128
//! filters, then flatten -> (dense 64 -> ELU -> BN -> dropout 0.5) x2 -> dense (classes). This is the
//! book's final Exp. 4 (ELU and He-normal initialisation; Exp. 1-3 used ReLU and Glorot).
//! Keras defaults made explicit: ELU alpha 1.0, BatchNormalization eps 1e-3, momentum 0.99 (torch 0.01).
//! Layout: our graphs are channels-first, so the flatten order is C, H, W where Keras (channels-last) had
//! H, W, C; the parameter count is the same. Default 6 classes (disgust merged into angry, as the book
//! does); 585,958 weights with 6 classes.

use super::{unit, ModelOptions, Order};
use crate::builder::{conv, max_pool, GraphBuilder, BN_KERAS, ELU_KERAS};
use crate::graph::{Graph, GraphError, Init, Op};

pub(crate) fn build(o: &ModelOptions) -> Result<Graph, GraphError> {
    let mut b = GraphBuilder::new("emotion-vgg", [o.in_channels, 48, 48], Init::HeNormal);
    let mut x = b.input();
    // [32, 24, 24] -> [64, 12, 12] -> [128, 6, 6]
    for (i, f) in [32, 64, 128].into_iter().enumerate() {
        b.push(&format!("block{}", i + 1));
        for j in ["1", "2"] {
            x = unit(&mut b, x, &format!("conv{j}"), conv(f, 3).pad(1).build(), ELU_KERAS, BN_KERAS, Order::ActBn, j);
        }
        x = b.then("pool", max_pool(2, 2, 0), x);
        x = b.dropout("drop", x, 0.25);
        b.pop();
    }
    x = b.flatten("flatten", x); // [4608]
    for fc in ["fc1", "fc2"] {
        b.push(fc);
        x = unit(&mut b, x, "linear", Op::Linear { out_features: 64, bias: true }, ELU_KERAS, BN_KERAS, Order::ActBn, "");
        x = b.dropout("drop", x, 0.5);
        b.pop();
    }
    let logits = b.linear("classifier", x, o.num_classes);
    b.finish(logits)
}
