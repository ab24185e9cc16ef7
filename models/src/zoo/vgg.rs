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

use super::blocks::{Order, Unit, VggStyle};
use super::ModelOptions;
use crate::builder::{conv, max_pool, BN_MXNET};
use crate::graph::{GraphError, Init, Network, Op};

/// One entry of a VGG configuration (torchvision's `cfgs`): a 3x3 convolution (padding 1) to this many
/// channels, or `M`, a max pool 2x2/2 that ends a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layer {
    C(usize),
    M,
}
use Layer::{C, M};

/// A VGG configuration of the paper's table, as torchvision writes it.
pub(crate) type Config = &'static [Layer];
/// Configuration A (VGG11).
pub(crate) const VGG11: Config = &[C(64), M, C(128), M, C(256), C(256), M, C(512), C(512), M, C(512), C(512), M];
/// Configuration B (VGG13).
pub(crate) const VGG13: Config = &[C(64), C(64), M, C(128), C(128), M, C(256), C(256), M, C(512), C(512), M, C(512), C(512), M];
/// Configuration D (VGG16).
#[rustfmt::skip]
pub(crate) const VGG16: Config = &[
    C(64), C(64), M, C(128), C(128), M, C(256), C(256), C(256), M, C(512), C(512), C(512), M, C(512), C(512), C(512), M,
];
/// Configuration E (VGG19).
#[rustfmt::skip]
pub(crate) const VGG19: Config = &[
    C(64), C(64), M, C(128), C(128), M, C(256), C(256), C(256), C(256), M,
    C(512), C(512), C(512), C(512), M, C(512), C(512), C(512), C(512), M,
];

/// The convolutions of each block (the runs between the pools) of a configuration.
fn blocks(cfg: Config) -> Vec<Vec<crate::graph::Conv2d>> {
    cfg.split(|l| *l == M)
        .filter(|b| !b.is_empty())
        .map(|b| b.iter().filter_map(|l| if let C(w) = l { Some(conv(*w, 3).pad(1)) } else { None }).collect())
        .collect()
}

const PRELU: Op = Op::Prelu { init: 0.25 };

pub(crate) fn build(o: &ModelOptions, name: &'static str, cfg: Config) -> Result<Network, GraphError> {
    VggStyle {
        name,
        side: 224,
        init: Init::MsraPrelu { slope: 0.25 },
        unit: Unit { act: PRELU, bn: BN_MXNET, order: Order::ActBn },
        // 224 -> 112 -> 56 -> 28 -> 14 -> 7: [64,112,112] [128,56,56] [256,28,28] [512,14,14] [512,7,7]
        blocks: blocks(cfg),
        number_single: true,
        pool: max_pool(2, 2, 0),
        block_dropout: 0.25,
        fc: &[4096, 4096], // after flatten [25088]
        fc_dropout: 0.5,
    }
    .build(o)
}
