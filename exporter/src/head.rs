//! A linear head fitted on a frozen network's features, made part of the network: the graph cut at the
//! feature layer, then `Flatten` and one `Linear` layer, so that the lowering writes it as any
//! classifier (`probabilities` = softmax of the head's logits).
//!
//! This is how the book's orientation case study (ch. 11) deploys: `trainer features` reads the
//! activations of one node, flattened C-major; `trainer logreg fit` fits softmax(W z + b) on the
//! standardised features z = (x − μ) / σ. The standardisation is an affine map per feature, so it folds
//! exactly into the head: W z + b = W' x + b' with
//!
//! ```text
//! W'[k][j] = W[k][j] / σ[j]          b'[k] = b[k] − Σ_j W[k][j] · μ[j] / σ[j]
//! ```
//!
//! computed in f64 and rounded to f32 once, as BatchNorm folding does (`crate::fold`). Only the nodes the
//! feature layer depends on are kept (dropout among them is removed by the lowering, as for any export);
//! the classifier the network was trained with, and any branch beside it, is cut away. Pure Rust: the
//! verified export (libtorch features and the logistic model against ONNX Runtime) is
//! `crate::logreg`.

use std::collections::BTreeMap;

use models::graph::{Graph, GraphError, Network, Node, NodeId, Op};

use crate::lower::Weights;

/// The head's `Linear` node; its parameters are `logreg.weight` `[K, D]` and `logreg.bias` `[K]`.
pub const HEAD_NODE: &str = "logreg";
/// The `Flatten` between the feature layer and the head (C-major, as `trainer features` flattens).
pub const FLATTEN_NODE: &str = "logreg.flatten";

/// Why a head cannot be made part of a network; each names the feature, layer or graph.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum HeadError {
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error("the linear head: {0}")]
    Shape(String),
    #[error("the standardisation of feature {index}: scale {scale} (a standard deviation) must be a positive finite number")]
    Scale { index: usize, scale: f64 },
    #[error("the linear head: {what} {index} is {value}, not a finite number")]
    NotFinite { what: &'static str, index: usize, value: f64 },
    #[error("graph '{graph}': no node '{layer}' to cut at")]
    NoLayer { graph: String, layer: String },
    #[error("graph '{graph}': node '{name}' exists already; the head's nodes need that name")]
    NameTaken { graph: String, name: String },
    #[error("graph '{graph}': layer '{layer}' gives {features} values per sample ({shape:?}), the head reads {dim}")]
    Width { graph: String, layer: String, shape: Vec<usize>, features: usize, dim: usize },
}

/// Logits `W x + b` over `dim` features: `weight` is `[classes][dim]` row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearHead {
    pub classes: usize,
    pub dim: usize,
    pub weight: Vec<f64>,
    pub bias: Vec<f64>,
}

impl LinearHead {
    /// The head of weight rows `[K][D]` and biases `[K]` (as a `trainer logreg` model stores them).
    pub fn new(weights: &[Vec<f64>], bias: &[f64]) -> Result<Self, HeadError> {
        let (classes, dim) = (weights.len(), weights.first().map_or(0, Vec::len));
        if classes == 0 || dim == 0 {
            return Err(HeadError::Shape(format!("{classes} weight rows of {dim} values: it needs at least one class and one feature")));
        }
        if let Some(k) = weights.iter().position(|w| w.len() != dim) {
            return Err(HeadError::Shape(format!("weight row {k} has {} values, row 0 has {dim}", weights[k].len())));
        }
        if bias.len() != classes {
            return Err(HeadError::Shape(format!("{} biases for {classes} weight rows", bias.len())));
        }
        let head = Self { classes, dim, weight: weights.concat(), bias: bias.to_vec() };
        head.check_finite()?;
        Ok(head)
    }

    fn check_finite(&self) -> Result<(), HeadError> {
        for (what, values) in [("weight", &self.weight), ("bias", &self.bias)] {
            if let Some((index, &value)) = values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(HeadError::NotFinite { what, index, value });
            }
        }
        Ok(())
    }

    /// The head on raw features `x` that computes what `self` computes on `(x − mean) / scale`
    /// (scale is the standard deviation, the divisor; see the module's text).
    pub fn fold_standardization(&self, mean: &[f64], scale: &[f64]) -> Result<Self, HeadError> {
        if mean.len() != self.dim || scale.len() != self.dim {
            return Err(HeadError::Shape(format!("a standardisation of {} means and {} scales for {} features", mean.len(), scale.len(), self.dim)));
        }
        if let Some((index, &scale)) = scale.iter().enumerate().find(|(_, s)| !(s.is_finite() && **s > 0.0)) {
            return Err(HeadError::Scale { index, scale });
        }
        if let Some((index, &value)) = mean.iter().enumerate().find(|(_, m)| !m.is_finite()) {
            return Err(HeadError::NotFinite { what: "standardisation mean", index, value });
        }
        let mut weight = Vec::with_capacity(self.weight.len());
        let mut bias = self.bias.clone();
        for (row, b) in self.weight.chunks_exact(self.dim).zip(&mut bias) {
            for ((w, m), s) in row.iter().zip(mean).zip(scale) {
                let folded = w / s;
                weight.push(folded);
                *b -= folded * m;
            }
        }
        let head = Self { classes: self.classes, dim: self.dim, weight, bias };
        head.check_finite()?;
        Ok(head)
    }

    /// `W x + b` in f64 (for tests and checks).
    pub fn logits(&self, x: &[f64]) -> Vec<f64> {
        self.weight.chunks_exact(self.dim).zip(&self.bias).map(|(w, b)| b + w.iter().zip(x).map(|(w, x)| w * x).sum::<f64>()).collect()
    }

    /// The head's parameters as f32 initializers named for [`HEAD_NODE`] (rounded once).
    pub fn weights(&self) -> Weights {
        let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        BTreeMap::from([
            (format!("{HEAD_NODE}.weight"), (vec![self.classes, self.dim], f32s(&self.weight))),
            (format!("{HEAD_NODE}.bias"), (vec![self.classes], f32s(&self.bias))),
        ])
    }
}

/// `g` cut at node `layer` (only the nodes it depends on, in their order), then [`FLATTEN_NODE`] and a
/// `Linear` [`HEAD_NODE`] of `head.classes` outputs, which is the new graph's output (the logits). The
/// feature layer's output must have `head.dim` values per sample.
pub fn with_head(g: &Network, layer: &str, head: &LinearHead) -> Result<Network, HeadError> {
    let shapes = g.shapes();
    let (cut, _) = g.node(layer).ok_or_else(|| HeadError::NoLayer { graph: g.name.clone(), layer: layer.into() })?;
    let features: usize = shapes[cut].iter().product();
    if features != head.dim {
        return Err(HeadError::Width { graph: g.name.clone(), layer: layer.into(), shape: shapes[cut].clone(), features, dim: head.dim });
    }
    for name in [FLATTEN_NODE, HEAD_NODE] {
        if g.node(name).is_some() {
            return Err(HeadError::NameTaken { graph: g.name.clone(), name: name.into() });
        }
    }
    // the nodes `cut` depends on: walking back from it (inputs always come earlier)
    let mut needed = vec![false; cut + 1];
    needed[cut] = true;
    for id in (0..=cut).rev() {
        if needed[id] {
            for &i in &g.nodes[id].inputs {
                needed[i] = true;
            }
        }
    }
    let mut new_id: Vec<Option<NodeId>> = vec![None; cut + 1];
    let mut nodes: Vec<Node> = vec![];
    for (id, node) in g.nodes[..=cut].iter().enumerate().filter(|(id, _)| needed[*id]) {
        let inputs = node.inputs.iter().map(|&i| new_id[i].expect("an input of a needed node is needed and comes earlier")).collect();
        new_id[id] = Some(nodes.len());
        nodes.push(Node { name: node.name.clone(), op: node.op.clone(), inputs });
    }
    let last = nodes.len() - 1;
    nodes.push(Node { name: FLATTEN_NODE.into(), op: Op::Flatten, inputs: vec![last] });
    nodes.push(Node { name: HEAD_NODE.into(), op: Op::Linear { out_features: head.classes, bias: true }, inputs: vec![last + 1] });
    // a new classifier on cut features: the original's other outputs are not part of it
    Ok(Graph { name: format!("{}+{HEAD_NODE}", g.name), output: nodes.len() - 1, nodes, init: g.init, extra_outputs: vec![], detector: None }.validate()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parity::fixed_inputs;
    use models::builder::{conv, max_pool, GraphBuilder};
    use models::graph::Init;

    /// `n` values in [lo, hi) from `seed` (the parity check's fixed-input generator).
    fn uniform(n: usize, seed: u64, lo: f64, hi: f64) -> Vec<f64> {
        fixed_inputs(n, seed).into_iter().map(|v| lo + (v as f64 + 2.0) / 4.0 * (hi - lo)).collect()
    }

    #[test]
    fn the_fold_is_the_standardised_head_on_raw_features() {
        let (k, d) = (4, 37);
        let w = uniform(k * d, 3, -2.0, 2.0);
        let rows: Vec<Vec<f64>> = w.chunks(d).map(<[f64]>::to_vec).collect();
        let head = LinearHead::new(&rows, &uniform(k, 5, -1.0, 1.0)).unwrap();
        let (mean, scale) = (uniform(d, 7, -50.0, 50.0), uniform(d, 11, 0.01, 30.0));
        let folded = head.fold_standardization(&mean, &scale).unwrap();
        for seed in 1..20 {
            let x = uniform(d, 100 + seed, -80.0, 80.0);
            let z: Vec<f64> = x.iter().zip(&mean).zip(&scale).map(|((x, m), s)| (x - m) / s).collect();
            let (want, got) = (head.logits(&z), folded.logits(&x));
            assert!(want.iter().zip(&got).all(|(a, b)| (a - b).abs() <= 1e-9 * (1.0 + a.abs())), "{want:?} vs {got:?}");
        }
        // identity standardisation changes nothing
        assert_eq!(head.fold_standardization(&vec![0.0; d], &vec![1.0; d]).unwrap(), head);
        // the f32 initializers: shapes and one rounding
        let init = folded.weights();
        assert_eq!(init["logreg.weight"].0, [k, d]);
        assert_eq!(init["logreg.bias"], (vec![k], folded.bias.iter().map(|&b| b as f32).collect()));
    }

    #[test]
    fn bad_heads_and_standardisations_are_refused_by_name() {
        assert!(matches!(LinearHead::new(&[], &[]), Err(HeadError::Shape(_))));
        let e = LinearHead::new(&[vec![1.0, 2.0], vec![1.0]], &[0.0, 0.0]).unwrap_err();
        assert!(e.to_string().contains("weight row 1 has 1 values"), "{e}");
        assert!(LinearHead::new(&[vec![1.0]], &[0.0, 1.0]).unwrap_err().to_string().contains("2 biases for 1 weight rows"));
        let e = LinearHead::new(&[vec![1.0, f64::NAN]], &[0.0]).unwrap_err();
        assert!(matches!(e, HeadError::NotFinite { what: "weight", index: 1, value } if value.is_nan()), "{e}");
        let h = LinearHead::new(&[vec![1.0, 2.0]], &[0.0]).unwrap();
        assert_eq!(h.fold_standardization(&[0.0, 0.0], &[1.0, 0.0]).unwrap_err(), HeadError::Scale { index: 1, scale: 0.0 });
        assert!(matches!(h.fold_standardization(&[0.0], &[1.0]), Err(HeadError::Shape(_))));
    }

    /// input -> conv -> pool ("feat") -> flatten -> fc, plus a side branch off the input.
    fn net() -> Network {
        let mut b = GraphBuilder::new("toy", [1, 8, 8], Init::XavierUniform);
        let x = b.input();
        let side = b.then("side", conv(2, 1), x);
        let _ = b.then("side.pool", max_pool(2, 2, 0), side);
        let c = b.then("conv", conv(3, 3).pad(1), x);
        let r = b.then("relu", Op::Relu, c);
        let p = b.then("feat", max_pool(2, 2, 0), r); // [3, 4, 4]
        let f = b.flatten("flatten", p);
        let fc = b.linear("fc", f, 10);
        b.finish(fc).unwrap()
    }

    #[test]
    fn the_cut_keeps_what_the_feature_layer_needs_then_flatten_and_the_head() {
        let head = LinearHead::new(&vec![vec![0.5; 48]; 4], &[0.0; 4]).unwrap();
        let g = with_head(&net(), "feat", &head).unwrap();
        let names: Vec<&str> = g.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["input", "conv", "relu", "feat", "logreg.flatten", "logreg"]);
        assert_eq!(g.nodes[1].inputs, [0]);
        assert_eq!(g.nodes[3].inputs, [2]);
        let shapes = g.shapes();
        assert_eq!((shapes[3].clone(), shapes[4].clone(), shapes[g.output].clone()), (vec![3, 4, 4], vec![48], vec![4]));
        let params: Vec<String> = g.params().iter().map(|p| format!("{} {:?}", p.name, p.shape)).collect();
        assert_eq!(params, ["conv.weight [3, 1, 3, 3]", "conv.bias [3]", "logreg.weight [4, 48]", "logreg.bias [4]"]);

        let e = with_head(&net(), "relu", &head).unwrap_err();
        assert!(e.to_string().contains("layer 'relu' gives 192 values per sample ([3, 8, 8]), the head reads 48"), "{e}");
        assert_eq!(with_head(&net(), "nope", &head).unwrap_err(), HeadError::NoLayer { graph: "toy".into(), layer: "nope".into() });
        let again = with_head(&g, "feat", &head).unwrap_err();
        assert_eq!(again, HeadError::NameTaken { graph: "toy+logreg".into(), name: FLATTEN_NODE.into() });
    }
}
