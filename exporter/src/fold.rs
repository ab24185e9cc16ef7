//! `--fold-bn`: BatchNorm folded into the convolution or linear layer before it.
//!
//! In inference a BatchNorm is an affine map per channel, y = γ (x - μ) / sqrt(σ² + ε) + β. When x is
//! the output of a convolution or linear layer x = W * in + b, the two compose into one layer with
//! W' = W s and b' = (b - μ) s + β, where s = γ / sqrt(σ² + ε) scales each output channel (a row of W).
//! The folded graph has one node fewer per BatchNorm and computes the same function up to rounding.
//!
//! A BatchNorm is folded only when its input is a `Conv2d` or `Linear` whose output feeds nothing else
//! (and is not the graph's output): otherwise the unnormalised value is still needed. BatchNorms after
//! an activation (layer -> act -> BN, the book's Keras order) or before a convolution (pre-activation
//! ResNets, the input BatchNorm) stay as they are. Folding a BatchNorm forward into the following
//! convolution would not be exact where that convolution pads (the padding zeros are not normalised),
//! so it is not done. The arithmetic is in f64; the folded weights are rounded to f32 once.

use models::graph::{Graph, Network, Node, NodeId, Op};

use crate::lower::{ExportError, Weights};

/// Which BatchNorms were folded and which were kept, by node name, in graph order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FoldReport {
    pub folded: Vec<String>,
    pub kept: Vec<String>,
}

fn take(w: &mut Weights, name: &str, len: usize) -> Result<Vec<f32>, ExportError> {
    let (dims, data) = w.remove(name).ok_or_else(|| ExportError::Weight { name: name.into(), reason: "missing from the weights".into() })?;
    if data.len() != len {
        return Err(ExportError::Weight { name: name.into(), reason: format!("shape {dims:?}, expected {len} values (one per channel)") });
    }
    Ok(data)
}

/// Folds BatchNorm `bn` (epsilon `eps`) into the weights of `layer` in `w`: the BatchNorm's four tensors
/// are removed, `layer.weight` is rescaled and `layer.bias` is written (created when the layer had none).
fn fold_weights(w: &mut Weights, layer: &str, bn: &str, eps: f64) -> Result<(), ExportError> {
    let wname = format!("{layer}.weight");
    let (wdims, mut weight) = w.get(&wname).cloned().ok_or_else(|| ExportError::Weight { name: wname.clone(), reason: "missing from the weights".into() })?;
    let channels = wdims.first().copied().unwrap_or(0);
    if channels == 0 || weight.len() % channels != 0 {
        return Err(ExportError::Weight { name: wname, reason: format!("shape {wdims:?} has no output channels to fold into") });
    }
    let per_channel = weight.len() / channels;
    let bias = match w.remove(&format!("{layer}.bias")) {
        Some((_, b)) if b.len() == channels => b,
        Some((dims, _)) => return Err(ExportError::Weight { name: format!("{layer}.bias"), reason: format!("shape {dims:?}, expected [{channels}]") }),
        None => vec![0.0; channels],
    };
    let gamma = take(w, &format!("{bn}.weight"), channels)?;
    let beta = take(w, &format!("{bn}.bias"), channels)?;
    let mean = take(w, &format!("{bn}.running_mean"), channels)?;
    let var = take(w, &format!("{bn}.running_var"), channels)?;
    let mut folded_bias = Vec::with_capacity(channels);
    for c in 0..channels {
        let s = gamma[c] as f64 / (var[c] as f64 + eps).sqrt();
        for v in &mut weight[c * per_channel..(c + 1) * per_channel] {
            *v = (*v as f64 * s) as f32;
        }
        folded_bias.push(((bias[c] as f64 - mean[c] as f64) * s + beta[c] as f64) as f32);
    }
    w.insert(wname, (wdims, weight));
    w.insert(format!("{layer}.bias"), (vec![channels], folded_bias));
    Ok(())
}

/// The graph with every foldable BatchNorm folded into the layer before it, its weights, and what was
/// folded. Node names (and so parameter names) are kept; readers of a folded BatchNorm read the layer.
pub fn fold_batchnorm(graph: &Network, weights: &Weights) -> Result<(Network, Weights, FoldReport), ExportError> {
    let mut w = weights.clone();
    let mut report = FoldReport::default();
    let mut nodes: Vec<Node> = Vec::with_capacity(graph.nodes.len());
    // old node id -> new node id (a folded BatchNorm maps to its layer)
    let mut new_id: Vec<NodeId> = Vec::with_capacity(graph.nodes.len());
    for (id, node) in graph.nodes.iter().enumerate() {
        if let Op::BatchNorm { eps, .. } = node.op {
            let src = node.inputs[0];
            let layer = &graph.nodes[src];
            if layer.op.is_weight_layer() && !graph.output_nodes().contains(&src) && graph.consumers(src) == [id] {
                fold_weights(&mut w, &layer.name, &node.name, eps)?;
                let folded_into = new_id[src];
                // the folded layer always has a bias
                nodes[folded_into].op = layer.op.with_bias();
                report.folded.push(node.name.clone());
                new_id.push(folded_into);
                continue;
            }
            report.kept.push(node.name.clone());
        }
        let mut n = node.clone();
        n.inputs = n.inputs.iter().map(|&i| new_id[i]).collect();
        new_id.push(nodes.len());
        nodes.push(n);
    }
    let extra_outputs = graph.extra_outputs.iter().map(|o| models::graph::NamedOutput { name: o.name.clone(), node: new_id[o.node] }).collect();
    let folded = Graph { name: graph.name.clone(), nodes, output: new_id[graph.output], init: graph.init, extra_outputs, detector: graph.detector.clone() }
        .validate()?;
    Ok((folded, w, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use models::builder::{conv, GraphBuilder};
    use models::graph::Init;

    const BN: Op = Op::BatchNorm { eps: 1e-3, momentum: 0.1, fix_gamma: false };

    /// Weights for every parameter of `g`: value i of tensor k is a small deterministic number.
    fn weights_for(g: &Network) -> Weights {
        g.params()
            .iter()
            .enumerate()
            .map(|(k, p)| {
                let n = p.numel();
                let v =
                    (0..n).map(|i| if p.name.ends_with("running_var") { 0.5 + (i % 3) as f32 } else { ((i * 7 + k * 3) % 11) as f32 / 10.0 - 0.5 }).collect();
                (p.name.clone(), (p.shape.clone(), v))
            })
            .collect()
    }

    #[test]
    fn folds_layer_bn_pairs_and_keeps_the_rest() {
        let mut b = GraphBuilder::new("fold", [2, 5, 5], Init::XavierUniform);
        let x = b.input();
        let x = b.then("bn_in", BN, x); // reads the input: kept
        let c1 = b.then("c1", conv(3, 3).pad(1).no_bias(), x);
        let x = b.then("bn1", BN, c1); // folded, c1 gains a bias
        let r = b.then("relu", Op::Relu, x);
        let x = b.then("bn_act", BN, r); // after an activation: kept
        let c2 = b.then("c2", conv(3, 1), x);
        let x = b.then("bn2", BN, c2); // c2 also feeds the sum: kept
        let x = b.add_op("sum", Op::Add, &[x, c2]);
        let x = b.flatten("flat", x);
        let y = b.linear("fc", x, 4);
        let y = b.then("bn_out", BN, y); // folded, and the graph's output moves to fc
        let g = b.finish(y).unwrap();
        let w = weights_for(&g);

        let (f, fw, report) = fold_batchnorm(&g, &w).unwrap();
        assert_eq!(report.folded, ["bn1", "bn_out"]);
        assert_eq!(report.kept, ["bn_in", "bn_act", "bn2"]);
        assert_eq!(f.nodes.len(), g.nodes.len() - 2);
        assert_eq!(f.nodes[f.output].name, "fc");
        let (relu, _) = f.node("relu").unwrap();
        assert_eq!(f.nodes[relu].inputs, [f.node("c1").unwrap().0], "the BatchNorm's reader reads the layer");
        assert!(matches!(f.node("c1").unwrap().1.op, Op::Conv2d(models::graph::Conv2d { bias: true, .. })));
        // every parameter of the folded graph is in the folded weights, and nothing else
        let mut names: Vec<String> = f.params().iter().map(|p| p.name.clone()).collect();
        names.sort();
        assert_eq!(names, fw.keys().cloned().collect::<Vec<_>>());

        // the formula, channel 1 of c1 (no bias before): W' = W s, b' = (0 - μ) s + β
        let get = |m: &Weights, n: &str| m[n].1.clone();
        let s = get(&w, "bn1.weight")[1] as f64 / (get(&w, "bn1.running_var")[1] as f64 + 1e-3).sqrt();
        let per = 2 * 3 * 3;
        for i in 0..per {
            assert!((get(&fw, "c1.weight")[per + i] as f64 - get(&w, "c1.weight")[per + i] as f64 * s).abs() < 1e-6);
        }
        let b1 = -get(&w, "bn1.running_mean")[1] as f64 * s + get(&w, "bn1.bias")[1] as f64;
        assert!((get(&fw, "c1.bias")[1] as f64 - b1).abs() < 1e-6);
        // the linear layer had a bias: b' = (b - μ) s + β
        let s = get(&w, "bn_out.weight")[2] as f64 / (get(&w, "bn_out.running_var")[2] as f64 + 1e-3).sqrt();
        let b = (get(&w, "fc.bias")[2] as f64 - get(&w, "bn_out.running_mean")[2] as f64) * s + get(&w, "bn_out.bias")[2] as f64;
        assert!((get(&fw, "fc.bias")[2] as f64 - b).abs() < 1e-6);
    }

    #[test]
    fn missing_statistics_name_the_tensor() {
        let mut b = GraphBuilder::new("fold", [1, 3, 3], Init::XavierUniform);
        let x = b.input();
        let x = b.then("c", conv(2, 1), x);
        let x = b.then("bn", BN, x);
        let g = b.finish(x).unwrap();
        let mut w = weights_for(&g);
        w.remove("bn.running_var");
        let err = fold_batchnorm(&g, &w).unwrap_err().to_string();
        assert_eq!(err, "parameter 'bn.running_var': missing from the weights");
    }
}
