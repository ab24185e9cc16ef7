//! A trained detector exported as one ONNX file in the TFOD contract: the exporter's parity check
//! (heads and final detections against libtorch and the Rust post-process) passes on the run's own
//! samples, the file has NMS and top-M inside and no Loop or If, its batch is dynamic, and its
//! metadata says what it is. A Faster R-CNN likewise: `rcnn-tiny`
//! (configs/fashion-detect-rcnn-tiny.toml) overfits a handful of composites, exports as one ONNX file
//! (proposals, RoiAlign, the head at batch N·R and the final NMS inside) whose every stage the exporter
//! proves against libtorch, and runs through `runtime eval` (the trainer's mAP), `runtime predict`,
//! `runtime bench` and `edge-demo detect` with no flag of its own.

use models::meta::Task;
use tests::{run_bin, s, text};

/// `trainer train` with the repository's recipe `config` on `train` and `val`, into `run`, with `sets`.
fn train(config: &str, train: &std::path::Path, val: &std::path::Path, run: &std::path::Path, sets: &[&str]) {
    let config = tests::repo_root().join("configs").join(config);
    let paths = [format!("data.train=\"{}\"", train.display()), format!("data.val=\"{}\"", val.display()), format!("train.run=\"{}\"", run.display())];
    let mut args = vec!["train", "--config", s(&config)];
    for set in paths.iter().map(String::as_str).chain(sets.iter().copied()) {
        args.extend(["--set", set]);
    }
    let o = run_bin("trainer", &args);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn a_trained_ssd_exports_with_nms_inside_and_detection_parity() {
    let scratch = tests::fresh_dir("detection-export");
    let dir = scratch.path();
    let (data, run, out) = (dir.join("fashion-detect"), dir.join("run"), dir.join("ssd.onnx"));
    train("fashion-detect-ssd.toml", &data.join("train.rec"), &data.join("test.rec"), &run, &["data.limit_train=960", "data.limit_val=64", "train.epochs=2"]);

    let o = run_bin("exporter", &["export", "--run", s(&run), "--out", s(&out), "--samples", "32"]);
    let said = text(&o);
    assert!(o.status.success(), "{said}");
    // "detections vs the reference post-process of libtorch's heads: K of K matched on 32 images"
    let line = said.lines().find(|l| l.contains("detections vs the reference")).unwrap_or_else(|| panic!("{said}"));
    let nums: Vec<usize> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
    assert!(nums.len() >= 3 && nums[0] == nums[1] && nums[0] > 32 && nums[2] == 32, "{line}");

    let summary = exporter::inspect::inspect(&out).unwrap();
    for op in ["NonMaxSuppression", "TopK", "Softmax", "Exp"] {
        assert!(summary.operators.contains_key(op), "no {op}: {:?}", summary.operators);
    }
    assert!(!summary.operators.contains_key("Loop") && !summary.operators.contains_key("If"), "{:?}", summary.operators);
    let outputs: Vec<(&str, Vec<String>)> = summary.outputs.iter().map(|p| (p.name.as_str(), p.dims.clone())).collect();
    let dims = |v: &[&str]| v.iter().map(|d| d.to_string()).collect::<Vec<_>>();
    assert_eq!(
        outputs,
        [
            ("detection_boxes", dims(&["N", "100", "4"])),
            ("detection_scores", dims(&["N", "100"])),
            ("detection_classes", dims(&["N", "100"])),
            ("num_detections", dims(&["N"]))
        ]
    );
    let meta = summary.meta().unwrap().unwrap();
    assert_eq!(meta.task, Task::Detection);
    assert_eq!(meta.labels, ["background", "T-shirt/top", "Trouser", "Sneaker", "Bag"]);
    let spec = meta.detector.as_ref().unwrap();
    assert_eq!((spec.image, spec.num_priors()), ([128, 128], 1504));
    assert!(meta.parity.as_deref().unwrap().contains("\"detections\""));

    // a dynamic batch: three scenes at once give what each gives alone
    let t = data::DetectTransform::eval([128, 128], 1, meta.preprocessing.mean.clone(), meta.preprocessing.std.clone());
    let file = data::records::RecordFile::open(&data.join("test.rec")).unwrap();
    let opts = data::LoaderOptions { batch_size: 3, workers: 1, ..Default::default() };
    let batch = data::Loader::detection(file, t, opts).epoch(0).next().unwrap().unwrap();
    let so = runtime::SessionOptions::default();
    let together = runtime::engine::infer(&out, &so, batch.data.clone(), &[3, 1, 128, 128]).unwrap();
    let plane = 128 * 128;
    let mut found = 0.0;
    for i in 0..3 {
        let alone = runtime::engine::infer(&out, &so, batch.data[i * plane..(i + 1) * plane].to_vec(), &[1, 1, 128, 128]).unwrap();
        for ((name, d3, v3), (_, d1, v1)) in together.iter().zip(&alone) {
            let per = d1.iter().product::<usize>();
            assert_eq!(d3[0], 3, "{name}");
            assert_eq!(&v3[i * per..(i + 1) * per], &v1[..], "{name} of image {i}");
        }
        found += together.iter().find(|(n, _, _)| n == "num_detections").unwrap().2[i];
    }
    assert!(found >= 3.0, "{found} detections in 3 scenes");

    // runtime eval equals trainer eval on the same records (the same loader transform and evaluator)
    let test = data.join("test.rec");
    let o = run_bin("trainer", &["eval", "--run", s(&run), "--data", s(&test), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let trained: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let report = dir.join("eval.json");
    let o = run_bin("runtime", &["eval", "-m", s(&out), "--data", s(&test), "--json", s(&report)]);
    assert!(o.status.success(), "{}", text(&o));
    let ran: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let (a, b) = (trained["metrics"]["map"].as_f64().unwrap(), ran["map"].as_f64().unwrap());
    assert!((a - b).abs() < 1e-4, "trainer eval mAP {a}, runtime eval {b}");
    // and COCO's AP@[.5:.95], which rewards tight boxes: lower than mAP@0.5, equal on both sides
    let (a, b) = (trained["metrics"]["coco_ap"].as_f64().unwrap(), ran["coco_ap"].as_f64().unwrap());
    assert!((a - b).abs() < 1e-4 && a > 0.0 && a < trained["metrics"]["map"].as_f64().unwrap(), "trainer COCO AP {a}, runtime {b}");
    for (t, r) in trained["metrics"]["ap"].as_array().unwrap().iter().zip(ran["per_class"].as_array().unwrap()) {
        assert_eq!((&t["label"], &t["objects"]), (&r["label"], &r["objects"]));
    }
    assert!(text(&o).contains("mAP@0.5"), "{}", text(&o));

    // runtime predict: JSON lines in the image's own pixels, and the drawn images
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();
    let recs = data::records::RecordFile::open(&test).unwrap();
    let mut truth = vec![];
    for i in 0..6 {
        let r = recs.read(i).unwrap();
        // twice the stored width, 1.5 times its height: the boxes come back in these pixels
        let img = data::image::load_from_memory(&r.image).unwrap().resize_exact(256, 192, data::image::imageops::FilterType::Triangle);
        img.save(images.join(format!("scene{i}.png"))).unwrap();
        truth.push(r.boxes);
    }
    std::fs::write(images.join("broken.png"), b"not an image").unwrap();
    let drawn = dir.join("drawn");
    let o = run_bin("runtime", &["predict", "-m", s(&out), s(&images), "--json", "--min-score", "0.3", "--out", s(&drawn)]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("skipped") && text(&o).contains("broken.png"), "{}", text(&o));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 6);
    let (mut hits, mut reported) = (0, 0);
    for (line, gts) in lines.iter().zip(&truth) {
        assert!(line["image"].as_str().unwrap().ends_with(".png"));
        for d in line["detections"].as_array().unwrap() {
            assert!(d["score"].as_f64().unwrap() >= 0.3 && d["label"].is_string() && d["class"].as_u64().unwrap() >= 1);
            let b: Vec<f32> = serde_json::from_value(d["box"].clone()).unwrap();
            reported += 1;
            // a found box lies on a true one, scaled by 2 across and 1.5 down
            hits += gts.iter().any(|g| models::detect::iou(&[g.x0 * 2.0, g.y0 * 1.5, g.x1 * 2.0, g.y1 * 1.5], &[b[0], b[1], b[2], b[3]]) > 0.5) as usize;
        }
    }
    let objects: usize = truth.iter().map(Vec::len).sum();
    eprintln!("predict: {reported} boxes at score ≥ 0.3 in 6 scenes of {objects} objects, {hits} on a true object");
    assert!(hits >= 4 && 2 * hits >= reported, "{hits} of {reported} boxes on the {objects} true objects: {lines:?}");
    assert_eq!(std::fs::read_dir(&drawn).unwrap().count(), 6);

    // the export's size comes from its metadata: a --size would be silently wrong, so it is refused
    let o = run_bin("runtime", &["predict", "-m", s(&out), "--size", "64x64", s(&images)]);
    assert!(!o.status.success() && text(&o).contains("--size") && text(&o).contains("metadata"), "{}", text(&o));

    // runtime bench for a detector
    let o = run_bin("runtime", &["bench", "-m", s(&out), "--batch", "1,4", "--iters", "3", "--seconds", "0", "--warmup", "1"]);
    assert!(o.status.success() && text(&o).contains("detector"), "{}", text(&o));

    // trainer dump: the stored images as files, the boxes as JSON lines, exactly as recorded
    let dumped = dir.join("dumped");
    let o = run_bin("trainer", &["dump", s(&test), "--out", s(&dumped), "--max", "4"]);
    assert!(o.status.success(), "{}", text(&o));
    let listed: Vec<serde_json::Value> =
        std::fs::read_to_string(dumped.join("records.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(listed.len(), 4);
    for (i, l) in listed.iter().enumerate() {
        let r = recs.read(i).unwrap();
        assert_eq!(std::fs::read(dumped.join(l["image"].as_str().unwrap())).unwrap(), r.image, "record {i}'s bytes");
        let boxes: Vec<data::records::BoundingBox> = serde_json::from_value(l["boxes"].clone()).unwrap();
        assert_eq!((boxes, l["key"].as_str().unwrap()), (r.boxes, r.key.as_str()));
    }
    // the class names go with the boxes
    assert_eq!(std::fs::read(dumped.join("labels.txt")).unwrap(), std::fs::read(data.join("labels.txt")).unwrap());
    std::fs::remove_file(dumped.join("records.jsonl")).unwrap();
    std::fs::remove_file(dumped.join("labels.txt")).unwrap();

    // edge-demo detect on the dumped scenes (an image folder): what runtime predict finds
    let (boxed, frames) = (dir.join("boxed"), dir.join("frames.jsonl"));
    let o = run_bin("edge-demo", &["-q", "detect", "-m", s(&out), "--min-score", "0.3", "--source", s(&dumped), "--output", s(&boxed), "--json", s(&frames)]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run_bin("runtime", &["predict", "-m", s(&out), s(&dumped), "--json", "--min-score", "0.3"]);
    assert!(o.status.success(), "{}", text(&o));
    let predicted: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let per_frame: Vec<serde_json::Value> = std::fs::read_to_string(&frames).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!((predicted.len(), per_frame.len()), (4, 5), "4 images, then the summary");
    for (p, f) in predicted.iter().zip(&per_frame) {
        let (a, b) = (p["detections"].as_array().unwrap(), f["detections"].as_array().unwrap());
        assert_eq!(a.len(), b.len(), "{p} vs {f}");
        for (x, y) in a.iter().zip(b) {
            let (bx, by): (Vec<f32>, Vec<f32>) = (serde_json::from_value(x["box"].clone()).unwrap(), serde_json::from_value(y["box"].clone()).unwrap());
            assert_eq!(x["label"], y["label"]);
            assert!(models::detect::iou(&[bx[0], bx[1], bx[2], bx[3]], &[by[0], by[1], by[2], by[3]]) > 0.95, "{x} vs {y}");
            assert!((x["score"].as_f64().unwrap() - y["score"].as_f64().unwrap()).abs() < 0.02, "{x} vs {y}");
        }
    }
    assert_eq!(std::fs::read_dir(&boxed).unwrap().count(), 4, "the folder source writes a folder");
}

#[test]
fn rcnn_tiny_overfits_a_handful_of_scenes_and_exports_with_every_stage_proved() {
    let scratch = tests::fresh_dir("rcnn-export");
    let dir = scratch.path();
    let (data, run, out) = (dir.join("fashion-detect"), dir.join("run"), dir.join("rcnn.onnx"));
    let o = run_bin("trainer", &["-q", "prepare", "fashion-detect", "--out", s(&data), "--train-images", "32", "--test-images", "8"]);
    assert!(o.status.success(), "{}", text(&o));
    let train_rec = data.join("train.rec");
    // the same 32 scenes to train on and to measure: overfitting is the point
    let overfit = [
        "train.batch_size=8",
        "train.epochs=40",
        "schedule.max_epochs=40",
        "train.log_every=0",
        "train.checkpoint_every=40",
        "augment.flip=false",
        "augment.photometric=false",
    ];
    train("fashion-detect-rcnn-tiny.toml", &train_rec, &train_rec, &run, &overfit);
    let epochs: Vec<serde_json::Value> = std::fs::read_to_string(run.join("metrics-from-0000.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l.get("val").is_some())
        .collect();
    let (first, last) = (&epochs[0], epochs.last().unwrap());
    let loss = |e: &serde_json::Value| e["train_loss"].as_f64().unwrap();
    let map = last["val"]["map"].as_f64().unwrap();
    eprintln!("rcnn-tiny on 32 scenes: loss {:.4} → {:.4}, mAP@0.5 on them {map:.4}", loss(first), loss(last));
    assert!(loss(last) < 0.5 * loss(first), "the loss falls: {} → {}", loss(first), loss(last));
    assert!(map > 0.8, "mAP@0.5 on the 32 scenes it trained on: {map} (0.98 here)");

    // the export proves the RPN, the proposals, the head and the detections
    let o = run_bin("exporter", &["export", "--run", s(&run), "--out", s(&out), "--samples", "32"]);
    let said = text(&o);
    assert!(o.status.success(), "{said}");
    let summary = exporter::inspect::inspect(&out).unwrap();
    for op in ["RoiAlign", "NonMaxSuppression", "TopK", "MaxPool", "Gemm"] {
        assert!(summary.operators.contains_key(op), "no {op}: {:?}", summary.operators);
    }
    assert!(!summary.operators.contains_key("Loop") && !summary.operators.contains_key("If"), "{:?}", summary.operators);
    let names: Vec<&str> = summary.outputs.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["detection_boxes", "detection_scores", "detection_classes", "num_detections"]);
    let meta = summary.meta().unwrap().unwrap();
    assert!(meta.detector.as_ref().unwrap().rcnn.is_some());
    let parity: serde_json::Value = serde_json::from_str(meta.parity.as_deref().unwrap()).unwrap();
    let stages = &parity["detections"]["stages"];
    let detections = &parity["detections"]["detections"];
    eprintln!("parity: {stages}\n{detections}");
    assert!(stages["proposals"].as_u64().unwrap() > 32 && stages["proposals"] == stages["proposals_matched"], "{stages}");
    assert!(stages["rpn_codes_max_abs_diff"].as_f64().unwrap() <= 1e-4 && stages["head_codes_max_abs_diff"].as_f64().unwrap() <= 1e-4, "{stages}");
    let (reference, matched) = (detections["reference"].as_u64().unwrap(), detections["matched"].as_u64().unwrap());
    assert!(reference >= 32 && matched == reference && detections["images"] == 32, "{detections}");

    // a dynamic batch: three scenes at once give what each gives alone
    let t = data::DetectTransform::eval([128, 128], 1, meta.preprocessing.mean.clone(), meta.preprocessing.std.clone());
    let file = data::records::RecordFile::open(&train_rec).unwrap();
    let opts = data::LoaderOptions { batch_size: 3, workers: 1, ..Default::default() };
    let batch = data::Loader::detection(file, t, opts).epoch(0).next().unwrap().unwrap();
    let so = runtime::SessionOptions::default();
    let together = runtime::engine::infer(&out, &so, batch.data.clone(), &[3, 1, 128, 128]).unwrap();
    let plane = 128 * 128;
    for i in 0..3 {
        let alone = runtime::engine::infer(&out, &so, batch.data[i * plane..(i + 1) * plane].to_vec(), &[1, 1, 128, 128]).unwrap();
        for ((name, d3, v3), (_, d1, v1)) in together.iter().zip(&alone) {
            let per = d1.iter().product::<usize>();
            assert_eq!(d3[0], 3, "{name}");
            let diff = v3[i * per..(i + 1) * per].iter().zip(v1).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(diff < 1e-4, "{name} of image {i}: {diff}");
        }
    }

    // runtime eval equals trainer eval on the same records
    let o = run_bin("trainer", &["eval", "--run", s(&run), "--data", s(&train_rec), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let trained: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let report = dir.join("eval.json");
    let o = run_bin("runtime", &["eval", "-m", s(&out), "--data", s(&train_rec), "--json", s(&report)]);
    assert!(o.status.success(), "{}", text(&o));
    let ran: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let (a, b) = (trained["metrics"]["map"].as_f64().unwrap(), ran["map"].as_f64().unwrap());
    assert!((a - b).abs() < 1e-4 && a > 0.8, "trainer eval mAP {a}, runtime eval {b}");

    // runtime predict and edge-demo detect on the same images agree; runtime bench reports it
    let images = dir.join("images");
    let o = run_bin("trainer", &["dump", s(&train_rec), "--out", s(&images), "--max", "4"]);
    assert!(o.status.success(), "{}", text(&o));
    std::fs::remove_file(images.join("records.jsonl")).unwrap();
    std::fs::remove_file(images.join("labels.txt")).unwrap();
    let o = run_bin("runtime", &["predict", "-m", s(&out), s(&images), "--json", "--min-score", "0.3"]);
    assert!(o.status.success(), "{}", text(&o));
    let predicted: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let frames = dir.join("frames.jsonl");
    let o = run_bin(
        "edge-demo",
        &["-q", "detect", "-m", s(&out), "--min-score", "0.3", "--source", s(&images), "--output", s(&dir.join("boxed")), "--json", s(&frames)],
    );
    assert!(o.status.success(), "{}", text(&o));
    let per_frame: Vec<serde_json::Value> = std::fs::read_to_string(&frames).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!((predicted.len(), per_frame.len()), (4, 5), "4 images, then the summary");
    let mut found = 0;
    for (p, f) in predicted.iter().zip(&per_frame) {
        let (a, b) = (p["detections"].as_array().unwrap(), f["detections"].as_array().unwrap());
        assert_eq!(a.len(), b.len(), "{p} vs {f}");
        found += a.len();
        for (x, y) in a.iter().zip(b) {
            assert_eq!(x["label"], y["label"]);
        }
    }
    assert!(found >= 4, "{found} objects found in 4 scenes it trained on");
    let o = run_bin("runtime", &["bench", "-m", s(&out), "--batch", "1,4", "--iters", "3", "--seconds", "0", "--warmup", "1"]);
    assert!(o.status.success() && text(&o).contains("detector"), "{}", text(&o));
}
