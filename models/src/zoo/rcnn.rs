//! Faster R-CNN (Ren et al. 2015, "Faster R-CNN: Towards Real-Time Object Detection with Region
//! Proposal Networks"), the book's chapter 14 part by part, as one graph with two domains:
//!
//! - per image: a backbone cut at stride 16, then the region proposal network: a 3×3 convolution and
//!   ReLU, and sibling 1×1 convolutions for the objectness (one logit per anchor) and the box codes
//!   (four per anchor) of K anchors per position, as rows in the anchors' order ([`Op::AnchorRows`]);
//! - per region: ROI pooling as the book describes it, a 14×14 crop of the feature map
//!   ([`Op::RoiAlign`], 2×2 bilinear samples per cell) then a 2×2 max pool to 7×7, and the R-CNN
//!   head: two fully connected layers, then C class logits (the background at 0) and one box code per
//!   foreground class.
//!
//! The proposals between the two (decode, clip, drop tiny boxes, top-N before and after NMS) are the
//! spec's ([`RcnnSpec`]); the trainer and the exported graph compute them.
//!
//! - `rcnn-tiny`: 128-px input, `ssd-tiny`'s dense conv-BN-ReLU stack to stride 16 (8×8), 9 anchors
//!   (sizes 24, 40, 64 × ratios ½, 1, 2, for the 24–64 px items of the Fashion-MNIST composites), a
//!   128-filter RPN, 64 regions per image in training and a 256-wide head: trains on two CPU cores.
//! - `faster-rcnn-resnet50`: the book's recipe (its ResNet-101 swapped for our zoo's ResNet-50, whose
//!   torchvision weights `trainer import-weights` loads under the same names): `conv1`–`layer3` (the C4
//!   backbone, 1,024 channels at stride 16) on 608×608, the book's 512-filter RPN, the anchors of the
//!   book's TFOD LISA config (base 256 × scales 0.25–2 = 64–512 px, ratios ½, 1, 2: 12 per position),
//!   2,000 → 300 proposals in inference, 512 regions per image in training, two 1,024-wide layers.

use super::ssd::tiny_backbone;
use super::torchvision::resnet50_stages;
use super::ModelOptions;
use crate::builder::{conv, max_pool, GraphBuilder};
use crate::detect::{DetectorSpec, GridAnchors, RcnnSpec};
use crate::graph::{GraphError, Init, Network, NodeId, Op};

/// The RPN on `map`: (objectness rows `[A, 1]`, box code rows `[A, 4]`).
fn rpn(b: &mut GraphBuilder, map: NodeId, width: usize, anchors: usize) -> (NodeId, NodeId) {
    let mut r = b.scope("rpn");
    let x = r.then("conv", conv(width, 3).pad(1), map);
    let x = r.then("relu", Op::Relu, x);
    let s = r.then("objectness", conv(anchors, 1), x);
    let s = r.then("objectness_rows", Op::AnchorRows { columns: 1 }, s);
    let c = r.then("codes", conv(anchors * 4, 1), x);
    let c = r.then("code_rows", Op::AnchorRows { columns: 4 }, c);
    (s, c)
}

/// ROI pooling and the R-CNN head on `map` (stride 16): (class logits `[C]`, box codes `[4 (C − 1)]`).
fn head(b: &mut GraphBuilder, map: NodeId, width: usize, classes: usize) -> (NodeId, NodeId) {
    let mut h = b.scope("roi");
    let x = h.then("align", Op::RoiAlign { output: [14, 14], spatial_scale: 1.0 / 16.0, sampling_ratio: 2, aligned: false }, map);
    let x = h.then("pool", max_pool(2, 2, 0), x); // 7×7
    let x = h.flatten("flatten", x);
    let x = h.then("fc6", Op::Linear { out_features: width, bias: true }, x);
    let x = h.then("fc6_relu", Op::Relu, x);
    let x = h.then("fc7", Op::Linear { out_features: width, bias: true }, x);
    let x = h.then("fc7_relu", Op::Relu, x);
    let scores = h.then("scores", Op::Linear { out_features: classes, bias: true }, x);
    let codes = h.then("box_codes", Op::Linear { out_features: 4 * (classes - 1), bias: true }, x);
    (scores, codes)
}

fn ratios() -> Vec<f64> {
    vec![0.5, 1.0, 2.0]
}

pub(crate) fn tiny(o: &ModelOptions) -> Result<Network, GraphError> {
    let side = 128;
    let mut b = GraphBuilder::new("rcnn-tiny", [o.in_channels, side, side], Init::HeNormal);
    let x = b.input();
    let (_, map) = tiny_backbone(&mut b, x); // [96, 8, 8]
    let anchors = GridAnchors { sizes: vec![vec![24.0, 40.0, 64.0]], aspect_ratios: vec![ratios()] };
    let rcnn = RcnnSpec { rpn_batch: 64, rois_per_image: 64, ..RcnnSpec::new([300, 150], [64, 32]) };
    let spec = DetectorSpec::faster_rcnn(anchors, [side / 16, side / 16], [side, side], rcnn);
    let (rs, rc) = rpn(&mut b, map, 128, 9);
    let (s, c) = head(&mut b, map, 256, o.num_classes + 1);
    b.finish_rcnn(s, c, rs, rc, spec)
}

pub(crate) fn resnet50(o: &ModelOptions) -> Result<Network, GraphError> {
    let side = 608;
    let mut b = GraphBuilder::new("faster-rcnn-resnet50", [o.in_channels, side, side], Init::MsraPrelu { slope: 0.0 });
    let x = b.input();
    let map = resnet50_stages(&mut b, x, 3); // [1024, 38, 38]
    let anchors = GridAnchors { sizes: vec![vec![64.0, 128.0, 256.0, 512.0]], aspect_ratios: vec![ratios()] };
    let spec = DetectorSpec::faster_rcnn(anchors, [side / 16, side / 16], [side, side], RcnnSpec::new([2000, 1000], [2000, 300]));
    let (rs, rc) = rpn(&mut b, map, 512, 12);
    let (s, c) = head(&mut b, map, 1024, o.num_classes + 1);
    b.finish_rcnn(s, c, rs, rc, spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Priors;

    #[test]
    fn the_two_domains_meet_at_the_roi_align() {
        let g = tiny(&ModelOptions { num_classes: 4, in_channels: 1 }).unwrap();
        let d = g.detector.as_ref().unwrap();
        assert!(matches!(d.priors, Priors::Anchors(_)));
        assert_eq!(d.num_priors(), 8 * 8 * 9);
        let roi = g.roi_node().unwrap();
        assert_eq!(g.shape(roi), &vec![96, 14, 14]);
        assert_eq!(g.shape(g.output), &vec![5]);
        let out = |name: &str| g.extra_outputs.iter().find(|o| o.name == name).unwrap().node;
        assert_eq!(g.shape(out("box_codes")), &vec![16]);
        assert_eq!(g.shape(out("rpn_scores")), &vec![576, 1]);
        assert_eq!(g.shape(out("rpn_codes")), &vec![576, 4]);
        // the spec survives graph.json
        let json = serde_json::to_string(g.graph()).unwrap();
        let back: Network = serde_json::from_str(&json).unwrap();
        assert_eq!(&back, &g);
    }

    #[test]
    fn a_wrong_scale_or_a_per_image_read_after_the_roi_align_is_refused() {
        let g = tiny(&ModelOptions { num_classes: 2, in_channels: 1 }).unwrap();
        let roi = g.roi_node().unwrap();
        let mut bad = g.clone().into_graph();
        bad.nodes[roi].op = Op::RoiAlign { output: [14, 14], spatial_scale: 1.0 / 8.0, sampling_ratio: 2, aligned: false };
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("spatial_scale 0.125") && e.contains("roi.align"), "{e}");
        // the head reading a per-image node
        let mut bad = g.clone().into_graph();
        let fc6 = bad.node("roi.fc6").unwrap().0;
        bad.nodes[fc6 + 2].inputs = vec![fc6 - 5];
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("per-image node before the RoiAlign"), "{e}");
        // an SSD spec on a graph with a RoiAlign
        let mut bad = g.into_graph();
        let spec = bad.detector.as_mut().unwrap();
        spec.rcnn = None;
        let e = spec.check(3).unwrap_err().to_string();
        assert!(e.contains("grid anchors belong to a Faster R-CNN"), "{e}");
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("'roi.align' pools regions, which an SSD has none of"), "{e}");
    }

    #[test]
    fn the_book_recipe_pools_c4() {
        let g = resnet50(&ModelOptions { num_classes: 3, in_channels: 3 }).unwrap();
        let roi = g.roi_node().unwrap();
        let map = g.nodes[roi].inputs[0];
        assert_eq!(g.shape(map), &vec![1024, 38, 38]);
        assert_eq!(g.detector.as_ref().unwrap().num_priors(), 38 * 38 * 12);
        assert!(g.param("layer3.5.conv3.weight").is_some() && g.param("layer4.0.conv1.weight").is_none());
    }
}
