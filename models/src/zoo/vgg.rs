//! VGG as the book trains it on ImageNet (Ch. 6, `MxVGGNet`; Simonyan & Zisserman 2014).
//!
//! The book builds configuration D (VGG16); `vgg11`, `vgg13` and `vgg19` use configurations A, B and E
//! of the same paper table with the book's units. Deviations from the paper, kept: every 3x3 conv is
//! followed by PReLU then BatchNorm; every block ends with MaxPool 2x2/2 and Dropout 0.25; the two FC
//! layers are FC -> PReLU -> BN -> Dropout 0.5.
//! mxnet defaults made explicit: BatchNorm eps 1e-3, momentum 0.9, gamma fixed at 1; the PReLU slope
//! starts at 0.25 (the book does not say; He et al. and torch use 0.25).
//! The book's block-4 pool is named "pool3" twice (book.md Appendix A.4): here every node has its own
//! name (`block4.pool`). Initialiser: MSRAPrelu. VGG16 with 1000 classes: 138,357,544 weights
//! + 24,832 BN gamma/beta + 12,416 PReLU slopes.

use super::{unit, ModelOptions, Order};
use crate::builder::{conv, max_pool, GraphBuilder, BN_MXNET};
use crate::graph::{Graph, GraphError, Init, Op};

/// Convolutions per block (filters 64, 128, 256, 512, 512).
pub(crate) type Config = [usize; 5];
pub(crate) const VGG11: Config = [1, 1, 2, 2, 2];
pub(crate) const VGG13: Config = [2, 2, 2, 2, 2];
pub(crate) const VGG16: Config = [2, 2, 3, 3, 3];
pub(crate) const VGG19: Config = [2, 2, 4, 4, 4];
const FILTERS: [usize; 5] = [64, 128, 256, 512, 512];
const PRELU: Op = Op::Prelu { init: 0.25 };

pub(crate) fn build(o: &ModelOptions, name: &str, cfg: Config) -> Result<Graph, GraphError> {
    let mut b = GraphBuilder::new(name, [o.in_channels, 224, 224], Init::MsraPrelu { slope: 0.25 });
    let mut x = b.input();
    // 224 -> 112 -> 56 -> 28 -> 14 -> 7: [64,112,112] [128,56,56] [256,28,28] [512,14,14] [512,7,7]
    for (i, (&n, &f)) in cfg.iter().zip(FILTERS.iter()).enumerate() {
        b.push(&format!("block{}", i + 1));
        for j in 1..=n {
            x = unit(&mut b, x, &format!("conv{j}"), conv(f, 3).pad(1).build(), PRELU, BN_MXNET, Order::ActBn, &j.to_string());
        }
        x = b.then("pool", max_pool(2, 2, 0), x);
        x = b.dropout("drop", x, 0.25);
        b.pop();
    }
    x = b.flatten("flatten", x); // [25088]
    for fc in ["fc1", "fc2"] {
        b.push(fc);
        x = unit(&mut b, x, "linear", Op::Linear { out_features: 4096, bias: true }, PRELU, BN_MXNET, Order::ActBn, "");
        x = b.dropout("drop", x, 0.5);
        b.pop();
    }
    let logits = b.linear("classifier", x, o.num_classes);
    b.finish(logits)
}
