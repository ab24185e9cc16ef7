//! The Rust side of bench/detect_bench.sh: times our multi-class NMS and mAP evaluator on the inputs
//! bench/detect_geometry.py wrote, and prints one JSON line.
//!
//! `cargo run --release -p models --example detect_bench -- INPUT.json ITERS`

use std::time::Instant;

use models::detect::{nms, Bbox, Detection, GroundTruth, MapEvaluator};
use serde::Deserialize;

#[derive(Deserialize)]
struct NmsInput {
    boxes: Vec<Bbox>,
    /// [classes][boxes], class 0 the background (skipped)
    scores: Vec<Vec<f32>>,
    iou: f32,
    score: f32,
    max_per_class: usize,
}

#[derive(Deserialize)]
struct Image {
    gt_boxes: Vec<Bbox>,
    gt_classes: Vec<usize>,
    det_boxes: Vec<Bbox>,
    det_classes: Vec<usize>,
    det_scores: Vec<f32>,
}

#[derive(Deserialize)]
struct MapInput {
    classes: usize,
    images: Vec<Image>,
}

#[derive(Deserialize)]
struct Input {
    nms: NmsInput,
    map: MapInput,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).ok_or("usage: detect_bench INPUT.json ITERS")?;
    let iters: usize = args.get(2).map_or(Ok(10), |s| s.parse())?;
    let input: Input = serde_json::from_slice(&std::fs::read(path).map_err(|e| format!("{path}: {e}"))?)?;
    let n = &input.nms;
    let mut times = vec![];
    let mut kept = vec![];
    for _ in 0..iters {
        let t0 = Instant::now();
        kept.clear();
        for (c, scores) in n.scores.iter().enumerate().skip(1) {
            for i in nms(&n.boxes, scores, n.iou, Some(n.score), Some(n.max_per_class)) {
                kept.push((c, i));
            }
        }
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let nms_ms = median(times);
    let m = &input.map;
    let images: Vec<(Vec<GroundTruth>, Vec<Detection>)> = m
        .images
        .iter()
        .map(|im| {
            let gt = im.gt_boxes.iter().zip(&im.gt_classes).map(|(b, &c)| GroundTruth { class: c, bbox: *b, difficult: false }).collect();
            let det = im.det_boxes.iter().zip(&im.det_classes).zip(&im.det_scores).map(|((b, &c), &s)| Detection { class: c, score: s, bbox: *b }).collect();
            (gt, det)
        })
        .collect();
    let mut times = vec![];
    let mut result = None;
    for _ in 0..iters {
        let t0 = Instant::now();
        let mut e = MapEvaluator::new(m.classes, 0.5);
        for (gt, det) in &images {
            e.add_image(gt, det)?;
        }
        result = Some(e.evaluate());
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let map_ms = median(times);
    kept.sort_unstable();
    let line = serde_json::json!({
        "nms_ms": nms_ms, "nms_kept": kept.len(), "nms_kept_hash": kept.iter().fold(0u64, |h, &(c, i)| h.wrapping_mul(1_000_003).wrapping_add((c * 1_000_000 + i) as u64)),
        "map_ms": map_ms, "map": result.and_then(|r| r.mean_ap),
    });
    println!("{line}");
    Ok(())
}
