//! `exporter inspect`: what an ONNX file holds (inputs, outputs, opsets, operators, parameters and the
//! metadata that our exports carry), read straight from the protobuf, without ONNX Runtime.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use onnx_protobuf::{tensor_proto::DataType, type_proto, ModelProto, ValueInfoProto};
use protobuf::{Enum, Message};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not an ONNX model ({source})")]
    Decode { path: PathBuf, source: protobuf::Error },
    #[error("{path}: the model has no graph")]
    NoGraph { path: PathBuf },
}

/// One graph input or output.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Port {
    pub name: String,
    /// ONNX element type (`FLOAT`, `INT64`, ...), or what the value is when it is not a tensor.
    pub elem_type: String,
    /// Each dimension: a number, or its symbolic name (`N`), or `?` when unknown.
    pub dims: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub ir_version: i64,
    pub producer: String,
    /// (domain, version); the default domain is written "ai.onnx".
    pub opsets: Vec<(String, i64)>,
    pub graph_name: String,
    pub inputs: Vec<Port>,
    pub outputs: Vec<Port>,
    pub nodes: usize,
    /// Node count per operator type.
    pub operators: BTreeMap<String, usize>,
    pub initializers: usize,
    /// Number of scalar values held in initializers.
    pub parameters: u64,
    pub metadata: BTreeMap<String, String>,
}

impl Summary {
    /// What the file says about itself ([`ModelMeta`]); `Ok(None)` for a model made elsewhere.
    pub fn meta(&self) -> Result<Option<models::meta::ModelMeta>, models::meta::MetaError> {
        models::meta::ModelMeta::from_props(&self.metadata)
    }
}

fn port(v: &ValueInfoProto) -> Port {
    let (elem_type, dims) = match &v.type_.value {
        Some(type_proto::Value::TensorType(t)) => {
            let elem = DataType::from_i32(t.elem_type).map(|d| format!("{d:?}")).unwrap_or_else(|| format!("type {}", t.elem_type));
            let dims = t
                .shape
                .dim
                .iter()
                .map(|d| {
                    if d.has_dim_value() {
                        d.dim_value().to_string()
                    } else if !d.dim_param().is_empty() {
                        d.dim_param().to_string()
                    } else {
                        "?".to_string()
                    }
                })
                .collect();
            (elem, dims)
        }
        Some(other) => (format!("{other:?}").split('(').next().unwrap_or("?").to_string(), vec![]),
        None => ("?".to_string(), vec![]),
    };
    Port { name: v.name.clone(), elem_type, dims }
}

/// Summarises an already decoded model.
pub fn summarize(m: &ModelProto) -> Option<Summary> {
    let g = m.graph.as_ref()?;
    let initializer_names: std::collections::HashSet<&str> = g.initializer.iter().map(|t| t.name.as_str()).collect();
    let mut operators = BTreeMap::new();
    for n in &g.node {
        *operators.entry(n.op_type.clone()).or_insert(0) += 1;
    }
    Some(Summary {
        ir_version: m.ir_version,
        producer: format!("{} {}", m.producer_name, m.producer_version).trim().to_string(),
        opsets: m.opset_import.iter().map(|o| (if o.domain.is_empty() { "ai.onnx".into() } else { o.domain.clone() }, o.version)).collect(),
        graph_name: g.name.clone(),
        // Older exporters list initializers among the inputs too; those are not inputs a user feeds.
        inputs: g.input.iter().filter(|i| !initializer_names.contains(i.name.as_str())).map(port).collect(),
        outputs: g.output.iter().map(port).collect(),
        nodes: g.node.len(),
        operators,
        initializers: g.initializer.len(),
        parameters: g.initializer.iter().map(|t| t.dims.iter().product::<i64>().max(0) as u64).sum(),
        metadata: m.metadata_props.iter().map(|p| (p.key.clone(), p.value.clone())).collect(),
    })
}

/// Reads and summarises an ONNX file; errors name the file.
pub fn inspect(path: &Path) -> Result<Summary, InspectError> {
    let bytes = std::fs::read(path).map_err(|source| InspectError::Io { path: path.into(), source })?;
    let model = ModelProto::parse_from_bytes(&bytes).map_err(|source| InspectError::Decode { path: path.into(), source })?;
    summarize(&model).ok_or_else(|| InspectError::NoGraph { path: path.into() })
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let opsets: Vec<String> = self.opsets.iter().map(|(d, v)| format!("{d} {v}")).collect();
        writeln!(f, "producer     {} (IR {}, opset {})", self.producer, self.ir_version, opsets.join(", "))?;
        for (kind, ports) in [("input ", &self.inputs), ("output", &self.outputs)] {
            for p in ports {
                writeln!(f, "{kind}       {} {} [{}]", p.name, p.elem_type, p.dims.join(", "))?;
            }
        }
        let ops: Vec<String> = self.operators.iter().map(|(k, v)| format!("{k} x{v}")).collect();
        writeln!(f, "nodes        {} ({})", self.nodes, ops.join(", "))?;
        write!(f, "parameters   {} in {} initializers", self.parameters, self.initializers)?;
        if self.metadata.is_empty() {
            write!(f, "\nmetadata     none")?;
        }
        for (k, v) in &self.metadata {
            write!(f, "\nmetadata     {k} = {v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use onnx_protobuf::{GraphProto, NodeProto, StringStringEntryProto, TensorProto};

    #[test]
    fn summarises_a_model_written_in_memory_and_round_tripped() {
        let mut g = GraphProto::new();
        g.name = "tiny".into();
        g.input.push(crate::lower::value_info("x", &[Err("N"), Ok(3)]));
        g.input.push(crate::lower::value_info("w", &[Ok(2), Ok(3)])); // listed as input and initializer: not a user input
        g.output.push(crate::lower::value_info("y", &[Err("N"), Ok(2)]));
        let mut w = TensorProto::new();
        w.name = "w".into();
        w.dims = vec![2, 3];
        g.initializer.push(w);
        for op in ["MatMul", "Relu", "Relu"] {
            let mut n = NodeProto::new();
            n.op_type = op.into();
            g.node.push(n);
        }
        let mut m = ModelProto::new();
        m.ir_version = 8;
        m.producer_name = "test".into();
        m.graph = Some(g).into();
        let mut kv = StringStringEntryProto::new();
        kv.key = "labels".into();
        kv.value = "a,b".into();
        m.metadata_props.push(kv);

        let bytes = m.write_to_bytes().unwrap();
        let s = summarize(&ModelProto::parse_from_bytes(&bytes).unwrap()).unwrap();
        assert_eq!(s.inputs, vec![Port { name: "x".into(), elem_type: "FLOAT".into(), dims: vec!["N".into(), "3".into()] }]);
        assert_eq!(s.outputs[0].dims, vec!["N", "2"]);
        assert_eq!(s.parameters, 6);
        assert_eq!(s.operators.get("Relu"), Some(&2));
        assert_eq!(s.metadata.get("labels").map(String::as_str), Some("a,b"));
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("garbage.onnx");
        std::fs::write(&bad, b"\xff\xff\xff not protobuf").unwrap();
        let err = inspect(&bad).unwrap_err().to_string();
        assert!(err.contains("garbage.onnx") && err.contains("not an ONNX model"), "{err}");
        let err = inspect(&dir.path().join("missing.onnx")).unwrap_err().to_string();
        assert!(err.contains("missing.onnx"), "{err}");
    }
}
