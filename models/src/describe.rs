//! `trainer models describe`: a model's layers with output shapes, its parameter table and totals.

use serde::Serialize;

use crate::graph::{Network, ParamCount, ParamSpec};

#[derive(Debug, Serialize)]
pub struct Layer {
    pub name: String,
    pub op: &'static str,
    pub inputs: Vec<String>,
    /// Per-sample output shape (batch left out).
    pub output: Vec<usize>,
    pub params: usize,
}

#[derive(Debug, Serialize)]
pub struct Description {
    pub model: String,
    pub input: [usize; 3],
    pub init: crate::graph::Init,
    pub layers: Vec<Layer>,
    pub params: Vec<ParamSpec>,
    pub totals: ParamCount,
    pub total: usize,
    /// fp32 size of every stored value, in bytes.
    pub bytes_fp32: usize,
}

pub fn describe(g: &Network) -> Description {
    let layers = g
        .nodes
        .iter()
        .enumerate()
        .map(|(id, n)| Layer {
            name: n.name.clone(),
            op: n.op.kind(),
            inputs: n.inputs.iter().map(|&i| g.nodes[i].name.clone()).collect(),
            output: g.shape(id).clone(),
            params: g.node_params(id).iter().map(ParamSpec::numel).sum(),
        })
        .collect();
    let totals = g.param_count();
    Description {
        model: g.name.clone(),
        input: g.input_shape(),
        init: g.init,
        layers,
        params: g.params().to_vec(),
        totals,
        total: totals.total(),
        bytes_fp32: totals.total() * 4,
    }
}

/// `1234567` -> `1,234,567`.
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn dims(s: &[usize]) -> String {
    format!("[{}]", s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "))
}

impl std::fmt::Display for Description {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let w = self.layers.iter().map(|l| l.name.len()).max().unwrap_or(4).max(5);
        writeln!(f, "{}  input {}  init {:?}", self.model, dims(&self.input), self.init)?;
        writeln!(f, "\n{:<w$}  {:<13}  {:<18}  {:>12}", "layer", "op", "output", "params")?;
        for l in &self.layers {
            writeln!(f, "{:<w$}  {:<13}  {:<18}  {:>12}", l.name, l.op, dims(&l.output), thousands(l.params))?;
        }
        let pw = self.params.iter().map(|p| p.name.len()).max().unwrap_or(4).max(9);
        writeln!(f, "\n{:<pw$}  {:<20}  {:>12}  kind", "parameter", "shape", "values")?;
        for p in &self.params {
            let kind = format!("{:?}{}", p.kind, if p.trainable { "" } else { " (not trained)" });
            writeln!(f, "{:<pw$}  {:<20}  {:>12}  {kind}", p.name, dims(&p.shape), thousands(p.numel()))?;
        }
        let t = &self.totals;
        writeln!(f, "\nweights (conv/linear)  {:>14}", thousands(t.weights))?;
        writeln!(f, "BatchNorm gamma/beta   {:>14}", thousands(t.bn_affine))?;
        writeln!(f, "BatchNorm running      {:>14}", thousands(t.bn_stats))?;
        writeln!(f, "PReLU slopes           {:>14}", thousands(t.prelu))?;
        writeln!(f, "trainable              {:>14}", thousands(t.trainable))?;
        write!(f, "total                  {:>14}  ({:.1} MB in fp32)", thousands(self.total), self.bytes_fp32 as f64 / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(62_378_344), "62,378,344");
    }

    #[test]
    fn layer_params_add_up_to_the_total() {
        for m in crate::zoo::REGISTRY {
            let d = describe(&crate::zoo::build(m.name, None, None).unwrap());
            assert_eq!(d.layers.iter().map(|l| l.params).sum::<usize>(), d.total, "{}", m.name);
        }
        // each layer counts what its own node owns, also where node names nest (torchvision's paths)
        let d = describe(&crate::zoo::build("tv-resnet50", None, None).unwrap());
        let layer = |name: &str| d.layers.iter().find(|l| l.name == name).unwrap().params;
        assert_eq!((layer("layer1.0.downsample.0"), layer("layer1.0.downsample.1")), (256 * 64, 4 * 256));
        assert_eq!((layer("conv1"), layer("relu"), layer("classifier")), (64 * 3 * 49, 0, 2048 * 1000 + 1000));
    }
}
