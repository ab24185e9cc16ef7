//! A detector's ONNX tail: from the heads' class logits `[N, P, C]` and box codes `[N, P, 4]` to the
//! TFOD output contract the book's scripts read, with no Loop or If and a dynamic batch:
//!
//! - `detection_boxes [N, M, 4]`: `[x0, y0, x1, y1]` in pixels of the network input (the spec's
//!   `box_format`, recorded in the metadata);
//! - `detection_scores [N, M]`, `detection_classes [N, M]` (float, 1-based: 0 is the background and
//!   never reported), `num_detections [N]` (float); rows past `num_detections` are zeros.
//!
//! It computes what [`models::detect::postprocess`] computes, in the same f32 operations: softmax over
//! the classes, the codes divided by the coder's weights, the size codes clamped, decoded against the
//! priors (an initializer), clipped to the image; `NonMaxSuppression` per class with the spec's
//! thresholds and per-class cap; then the best M of each image over all classes with `TopK` on a
//! dense `[N, S + M]` score matrix (each selected box scored in its own image's row, −1 elsewhere and
//! in M padding columns), so that equal scores keep the class-then-NMS order, as the reference does.

use models::detect::DetectorSpec;
use models::graph::Network;
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::ValueInfoProto;

use crate::lower::{attr_int, attr_ints, attr_type, int64_tensor, tensor, value_info, Builder, ExportError, LowerOptions};

/// The names of the four outputs, in the TFOD contract.
pub const OUTPUTS: [&str; 4] = ["detection_boxes", "detection_scores", "detection_classes", "num_detections"];

/// The raw head outputs written beside the detections with `--logits` (for parity checks).
pub const RAW_OUTPUTS: [&str; 2] = ["raw_scores", "raw_box_codes"];

/// Appends the tail to `b` after the graph's nodes (`value`: each node's ONNX value); returns the
/// graph outputs.
pub(crate) fn append(graph: &Network, spec: &DetectorSpec, value: &[String], o: &LowerOptions, b: &mut Builder) -> Result<Vec<ValueInfoProto>, ExportError> {
    let err = |reason: String| ExportError::Node { node: graph.nodes[graph.output].name.clone(), reason };
    let codes_node = graph.extra_outputs.iter().find(|x| x.name == spec.codes_output).ok_or_else(|| err(format!("no '{}' output", spec.codes_output)))?.node;
    let [p, c] = graph.shape(graph.output)[..] else { return Err(err(format!("scores of shape {:?}", graph.shape(graph.output)))) };
    let priors = spec.prior_boxes().map_err(|e| err(e.to_string()))?;
    let m = spec.postprocess.max_detections;
    let f32s = |b: &mut Builder, name: &str, dims: &[usize], data: &[f32]| -> Result<String, ExportError> {
        b.initializers.push(tensor(name, dims, data, false)?);
        Ok(name.to_string())
    };
    let i64s = |b: &mut Builder, name: &str, data: &[i64]| -> String {
        b.initializers.push(int64_tensor(name, data));
        name.to_string()
    };
    let s = |x: &str| x.to_string();
    // float32 heads (an fp16 file computes the network in float16 and the tail in float32)
    let (mut scores, mut codes) = (value[graph.output].clone(), value[codes_node].clone());
    if o.fp16 {
        b.node("Cast", "tail.scores_fp32", &[scores], "tail.scores_fp32", vec![attr_type("to", DataType::FLOAT)]);
        b.node("Cast", "tail.codes_fp32", &[codes], "tail.codes_fp32", vec![attr_type("to", DataType::FLOAT)]);
        (scores, codes) = (s("tail.scores_fp32"), s("tail.codes_fp32"));
    }
    let mut outputs = vec![];
    if o.logits {
        b.node("Identity", RAW_OUTPUTS[0], &[scores.clone()], RAW_OUTPUTS[0], vec![]);
        b.node("Identity", RAW_OUTPUTS[1], &[codes.clone()], RAW_OUTPUTS[1], vec![]);
        outputs.push(value_info(RAW_OUTPUTS[0], &[Err("N"), Ok(p), Ok(c)]));
        outputs.push(value_info(RAW_OUTPUTS[1], &[Err("N"), Ok(p), Ok(4)]));
    }
    // class probabilities, background dropped, as [N, C - 1, P] for NonMaxSuppression
    b.node("Softmax", "tail.probs", &[scores], "tail.probs", vec![attr_int("axis", -1)]);
    let (one, cls_end, axis2) = (i64s(b, "tail.one", &[1]), i64s(b, "tail.classes", &[c as i64]), i64s(b, "tail.axis2", &[2]));
    b.node("Slice", "tail.fg", &[s("tail.probs"), one.clone(), cls_end, axis2.clone()], "tail.fg", vec![]);
    b.node("Transpose", "tail.class_scores", &[s("tail.fg")], "tail.class_scores", vec![attr_ints("perm", &[0, 2, 1])]);
    // decode: codes / weights, size codes clamped, against the priors' centres and sizes
    let wts = f32s(b, "tail.coder_weights", &[4], &spec.coder.weights)?;
    b.node("Div", "tail.d", &[codes, wts], "tail.d", vec![]);
    let (zero, two, four) = (i64s(b, "tail.zero", &[0]), i64s(b, "tail.two", &[2]), i64s(b, "tail.four", &[4]));
    b.node("Slice", "tail.dxy", &[s("tail.d"), zero.clone(), two.clone(), axis2.clone()], "tail.dxy", vec![]);
    b.node("Slice", "tail.dwh_raw", &[s("tail.d"), two, four, axis2.clone()], "tail.dwh_raw", vec![]);
    let clip = f32s(b, "tail.size_clip", &[], &[spec.coder.clip])?;
    b.node("Min", "tail.dwh", &[s("tail.dwh_raw"), clip], "tail.dwh", vec![]);
    let (mut ctr, mut wh) = (Vec::with_capacity(2 * p), Vec::with_capacity(2 * p));
    for pr in &priors {
        let (pw, ph) = (pr[2] - pr[0], pr[3] - pr[1]);
        ctr.extend([pr[0] + 0.5 * pw, pr[1] + 0.5 * ph]);
        wh.extend([pw, ph]);
    }
    let prior_ctr = f32s(b, "priors.centres", &[p, 2], &ctr)?;
    let prior_wh = f32s(b, "priors.sizes", &[p, 2], &wh)?;
    b.node("Mul", "tail.offset", &[s("tail.dxy"), prior_wh.clone()], "tail.offset", vec![]);
    b.node("Add", "tail.ctr", &[s("tail.offset"), prior_ctr], "tail.ctr", vec![]);
    b.node("Exp", "tail.scale", &[s("tail.dwh")], "tail.scale", vec![]);
    b.node("Mul", "tail.wh", &[s("tail.scale"), prior_wh], "tail.wh", vec![]);
    let half = f32s(b, "tail.half", &[], &[0.5])?;
    b.node("Mul", "tail.half_wh", &[half, s("tail.wh")], "tail.half_wh", vec![]);
    b.node("Sub", "tail.lo", &[s("tail.ctr"), s("tail.half_wh")], "tail.lo", vec![]);
    b.node("Add", "tail.hi", &[s("tail.ctr"), s("tail.half_wh")], "tail.hi", vec![]);
    b.node("Concat", "tail.corners", &[s("tail.lo"), s("tail.hi")], "tail.corners", vec![attr_int("axis", 2)]);
    let (h, w) = (spec.image[0] as f32, spec.image[1] as f32);
    let limit = f32s(b, "tail.image_limit", &[4], &[w, h, w, h])?;
    let fzero = f32s(b, "tail.fzero", &[], &[0.0])?;
    b.node("Min", "tail.clipped_hi", &[s("tail.corners"), limit], "tail.clipped_hi", vec![]);
    b.node("Max", "tail.boxes", &[s("tail.clipped_hi"), fzero.clone()], "tail.boxes", vec![]);
    // per-class NMS: [S, 3] rows of (image, class - 1, prior)
    let pp = &spec.postprocess;
    let cap = i64s(b, "tail.max_per_class", &[pp.max_per_class as i64]);
    let iou = f32s(b, "tail.iou_threshold", &[1], &[pp.iou_threshold])?;
    let thr = f32s(b, "tail.score_threshold", &[1], &[pp.score_threshold])?;
    b.node("NonMaxSuppression", "tail.nms", &[s("tail.boxes"), s("tail.class_scores"), cap, iou, thr], "tail.selected", vec![attr_int("center_point_box", 0)]);
    for (k, name) in ["tail.sel_image", "tail.sel_class", "tail.sel_prior"].iter().enumerate() {
        let at = i64s(b, &format!("{name}.index"), &[k as i64]);
        b.node("Gather", name, &[s("tail.selected"), at], &format!("{name}.col"), vec![attr_int("axis", 1)]);
        b.node("Squeeze", &format!("{name}.squeeze"), &[format!("{name}.col"), one.clone()], name, vec![]);
    }
    b.node("GatherND", "tail.sel_scores", &[s("tail.class_scores"), s("tail.selected")], "tail.sel_scores", vec![]);
    b.node("Unsqueeze", "tail.sel_image_col", &[s("tail.sel_image"), one.clone()], "tail.sel_image_col", vec![]);
    b.node("Unsqueeze", "tail.sel_prior_col", &[s("tail.sel_prior"), one.clone()], "tail.sel_prior_col", vec![]);
    b.node("Concat", "tail.sel_at", &[s("tail.sel_image_col"), s("tail.sel_prior_col")], "tail.sel_at", vec![attr_int("axis", 1)]);
    b.node("GatherND", "tail.sel_boxes", &[s("tail.boxes"), s("tail.sel_at")], "tail.sel_boxes", vec![]);
    // the dense [N, S + M] score matrix: row n holds image n's selections, -1 elsewhere and in padding
    b.node("Shape", "tail.input_shape", &[s("input")], "tail.input_shape", vec![]);
    b.node("Slice", "tail.n1", &[s("tail.input_shape"), zero.clone(), one.clone()], "tail.n1", vec![]);
    b.node("Squeeze", "tail.n", &[s("tail.n1")], "tail.n", vec![]);
    let (izero, ione) = (i64s(b, "tail.izero", &[0]), i64s(b, "tail.ione", &[1]));
    // Range takes scalars
    b.initializers.iter_mut().filter(|t| t.name == izero || t.name == ione).for_each(|t| t.dims.clear());
    b.node("Range", "tail.images", &[izero, s("tail.n"), ione], "tail.images", vec![]);
    b.node("Unsqueeze", "tail.images_col", &[s("tail.images"), one.clone()], "tail.images_col", vec![]);
    b.node("Unsqueeze", "tail.sel_image_row", &[s("tail.sel_image"), zero.clone()], "tail.sel_image_row", vec![]);
    b.node("Equal", "tail.mine", &[s("tail.images_col"), s("tail.sel_image_row")], "tail.mine", vec![]);
    b.node("Unsqueeze", "tail.sel_scores_row", &[s("tail.sel_scores"), zero.clone()], "tail.sel_scores_row", vec![]);
    let minus = f32s(b, "tail.minus_one", &[], &[-1.0])?;
    b.node("Where", "tail.dense", &[s("tail.mine"), s("tail.sel_scores_row"), minus.clone()], "tail.dense", vec![]);
    let m_dim = i64s(b, "tail.m", &[m as i64]);
    b.node("Concat", "tail.pad_shape", &[s("tail.n1"), m_dim.clone()], "tail.pad_shape", vec![attr_int("axis", 0)]);
    b.node("Expand", "tail.pad", &[minus, s("tail.pad_shape")], "tail.pad", vec![]);
    b.node("Concat", "tail.padded", &[s("tail.dense"), s("tail.pad")], "tail.padded", vec![attr_int("axis", 1)]);
    b.node_multi(
        "TopK",
        "tail.topk",
        &[s("tail.padded"), m_dim],
        &["tail.top_scores", "tail.top_at"],
        vec![attr_int("axis", 1), attr_int("largest", 1), attr_int("sorted", 1)],
    );
    let minus_half = f32s(b, "tail.minus_half", &[], &[-0.5])?;
    b.node("Greater", "tail.valid", &[s("tail.top_scores"), minus_half], "tail.valid", vec![]);
    // what each of the best M is: its box and class (1-based, float), zeros for padding
    let zero_boxes = f32s(b, "tail.zero_boxes", &[m, 4], &vec![0.0; m * 4])?;
    let zero_classes = f32s(b, "tail.zero_classes", &[m], &vec![0.0; m])?;
    b.node("Concat", "tail.all_boxes", &[s("tail.sel_boxes"), zero_boxes], "tail.all_boxes", vec![attr_int("axis", 0)]);
    b.node("Cast", "tail.sel_class_f", &[s("tail.sel_class")], "tail.sel_class_f", vec![attr_type("to", DataType::FLOAT)]);
    let fone = f32s(b, "tail.fone", &[], &[1.0])?;
    b.node("Add", "tail.sel_class_1", &[s("tail.sel_class_f"), fone], "tail.sel_class_1", vec![]);
    b.node("Concat", "tail.all_classes", &[s("tail.sel_class_1"), zero_classes], "tail.all_classes", vec![attr_int("axis", 0)]);
    b.node("Gather", "tail.top_boxes", &[s("tail.all_boxes"), s("tail.top_at")], "tail.top_boxes", vec![attr_int("axis", 0)]);
    b.node("Gather", "tail.top_classes", &[s("tail.all_classes"), s("tail.top_at")], "tail.top_classes", vec![attr_int("axis", 0)]);
    b.node("Unsqueeze", "tail.valid_col", &[s("tail.valid"), axis2], "tail.valid_col", vec![]);
    b.node("Where", OUTPUTS[0], &[s("tail.valid_col"), s("tail.top_boxes"), fzero.clone()], OUTPUTS[0], vec![]);
    b.node("Where", OUTPUTS[1], &[s("tail.valid"), s("tail.top_scores"), fzero.clone()], OUTPUTS[1], vec![]);
    b.node("Where", OUTPUTS[2], &[s("tail.valid"), s("tail.top_classes"), fzero], OUTPUTS[2], vec![]);
    b.node("Cast", "tail.valid_f", &[s("tail.valid")], "tail.valid_f", vec![attr_type("to", DataType::FLOAT)]);
    b.node("ReduceSum", OUTPUTS[3], &[s("tail.valid_f"), one], OUTPUTS[3], vec![attr_int("keepdims", 0)]);
    outputs.push(value_info(OUTPUTS[0], &[Err("N"), Ok(m), Ok(4)]));
    outputs.push(value_info(OUTPUTS[1], &[Err("N"), Ok(m)]));
    outputs.push(value_info(OUTPUTS[2], &[Err("N"), Ok(m)]));
    outputs.push(value_info(OUTPUTS[3], &[Err("N")]));
    Ok(outputs)
}
