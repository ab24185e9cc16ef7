//! A small builder that writes [`Graph`]s with scoped, dotted node names.
//!
//! A scope is a value, as candle's `vb.pp("name")`: [`GraphBuilder::scope`] returns a guard that reads
//! as the builder and names every node added through it `scope.name`, until it is dropped.
//!
//! ```
//! use models::builder::{GraphBuilder, conv};
//! use models::graph::Init;
//! let mut b = GraphBuilder::new("tiny", [1, 28, 28], Init::XavierUniform);
//! let x = b.input();
//! let x = {
//!     let mut block = b.scope("block1");
//!     block.then("conv1", conv(8, 3).pad(1), x) // named "block1.conv1"
//! };
//! let x = b.flatten("flatten", x);
//! let logits = b.linear("fc", x, 10);
//! let g = b.finish(logits).unwrap();
//! assert_eq!(g.params()[0].name, "block1.conv1.weight");
//! assert_eq!(g.params()[2].name, "fc.weight");
//! ```

use std::ops::{Deref, DerefMut};

use crate::graph::{Conv2d, Graph, GraphError, Init, NamedOutput, Network, Node, NodeId, Op};

pub struct GraphBuilder {
    name: String,
    nodes: Vec<Node>,
    scope: Vec<String>,
    init: Init,
}

/// A square `k`x`k` convolution to `out` channels, with PyTorch's defaults (stride 1, no padding, no
/// dilation, one group, bias on); the methods below change one argument each.
pub const fn conv(out: usize, k: usize) -> Conv2d {
    Conv2d { out_channels: out, kernel: [k, k], stride: [1, 1], padding: [0, 0], dilation: [1, 1], groups: 1, bias: true }
}

impl Conv2d {
    pub const fn stride(mut self, s: usize) -> Self {
        self.stride = [s, s];
        self
    }
    pub const fn pad(mut self, p: usize) -> Self {
        self.padding = [p, p];
        self
    }
    pub const fn dilation(mut self, d: usize) -> Self {
        self.dilation = [d, d];
        self
    }
    pub const fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
    pub const fn no_bias(mut self) -> Self {
        self.bias = false;
        self
    }
}

/// Max pooling `k`x`k`, stride `s`, padding `p`, floor mode.
pub const fn max_pool(k: usize, s: usize, p: usize) -> Op {
    Op::MaxPool { kernel: [k, k], stride: [s, s], padding: [p, p], ceil_mode: false }
}

/// Average pooling `k`x`k`, stride `s`, no padding, floor mode.
pub const fn avg_pool(k: usize, s: usize) -> Op {
    Op::AvgPool { kernel: [k, k], stride: [s, s], padding: [0, 0], ceil_mode: false }
}

/// BatchNorm as mxnet's `BatchNorm()` with defaults builds it: eps 1e-3, momentum 0.9 (torch 0.1), γ fixed at 1.
pub const BN_MXNET: Op = Op::BatchNorm { eps: 1e-3, momentum: 0.1, fix_gamma: true };
/// BatchNorm as Keras' `BatchNormalization()` builds it: eps 1e-3, momentum 0.99 (torch 0.01), γ learned.
pub const BN_KERAS: Op = Op::BatchNorm { eps: 1e-3, momentum: 0.01, fix_gamma: false };
/// mxnet's ELU (`LeakyReLU(act_type="elu")`) has α = 0.25 by default; Keras' and torch's have 1.0.
pub const ELU_MXNET: Op = Op::Elu { alpha: 0.25 };
pub const ELU_KERAS: Op = Op::Elu { alpha: 1.0 };

/// A naming scope of a [`GraphBuilder`], from [`GraphBuilder::scope`]: it reads and writes as the builder
/// and leaves the scope when dropped, so no node can be misnamed by a forgotten `pop`.
pub struct Scope<'b> {
    builder: &'b mut GraphBuilder,
}

impl Deref for Scope<'_> {
    type Target = GraphBuilder;
    fn deref(&self) -> &GraphBuilder {
        self.builder
    }
}

impl DerefMut for Scope<'_> {
    fn deref_mut(&mut self) -> &mut GraphBuilder {
        self.builder
    }
}

impl Drop for Scope<'_> {
    fn drop(&mut self) {
        self.builder.scope.pop();
    }
}

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

    /// Enters a naming scope: nodes added through the returned guard are named `scope.name` (inside an
    /// outer scope `outer.scope.name`) until the guard is dropped.
    pub fn scope(&mut self, scope: &str) -> Scope<'_> {
        self.scope.push(scope.into());
        Scope { builder: self }
    }

    /// Adds a node reading `inputs`; returns its id.
    pub fn add_op(&mut self, name: &str, op: impl Into<Op>, inputs: &[NodeId]) -> NodeId {
        let full = if self.scope.is_empty() { name.to_string() } else { format!("{}.{name}", self.scope.join(".")) };
        self.nodes.push(Node { name: full, op: op.into(), inputs: inputs.to_vec() });
        self.nodes.len() - 1
    }

    /// Adds a node with one input.
    pub fn then(&mut self, name: &str, op: impl Into<Op>, x: NodeId) -> NodeId {
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
    pub fn finish(self, output: NodeId) -> Result<Network, GraphError> {
        self.finish_with(output, &[])
    }

    /// Validates the graph with `output` and further named outputs (a detector's heads).
    pub fn finish_with(self, output: NodeId, extra: &[(&str, NodeId)]) -> Result<Network, GraphError> {
        self.finish_graph(output, extra, None)
    }

    /// Validates a detector: `scores` (class logits `[P, C]`) as the output and `codes` (`[P, 4]`)
    /// under the name the spec gives, their rows checked against the spec's priors.
    pub fn finish_detector(self, scores: NodeId, codes: NodeId, spec: crate::detect::DetectorSpec) -> Result<Network, GraphError> {
        let name = spec.codes_output.clone();
        self.finish_graph(scores, &[(&name, codes)], Some(spec))
    }

    /// A Faster R-CNN: the second stage's class logits (the output) and box codes per region, and the
    /// RPN's objectness and box codes per image, under the names the spec gives them.
    pub fn finish_rcnn(
        self,
        scores: NodeId,
        codes: NodeId,
        rpn_scores: NodeId,
        rpn_codes: NodeId,
        spec: crate::detect::DetectorSpec,
    ) -> Result<Network, GraphError> {
        let r =
            spec.rcnn.clone().ok_or_else(|| GraphError::Graph { graph: self.name.clone(), reason: "finish_rcnn needs a spec with detector.rcnn".into() })?;
        let codes_name = spec.codes_output.clone();
        self.finish_graph(scores, &[(&codes_name, codes), (&r.scores_output, rpn_scores), (&r.codes_output, rpn_codes)], Some(spec))
    }

    fn finish_graph(self, output: NodeId, extra: &[(&str, NodeId)], detector: Option<crate::detect::DetectorSpec>) -> Result<Network, GraphError> {
        let extra_outputs = extra.iter().map(|&(name, node)| NamedOutput { name: name.into(), node }).collect();
        Graph { name: self.name, nodes: self.nodes, output, init: self.init, extra_outputs, detector }.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_nest_and_end_with_their_guard() {
        let mut b = GraphBuilder::new("scopes", [1, 4, 4], Init::XavierUniform);
        let x = b.input();
        let (a, inner, after_inner) = {
            let mut outer = b.scope("outer");
            let a = outer.then("a", Op::Relu, x);
            let inner = {
                let mut s = outer.scope("inner");
                s.then("b", Op::Relu, a)
            };
            (a, inner, outer.then("c", Op::Relu, inner))
        };
        let top = b.then("d", Op::Relu, after_inner);
        let g = b.finish(top).unwrap();
        let name = |id: NodeId| g.nodes[id].name.as_str();
        assert_eq!([name(a), name(inner), name(after_inner), name(top)], ["outer.a", "outer.inner.b", "outer.c", "d"]);
    }
}
