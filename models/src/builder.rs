//! A small builder that writes [`Graph`]s with scoped, dotted node names.
//!
//! ```
//! use models::builder::{GraphBuilder, conv};
//! use models::graph::Init;
//! let mut b = GraphBuilder::new("tiny", [1, 28, 28], Init::XavierUniform);
//! let x = b.input();
//! b.push("block1");
//! let x = b.add_op("conv1", conv(8, 3).pad(1).build(), &[x]); // named "block1.conv1"
//! b.pop();
//! let x = b.flatten("flatten", x);
//! let logits = b.linear("fc", x, 10);
//! let g = b.finish(logits).unwrap();
//! assert_eq!(g.params().unwrap()[0].name, "block1.conv1.weight");
//! ```

use crate::graph::{Graph, GraphError, Init, Node, NodeId, Op};

pub struct GraphBuilder {
    name: String,
    nodes: Vec<Node>,
    scope: Vec<String>,
    init: Init,
}

/// The arguments of a convolution, with PyTorch's defaults (stride 1, no padding, bias on).
#[derive(Debug, Clone, Copy)]
pub struct ConvSpec {
    pub out_channels: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
    pub bias: bool,
}

/// A square `k`x`k` convolution to `out` channels.
pub fn conv(out: usize, k: usize) -> ConvSpec {
    ConvSpec { out_channels: out, kernel: [k, k], stride: [1, 1], padding: [0, 0], dilation: [1, 1], groups: 1, bias: true }
}

impl ConvSpec {
    pub fn stride(mut self, s: usize) -> Self {
        self.stride = [s, s];
        self
    }
    pub fn pad(mut self, p: usize) -> Self {
        self.padding = [p, p];
        self
    }
    pub fn dilation(mut self, d: usize) -> Self {
        self.dilation = [d, d];
        self
    }
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
    pub fn no_bias(mut self) -> Self {
        self.bias = false;
        self
    }
    pub fn build(self) -> Op {
        Op::Conv2d {
            out_channels: self.out_channels,
            kernel: self.kernel,
            stride: self.stride,
            padding: self.padding,
            dilation: self.dilation,
            groups: self.groups,
            bias: self.bias,
        }
    }
}

/// Max pooling `k`x`k`, stride `s`, padding `p`, floor mode.
pub fn max_pool(k: usize, s: usize, p: usize) -> Op {
    Op::MaxPool { kernel: [k, k], stride: [s, s], padding: [p, p], ceil_mode: false }
}

/// Average pooling `k`x`k`, stride `s`, no padding, floor mode.
pub fn avg_pool(k: usize, s: usize) -> Op {
    Op::AvgPool { kernel: [k, k], stride: [s, s], padding: [0, 0], ceil_mode: false }
}

/// BatchNorm as mxnet's `BatchNorm()` with defaults builds it: eps 1e-3, momentum 0.9 (torch 0.1), γ fixed at 1.
pub const BN_MXNET: Op = Op::BatchNorm { eps: 1e-3, momentum: 0.1, fix_gamma: true };
/// BatchNorm as Keras' `BatchNormalization()` builds it: eps 1e-3, momentum 0.99 (torch 0.01), γ learned.
pub const BN_KERAS: Op = Op::BatchNorm { eps: 1e-3, momentum: 0.01, fix_gamma: false };
/// mxnet's ELU (`LeakyReLU(act_type="elu")`) has α = 0.25 by default; Keras' and torch's have 1.0.
pub const ELU_MXNET: Op = Op::Elu { alpha: 0.25 };
pub const ELU_KERAS: Op = Op::Elu { alpha: 1.0 };

impl GraphBuilder {
    /// Starts a graph whose input is `[channels, height, width]`.
    pub fn new(name: &str, input: [usize; 3], init: Init) -> Self {
        let [channels, height, width] = input;
        let nodes = vec![Node { name: "input".into(), op: Op::Input { channels, height, width }, inputs: vec![] }];
        Self { name: name.into(), nodes, scope: vec![], init }
    }

    pub fn input(&self) -> NodeId {
        0
    }

    /// Enters a naming scope: nodes added until the matching [`pop`](Self::pop) are named `scope.name`.
    pub fn push(&mut self, scope: &str) {
        self.scope.push(scope.into());
    }

    pub fn pop(&mut self) {
        self.scope.pop();
    }

    /// Adds a node reading `inputs`; returns its id.
    pub fn add_op(&mut self, name: &str, op: Op, inputs: &[NodeId]) -> NodeId {
        let full = if self.scope.is_empty() { name.to_string() } else { format!("{}.{name}", self.scope.join(".")) };
        self.nodes.push(Node { name: full, op, inputs: inputs.to_vec() });
        self.nodes.len() - 1
    }

    /// Adds a node with one input.
    pub fn then(&mut self, name: &str, op: Op, x: NodeId) -> NodeId {
        self.add_op(name, op, &[x])
    }

    pub fn flatten(&mut self, name: &str, x: NodeId) -> NodeId {
        self.then(name, Op::Flatten, x)
    }

    pub fn linear(&mut self, name: &str, x: NodeId, out: usize) -> NodeId {
        self.then(name, Op::Linear { out_features: out, bias: true }, x)
    }

    pub fn dropout(&mut self, name: &str, x: NodeId, p: f64) -> NodeId {
        self.then(name, Op::Dropout { p }, x)
    }

    /// Validates the graph (every shape inferred) with `output` as the logits.
    pub fn finish(self, output: NodeId) -> Result<Graph, GraphError> {
        let g = Graph { name: self.name, nodes: self.nodes, output, init: self.init };
        g.shapes()?;
        Ok(g)
    }
}
