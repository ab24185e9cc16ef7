//! Lowering a model graph and its weights to an ONNX `ModelProto`.
//!
//! Every op of the IR has one exact ONNX form; dropout (training only) is removed. The batch dimension of
//! the input and the outputs is symbolic (`N`). Initializers carry the graph's parameter names, so the
//! same name is used by the trainer's checkpoints and the ONNX file. The outputs are the class
//! probabilities (`probabilities`, a softmax of the logits) and, on request, the logits (`logits`); a
//! detector's are the TFOD outputs ([`crate::detect_tail`], [`crate::rcnn_export`]).
//!
//! With [`LowerOptions::fp16`] the initializers are float16 and every op computes in float16, while the
//! file's input and outputs stay float32: a `Cast` follows the input and the logits are cast back to
//! float32 before the final softmax, so the runtime contract (float32 in, float32 probabilities out)
//! is the same for both precisions. The softmax is computed in float32 on purpose: in float16 a
//! probability near 1 has a resolution of 2^-11 ≈ 5e-4 and the sum over many classes loses more.

use std::collections::BTreeMap;
use std::path::Path;

use models::graph::{Conv2d, GraphError, Network, Op};
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::tensor_shape_proto::Dimension;
use onnx_protobuf::{
    type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto, TypeProto, ValueInfoProto,
};
use protobuf::Message;

use crate::rcnn_export::Proposals;

/// ONNX opset written by default (supported by every ONNX Runtime of the last years).
pub const DEFAULT_OPSET: i64 = 17;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error("parameter '{name}': {reason}")]
    Weight { name: String, reason: String },
    #[error("node '{node}': {reason}")]
    Node { node: String, reason: String },
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
}

#[derive(Debug, Clone)]
pub struct LowerOptions {
    pub opset: i64,
    /// Also output the logits (before the softmax).
    pub logits: bool,
    /// `metadata_props` of the model.
    pub metadata: BTreeMap<String, String>,
    /// float16 weights and compute behind float32 input and outputs.
    pub fp16: bool,
}

impl Default for LowerOptions {
    fn default() -> Self {
        Self { opset: DEFAULT_OPSET, logits: false, metadata: BTreeMap::new(), fp16: false }
    }
}

/// fp32 weights by parameter name, with their shapes.
pub type Weights = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// Reads fp32 weights from a safetensors file (a trainer checkpoint; optimizer state is ignored).
pub fn read_safetensors(path: &Path) -> Result<Weights, ExportError> {
    let err = |reason: String| ExportError::File { path: path.display().to_string(), reason };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| err(format!("not a safetensors file: {e:?}")))?;
    let mut out = Weights::new();
    for (name, view) in st.tensors() {
        if name.starts_with("optim.") {
            continue;
        }
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(err(format!("tensor '{name}' is {:?}, expected F32", view.dtype())));
        }
        let data: Vec<f32> = view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        out.insert(name, (view.shape().to_vec(), data));
    }
    Ok(out)
}

pub(crate) fn attr_ints(name: &str, v: &[usize]) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INTS.into();
    a.ints = v.iter().map(|&x| x as i64).collect();
    a
}

pub(crate) fn attr_int(name: &str, v: i64) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INT.into();
    a.i = v;
    a
}

pub(crate) fn attr_float(name: &str, v: f64) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::FLOAT.into();
    a.f = v as f32;
    a
}

/// An initializer holding `data` as float32, or as float16 when `fp16` (refused where a value does not
/// fit float16's range, since it would become infinite).
pub(crate) fn tensor(name: &str, dims: &[usize], data: &[f32], fp16: bool) -> Result<TensorProto, ExportError> {
    let mut t = TensorProto::new();
    t.name = name.into();
    t.dims = dims.iter().map(|&d| d as i64).collect();
    if fp16 {
        t.data_type = DataType::FLOAT16 as i32;
        let mut raw = Vec::with_capacity(data.len() * 2);
        for &v in data {
            let h = crate::fp16::from_f32(v);
            if h & 0x7c00 == 0x7c00 {
                return Err(ExportError::Weight { name: name.into(), reason: format!("value {v:e} is beyond float16's range (±{})", crate::fp16::MAX) });
            }
            raw.extend_from_slice(&h.to_le_bytes());
        }
        t.raw_data = raw;
    } else {
        t.data_type = DataType::FLOAT as i32;
        t.raw_data = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    }
    Ok(t)
}

/// An int64 initializer (a Reshape target).
pub(crate) fn int64_tensor(name: &str, data: &[i64]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.into();
    t.dims = vec![data.len() as i64];
    t.data_type = DataType::INT64 as i32;
    t.raw_data = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    t
}

pub(crate) fn attr_type(name: &str, to: DataType) -> AttributeProto {
    attr_int(name, to as i64)
}

/// A float tensor port; each dimension is a size (`Ok`) or a symbolic name (`Err`, e.g. `"N"`).
pub(crate) fn value_info(name: &str, dims: &[Result<usize, &str>]) -> ValueInfoProto {
    let mut t = type_proto::Tensor::new();
    t.elem_type = DataType::FLOAT as i32;
    for d in dims {
        let mut dim = Dimension::new();
        match d {
            Ok(v) => dim.set_dim_value(*v as i64),
            Err(p) => dim.set_dim_param(p.to_string()),
        }
        t.shape.mut_or_insert_default().dim.push(dim);
    }
    let mut ty = TypeProto::new();
    ty.value = Some(type_proto::Value::TensorType(t));
    let mut v = ValueInfoProto::new();
    v.name = name.into();
    v.type_ = Some(ty).into();
    v
}

pub(crate) struct Builder {
    pub(crate) nodes: Vec<NodeProto>,
    pub(crate) initializers: Vec<TensorProto>,
}

impl Builder {
    /// A node with several outputs (TopK's values and indices).
    pub(crate) fn node_multi(&mut self, op: &str, name: &str, inputs: &[String], outputs: &[&str], attrs: Vec<AttributeProto>) {
        self.node(op, name, inputs, outputs[0], attrs);
        let n = self.nodes.last_mut().expect("just added");
        n.output = outputs.iter().map(|o| o.to_string()).collect();
    }

    pub(crate) fn node(&mut self, op: &str, name: &str, inputs: &[String], output: &str, attrs: Vec<AttributeProto>) {
        let mut n = NodeProto::new();
        n.op_type = op.into();
        n.name = name.into();
        n.input = inputs.to_vec();
        n.output = vec![output.to_string()];
        n.attribute = attrs;
        self.nodes.push(n);
    }
}

/// The ONNX form of `graph` with `weights`: a classifier's probabilities, or for a detector (a graph
/// with a [`models::detect::DetectorSpec`]) the detections ([`crate::detect_tail`]).
pub fn lower(graph: &Network, weights: &Weights, o: &LowerOptions) -> Result<ModelProto, ExportError> {
    let mut b = Builder { nodes: vec![], initializers: vec![] };
    let (value, proposals) = lower_body(graph, weights, o, &mut b)?;
    if let (Some(spec), Some(props)) = (&graph.detector, &proposals) {
        let outputs = crate::rcnn_export::append(graph, spec, &value, props, o, &mut b)?;
        return Ok(model(graph, b, outputs, o));
    }
    if let Some(spec) = &graph.detector {
        let outputs = crate::detect_tail::append(graph, spec, &value, o, &mut b)?;
        return Ok(model(graph, b, outputs, o));
    }
    let shapes = graph.shapes();
    let logits = value[graph.output].clone();
    if shapes[graph.output].len() != 1 {
        return Err(ExportError::Node {
            node: graph.nodes[graph.output].name.clone(),
            reason: format!("the output must be [classes], it is {:?}", shapes[graph.output]),
        });
    }
    let classes = shapes[graph.output][0];
    let logits = if o.fp16 {
        b.node("Cast", "logits_fp32", &[logits], "logits_fp32", vec![attr_type("to", DataType::FLOAT)]);
        "logits_fp32".to_string()
    } else {
        logits
    };
    b.node("Softmax", "probabilities", std::slice::from_ref(&logits), "probabilities", vec![attr_int("axis", 1)]);
    let mut outputs = vec![value_info("probabilities", &[Err("N"), Ok(classes)])];
    if o.logits {
        b.node("Identity", "logits", &[logits], "logits", vec![]);
        outputs.push(value_info("logits", &[Err("N"), Ok(classes)]));
    }
    Ok(model(graph, b, outputs, o))
}

/// The model of the nodes and initializers in `b`, with the graph's input and these outputs.
fn model(graph: &Network, b: Builder, outputs: Vec<ValueInfoProto>, o: &LowerOptions) -> ModelProto {
    let mut g = GraphProto::new();
    g.name = graph.name.clone();
    let [c, h, w] = graph.input_shape();
    g.input.push(value_info("input", &[Err("N"), Ok(c), Ok(h), Ok(w)]));
    g.output = outputs;
    g.node = b.nodes;
    g.initializer = b.initializers;
    let mut m = ModelProto::new();
    m.ir_version = 8;
    m.producer_name = "dlcv-exporter".into();
    m.producer_version = models::VERSION.into();
    let mut opset = OperatorSetIdProto::new();
    opset.version = o.opset;
    m.opset_import.push(opset);
    m.graph = Some(g).into();
    for (k, v) in &o.metadata {
        set_metadata(&mut m, k, v);
    }
    m
}

/// Every node of `graph` into `b`; returns the ONNX value holding each node's output, and a Faster
/// R-CNN's proposals (written where its RoiAlign reads them).
fn lower_body(graph: &Network, weights: &Weights, o: &LowerOptions, b: &mut Builder) -> Result<(Vec<String>, Option<Proposals>), ExportError> {
    let shapes = graph.shapes();
    let mut used = std::collections::BTreeSet::new();
    // Parameter `suffix` of node `id` as an initializer (reshaped to `shape` when given).
    let mut param = |b: &mut Builder, id: usize, suffix: &str, shape: Option<Vec<usize>>| -> Result<String, ExportError> {
        let name = format!("{}.{suffix}", graph.nodes[id].name);
        let spec = graph
            .node_params(id)
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| ExportError::Weight { name: name.clone(), reason: "not a parameter of the graph".into() })?;
        let (dims, data) = weights.get(&name).ok_or_else(|| ExportError::Weight { name: name.clone(), reason: "missing from the weights".into() })?;
        if *dims != spec.shape {
            return Err(ExportError::Weight { name, reason: format!("shape {dims:?}, the graph expects {:?}", spec.shape) });
        }
        if data.iter().any(|v| !v.is_finite()) {
            return Err(ExportError::Weight { name, reason: "holds NaN or infinite values".into() });
        }
        if used.insert(name.clone()) {
            b.initializers.push(tensor(&name, &shape.unwrap_or_else(|| dims.clone()), data, o.fp16)?);
        }
        Ok(name)
    };
    // the ONNX value holding each node's output (dropout passes its input through)
    let mut value: Vec<String> = Vec::with_capacity(graph.nodes.len());
    let mut proposals = None;
    for (id, node) in graph.nodes.iter().enumerate() {
        let ins: Vec<String> = node.inputs.iter().map(|&i| value[i].clone()).collect();
        let out = node.name.clone();
        let nm = &node.name;
        let in_shape = node.inputs.first().map(|&i| shapes[i].clone()).unwrap_or_default();
        match &node.op {
            Op::Input { .. } => {
                if o.fp16 {
                    b.node("Cast", "input_fp16", &["input".to_string()], "input_fp16", vec![attr_type("to", DataType::FLOAT16)]);
                    value.push("input_fp16".to_string());
                } else {
                    value.push("input".to_string());
                }
                continue;
            }
            Op::Conv2d(Conv2d { kernel, stride, padding, dilation, groups, bias, .. }) => {
                let mut inputs = vec![ins[0].clone(), param(b, id, "weight", None)?];
                if *bias {
                    inputs.push(param(b, id, "bias", None)?);
                }
                let pads = [padding[0], padding[1], padding[0], padding[1]];
                let attrs = vec![
                    attr_ints("kernel_shape", kernel),
                    attr_ints("strides", stride),
                    attr_ints("pads", &pads),
                    attr_ints("dilations", dilation),
                    attr_int("group", *groups as i64),
                ];
                b.node("Conv", nm, &inputs, &out, attrs);
            }
            Op::BatchNorm { eps, momentum, .. } => {
                let inputs = vec![
                    ins[0].clone(),
                    param(b, id, "weight", None)?,
                    param(b, id, "bias", None)?,
                    param(b, id, "running_mean", None)?,
                    param(b, id, "running_var", None)?,
                ];
                // ONNX's momentum weighs the running statistic (inference ignores it)
                b.node("BatchNormalization", nm, &inputs, &out, vec![attr_float("epsilon", *eps), attr_float("momentum", 1.0 - momentum)]);
            }
            Op::Relu => b.node("Relu", nm, &ins, &out, vec![]),
            Op::Elu { alpha } => b.node("Elu", nm, &ins, &out, vec![attr_float("alpha", *alpha)]),
            Op::LeakyRelu { slope } => b.node("LeakyRelu", nm, &ins, &out, vec![attr_float("alpha", *slope)]),
            Op::Prelu { .. } => {
                // one slope per channel, broadcast over H and W
                let c = in_shape.first().copied().unwrap_or(0);
                let shape = if in_shape.len() == 3 { vec![c, 1, 1] } else { vec![c] };
                let slope = param(b, id, "weight", Some(shape))?;
                b.node("PRelu", nm, &[ins[0].clone(), slope], &out, vec![]);
            }
            Op::Lrn { size, alpha, beta, k } => b.node(
                "LRN",
                nm,
                &ins,
                &out,
                vec![attr_int("size", *size as i64), attr_float("alpha", *alpha), attr_float("beta", *beta), attr_float("bias", *k)],
            ),
            Op::MaxPool { kernel, stride, padding, ceil_mode } | Op::AvgPool { kernel, stride, padding, ceil_mode } => {
                let pads = [padding[0], padding[1], padding[0], padding[1]];
                let mut attrs =
                    vec![attr_ints("kernel_shape", kernel), attr_ints("strides", stride), attr_ints("pads", &pads), attr_int("ceil_mode", *ceil_mode as i64)];
                let op = if matches!(node.op, Op::MaxPool { .. }) {
                    "MaxPool"
                } else {
                    attrs.push(attr_int("count_include_pad", 0));
                    "AveragePool"
                };
                b.node(op, nm, &ins, &out, attrs);
            }
            Op::GlobalAvgPool => b.node("GlobalAveragePool", nm, &ins, &out, vec![]),
            Op::Linear { bias, .. } => {
                let mut inputs = vec![ins[0].clone(), param(b, id, "weight", None)?];
                if *bias {
                    inputs.push(param(b, id, "bias", None)?);
                }
                b.node("Gemm", nm, &inputs, &out, vec![attr_int("transB", 1)]);
            }
            Op::Dropout { .. } => {
                // training only: removed, its readers read its input
                value.push(ins[0].clone());
                continue;
            }
            Op::Flatten => b.node("Flatten", nm, &ins, &out, vec![attr_int("axis", 1)]),
            Op::Concat => b.node("Concat", nm, &ins, &out, vec![attr_int("axis", 1)]),
            Op::Add => b.node("Sum", nm, &ins, &out, vec![]),
            Op::Softmax => b.node("Softmax", nm, &ins, &out, vec![attr_int("axis", -1)]),
            Op::Clip { min, max } => {
                // opset 11+: the bounds are inputs, scalars of the compute type
                let (lo, hi) = (format!("{nm}.min"), format!("{nm}.max"));
                b.initializers.push(tensor(&lo, &[], &[*min as f32], o.fp16)?);
                b.initializers.push(tensor(&hi, &[], &[*max as f32], o.fp16)?);
                b.node("Clip", nm, &[ins[0].clone(), lo, hi], &out, vec![]);
            }
            Op::AnchorRows { columns } => {
                // [N, A·K, H, W] → [N, H, W, A·K] → [N, H·W·A, K]
                let t = format!("{nm}.nhwc");
                b.node("Transpose", &t, &ins, &t, vec![attr_ints("perm", &[0, 2, 3, 1])]);
                let shape = format!("{nm}.shape");
                b.initializers.push(int64_tensor(&shape, &[0, -1, *columns as i64]));
                b.node("Reshape", nm, &[t, shape], &out, vec![]);
            }
            Op::ConcatRows => b.node("Concat", nm, &ins, &out, vec![attr_int("axis", 1)]),
            Op::RoiAlign { .. } => {
                let spec = graph
                    .detector
                    .as_ref()
                    .ok_or_else(|| ExportError::Node { node: nm.clone(), reason: "a RoiAlign in a graph without a detector spec".into() })?;
                if o.fp16 {
                    // float16 moves objectness and IoUs enough to change which proposals survive NMS,
                    // and the second stage then sees other regions: no per-stage check would hold
                    return Err(ExportError::Node { node: nm.clone(), reason: "a Faster R-CNN lowers in float32 only (drop --fp16)".into() });
                }
                let p = crate::rcnn_export::proposals(graph, spec, &value, o, b)?;
                crate::rcnn_export::roi_align(&node.op, &ins[0], &p, o, &out, b)?;
                proposals = Some(p);
            }
            Op::L2Norm { .. } => {
                // x / max(‖x‖₂ over channels, 1e-12) · scale[c]; ReduceL2's axes are an input from opset 18
                let norm = format!("{nm}.norm");
                if o.opset >= 18 {
                    let axes = format!("{nm}.axes");
                    b.initializers.push(int64_tensor(&axes, &[1]));
                    b.node("ReduceL2", &norm, &[ins[0].clone(), axes], &norm, vec![attr_int("keepdims", 1)]);
                } else {
                    b.node("ReduceL2", &norm, &ins, &norm, vec![attr_ints("axes", &[1]), attr_int("keepdims", 1)]);
                }
                let eps = format!("{nm}.eps");
                b.initializers.push(tensor(&eps, &[], &[1e-12], o.fp16)?);
                let (clamped, unit) = (format!("{nm}.clamped"), format!("{nm}.unit"));
                b.node("Max", &clamped, &[norm, eps], &clamped, vec![]);
                b.node("Div", &unit, &[ins[0].clone(), clamped], &unit, vec![]);
                let c = in_shape.first().copied().unwrap_or(0);
                let scale = param(b, id, "weight", Some(vec![c, 1, 1]))?;
                b.node("Mul", nm, &[unit, scale], &out, vec![]);
            }
        }
        value.push(out);
    }
    Ok((value, proposals))
}

/// Writes a model to `path`.
pub fn save(m: &ModelProto, path: &Path) -> Result<(), ExportError> {
    let bytes = m.write_to_bytes().map_err(|e| ExportError::File { path: path.display().to_string(), reason: e.to_string() })?;
    std::fs::write(path, bytes).map_err(|e| ExportError::File { path: path.display().to_string(), reason: e.to_string() })
}

/// Sets (or adds) one `metadata_props` entry.
pub fn set_metadata(m: &mut ModelProto, key: &str, value: &str) {
    match m.metadata_props.iter_mut().find(|e| e.key == key) {
        Some(e) => e.value = value.into(),
        None => {
            let mut e = StringStringEntryProto::new();
            e.key = key.into();
            e.value = value.into();
            m.metadata_props.push(e);
        }
    }
}

/// Lowers and writes `path`.
pub fn write(graph: &Network, weights: &Weights, o: &LowerOptions, path: &Path) -> Result<(), ExportError> {
    save(&lower(graph, weights, o)?, path)
}
