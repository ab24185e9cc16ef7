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
//!
//! The decoding ([`decode`], [`clip`]) and the selection ([`select`]) are shared with the Faster
//! R-CNN's proposals and second stage ([`crate::rcnn_export`]).

use models::detect::{BoxCoder, DetectorSpec, PostProcess};
use models::graph::Network;
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::ValueInfoProto;

use crate::lower::{attr_int, attr_ints, attr_type, int64_tensor, tensor, value_info, Builder, ExportError, LowerOptions};

/// The names of the four outputs, in the TFOD contract.
pub const OUTPUTS: [&str; 4] = ["detection_boxes", "detection_scores", "detection_classes", "num_detections"];

/// The raw head outputs written beside the detections with `--logits` (for parity checks).
pub const RAW_OUTPUTS: [&str; 2] = ["raw_scores", "raw_box_codes"];

pub(crate) fn s(x: &str) -> String {
    x.to_string()
}

/// A float32 initializer named `name`; returns the name.
pub(crate) fn f32s(b: &mut Builder, name: &str, dims: &[usize], data: &[f32]) -> Result<String, ExportError> {
    b.initializers.push(tensor(name, dims, data, false)?);
    Ok(name.to_string())
}

/// An int64 initializer `[len]` named `name`; returns the name.
pub(crate) fn i64s(b: &mut Builder, name: &str, data: &[i64]) -> String {
    b.initializers.push(int64_tensor(name, data));
    name.to_string()
}

/// An int64 scalar initializer (what `Range` takes).
pub(crate) fn i64_scalar(b: &mut Builder, name: &str, v: i64) -> String {
    let mut t = int64_tensor(name, &[v]);
    t.dims.clear();
    b.initializers.push(t);
    name.to_string()
}

/// `value` cast to float32 when the file computes in float16 (the tails compute in float32).
pub(crate) fn to_f32(b: &mut Builder, value: &str, name: &str, o: &LowerOptions) -> String {
    if !o.fp16 {
        return value.to_string();
    }
    b.node("Cast", name, &[s(value)], name, vec![attr_type("to", DataType::FLOAT)]);
    s(name)
}

/// Slice `[from, to)` of the last axis.
pub(crate) fn last_axis(b: &mut Builder, name: &str, x: &str, from: i64, to: i64) -> String {
    let (f, t, a) = (i64s(b, &format!("{name}.from"), &[from]), i64s(b, &format!("{name}.to"), &[to]), i64s(b, &format!("{name}.axis"), &[-1]));
    b.node("Slice", name, &[s(x), f, t, a], name, vec![]);
    s(name)
}

/// The images of the batch `0..N` as int64 `[N]`, and the batch size as `[1]`: read off `input`.
pub(crate) fn batch_range(b: &mut Builder, pfx: &str) -> (String, String) {
    let (n1, n, range) = (format!("{pfx}.n1"), format!("{pfx}.n"), format!("{pfx}.images"));
    b.node("Shape", &format!("{pfx}.input_shape"), &[s("input")], &format!("{pfx}.input_shape"), vec![]);
    let (zero, one) = (i64s(b, &format!("{pfx}.n_from"), &[0]), i64s(b, &format!("{pfx}.n_to"), &[1]));
    b.node("Slice", &n1, &[format!("{pfx}.input_shape"), zero, one], &n1, vec![]);
    b.node("Squeeze", &n, std::slice::from_ref(&n1), &n, vec![]);
    let (izero, ione) = (i64_scalar(b, &format!("{pfx}.izero"), 0), i64_scalar(b, &format!("{pfx}.ione"), 1));
    b.node("Range", &range, &[izero, n, ione], &range, vec![]);
    (range, n1)
}

/// Decodes `codes` (last axis 4) against priors given as centres and sizes (last axis 2, broadcast
/// against the codes) with `coder`: what [`BoxCoder::decode`] computes, in its f32 operations.
/// Returns corner boxes, last axis 4.
pub(crate) fn decode(b: &mut Builder, pfx: &str, codes: &str, ctr: &str, wh: &str, coder: &BoxCoder) -> Result<String, ExportError> {
    let n = |x: &str| format!("{pfx}.{x}");
    let wts = f32s(b, &n("coder_weights"), &[4], &coder.weights)?;
    b.node("Div", &n("d"), &[s(codes), wts], &n("d"), vec![]);
    let dxy = last_axis(b, &n("dxy"), &n("d"), 0, 2);
    let dwh_raw = last_axis(b, &n("dwh_raw"), &n("d"), 2, 4);
    let clip = f32s(b, &n("size_clip"), &[], &[coder.clip])?;
    b.node("Min", &n("dwh"), &[dwh_raw, clip], &n("dwh"), vec![]);
    b.node("Mul", &n("offset"), &[dxy, s(wh)], &n("offset"), vec![]);
    b.node("Add", &n("ctr"), &[n("offset"), s(ctr)], &n("ctr"), vec![]);
    b.node("Exp", &n("scale"), &[n("dwh")], &n("scale"), vec![]);
    b.node("Mul", &n("wh"), &[n("scale"), s(wh)], &n("wh"), vec![]);
    let half = f32s(b, &n("half"), &[], &[0.5])?;
    b.node("Mul", &n("half_wh"), &[half, n("wh")], &n("half_wh"), vec![]);
    b.node("Sub", &n("lo"), &[n("ctr"), n("half_wh")], &n("lo"), vec![]);
    b.node("Add", &n("hi"), &[n("ctr"), n("half_wh")], &n("hi"), vec![]);
    b.node("Concat", &n("corners"), &[n("lo"), n("hi")], &n("corners"), vec![attr_int("axis", -1)]);
    Ok(n("corners"))
}

/// Corner boxes (last axis 4) clipped to the `[h, w]` image.
pub(crate) fn clip(b: &mut Builder, pfx: &str, boxes: &str, image: [usize; 2]) -> Result<String, ExportError> {
    let n = |x: &str| format!("{pfx}.{x}");
    let (h, w) = (image[0] as f32, image[1] as f32);
    let limit = f32s(b, &n("image_limit"), &[4], &[w, h, w, h])?;
    let zero = f32s(b, &n("clip_zero"), &[], &[0.0])?;
    b.node("Min", &n("clipped_hi"), &[s(boxes), limit], &n("clipped_hi"), vec![]);
    b.node("Max", &n("boxes"), &[n("clipped_hi"), zero], &n("boxes"), vec![]);
    Ok(n("boxes"))
}

/// Centres and sizes `[P, 2]` of prior boxes, as [`BoxCoder::decode`] computes them.
pub(crate) fn centres_and_sizes(priors: &[[f32; 4]]) -> (Vec<f32>, Vec<f32>) {
    let (mut ctr, mut wh) = (Vec::with_capacity(2 * priors.len()), Vec::with_capacity(2 * priors.len()));
    for pr in priors {
        let (pw, ph) = (pr[2] - pr[0], pr[3] - pr[1]);
        ctr.extend([pr[0] + 0.5 * pw, pr[1] + 0.5 * ph]);
        wh.extend([pw, ph]);
    }
    (ctr, wh)
}

/// Appends the SSD tail to `b` after the graph's nodes (`value`: each node's ONNX value); returns the
/// graph outputs.
pub(crate) fn append(graph: &Network, spec: &DetectorSpec, value: &[String], o: &LowerOptions, b: &mut Builder) -> Result<Vec<ValueInfoProto>, ExportError> {
    let err = |reason: String| ExportError::Node { node: graph.nodes[graph.output].name.clone(), reason };
    let codes_node = graph.extra_outputs.iter().find(|x| x.name == spec.codes_output).ok_or_else(|| err(format!("no '{}' output", spec.codes_output)))?.node;
    let [p, c] = graph.shape(graph.output)[..] else { return Err(err(format!("scores of shape {:?}", graph.shape(graph.output)))) };
    let priors = spec.prior_boxes().map_err(|e| err(e.to_string()))?;
    // float32 heads (an fp16 file computes the network in float16 and the tail in float32)
    let scores = to_f32(b, &value[graph.output], "tail.scores_fp32", o);
    let codes = to_f32(b, &value[codes_node], "tail.codes_fp32", o);
    let mut outputs = vec![];
    if o.logits {
        b.node("Identity", RAW_OUTPUTS[0], std::slice::from_ref(&scores), RAW_OUTPUTS[0], vec![]);
        b.node("Identity", RAW_OUTPUTS[1], std::slice::from_ref(&codes), RAW_OUTPUTS[1], vec![]);
        outputs.push(value_info(RAW_OUTPUTS[0], &[Err("N"), Ok(p), Ok(c)]));
        outputs.push(value_info(RAW_OUTPUTS[1], &[Err("N"), Ok(p), Ok(4)]));
    }
    // class probabilities, background dropped, as [N, C - 1, P] for NonMaxSuppression
    b.node("Softmax", "tail.probs", &[scores], "tail.probs", vec![attr_int("axis", -1)]);
    let fg = last_axis(b, "tail.fg", "tail.probs", 1, c as i64);
    b.node("Transpose", "tail.class_scores", &[fg], "tail.class_scores", vec![attr_ints("perm", &[0, 2, 1])]);
    // decode against the priors' centres and sizes, clip
    let (ctr, wh) = centres_and_sizes(&priors);
    let prior_ctr = f32s(b, "priors.centres", &[p, 2], &ctr)?;
    let prior_wh = f32s(b, "priors.sizes", &[p, 2], &wh)?;
    let corners = decode(b, "tail", &codes, &prior_ctr, &prior_wh, &spec.coder)?;
    let boxes = clip(b, "tail", &corners, spec.image)?;
    outputs.extend(select(b, &boxes, "tail.class_scores", &spec.postprocess)?);
    Ok(outputs)
}

/// The shared end of every detector: per-class `NonMaxSuppression` of `boxes` `[N, B, 4]` under
/// `class_scores` `[N, C − 1, B]` (an entry that is not a candidate scores −1), then the best M of
/// each image into the four TFOD outputs; returns their port descriptions.
pub(crate) fn select(b: &mut Builder, boxes: &str, class_scores: &str, pp: &PostProcess) -> Result<Vec<ValueInfoProto>, ExportError> {
    let m = pp.max_detections;
    let one = i64s(b, "tail.one", &[1]);
    // per-class NMS: [S, 3] rows of (image, class - 1, box)
    let cap = i64s(b, "tail.max_per_class", &[pp.max_per_class as i64]);
    let iou = f32s(b, "tail.iou_threshold", &[1], &[pp.iou_threshold])?;
    let thr = f32s(b, "tail.score_threshold", &[1], &[pp.score_threshold])?;
    b.node("NonMaxSuppression", "tail.nms", &[s(boxes), s(class_scores), cap, iou, thr], "tail.selected", vec![attr_int("center_point_box", 0)]);
    for (k, name) in ["tail.sel_image", "tail.sel_class", "tail.sel_prior"].iter().enumerate() {
        let at = i64s(b, &format!("{name}.index"), &[k as i64]);
        b.node("Gather", name, &[s("tail.selected"), at], &format!("{name}.col"), vec![attr_int("axis", 1)]);
        b.node("Squeeze", &format!("{name}.squeeze"), &[format!("{name}.col"), one.clone()], name, vec![]);
    }
    b.node("GatherND", "tail.sel_scores", &[s(class_scores), s("tail.selected")], "tail.sel_scores", vec![]);
    b.node("Unsqueeze", "tail.sel_image_col", &[s("tail.sel_image"), one.clone()], "tail.sel_image_col", vec![]);
    b.node("Unsqueeze", "tail.sel_prior_col", &[s("tail.sel_prior"), one.clone()], "tail.sel_prior_col", vec![]);
    b.node("Concat", "tail.sel_at", &[s("tail.sel_image_col"), s("tail.sel_prior_col")], "tail.sel_at", vec![attr_int("axis", 1)]);
    b.node("GatherND", "tail.sel_boxes", &[s(boxes), s("tail.sel_at")], "tail.sel_boxes", vec![]);
    // the best M of each image: its selections by score, -1 for other images' and the padding
    let minus = f32s(b, "tail.minus_one", &[], &[-1.0])?;
    let (top_scores, top_at) = best_per_image(b, "tail", "tail.sel_image", "tail.sel_scores", &minus, &minus, m)?;
    let minus_half = f32s(b, "tail.minus_half", &[], &[-0.5])?;
    b.node("Greater", "tail.valid", &[top_scores.clone(), minus_half], "tail.valid", vec![]);
    // what each of the best M is: its box and class (1-based, float), zeros for padding
    let zero_boxes = f32s(b, "tail.zero_boxes", &[m, 4], &vec![0.0; m * 4])?;
    let zero_classes = f32s(b, "tail.zero_classes", &[m], &vec![0.0; m])?;
    b.node("Concat", "tail.all_boxes", &[s("tail.sel_boxes"), zero_boxes], "tail.all_boxes", vec![attr_int("axis", 0)]);
    b.node("Cast", "tail.sel_class_f", &[s("tail.sel_class")], "tail.sel_class_f", vec![attr_type("to", DataType::FLOAT)]);
    let fone = f32s(b, "tail.fone", &[], &[1.0])?;
    b.node("Add", "tail.sel_class_1", &[s("tail.sel_class_f"), fone], "tail.sel_class_1", vec![]);
    b.node("Concat", "tail.all_classes", &[s("tail.sel_class_1"), zero_classes], "tail.all_classes", vec![attr_int("axis", 0)]);
    b.node("Gather", "tail.top_boxes", &[s("tail.all_boxes"), top_at.clone()], "tail.top_boxes", vec![attr_int("axis", 0)]);
    b.node("Gather", "tail.top_classes", &[s("tail.all_classes"), top_at], "tail.top_classes", vec![attr_int("axis", 0)]);
    let axis2 = i64s(b, "tail.axis2", &[2]);
    b.node("Unsqueeze", "tail.valid_col", &[s("tail.valid"), axis2], "tail.valid_col", vec![]);
    let fzero = f32s(b, "tail.fzero", &[], &[0.0])?;
    b.node("Where", OUTPUTS[0], &[s("tail.valid_col"), s("tail.top_boxes"), fzero.clone()], OUTPUTS[0], vec![]);
    b.node("Where", OUTPUTS[1], &[s("tail.valid"), top_scores, fzero.clone()], OUTPUTS[1], vec![]);
    b.node("Where", OUTPUTS[2], &[s("tail.valid"), s("tail.top_classes"), fzero], OUTPUTS[2], vec![]);
    b.node("Cast", "tail.valid_f", &[s("tail.valid")], "tail.valid_f", vec![attr_type("to", DataType::FLOAT)]);
    b.node("ReduceSum", OUTPUTS[3], &[s("tail.valid_f"), one], OUTPUTS[3], vec![attr_int("keepdims", 0)]);
    Ok(vec![
        value_info(OUTPUTS[0], &[Err("N"), Ok(m), Ok(4)]),
        value_info(OUTPUTS[1], &[Err("N"), Ok(m)]),
        value_info(OUTPUTS[2], &[Err("N"), Ok(m)]),
        value_info(OUTPUTS[3], &[Err("N")]),
    ])
}

/// The best `k` entries of each image's row of a dense `[N, S + k]` matrix: selection s (its image in
/// `sel_image` `[S]`, its key in `keys` `[S]`) keyed in its own image's row, `other` (a scalar value)
/// in the other images' rows, `pad` in k padding columns; `TopK` k, largest first. Returns the keys
/// `[N, k]` and the columns `[N, k]` (s for a selection, S + j for padding).
pub(crate) fn best_per_image(
    b: &mut Builder,
    pfx: &str,
    sel_image: &str,
    keys: &str,
    other: &str,
    pad: &str,
    k: usize,
) -> Result<(String, String), ExportError> {
    let n = |x: &str| format!("{pfx}.{x}");
    let (images, n1) = batch_range(b, pfx);
    let (zero, one) = (i64s(b, &n("row_axis"), &[0]), i64s(b, &n("col_axis"), &[1]));
    b.node("Unsqueeze", &n("images_col"), &[images, one], &n("images_col"), vec![]);
    b.node("Unsqueeze", &n("sel_image_row"), &[s(sel_image), zero.clone()], &n("sel_image_row"), vec![]);
    b.node("Equal", &n("mine"), &[n("images_col"), n("sel_image_row")], &n("mine"), vec![]);
    b.node("Unsqueeze", &n("sel_key_row"), &[s(keys), zero], &n("sel_key_row"), vec![]);
    b.node("Where", &n("dense"), &[n("mine"), n("sel_key_row"), s(other)], &n("dense"), vec![]);
    let k_dim = i64s(b, &n("k"), &[k as i64]);
    b.node("Concat", &n("pad_shape"), &[n1, k_dim.clone()], &n("pad_shape"), vec![attr_int("axis", 0)]);
    b.node("Expand", &n("pad"), &[s(pad), n("pad_shape")], &n("pad"), vec![]);
    b.node("Concat", &n("padded"), &[n("dense"), n("pad")], &n("padded"), vec![attr_int("axis", 1)]);
    let (top, at) = (n("top_keys"), n("top_at"));
    b.node_multi("TopK", &n("topk"), &[n("padded"), k_dim], &[&top, &at], vec![attr_int("axis", 1), attr_int("largest", 1), attr_int("sorted", 1)]);
    Ok((top, at))
}
