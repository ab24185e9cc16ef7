//! The detection geometry against independent implementations, on seeded random cases, all answered
//! by one run of `tests/python/detection_oracle.py` in the project's Python: torchvision's
//! `DefaultBoxGenerator`, `AnchorGenerator`, `BoxCoder`, `Matcher` and `SSDMatcher`; ONNX Runtime's
//! own `NonMaxSuppression` kernel; the TensorFlow Object Detection API's `PascalDetectionEvaluator`
//! (the book's mAP) and podm's PASCAL VOC metrics.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use data::rng::Xorshift64;
use models::detect::{iou_matrix, Bbox};
use models::detect::{nms, BoxCoder, CocoEvaluator, Detection, GridAnchors, GroundTruth, MapEvaluator, Matcher, SsdPriors};
use serde_json::{json, Value};

fn python() -> PathBuf {
    std::env::var_os("DLCV_PYTHON").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"))
}

/// A box inside a `size`-pixel square.
fn bbox(r: &mut Xorshift64, size: f32) -> Bbox {
    let (x, y) = (r.range(0.0, size * 0.8), r.range(0.0, size * 0.8));
    [x, y, x + r.range(2.0, size * 0.3), y + r.range(2.0, size * 0.3)]
}

/// `b` moved and resized by up to `amount` of its size.
fn jitter(r: &mut Xorshift64, b: &Bbox, amount: f32) -> Bbox {
    let (w, h) = (b[2] - b[0], b[3] - b[1]);
    let mut d = || r.range(-amount, amount);
    [b[0] + d() * w, b[1] + d() * h, b[2] + d() * w, b[3] + d() * h]
}

/// Boxes, scores, IoU threshold, score threshold, cap.
type NmsCase = (Vec<Bbox>, Vec<f32>, f32, f32, usize);
/// One image's ground truth and detections.
type Image = (Vec<GroundTruth>, Vec<Detection>);

struct Cases {
    ssd: Vec<(SsdPriors, Vec<[usize; 2]>, [usize; 2])>,
    anchors: Vec<(GridAnchors, Vec<[usize; 2]>, [usize; 2])>,
    coder: (Vec<Bbox>, Vec<Bbox>, Vec<[f32; 4]>),
    matcher: Vec<(Matcher, Vec<f32>, usize)>,
    nms: Vec<NmsCase>,
    map: Vec<(usize, Vec<Image>)>,
}

fn cases() -> Cases {
    // seeded: the cases are the same on every run
    let mut r = Xorshift64::seeded(20261202);
    let ssd = vec![
        (SsdPriors::ssd300(), vec![[38, 38], [19, 19], [10, 10], [5, 5], [3, 3], [1, 1]], [300, 300]),
        // evenly spaced scales, centres from the map sizes, a non-square image, no clipping
        (
            SsdPriors { aspect_ratios: vec![vec![2.0], vec![2.0, 3.0], vec![1.5]], min_ratio: 0.2, max_ratio: 0.95, scales: None, steps: None, clip: false },
            vec![[12, 16], [6, 8], [3, 4]],
            [96, 128],
        ),
        (
            SsdPriors { aspect_ratios: vec![vec![3.0]], min_ratio: 0.3, max_ratio: 0.8, scales: None, steps: Some(vec![7.0]), clip: true },
            vec![[9, 5]],
            [64, 36],
        ),
    ];
    let anchors = vec![
        (GridAnchors { sizes: vec![vec![128.0, 256.0, 512.0]], aspect_ratios: vec![vec![0.5, 1.0, 2.0]] }, vec![[38, 50]], [600, 800]),
        (
            GridAnchors { sizes: vec![vec![32.0, 45.0], vec![90.0]], aspect_ratios: vec![vec![0.5, 1.0, 2.0], vec![1.0, 3.0]] },
            vec![[10, 13], [5, 7]],
            [80, 104],
        ),
    ];
    let priors: Vec<Bbox> = (0..300).map(|_| bbox(&mut r, 300.0)).collect();
    let gt: Vec<Bbox> = priors.iter().map(|p| jitter(&mut r, p, 0.4)).map(|b| [b[0].min(b[2] - 1.0), b[1].min(b[3] - 1.0), b[2], b[3]]).collect();
    let codes: Vec<[f32; 4]> = (0..300).map(|_| [r.range(-20.0, 20.0), r.range(-20.0, 20.0), r.range(-12.0, 30.0), r.range(-12.0, 30.0)]).collect();
    // prior 0 is ground truth 0's best match, but the only good prior of ground truth 1: SSD gives it to 1
    let forced = [[10.0, 10.0, 30.0, 30.0], [12.0, 10.0, 32.0, 30.0], [60.0, 60.0, 80.0, 80.0]];
    let forced_gt = [[10.0, 10.0, 30.0, 30.0], [13.0, 10.0, 33.0, 30.0]];
    let mut matcher = vec![(Matcher::ssd(0.5), iou_matrix(&forced_gt, &forced[..1]), 2)];
    matcher.push((Matcher::ssd(0.5), iou_matrix(&forced_gt, &forced), 2));
    for i in 0..24 {
        let priors: Vec<Bbox> = (0..60).map(|_| bbox(&mut r, 100.0)).collect();
        let num_gt = 1 + r.index(6);
        // each ground truth near some prior, so that every row has a clear best
        let gts: Vec<Bbox> = (0..num_gt)
            .map(|_| {
                let p = priors[r.index(60)];
                jitter(&mut r, &p, 0.3)
            })
            .collect();
        let m = match i % 3 {
            0 => Matcher::ssd(0.5),
            1 => Matcher { high: 0.7, low: 0.3, allow_low_quality: true, force_best: false },
            _ => Matcher { high: 0.5, low: 0.5, allow_low_quality: false, force_best: false },
        };
        matcher.push((m, iou_matrix(&gts, &priors), num_gt));
    }
    // IoU exactly at the threshold (2×2 squares sharing a 1×2 strip: 2 / 6 in f32 too) is kept
    let strip = vec![[0.0, 0.0, 2.0, 2.0], [1.0, 0.0, 3.0, 2.0], [0.5, 0.0, 2.5, 2.0]];
    let mut nms = vec![(strip.clone(), vec![0.9, 0.8, 0.7], 2.0 / 6.0, 0.0, 10), (strip, vec![0.9, 0.8, 0.7], 2.0 / 6.0 - 1e-7, 0.0, 10)];
    for i in 0..40 {
        let centres: Vec<Bbox> = (0..4).map(|_| bbox(&mut r, 100.0)).collect();
        let n = 5 + r.index(40);
        let boxes: Vec<Bbox> = (0..n)
            .map(|_| {
                let c = centres[r.index(4)];
                jitter(&mut r, &c, 0.25)
            })
            .collect();
        // every fourth case has scores on a coarse grid: ties, and scores equal to the threshold
        let scores: Vec<f32> = (0..n).map(|_| if i % 4 == 0 { (r.index(6) as f32) * 0.125 } else { r.unit_f32() }).collect();
        let iou = [0.3, 0.5, 0.7, 0.45][i % 4];
        let score = [0.0, 0.25, 0.5, 0.125][(i / 4) % 4];
        let max_output = [100, 3, 1, 7, 0][i % 5];
        nms.push((boxes, scores, iou, score, max_output));
    }
    // a detection overlapping two objects equally takes the first; the next one then finds the first taken
    let (g1, g2) = ([0.0, 0.0, 10.0, 10.0], [4.0, 0.0, 14.0, 10.0]);
    let tie = vec![(
        vec![GroundTruth { class: 1, bbox: g1, difficult: false }, GroundTruth { class: 1, bbox: g2, difficult: false }],
        vec![Detection { class: 1, score: 0.9, bbox: [2.0, 0.0, 12.0, 10.0] }, Detection { class: 1, score: 0.8, bbox: g1 }],
    )];
    let mut map = vec![(1, tie)];
    for case in 0..24 {
        let classes = 1 + case % 4;
        let mut images = vec![];
        for _ in 0..(2 + r.index(7)) {
            let mut truth = vec![];
            let mut dets = vec![];
            for _ in 0..r.index(6) {
                let class = 1 + r.index(classes);
                let bbox = bbox(&mut r, 200.0);
                // difficult objects in every third case (TFOD's flag; podm has none)
                let difficult = case % 3 == 2 && r.index(4) == 0;
                truth.push(GroundTruth { class, bbox, difficult });
                // found 0..3 times, closely or loosely, sometimes as the wrong class
                for _ in 0..r.index(4) {
                    let c = if r.index(6) == 0 { 1 + r.index(classes) } else { class };
                    let amount = if r.index(3) == 0 { 0.5 } else { 0.1 };
                    dets.push(Detection { class: c, score: r.unit_f32(), bbox: jitter(&mut r, &bbox, amount) });
                }
            }
            for _ in 0..r.index(4) {
                dets.push(Detection { class: 1 + r.index(classes), score: r.unit_f32(), bbox: bbox(&mut r, 200.0) });
            }
            images.push((truth, dets));
        }
        map.push((classes, images));
    }
    // more detections of one class in one image than COCO keeps (100): the cut at the best 100 counts
    let truth: Vec<GroundTruth> = (0..6).map(|_| GroundTruth { class: 1, bbox: bbox(&mut r, 300.0), difficult: false }).collect();
    let crowded: Vec<Detection> = (0..160)
        .map(|i| {
            let g = truth[i % truth.len()].bbox;
            Detection { class: 1, score: r.unit_f32(), bbox: if i % 3 == 0 { bbox(&mut r, 300.0) } else { jitter(&mut r, &g, 0.2) } }
        })
        .collect();
    map.push((1, vec![(truth, crowded), (vec![], vec![])]));
    Cases { ssd, anchors, coder: (gt, priors, codes), matcher, nms, map }
}

fn to_json(c: &Cases) -> Value {
    json!({
        "priors": c.ssd.iter().map(|(p, grids, image)| json!({
            "aspect_ratios": p.aspect_ratios, "min_ratio": p.min_ratio, "max_ratio": p.max_ratio, "scales": p.scales,
            "steps": p.steps, "clip": p.clip, "grids": grids, "image": image,
        })).collect::<Vec<_>>(),
        "anchors": c.anchors.iter().map(|(a, grids, image)| json!({"sizes": a.sizes, "aspect_ratios": a.aspect_ratios, "grids": grids, "image": image})).collect::<Vec<_>>(),
        "coder": [{"weights": [10.0, 10.0, 5.0, 5.0], "gt": c.coder.0, "priors": c.coder.1, "codes": c.coder.2}],
        "matcher": c.matcher.iter().map(|(m, iou, num_gt)| json!({
            "kind": if m.force_best { "ssd" } else { "matcher" }, "high": m.high, "low": m.low,
            "allow_low_quality": m.allow_low_quality, "iou": iou, "num_gt": num_gt,
        })).collect::<Vec<_>>(),
        "nms": c.nms.iter().map(|(b, s, iou, score, max)| json!({"boxes": b, "scores": s, "iou": iou, "score": score, "max_output": max})).collect::<Vec<_>>(),
        "map": c.map.iter().map(|(k, images)| json!({"classes": k, "images": images.iter().map(|(t, d)| json!({
            "gt_boxes": t.iter().map(|g| g.bbox).collect::<Vec<_>>(), "gt_classes": t.iter().map(|g| g.class).collect::<Vec<_>>(),
            "gt_difficult": t.iter().map(|g| g.difficult).collect::<Vec<_>>(),
            "det_boxes": d.iter().map(|x| x.bbox).collect::<Vec<_>>(), "det_classes": d.iter().map(|x| x.class).collect::<Vec<_>>(),
            "det_scores": d.iter().map(|x| x.score).collect::<Vec<_>>(),
        })).collect::<Vec<_>>()})).collect::<Vec<_>>(),
    })
}

/// The cases and the oracles' answers, computed once for all tests of this file.
fn oracle() -> &'static (Cases, Value) {
    static ONCE: OnceLock<(Cases, Value)> = OnceLock::new();
    ONCE.get_or_init(|| {
        let c = cases();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/detection_oracle.py");
        let mut child = Command::new(python())
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the project's Python (scripts/setup.sh installs it)");
        child.stdin.take().unwrap().write_all(to_json(&c).to_string().as_bytes()).unwrap();
        let o = child.wait_with_output().unwrap();
        assert!(o.status.success(), "{}: {}", script.display(), String::from_utf8_lossy(&o.stderr));
        (c, serde_json::from_slice(&o.stdout).expect("the script prints JSON"))
    })
}

fn boxes_of(v: &Value) -> Vec<[f32; 4]> {
    serde_json::from_value::<Vec<[f64; 4]>>(v.clone()).unwrap().iter().map(|b| b.map(|x| x as f32)).collect()
}

/// The largest difference in units in the last place between two float lists.
fn max_ulps(a: &[[f32; 4]], b: &[[f32; 4]]) -> u32 {
    a.iter().flatten().zip(b.iter().flatten()).map(|(x, y)| (x.to_bits() as i64 - y.to_bits() as i64).unsigned_abs() as u32).max().unwrap_or(0)
}

#[test]
fn ssd_priors_equal_torchvisions_default_boxes() {
    let (c, o) = oracle();
    for (i, (p, grids, image)) in c.ssd.iter().enumerate() {
        let ours = p.boxes(grids, *image).unwrap();
        let theirs = boxes_of(&o["priors"][i]);
        assert_eq!(ours.len(), theirs.len(), "case {i}");
        assert_eq!(max_ulps(&ours, &theirs), 0, "case {i}: {:?}", ours.iter().zip(&theirs).find(|(a, b)| a != b));
    }
}

#[test]
fn grid_anchors_equal_torchvisions_anchor_generator() {
    let (c, o) = oracle();
    for (i, (a, grids, image)) in c.anchors.iter().enumerate() {
        let ours = a.boxes(grids, *image).unwrap();
        let theirs = boxes_of(&o["anchors"][i]);
        assert_eq!(ours.len(), theirs.len(), "case {i}");
        assert_eq!(max_ulps(&ours, &theirs), 0, "case {i}: {:?}", ours.iter().zip(&theirs).find(|(a, b)| a != b));
    }
}

#[test]
fn box_coder_equals_torchvisions() {
    let (c, o) = oracle();
    let coder = BoxCoder::default();
    let (gt, priors, codes) = &c.coder;
    let enc: Vec<[f32; 4]> = gt.iter().zip(priors).map(|(g, p)| coder.encode(g, p)).collect();
    let dec: Vec<[f32; 4]> = codes.iter().zip(priors).map(|(d, p)| coder.decode(d, p)).collect();
    // exp and log come from libm here and from libtorch's vectorised kernels there: a few ulps apart
    let (e, d) = (max_ulps(&enc, &boxes_of(&o["coder"][0]["encoded"])), max_ulps(&dec, &boxes_of(&o["coder"][0]["decoded"])));
    eprintln!("box coder: encode within {e} ulps, decode within {d} ulps of torchvision");
    assert!(e <= 8 && d <= 8, "encode {e} ulps, decode {d} ulps");
    // the size codes reach past the clamp (30 / 5 > ln(1000/16)): those must be clamped like theirs
    assert!(codes.iter().any(|c| c[2] / 5.0 > coder.clip));
}

#[test]
fn matchers_equal_torchvisions() {
    let (c, o) = oracle();
    for (i, (m, iou, num_gt)) in c.matcher.iter().enumerate() {
        let ours = m.matches(iou, *num_gt, iou.len() / num_gt);
        let theirs: Vec<i64> = serde_json::from_value(o["matcher"][i].clone()).unwrap();
        assert_eq!(ours, theirs, "case {i}: {m:?}");
    }
}

#[test]
fn nms_equals_onnx_runtimes_kernel() {
    let (c, o) = oracle();
    let mut kept = 0;
    for (i, (boxes, scores, iou, score, max)) in c.nms.iter().enumerate() {
        let ours = nms(boxes, scores, *iou, Some(*score), Some(*max));
        let theirs: Vec<usize> = serde_json::from_value(o["nms"][i].clone()).unwrap();
        assert_eq!(ours, theirs, "case {i}: iou {iou}, score {score}, max {max}");
        kept += ours.len();
    }
    assert!(kept > 100, "the cases kept only {kept} boxes in all");
}

#[test]
fn map_equals_the_tfod_pascal_evaluator_and_podm() {
    let (c, o) = oracle();
    let mut compared = 0;
    for (i, (classes, images)) in c.map.iter().enumerate() {
        let mut e = MapEvaluator::new(*classes, 0.5);
        for (truth, dets) in images {
            e.add_image(truth, dets).unwrap();
        }
        let ours = e.evaluate();
        let tfod = &o["tfod_map"][i];
        let close = |a: Option<f64>, b: &Value, who: &str, k: usize| match (a, b.as_f64()) {
            (None, None) => {}
            (Some(x), Some(y)) => assert!((x - y).abs() < 1e-9, "case {i} class {k}: ours {x}, {who} {y}"),
            (x, y) => panic!("case {i} class {k}: ours {x:?}, {who} {y:?}"),
        };
        close(ours.mean_ap, &tfod["mean_ap"], "TFOD", 0);
        for k in 0..*classes {
            close(ours.per_class[k], &tfod["per_class"][k], "TFOD", k + 1);
            if !o["podm_map"][i].is_null() {
                close(ours.per_class[k], &o["podm_map"][i]["per_class"][k], "podm", k + 1);
            }
        }
        compared += ours.per_class.iter().flatten().count();
    }
    assert!(compared > 30, "only {compared} class APs compared");
}

#[test]
fn coco_ap_equals_pycocotools() {
    let (c, o) = oracle();
    let mut compared = 0;
    for (i, (classes, images)) in c.map.iter().enumerate() {
        let mut e = CocoEvaluator::new(*classes);
        for (truth, dets) in images {
            e.add_image(truth, dets);
        }
        let ours = e.evaluate();
        let theirs = &o["coco_map"][i];
        let close = |a: Option<f64>, b: &Value, what: &str| match (a, b.as_f64()) {
            // pycocotools reports -1 where there is nothing to average
            (None, None) => {}
            (None, Some(-1.0)) => {}
            (Some(x), Some(y)) => assert!((x - y).abs() < 1e-12, "case {i} {what}: ours {x}, pycocotools {y}"),
            (x, y) => panic!("case {i} {what}: ours {x:?}, pycocotools {y:?}"),
        };
        close(ours.ap, &theirs["ap"], "AP@[.5:.95]");
        close(ours.ap50, &theirs["ap50"], "AP50");
        close(ours.ap75, &theirs["ap75"], "AP75");
        for k in 0..*classes {
            close(ours.per_class[k], &theirs["per_class"][k], &format!("class {}", k + 1));
        }
        compared += ours.per_class.iter().flatten().count();
        // the thresholds are numpy's, bit for bit
        let t: Vec<f64> = serde_json::from_value(theirs["iou_thresholds"].clone()).unwrap();
        assert_eq!(t.len(), 10);
        assert_eq!((t[0], t[5], t[9]), (0.5, 0.75, 0.95));
    }
    assert!(compared > 30, "only {compared} class APs compared");
}
