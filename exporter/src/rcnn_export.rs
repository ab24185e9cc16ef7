//! A Faster R-CNN in one ONNX file, no Loop or If, dynamic batch: the per-image graph and the
//! per-region graph lowered as they are, joined by the proposals and `RoiAlign`.
//!
//! - Proposals ([`proposals`]), what `trainer::rcnn::proposals` computes at inference: the best
//!   `pre_nms_top_n` anchors of each image by objectness (`TopK`), their codes decoded by the RPN's
//!   coder against the anchors (an initializer of centres and sizes), clipped, those under `min_size`
//!   scored −∞ so that `NonMaxSuppression`'s score threshold (the lowest finite float) drops them,
//!   class-agnostic NMS capped at `post_nms_top_n`; then a fixed R = `post_nms_top_n` rows per image
//!   in NMS order (`TopK` on the negated selection index in its own image's row), zero boxes and a
//!   false validity flag in the rows an image has no proposal for.
//! - ROI pooling: ONNX `RoiAlign` (average mode; `output_half_pixel` for the unaligned torchvision
//!   form, `half_pixel` for the aligned one) of the N·R regions, then the graph's own nodes at batch
//!   N·R (the book's 2×2 max pool, the head).
//! - The second stage's tail ([`append`]): softmax, each class's codes decoded against its proposal,
//!   clipped, and the SSD's per-class NMS and top-M ([`crate::detect_tail::select`]) on
//!   `[N, R·(C − 1), 4]` boxes, each class scoring only its own R boxes (−∞ elsewhere and in invalid
//!   rows): what `models::detect::postprocess` computes with the proposals as priors.

use models::detect::DetectorSpec;
use models::graph::{Network, Op};
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::{AttributeProto, ValueInfoProto};

use crate::detect_tail::{batch_range, best_per_image, centres_and_sizes, clip, decode, f32s, i64s, last_axis, s, select, to_f32, RAW_OUTPUTS};
use crate::lower::{attr_float, attr_int, attr_ints, attr_type, tensor, value_info, Builder, ExportError, LowerOptions};

/// The raw values a checked Faster R-CNN file also outputs: the RPN's objectness logits `[N, A]` and
/// codes `[N, A, 4]`, the proposals `[N, R, 4]` and their validity `[N, R]` (1 or 0), then the head's
/// logits `[N, R, C]` and codes `[N, R, 4 (C − 1)]` ([`RAW_OUTPUTS`]).
pub const RAW_RPN_OUTPUTS: [&str; 4] = ["raw_rpn_scores", "raw_rpn_codes", "proposals", "proposals_valid"];

/// The proposals as the second stage reads them.
pub(crate) struct Proposals {
    /// `[N, R, 4]` float32, input pixels.
    pub boxes: String,
    /// `[N, R]` bool.
    pub valid: String,
    /// R, the rows per image.
    pub rows: usize,
    /// The RPN's objectness logits `[N, A]` and codes `[N, A, 4]`, float32.
    pub rpn: (String, String),
}

fn attr_string(name: &str, v: &str) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::STRING.into();
    a.s = v.as_bytes().to_vec();
    a
}

fn node_of(graph: &Network, name: &str) -> Result<usize, ExportError> {
    graph.extra_outputs.iter().find(|x| x.name == name).map(|x| x.node).ok_or_else(|| ExportError::Node {
        node: graph.nodes[graph.output].name.clone(),
        reason: format!("no '{name}' output, which a Faster R-CNN's spec names"),
    })
}

/// The inference proposals of every image from the RPN's outputs (their ONNX values in `value`).
pub(crate) fn proposals(graph: &Network, spec: &DetectorSpec, value: &[String], o: &LowerOptions, b: &mut Builder) -> Result<Proposals, ExportError> {
    let err = |reason: String| ExportError::Node { node: graph.nodes[graph.output].name.clone(), reason };
    let r = spec.rcnn.as_ref().ok_or_else(|| err("a RoiAlign without a Faster R-CNN spec".into()))?;
    let anchors = spec.prior_boxes().map_err(|e| err(e.to_string()))?;
    let a = anchors.len();
    let (pre, rows) = r.proposals(false);
    let pre = pre.min(a);
    let scores = to_f32(b, &value[node_of(graph, &r.scores_output)?], "rpn_tail.scores_fp32", o);
    let codes = to_f32(b, &value[node_of(graph, &r.codes_output)?], "rpn_tail.codes_fp32", o);
    // objectness [N, A]: the best `pre` of each image, and their codes and anchors
    let axis2 = i64s(b, "rpn_tail.axis2", &[2]);
    b.node("Squeeze", "rpn_tail.objectness", &[scores, axis2.clone()], "rpn_tail.objectness", vec![]);
    let k = i64s(b, "rpn_tail.pre_nms_top_n", &[pre as i64]);
    b.node_multi(
        "TopK",
        "rpn_tail.top",
        &[s("rpn_tail.objectness"), k],
        &["rpn_tail.top_scores", "rpn_tail.top_at"],
        vec![attr_int("axis", 1), attr_int("largest", 1), attr_int("sorted", 1)],
    );
    b.node("Unsqueeze", "rpn_tail.top_at_col", &[s("rpn_tail.top_at"), axis2.clone()], "rpn_tail.top_at_col", vec![]);
    b.node("GatherND", "rpn_tail.top_codes", &[codes.clone(), s("rpn_tail.top_at_col")], "rpn_tail.top_codes", vec![attr_int("batch_dims", 1)]);
    let (ctr, wh) = centres_and_sizes(&anchors);
    let anchor_ctr = f32s(b, "anchors.centres", &[a, 2], &ctr)?;
    let anchor_wh = f32s(b, "anchors.sizes", &[a, 2], &wh)?;
    b.node("Gather", "rpn_tail.top_ctr", &[anchor_ctr, s("rpn_tail.top_at")], "rpn_tail.top_ctr", vec![attr_int("axis", 0)]);
    b.node("Gather", "rpn_tail.top_wh", &[anchor_wh, s("rpn_tail.top_at")], "rpn_tail.top_wh", vec![attr_int("axis", 0)]);
    let corners = decode(b, "rpn_tail", "rpn_tail.top_codes", "rpn_tail.top_ctr", "rpn_tail.top_wh", &r.rpn_coder)?;
    let boxes = clip(b, "rpn_tail", &corners, spec.image)?;
    // boxes under min_size on either side score -inf, below NMS's threshold
    let lo = last_axis(b, "rpn_tail.lo_corner", &boxes, 0, 2);
    let hi = last_axis(b, "rpn_tail.hi_corner", &boxes, 2, 4);
    b.node("Sub", "rpn_tail.sides", &[hi, lo], "rpn_tail.sides", vec![]);
    let min = f32s(b, "rpn_tail.min_size", &[], &[r.min_size])?;
    b.node("GreaterOrEqual", "rpn_tail.big_sides", &[s("rpn_tail.sides"), min], "rpn_tail.big_sides", vec![]);
    let wide = last_axis(b, "rpn_tail.wide", "rpn_tail.big_sides", 0, 1);
    let tall = last_axis(b, "rpn_tail.tall", "rpn_tail.big_sides", 1, 2);
    b.node("And", "rpn_tail.big_col", &[wide, tall], "rpn_tail.big_col", vec![]);
    b.node("Squeeze", "rpn_tail.big", &[s("rpn_tail.big_col"), axis2.clone()], "rpn_tail.big", vec![]);
    let minus_inf = f32s(b, "rpn_tail.minus_inf", &[], &[f32::NEG_INFINITY])?;
    b.node("Where", "rpn_tail.nms_scores_2d", &[s("rpn_tail.big"), s("rpn_tail.top_scores"), minus_inf], "rpn_tail.nms_scores_2d", vec![]);
    let one = i64s(b, "rpn_tail.one", &[1]);
    b.node("Unsqueeze", "rpn_tail.nms_scores", &[s("rpn_tail.nms_scores_2d"), one.clone()], "rpn_tail.nms_scores", vec![]);
    let cap = i64s(b, "rpn_tail.post_nms_top_n", &[rows as i64]);
    let iou = f32s(b, "rpn_tail.nms_iou", &[1], &[r.rpn_nms_iou])?;
    let thr = f32s(b, "rpn_tail.lowest", &[1], &[f32::MIN])?;
    b.node(
        "NonMaxSuppression",
        "rpn_tail.nms",
        &[boxes.clone(), s("rpn_tail.nms_scores"), cap, iou, thr],
        "rpn_tail.selected",
        vec![attr_int("center_point_box", 0)],
    );
    // R rows per image in NMS order: key -s for selection s in its own image's row, -1e30 in the
    // others', -1e29 in R padding columns; TopK R
    for (k, name) in [(0, "rpn_tail.sel_image"), (2, "rpn_tail.sel_box")] {
        let at = i64s(b, &format!("{name}.index"), &[k]);
        b.node("Gather", name, &[s("rpn_tail.selected"), at], &format!("{name}.col"), vec![attr_int("axis", 1)]);
        b.node("Squeeze", &format!("{name}.squeeze"), &[format!("{name}.col"), one.clone()], name, vec![]);
    }
    b.node("Shape", "rpn_tail.sel_shape", &[s("rpn_tail.sel_image")], "rpn_tail.sel_shape", vec![]);
    b.node("Squeeze", "rpn_tail.sel_count", &[s("rpn_tail.sel_shape")], "rpn_tail.sel_count", vec![]);
    let (izero, ione) = (crate::detect_tail::i64_scalar(b, "rpn_tail.izero", 0), crate::detect_tail::i64_scalar(b, "rpn_tail.ione", 1));
    b.node("Range", "rpn_tail.sel_index", &[izero, s("rpn_tail.sel_count"), ione], "rpn_tail.sel_index", vec![]);
    b.node("Cast", "rpn_tail.sel_index_f", &[s("rpn_tail.sel_index")], "rpn_tail.sel_index_f", vec![attr_type("to", DataType::FLOAT)]);
    b.node("Neg", "rpn_tail.sel_key", &[s("rpn_tail.sel_index_f")], "rpn_tail.sel_key", vec![]);
    let other = f32s(b, "rpn_tail.other_image", &[], &[-1e30])?;
    let pad = f32s(b, "rpn_tail.padding", &[], &[-1e29])?;
    let (row_keys, row_at) = best_per_image(b, "rpn_rows", "rpn_tail.sel_image", "rpn_tail.sel_key", &other, &pad, rows)?;
    let cut = f32s(b, "rpn_tail.valid_above", &[], &[-1e28])?;
    b.node("Greater", "rpn_tail.valid", &[row_keys, cut], "rpn_tail.valid", vec![]);
    // the selected boxes, zero boxes after them for the padding columns
    b.node("Unsqueeze", "rpn_tail.sel_image_col", &[s("rpn_tail.sel_image"), one.clone()], "rpn_tail.sel_image_col", vec![]);
    b.node("Unsqueeze", "rpn_tail.sel_box_col", &[s("rpn_tail.sel_box"), one], "rpn_tail.sel_box_col", vec![]);
    b.node("Concat", "rpn_tail.sel_at", &[s("rpn_tail.sel_image_col"), s("rpn_tail.sel_box_col")], "rpn_tail.sel_at", vec![attr_int("axis", 1)]);
    b.node("GatherND", "rpn_tail.sel_boxes", &[boxes, s("rpn_tail.sel_at")], "rpn_tail.sel_boxes", vec![]);
    let zero_boxes = f32s(b, "rpn_tail.zero_boxes", &[rows, 4], &vec![0.0; rows * 4])?;
    b.node("Concat", "rpn_tail.all_boxes", &[s("rpn_tail.sel_boxes"), zero_boxes], "rpn_tail.all_boxes", vec![attr_int("axis", 0)]);
    b.node("Gather", "rpn_tail.proposals", &[s("rpn_tail.all_boxes"), row_at], "rpn_tail.proposals", vec![attr_int("axis", 0)]);
    b.node("Identity", "rpn_tail.proposals_valid", &[s("rpn_tail.valid")], "rpn_tail.proposals_valid", vec![]);
    Ok(Proposals { boxes: s("rpn_tail.proposals"), valid: s("rpn_tail.proposals_valid"), rows, rpn: (s("rpn_tail.objectness"), codes) })
}

/// ONNX `RoiAlign` of `map` over every image's proposals (N·R regions, image by image), into `out`.
pub(crate) fn roi_align(op: &Op, map: &str, props: &Proposals, o: &LowerOptions, out: &str, b: &mut Builder) -> Result<(), ExportError> {
    let Op::RoiAlign { output, spatial_scale, sampling_ratio, aligned } = op else {
        return Err(ExportError::Node { node: out.into(), reason: "not a RoiAlign".into() });
    };
    if o.opset < 16 && *aligned {
        return Err(ExportError::Node { node: out.into(), reason: format!("an aligned RoiAlign needs opset 16 or later (--opset {})", o.opset) });
    }
    let rois_shape = i64s(b, "roi_in.rois_shape", &[-1, 4]);
    b.node("Reshape", "roi_in.rois_f32", &[s(&props.boxes), rois_shape], "roi_in.rois_f32", vec![]);
    // float32 regions: a Faster R-CNN lowers in float32 only (lower.rs refuses fp16 before this)
    let rois = s("roi_in.rois_f32");
    // each region's image: 0 R times, 1 R times, ...
    let (images, n1) = batch_range(b, "roi_in");
    let one = i64s(b, "roi_in.one", &[1]);
    b.node("Unsqueeze", "roi_in.images_col", &[images, one], "roi_in.images_col", vec![]);
    let r_dim = i64s(b, "roi_in.rows", &[props.rows as i64]);
    b.node("Concat", "roi_in.grid_shape", &[n1, r_dim], "roi_in.grid_shape", vec![attr_int("axis", 0)]);
    b.node("Expand", "roi_in.image_grid", &[s("roi_in.images_col"), s("roi_in.grid_shape")], "roi_in.image_grid", vec![]);
    let flat = i64s(b, "roi_in.flat", &[-1]);
    b.node("Reshape", "roi_in.batch_indices", &[s("roi_in.image_grid"), flat], "roi_in.batch_indices", vec![]);
    let mut attrs = vec![
        attr_string("mode", "avg"),
        attr_int("output_height", output[0] as i64),
        attr_int("output_width", output[1] as i64),
        attr_int("sampling_ratio", *sampling_ratio as i64),
        attr_float("spatial_scale", *spatial_scale),
    ];
    if o.opset >= 16 {
        attrs.push(attr_string("coordinate_transformation_mode", if *aligned { "half_pixel" } else { "output_half_pixel" }));
    }
    b.node("RoiAlign", out, &[s(map), rois, s("roi_in.batch_indices")], out, attrs);
    Ok(())
}

/// The second stage's tail after the graph's nodes: the TFOD outputs (and with `o.logits` the raw
/// values of [`RAW_RPN_OUTPUTS`] and [`RAW_OUTPUTS`]).
pub(crate) fn append(
    graph: &Network,
    spec: &DetectorSpec,
    value: &[String],
    props: &Proposals,
    o: &LowerOptions,
    b: &mut Builder,
) -> Result<Vec<ValueInfoProto>, ExportError> {
    let err = |reason: String| ExportError::Node { node: graph.nodes[graph.output].name.clone(), reason };
    let [c] = graph.shape(graph.output)[..] else { return Err(err(format!("region scores of shape {:?}", graph.shape(graph.output)))) };
    let (rows, k) = (props.rows, c - 1);
    let scores = to_f32(b, &value[graph.output], "tail.scores_fp32", o);
    let codes = to_f32(b, &value[node_of(graph, &spec.codes_output)?], "tail.codes_fp32", o);
    let shape = |b: &mut Builder, name: &str, dims: &[i64]| i64s(b, name, dims);
    let to3 = shape(b, "tail.scores_shape", &[-1, rows as i64, c as i64]);
    b.node("Reshape", "tail.region_scores", &[scores, to3], "tail.region_scores", vec![]);
    let to4 = shape(b, "tail.codes_shape", &[-1, rows as i64, k as i64, 4]);
    b.node("Reshape", "tail.region_codes", &[codes, to4], "tail.region_codes", vec![]);
    let mut outputs = vec![];
    if o.logits {
        let anchors = spec.num_priors();
        b.node("Identity", RAW_RPN_OUTPUTS[0], std::slice::from_ref(&props.rpn.0), RAW_RPN_OUTPUTS[0], vec![]);
        b.node("Identity", RAW_RPN_OUTPUTS[1], std::slice::from_ref(&props.rpn.1), RAW_RPN_OUTPUTS[1], vec![]);
        b.node("Identity", RAW_RPN_OUTPUTS[2], std::slice::from_ref(&props.boxes), RAW_RPN_OUTPUTS[2], vec![]);
        b.node("Cast", RAW_RPN_OUTPUTS[3], std::slice::from_ref(&props.valid), RAW_RPN_OUTPUTS[3], vec![attr_type("to", DataType::FLOAT)]);
        b.node("Identity", RAW_OUTPUTS[0], &[s("tail.region_scores")], RAW_OUTPUTS[0], vec![]);
        let flat = shape(b, "tail.raw_codes_shape", &[-1, rows as i64, 4 * k as i64]);
        b.node("Reshape", RAW_OUTPUTS[1], &[s("tail.region_codes"), flat], RAW_OUTPUTS[1], vec![]);
        outputs.push(value_info(RAW_RPN_OUTPUTS[0], &[Err("N"), Ok(anchors)]));
        outputs.push(value_info(RAW_RPN_OUTPUTS[1], &[Err("N"), Ok(anchors), Ok(4)]));
        outputs.push(value_info(RAW_RPN_OUTPUTS[2], &[Err("N"), Ok(rows), Ok(4)]));
        outputs.push(value_info(RAW_RPN_OUTPUTS[3], &[Err("N"), Ok(rows)]));
        outputs.push(value_info(RAW_OUTPUTS[0], &[Err("N"), Ok(rows), Ok(c)]));
        outputs.push(value_info(RAW_OUTPUTS[1], &[Err("N"), Ok(rows), Ok(4 * k)]));
    }
    // each class's codes against its proposal: centres and sizes [N, R, 1, 2]
    let lo = last_axis(b, "tail.prop_lo", &props.boxes, 0, 2);
    let hi = last_axis(b, "tail.prop_hi", &props.boxes, 2, 4);
    b.node("Sub", "tail.prop_wh3", &[hi, lo.clone()], "tail.prop_wh3", vec![]);
    let half = f32s(b, "tail.prop_half", &[], &[0.5])?;
    b.node("Mul", "tail.prop_half_wh", &[half, s("tail.prop_wh3")], "tail.prop_half_wh", vec![]);
    b.node("Add", "tail.prop_ctr3", &[lo, s("tail.prop_half_wh")], "tail.prop_ctr3", vec![]);
    let axis2 = i64s(b, "tail.prop_axis2", &[2]);
    b.node("Unsqueeze", "tail.prop_ctr", &[s("tail.prop_ctr3"), axis2.clone()], "tail.prop_ctr", vec![]);
    b.node("Unsqueeze", "tail.prop_wh", &[s("tail.prop_wh3"), axis2], "tail.prop_wh", vec![]);
    let corners = decode(b, "tail", "tail.region_codes", "tail.prop_ctr", "tail.prop_wh", &spec.coder)?;
    let clipped = clip(b, "tail", &corners, spec.image)?;
    let flat = shape(b, "tail.boxes_shape", &[-1, (rows * k) as i64, 4]);
    b.node("Reshape", "tail.class_boxes", &[clipped, flat], "tail.class_boxes", vec![]);
    // class j scores its own box of each valid region: [N, K, R, K] → [N, K, R·K]
    b.node("Softmax", "tail.probs", &[s("tail.region_scores")], "tail.probs", vec![attr_int("axis", -1)]);
    let fg = last_axis(b, "tail.fg", "tail.probs", 1, c as i64);
    b.node("Transpose", "tail.fg_by_class", &[fg], "tail.fg_by_class", vec![attr_ints("perm", &[0, 2, 1])]);
    let axis3 = i64s(b, "tail.axis3", &[3]);
    b.node("Unsqueeze", "tail.fg_col", &[s("tail.fg_by_class"), axis3], "tail.fg_col", vec![]);
    let mut eye = tensor("tail.own_class", &[k, 1, k], &vec![0.0; k * k], false)?;
    eye.data_type = DataType::BOOL as i32;
    eye.raw_data = (0..k * k).map(|i| u8::from(i / k == i % k)).collect();
    b.initializers.push(eye);
    let axes13 = i64s(b, "tail.axes13", &[1, 3]);
    b.node("Unsqueeze", "tail.valid_grid", &[props.valid.clone(), axes13], "tail.valid_grid", vec![]);
    b.node("And", "tail.candidate", &[s("tail.own_class"), s("tail.valid_grid")], "tail.candidate", vec![]);
    // −∞: below any score threshold, so neither another class's box nor a padded row is a candidate
    let minus = f32s(b, "tail.not_a_candidate", &[], &[f32::NEG_INFINITY])?;
    b.node("Where", "tail.class_grid", &[s("tail.candidate"), s("tail.fg_col"), minus], "tail.class_grid", vec![]);
    let flat = shape(b, "tail.class_scores_shape", &[-1, k as i64, (rows * k) as i64]);
    b.node("Reshape", "tail.class_scores", &[s("tail.class_grid"), flat], "tail.class_scores", vec![]);
    outputs.extend(select(b, "tail.class_boxes", "tail.class_scores", &spec.postprocess)?);
    Ok(outputs)
}

#[cfg(test)]
mod tests {
    use crate::lower::{lower, LowerOptions, Weights};

    fn zero_weights(g: &models::graph::Network) -> Weights {
        g.params().iter().map(|p| (p.name.clone(), (p.shape.clone(), vec![0.0; p.shape.iter().product()]))).collect()
    }

    #[test]
    fn lowers_in_float32_with_every_stage_inside_and_refuses_float16() {
        let g = models::zoo::build("rcnn-tiny", Some(3), Some(1)).unwrap();
        let w = zero_weights(&g);
        let m = lower(&g, &w, &LowerOptions { logits: true, ..LowerOptions::default() }).unwrap();
        let ops: std::collections::BTreeSet<&str> = m.graph.node.iter().map(|n| n.op_type.as_str()).collect();
        for op in ["RoiAlign", "NonMaxSuppression", "TopK", "GatherND", "MaxPool", "Gemm"] {
            assert!(ops.contains(op), "no {op}: {ops:?}");
        }
        assert!(!ops.contains("Loop") && !ops.contains("If"));
        let names: Vec<&str> = m.graph.output.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names[..4], ["raw_rpn_scores", "raw_rpn_codes", "proposals", "proposals_valid"]);
        assert_eq!(names[names.len() - 4..], ["detection_boxes", "detection_scores", "detection_classes", "num_detections"]);
        // every value is written once
        let mut outs: Vec<&str> = m.graph.node.iter().flat_map(|n| n.output.iter().map(String::as_str)).collect();
        outs.extend(m.graph.initializer.iter().map(|t| t.name.as_str()));
        let unique: std::collections::BTreeSet<&str> = outs.iter().copied().collect();
        assert_eq!(unique.len(), outs.len(), "a value name is written twice");
        let roi = m.graph.node.iter().find(|n| n.op_type == "RoiAlign").unwrap();
        let mode: Vec<(&str, &[u8])> = roi.attribute.iter().filter(|a| !a.s.is_empty()).map(|a| (a.name.as_str(), a.s.as_slice())).collect();
        assert_eq!(mode, [("mode", &b"avg"[..]), ("coordinate_transformation_mode", &b"output_half_pixel"[..])]);
        let e = lower(&g, &w, &LowerOptions { fp16: true, ..LowerOptions::default() }).unwrap_err().to_string();
        assert!(e.contains("roi.align") && e.contains("float32 only"), "{e}");
    }
}
