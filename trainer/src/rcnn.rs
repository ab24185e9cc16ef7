//! Faster R-CNN in libtorch (Ren et al. 2015, as torchvision's `RegionProposalNetwork` and `RoIHeads`
//! train it), trained jointly: the four losses summed (the book, ch. 14: better than alternating).
//!
//! - RPN targets ([`rpn_match`], [`rpn_loss`]): every anchor matched to each image's ground truth on
//!   the device (foreground at IoU ≥ `rpn_fg_iou` and each ground truth's best anchors, background
//!   below `rpn_bg_iou`, ignored between), `rpn_batch` sampled per image, up to
//!   `rpn_positive_fraction` foreground.
//! - Proposals ([`proposals`]): the best `pre_nms_top_n` anchors by objectness decoded by the RPN's
//!   coder, clipped, those under `min_size` dropped, class-agnostic NMS (the Rust one, ONNX Runtime's
//!   semantics), the best `post_nms_top_n` kept; detached.
//! - ROI targets ([`roi_targets`]): the proposals and the ground truth matched (foreground at IoU ≥
//!   the spec's `match_iou`, background in [`roi_bg_iou_low`, `match_iou`)), `rois_per_image`
//!   sampled, up to `roi_positive_fraction` foreground, box targets coded by the spec's coder.
//! - Losses ([`rcnn_loss`]): binary cross-entropy of the sampled anchors' objectness and Smooth L1
//!   (β = 1/9) of the foreground anchors' codes, both over the sampled anchors; cross-entropy of the
//!   sampled regions' classes and Smooth L1 (β = 1/9) of the foreground regions' own-class codes,
//!   both over the sampled regions: torchvision's normalisations.

use data::records::BoundingBox;
use models::detect::{nms, postprocess, Bbox, BoxCoder, Detection, DetectorSpec, RcnnSpec};
use tch::{Device, Kind, Tensor};

use crate::detection::{encode, DetectionError};
use crate::net::Net;

const BETA: f64 = 1.0 / 9.0;

/// IoU of `a` `[…, G, 4]` with `b` `[P, 4]`: `[…, G, P]` (0 where the union is empty), in the
/// operations of `models::detect::iou`.
pub fn iou_tensor(a: &Tensor, b: &Tensor) -> Tensor {
    let (a, b) = (a.unsqueeze(-2), b);
    let side = |k: i64| (a.select(-1, k), b.select(-1, k));
    let ((ax0, bx0), (ay0, by0), (ax1, bx1), (ay1, by1)) = (side(0), side(1), side(2), side(3));
    let iw = (ax1.minimum(&bx1) - ax0.maximum(&bx0)).clamp_min(0.0);
    let ih = (ay1.minimum(&by1) - ay0.maximum(&by0)).clamp_min(0.0);
    let inter = iw * ih;
    let union = (&ax1 - &ax0) * (&ay1 - &ay0) + (&bx1 - &bx0) * (&by1 - &by0) - &inter;
    (&inter / &union).where_self(&union.gt(0.0), &inter.zeros_like())
}

/// [`BoxCoder::decode`] of `codes` `[R, 4]` against `priors` `[R, 4]` on the device.
pub fn decode(codes: &Tensor, priors: &Tensor, coder: &BoxCoder) -> Tensor {
    let c = |t: &Tensor, k: i64| t.select(1, k);
    let [wx, wy, ww, wh] = coder.weights.map(f64::from);
    let (pw, ph) = (c(priors, 2) - c(priors, 0), c(priors, 3) - c(priors, 1));
    let (pcx, pcy) = (c(priors, 0) + &pw * 0.5, c(priors, 1) + &ph * 0.5);
    let (dx, dy) = (c(codes, 0) / wx, c(codes, 1) / wy);
    let clip = f64::from(coder.clip);
    let (dw, dh) = ((c(codes, 2) / ww).clamp_max(clip), (c(codes, 3) / wh).clamp_max(clip));
    let (cx, cy) = (dx * &pw + pcx, dy * &ph + pcy);
    let (w, h) = (dw.exp() * pw, dh.exp() * ph);
    let (hw, hh) = (&w * 0.5, &h * 0.5);
    Tensor::stack(&[&cx - &hw, &cy - &hh, &cx + &hw, &cy + &hh], 1)
}

fn boxes_tensor(boxes: &[BoundingBox], device: Device) -> Tensor {
    let flat: Vec<f32> = boxes.iter().flat_map(|b| [b.x0, b.y0, b.x1, b.y1]).collect();
    Tensor::from_slice(&flat).view([boxes.len() as i64, 4]).to_device(device)
}

/// Up to `quota` of the `mask`ed entries of `[K]`, chosen uniformly (libtorch's generator): a mask.
fn sample(mask: &Tensor, quota: &Tensor) -> Tensor {
    let keys = Tensor::rand(mask.size(), (Kind::Float, mask.device())).where_self(mask, &mask.to_kind(Kind::Float).full_like(-1.0));
    let (_, order) = keys.sort(0, true);
    let (_, rank) = order.sort(0, false);
    rank.lt_tensor(quota).logical_and(mask)
}

/// Foreground and background masks of `k` candidates with `fg`/`bg` masks: up to `batch ·
/// fraction` foreground, the rest of `batch` background (torchvision's `BalancedPositiveNegativeSampler`).
fn balanced(fg: &Tensor, bg: &Tensor, batch: usize, fraction: f32) -> (Tensor, Tensor) {
    let want_fg = (batch as f64 * f64::from(fraction)) as i64;
    let n_fg = fg.sum(Kind::Int64).clamp_max(want_fg);
    let fg = sample(fg, &n_fg);
    let n_bg = (Tensor::from(batch as i64).to_device(fg.device()) - fg.sum(Kind::Int64)).clamp_min(0);
    (fg, sample(bg, &n_bg))
}

/// The RPN's matcher ([`RcnnSpec::rpn_matcher`], as [`models::detect::Matcher::matches`] gives it)
/// on the device for one image's ground truth `gt` `[G ≥ 1, 4]`: foreground and background masks
/// `[A]` (neither: ignored) and each anchor's best ground truth.
pub fn rpn_match(gt: &Tensor, anchors: &Tensor, r: &RcnnSpec) -> (Tensor, Tensor, Tensor) {
    let m = r.rpn_matcher();
    let iou = iou_tensor(gt, anchors); // [G, A]
    let (best, which) = iou.max_dim(0, false);
    let mut fg = best.ge(f64::from(m.high));
    if m.allow_low_quality {
        // each ground truth's best anchors (ties included) are foreground too
        let top = iou.amax(&[1i64][..], true);
        fg = fg.logical_or(&iou.eq_tensor(&top).any_dim(0, false));
    }
    let bg = best.lt(f64::from(m.low)).logical_and(&fg.logical_not());
    (fg, bg, which)
}

/// The RPN's loss for a batch: (objectness, box) from its outputs `scores` `[N, A, 1]`, `codes`
/// `[N, A, 4]`, the `anchors` `[A, 4]` and each image's ground truth.
pub fn rpn_loss(scores: &Tensor, codes: &Tensor, anchors: &Tensor, boxes: &[Vec<BoundingBox>], r: &RcnnSpec) -> (Tensor, Tensor) {
    let device = anchors.device();
    let a = anchors.size()[0];
    let (mut obj, mut reg) = (vec![], vec![]);
    let mut sampled = 0i64;
    for (i, gt) in boxes.iter().enumerate() {
        let s = scores.get(i as i64).squeeze_dim(1);
        let (fg, bg, target) = tch::no_grad(|| {
            if gt.is_empty() {
                let none = Tensor::zeros([a], (Kind::Bool, device));
                return (none.shallow_clone(), none.logical_not(), Tensor::zeros([a, 4], (Kind::Float, device)));
            }
            let g = boxes_tensor(gt, device);
            let (fg, bg, which) = rpn_match(&g, anchors, r);
            (fg, bg, encode(&g.index_select(0, &which), anchors, &r.rpn_coder.weights))
        });
        let (fg, bg) = tch::no_grad(|| balanced(&fg, &bg, r.rpn_batch, r.rpn_positive_fraction));
        let keep = fg.logical_or(&bg);
        sampled += keep.sum(Kind::Int64).int64_value(&[]);
        let label = fg.to_kind(Kind::Float);
        obj.push((s.binary_cross_entropy_with_logits::<Tensor>(&label, None, None, tch::Reduction::None) * keep.to_kind(Kind::Float)).sum(Kind::Float));
        let d = codes.get(i as i64).smooth_l1_loss(&target, tch::Reduction::None, BETA).sum_dim_intlist(&[1i64][..], false, Kind::Float);
        reg.push((d * label).sum(Kind::Float));
    }
    let n = sampled.max(1) as f64;
    (Tensor::stack(&obj, 0).sum(Kind::Float) / n, Tensor::stack(&reg, 0).sum(Kind::Float) / n)
}

/// The proposals of each image (`[R_i, 4]`, input pixels, best first), detached.
pub fn proposals(scores: &Tensor, codes: &Tensor, anchors: &Tensor, spec: &DetectorSpec, train: bool) -> Vec<Tensor> {
    let r = spec.rcnn.as_ref().expect("a Faster R-CNN's spec");
    let (pre, post) = r.proposals(train);
    let [h, w] = spec.image.map(|v| v as f64);
    let _guard = tch::no_grad_guard();
    let a = anchors.size()[0];
    (0..scores.size()[0])
        .map(|i| {
            let s = scores.get(i).squeeze_dim(1).to_kind(Kind::Float);
            let (top, idx) = s.topk((pre as i64).min(a), 0, true, true);
            let b = decode(&codes.get(i).to_kind(Kind::Float).index_select(0, &idx), &anchors.index_select(0, &idx), &r.rpn_coder);
            let b = Tensor::stack(&[b.select(1, 0).clamp(0.0, w), b.select(1, 1).clamp(0.0, h), b.select(1, 2).clamp(0.0, w), b.select(1, 3).clamp(0.0, h)], 1);
            let big = (b.select(1, 2) - b.select(1, 0)).ge(f64::from(r.min_size)).logical_and(&(b.select(1, 3) - b.select(1, 1)).ge(f64::from(r.min_size)));
            let host: Vec<f32> = Vec::try_from(b.to_device(Device::Cpu).contiguous().view([-1])).expect("f32 boxes");
            let score: Vec<f32> = Vec::try_from(top.to_device(Device::Cpu)).expect("f32 scores");
            let big: Vec<bool> = Vec::try_from(big.to_device(Device::Cpu)).expect("a mask");
            let kept: Vec<usize> = (0..score.len()).filter(|&k| big[k]).collect();
            let bx: Vec<Bbox> = kept.iter().map(|&k| [host[4 * k], host[4 * k + 1], host[4 * k + 2], host[4 * k + 3]]).collect();
            let sc: Vec<f32> = kept.iter().map(|&k| score[k]).collect();
            let keep: Vec<i64> = nms(&bx, &sc, r.rpn_nms_iou, None, Some(post)).into_iter().map(|j| kept[j] as i64).collect();
            b.index_select(0, &Tensor::from_slice(&keep).to_device(b.device()))
        })
        .collect()
}

/// The regions the second stage trains on: `rois` `[R, 5]` (image index, box), their classes `[R]`
/// (0 the background) and box targets `[R, 4]` (meaningful where the class is above 0).
pub struct RoiTargets {
    pub rois: Tensor,
    pub labels: Tensor,
    pub codes: Tensor,
}

/// Regions `[R, 5]` of image `i`: its index, then the `boxes` `[R, 4]`, as RoiAlign reads them.
fn with_image(i: usize, boxes: &Tensor) -> Tensor {
    Tensor::cat(&[Tensor::full([boxes.size()[0], 1], i as f64, (Kind::Float, boxes.device())), boxes.shallow_clone()], 1)
}

/// Samples each image's proposals with its ground truth added into the second stage's regions.
pub fn roi_targets(props: &[Tensor], boxes: &[Vec<BoundingBox>], spec: &DetectorSpec) -> RoiTargets {
    let r = spec.rcnn.as_ref().expect("a Faster R-CNN's spec");
    let _guard = tch::no_grad_guard();
    let (mut rois, mut labels, mut codes) = (vec![], vec![], vec![]);
    for (i, (p, gt)) in props.iter().zip(boxes).enumerate() {
        let device = p.device();
        let g = boxes_tensor(gt, device);
        let cand = if gt.is_empty() { p.shallow_clone() } else { Tensor::cat(&[p, &g], 0) };
        let k = cand.size()[0];
        let (label, target, fg, bg) = if gt.is_empty() {
            let none = Tensor::zeros([k], (Kind::Bool, device));
            (Tensor::zeros([k], (Kind::Int64, device)), Tensor::zeros([k, 4], (Kind::Float, device)), none.shallow_clone(), none.logical_not())
        } else {
            let iou = iou_tensor(&g, &cand);
            let (best, which) = iou.max_dim(0, false);
            let fg = best.ge(f64::from(spec.match_iou));
            let bg = best.lt(f64::from(spec.match_iou)).logical_and(&best.ge(f64::from(r.roi_bg_iou_low)));
            let cls: Vec<i64> = gt.iter().map(|b| i64::from(b.class) + 1).collect();
            let cls = Tensor::from_slice(&cls).to_device(device).index_select(0, &which);
            let label = cls.where_self(&fg, &cls.zeros_like());
            (label, encode(&g.index_select(0, &which), &cand, &spec.coder.weights), fg, bg)
        };
        let (fg, bg) = balanced(&fg, &bg, r.rois_per_image, r.roi_positive_fraction);
        let keep = fg.logical_or(&bg).nonzero().squeeze_dim(1);
        rois.push(with_image(i, &cand.index_select(0, &keep)));
        labels.push(label.index_select(0, &keep));
        codes.push(target.index_select(0, &keep));
    }
    RoiTargets { rois: Tensor::cat(&rois, 0), labels: Tensor::cat(&labels, 0), codes: Tensor::cat(&codes, 0) }
}

/// The second stage's loss: (class, box) of its outputs `scores` `[R, C]`, `codes` `[R, 4 (C − 1)]`.
pub fn head_loss(scores: &Tensor, codes: &Tensor, t: &RoiTargets) -> (Tensor, Tensor) {
    let r = scores.size()[0];
    let class = scores.cross_entropy_loss::<Tensor>(&t.labels, None, tch::Reduction::Mean, -100, 0.0);
    let fg = t.labels.gt(0);
    let own = (&t.labels - 1).clamp_min(0); // [R]
    let at = (own * 4).unsqueeze(1) + Tensor::arange(4, (Kind::Int64, codes.device())).unsqueeze(0); // [R, 4]
    let mine = codes.gather(1, &at, false);
    let d = mine.smooth_l1_loss(&t.codes, tch::Reduction::None, BETA).sum_dim_intlist(&[1i64][..], false, Kind::Float);
    let boxes = (d * fg.to_kind(Kind::Float)).sum(Kind::Float) / r.max(1) as f64;
    (class, boxes)
}

/// The per-image values a Faster R-CNN's two stages read: the RPN's objectness and box codes and the
/// map its RoiAlign pools.
pub struct ImageOutputs {
    scores: Tensor,
    codes: Tensor,
    map: Tensor,
}

/// Runs the per-image part of `net` on `x`.
pub fn image_outputs(net: &Net, x: &Tensor, train: bool) -> Result<ImageOutputs, DetectionError> {
    let (_, r) = specs(net)?;
    let (rs, rc, map) = image_nodes(net, r);
    let mut out = net.forward_nodes(x, train, &[rs, rc, map]);
    let (map, codes, scores) = (out.pop().expect("3 values"), out.pop().expect("3 values"), out.pop().expect("3 values"));
    Ok(ImageOutputs { scores, codes, map })
}

/// The four losses of a batch in one pass: (total, box part, class part), as SSD's loss reports them
/// (box: the RPN's and the head's Smooth L1; class: objectness and the head's cross-entropy).
pub fn rcnn_loss(net: &Net, x: &Tensor, boxes: &[Vec<BoundingBox>], anchors: &Tensor, train: bool) -> Result<(Tensor, Tensor, Tensor), DetectionError> {
    let out = image_outputs(net, x, train)?;
    rcnn_loss_of(net, &out, boxes, anchors, train)
}

/// [`rcnn_loss`] from the per-image values already computed (the proposals with the training counts).
pub fn rcnn_loss_of(
    net: &Net,
    out: &ImageOutputs,
    boxes: &[Vec<BoundingBox>],
    anchors: &Tensor,
    train: bool,
) -> Result<(Tensor, Tensor, Tensor), DetectionError> {
    let (spec, r) = specs(net)?;
    let (obj, rpn_box) = rpn_loss(&out.scores, &out.codes, anchors, boxes, r);
    let props = proposals(&out.scores, &out.codes, anchors, spec, true);
    let t = roi_targets(&props, boxes, spec);
    let (scores, codes) = region_nodes(net, spec);
    let heads = net.forward_rois(&out.map, &t.rois, train, &[scores, codes]);
    let (cls, roi_box) = head_loss(&heads[0], &heads[1], &t);
    let boxes_part = rpn_box + roi_box;
    let class_part = obj + cls;
    Ok((&boxes_part + &class_part, boxes_part, class_part))
}

/// What the exporter's parity check holds an exported Faster R-CNN to, as host values: the RPN's
/// objectness logits `[N, A]` and codes `[N, A, 4]`, each image's inference proposals, its detections
/// ([`rcnn_detections`]), and, for regions given per image, the head's softmax scores `[R, C]` and
/// codes `[R, 4 (C − 1)]` on them, images in order.
pub struct RcnnReference {
    pub rpn_scores: Vec<f32>,
    pub rpn_codes: Vec<f32>,
    pub proposals: Vec<Vec<Bbox>>,
    pub detections: Vec<Vec<Detection>>,
    pub head: Option<(Vec<f32>, Vec<f32>)>,
}

/// [`RcnnReference`] of `net` (eval mode) on the batch `x` of `shape`; `regions` (one list per image)
/// are fed to the second stage as they are.
pub fn rcnn_reference(net: &Net, x: &[f32], shape: [usize; 4], regions: Option<&[Vec<Bbox>]>) -> Result<RcnnReference, DetectionError> {
    let (spec, _) = specs(net)?;
    let _guard = tch::no_grad_guard();
    let t = Tensor::from_slice(x).view(shape.map(|d| d as i64)).to_device(net.device);
    let anchors = crate::detection::priors_tensor(spec, net.device)?;
    let out = image_outputs(net, &t, false)?;
    let host = |t: &Tensor| -> Vec<f32> { Vec::try_from(t.to_kind(Kind::Float).to_device(Device::Cpu).contiguous().view([-1])).expect("f32 values") };
    let boxes = |t: &Tensor| -> Vec<Bbox> { host(t).chunks(4).map(|c| [c[0], c[1], c[2], c[3]]).collect() };
    let proposals = proposals(&out.scores, &out.codes, &anchors, spec, false).iter().map(boxes).collect();
    let detections = rcnn_detections(net, &out, &anchors)?;
    let head = regions.map(|regions| {
        let rois: Vec<Tensor> = regions
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.is_empty())
            .map(|(i, r)| {
                let flat: Vec<f32> = r.iter().flatten().copied().collect();
                with_image(i, &Tensor::from_slice(&flat).view([r.len() as i64, 4]).to_device(net.device))
            })
            .collect();
        if rois.is_empty() {
            return (vec![], vec![]);
        }
        let (scores, codes) = region_nodes(net, spec);
        let heads = net.forward_rois(&out.map, &Tensor::cat(&rois, 0), false, &[scores, codes]);
        (host(&heads[0].to_kind(Kind::Float).softmax(-1, Kind::Float)), host(&heads[1]))
    });
    Ok(RcnnReference { rpn_scores: host(&out.scores), rpn_codes: host(&out.codes), proposals, detections, head })
}

/// A Faster R-CNN's spec and its two-stage part.
fn specs(net: &Net) -> Result<(&DetectorSpec, &RcnnSpec), DetectionError> {
    let not = || DetectionError::NotADetector { model: net.graph.name.clone() };
    let spec = net.graph.detector.as_ref().ok_or_else(not)?;
    Ok((spec, spec.rcnn.as_ref().ok_or_else(not)?))
}

fn node_of(net: &Net, name: &str) -> usize {
    net.graph.extra_outputs.iter().find(|o| o.name == name).map(|o| o.node).expect("an output the spec names (checked by validate)")
}

/// The RPN's objectness, its box codes and the map the RoiAlign reads.
fn image_nodes(net: &Net, r: &RcnnSpec) -> (usize, usize, usize) {
    let roi = net.graph.roi_node().expect("a Faster R-CNN has a RoiAlign (checked by validate)");
    (node_of(net, &r.scores_output), node_of(net, &r.codes_output), net.graph.nodes[roi].inputs[0])
}

fn region_nodes(net: &Net, spec: &DetectorSpec) -> (usize, usize) {
    (net.graph.output, node_of(net, &spec.codes_output))
}

/// Each image's detections in eval mode from its per-image values: inference proposals, the
/// second stage, softmax, and [`postprocess`] with the proposals as the priors of the class-wise codes.
pub fn rcnn_detections(net: &Net, out: &ImageOutputs, anchors: &Tensor) -> Result<Vec<Vec<Detection>>, DetectionError> {
    let (spec, _) = specs(net)?;
    let _guard = tch::no_grad_guard();
    let props = proposals(&out.scores, &out.codes, anchors, spec, false);
    let rois: Vec<Tensor> = props.iter().enumerate().map(|(i, p)| with_image(i, p)).collect();
    let (scores, codes) = region_nodes(net, spec);
    let heads = net.forward_rois(&out.map, &Tensor::cat(&rois, 0), false, &[scores, codes]);
    let probs = heads[0].to_kind(Kind::Float).softmax(-1, Kind::Float).to_device(Device::Cpu).contiguous();
    let codes = heads[1].to_kind(Kind::Float).to_device(Device::Cpu).contiguous();
    let mut at = 0;
    let mut all = vec![];
    for p in &props {
        let n = p.size()[0];
        if n == 0 {
            all.push(vec![]);
            continue;
        }
        let prior: Vec<f32> = Vec::try_from(p.to_device(Device::Cpu).contiguous().view([-1])).expect("f32 boxes");
        let prior: Vec<Bbox> = prior.chunks(4).map(|c| [c[0], c[1], c[2], c[3]]).collect();
        let s: Vec<f32> = Vec::try_from(probs.narrow(0, at, n).view([-1])).expect("f32 scores");
        let c: Vec<f32> = Vec::try_from(codes.narrow(0, at, n).view([-1])).expect("f32 codes");
        all.push(postprocess(&s, &c, &prior, &spec.coder, spec.image, &spec.postprocess)?);
        at += n;
    }
    Ok(all)
}
