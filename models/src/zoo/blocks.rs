//! Blocks that several families share: a conv/linear unit with its activation and BatchNorm, and the
//! VGG-family network as a table (torchvision's `cfgs` + `make_layers`): blocks of units, each ending
//! in a pool and a dropout, then a head of linear units and the `classifier`. AlexNet, VGG,
//! EmotionVGGNet, AgeGenderNet and MiniVGGNet are rows of that table; each file keeps its paper notes.

use super::ModelOptions;
use crate::builder::GraphBuilder;
use crate::graph::{Conv2d, GraphError, Init, Network, NodeId, Op};

/// Where the activation goes relative to BatchNorm in a conv/linear unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    /// layer -> activation -> BN (AlexNet Exp. 2/3, VGG, EmotionVGGNet, AgeGenderNet, MiniVGGNet)
    ActBn,
    /// layer -> BN -> activation (AlexNet Exp. 1, GoogLeNet)
    BnAct,
}

/// A family's unit: a convolution or linear layer, then its activation and BatchNorm in `order`.
#[derive(Debug, Clone)]
pub(crate) struct Unit {
    pub act: Op,
    pub bn: Op,
    pub order: Order,
}

impl Unit {
    /// Adds `layer` named `layer_name`, then `act{suffix}` and `bn{suffix}` in `order`, in the current
    /// scope; returns the last node.
    pub fn add(&self, b: &mut GraphBuilder, x: NodeId, layer_name: &str, layer: impl Into<Op>, suffix: &str) -> NodeId {
        let x = b.then(layer_name, layer, x);
        match self.order {
            Order::ActBn => {
                let x = b.then(&format!("act{suffix}"), self.act.clone(), x);
                b.then(&format!("bn{suffix}"), self.bn.clone(), x)
            }
            Order::BnAct => {
                let x = b.then(&format!("bn{suffix}"), self.bn.clone(), x);
                b.then(&format!("act{suffix}"), self.act.clone(), x)
            }
        }
    }
}

/// A VGG-family network, one row of the table:
/// `block{i}` = (conv unit)* -> `pool` -> `drop`, for each block; `flatten`;
/// `fc{j}` = `linear` unit -> `drop`, for each FC width; `classifier` (a linear layer to the classes).
#[derive(Debug, Clone)]
pub(crate) struct VggStyle {
    pub name: &'static str,
    /// Input height and width (the channels are an option).
    pub side: usize,
    pub init: Init,
    pub unit: Unit,
    /// Each block's convolutions, in order.
    pub blocks: Vec<Vec<Conv2d>>,
    /// Whether a block of one convolution numbers it (`conv1`, `act1`, `bn1`: VGG) or not (`conv`,
    /// `act`, `bn`: AlexNet, AgeGenderNet). Blocks of several are always numbered from 1.
    pub number_single: bool,
    /// The pool that ends every block.
    pub pool: Op,
    /// The dropout after every block's pool.
    pub block_dropout: f64,
    /// The widths of the hidden linear layers.
    pub fc: &'static [usize],
    /// The dropout after each of them.
    pub fc_dropout: f64,
}

impl VggStyle {
    pub fn build(&self, o: &ModelOptions) -> Result<Network, GraphError> {
        let mut b = GraphBuilder::new(self.name, [o.in_channels, self.side, self.side], self.init);
        let mut x = b.input();
        for (i, convs) in self.blocks.iter().enumerate() {
            let mut block = b.scope(&format!("block{}", i + 1));
            for (j, &c) in convs.iter().enumerate() {
                let suffix = if convs.len() == 1 && !self.number_single { String::new() } else { (j + 1).to_string() };
                x = self.unit.add(&mut block, x, &format!("conv{suffix}"), c, &suffix);
            }
            x = block.then("pool", self.pool.clone(), x);
            x = block.dropout("drop", x, self.block_dropout);
        }
        x = b.flatten("flatten", x);
        for (j, &width) in self.fc.iter().enumerate() {
            let mut fc = b.scope(&format!("fc{}", j + 1));
            x = self.unit.add(&mut fc, x, "linear", Op::Linear { out_features: width, bias: true }, "");
            x = fc.dropout("drop", x, self.fc_dropout);
        }
        let logits = b.linear("classifier", x, o.num_classes);
        b.finish(logits)
    }
}
