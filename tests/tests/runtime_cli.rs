//! `runtime eval / predict / bench` on a model trained and exported by the toolchain itself, and on the
//! FER2013 model made elsewhere in edge-demo/assets (flags instead of metadata).

use std::path::Path;

use tests::{assets_dir, pattern_dataset, run_bin, s, text, PATTERNS};

fn json(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(o)))
}

/// prepare (JPEG records) → train (4 epochs of mini-vgg) → export; returns (run dir, records dir, onnx file).
fn trained_pattern_model(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let raw = dir.join("raw");
    pattern_dataset(&raw, 70, 40, 7);
    // one undecodable file in a class folder: skipped and counted by prepare and by eval
    std::fs::write(raw.join("vertical/broken.jpg"), b"\xff\xd8 not really a jpeg").unwrap();
    let rec = dir.join("rec");
    let o = run_bin(
        "trainer",
        &["-q", "prepare", "folder", s(&raw), "--out", s(&rec), "--short-side", "32", "--quality", "90", "--val-fraction", "0.15", "--test-fraction", "0.3"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let run = dir.join("run");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[model]\nname = \"mini-vgg\"\n[data]\ntrain = \"{}\"\nval = \"{}\"\nmean = 110.0\nstd = 70.0\n\
             [train]\nbatch_size = 8\nepochs = 8\nlr = 0.005\nseed = 3\ndevice = \"cpu\"\nlog_every = 0\nrun = \"{}\"\n\
             [optimizer]\nname = \"sgd\"\nmomentum = 0.9\n",
            s(&rec.join("train.rec")),
            s(&rec.join("val.rec")),
            s(&run)
        ),
    )
    .unwrap();
    let o = run_bin("trainer", &["-q", "train", "--config", s(&config)]);
    assert!(o.status.success(), "{}", text(&o));
    let onnx = dir.join("patterns.onnx");
    let o = run_bin("exporter", &["export", "--run", s(&run), "--out", s(&onnx)]);
    assert!(o.status.success(), "{}", text(&o));
    (run, rec, onnx)
}

#[test]
fn runtime_eval_matches_trainer_eval_and_predicts_and_benches() {
    let scratch = tests::fresh_dir("runtime-cli");
    let dir = scratch.path().to_path_buf();
    let (run, rec, onnx) = trained_pattern_model(&dir);
    let test_rec = rec.join("test.rec");

    // the same weights and the same test records: libtorch and ONNX Runtime agree on rank-1
    let o = run_bin("trainer", &["eval", "--run", s(&run), "--data", s(&test_rec), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = json(&o);
    let trainer_rank1 = t["metrics"]["rank1"].as_f64().unwrap_or_else(|| panic!("{t}"));
    let report = dir.join("eval.json");
    let o = run_bin("runtime", &["eval", "--model", s(&onnx), "--data", s(&test_rec), "--batch", "7", "--json", s(&report), "--one-off"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let rank1 = r["rank1"].as_f64().unwrap();
    assert!((rank1 - trainer_rank1).abs() <= 0.001, "runtime rank-1 {rank1} vs trainer {trainer_rank1}\n{out}");
    assert!(rank1 > 0.8, "the pattern model should have learnt its data: {out}");
    assert_eq!(r["samples"], t["metrics"]["samples"], "{r}");
    // the report: per-class lines under the labels, a confusion matrix that sums to the sample count
    let n = r["samples"].as_u64().unwrap();
    let conf: Vec<Vec<u64>> = serde_json::from_value(r["confusion"].clone()).unwrap();
    assert_eq!(conf.iter().flatten().sum::<u64>(), n);
    let diag: u64 = (0..3).map(|i| conf[i][i]).sum();
    assert!((diag as f64 / n as f64 - rank1).abs() < 1e-9);
    let labels: Vec<&str> = r["per_class"].as_array().unwrap().iter().map(|c| c["label"].as_str().unwrap()).collect();
    let mut folders = PATTERNS.to_vec();
    folders.sort(); // `trainer prepare folder` numbers the classes in folder-name order
    assert_eq!(labels, folders);
    assert!(r["one_off"].as_f64().unwrap() >= rank1);
    assert_eq!(r["rank5"].as_f64().unwrap(), 1.0, "3 classes: the truth is always in the top 5");
    assert!(out.contains("confusion matrix") && out.contains("images/s"), "{out}");

    // a class folder of raw images (one broken file): same preprocessing from the metadata, the broken
    // file skipped and named, the numbers reconcile
    let o = run_bin("runtime", &["eval", "--model", s(&onnx), "--data", s(&dir.join("raw")), "--json", s(&report), "--ten-crop"]);
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!((r["read"].as_u64(), r["skipped"].as_u64(), r["samples"].as_u64()), (Some(211), Some(1), Some(210)), "{r}");
    assert!(r["skipped_items"][0][0].as_str().unwrap().ends_with("broken.jpg"), "{r}");
    assert!(r["rank1"].as_f64().unwrap() > 0.8, "{r}");

    // predict: the top label of a vertical-stripes image, as JSON lines, best first
    let img = dir.join("raw/vertical/000.png");
    let o = run_bin("runtime", &["predict", "--model", s(&onnx), s(&img), s(&dir.join("raw/vertical/broken.jpg")), "--top", "2", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let p: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(p["top"].as_array().unwrap().len(), 2);
    assert_eq!(p["top"][0][0], "vertical", "{p}");
    assert!(p["top"][0][1].as_f64().unwrap() >= p["top"][1][1].as_f64().unwrap());
    assert!(String::from_utf8_lossy(&o.stderr).contains("broken.jpg"), "{}", text(&o));

    // bench: one row per batch size, ordered percentiles, an end-to-end rate over the folder
    let o = run_bin(
        "runtime",
        &["bench", "--model", s(&onnx), "--batch", "1,4", "--seconds", "0.2", "--iters", "5", "--images", s(&dir.join("raw/diagonal")), "--json"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let b = json(&o);
    let rows = b["model_alone"].as_array().unwrap();
    assert_eq!(rows.iter().map(|r| r["batch"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 4]);
    for r in rows {
        let (p50, p90, p99) = (r["p50_ms"].as_f64().unwrap(), r["p90_ms"].as_f64().unwrap(), r["p99_ms"].as_f64().unwrap());
        assert!(p50 > 0.0 && p50 <= p90 && p90 <= p99 && r["iterations"].as_u64().unwrap() >= 5, "{r}");
    }
    assert_eq!(b["end_to_end"][0]["images"], 70, "{b}");
}

#[test]
fn runtime_runs_a_model_made_elsewhere_from_flags_and_names_what_is_wrong() {
    let model = assets_dir().join("fer_emotion.onnx");
    let faces = assets_dir().join("faces");
    let scratch = tests::fresh_dir("fer-labels");
    let labels = scratch.path().join("fer-labels.txt");
    std::fs::write(&labels, "angry\ndisgust\nfear\nhappy\nsad\nsurprise\nneutral\n").unwrap();
    let flags = ["--size", "64x64", "--layout", "nhwc", "--gray", "--mean", "127.5", "--std", "127.5", "--labels", s(&labels)];
    let mut args = vec!["predict", "--model", s(&model), "--top", "7", "--json"];
    args.extend(flags);
    args.push(s(&faces));
    let o = run_bin("runtime", &args);
    assert!(o.status.success(), "{}", text(&o));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    for p in &lines {
        let probs: f64 = p["top"].as_array().unwrap().iter().map(|t| t[1].as_f64().unwrap()).sum();
        assert!((probs - 1.0).abs() < 1e-4, "all 7 classes, a softmax: {p}");
    }
    // the astronaut (whole image, not a face crop) is still labelled happy by this model
    assert!(lines[0]["image"].as_str().unwrap().ends_with("astronaut.png"));
    assert_eq!(lines[0]["top"][0][0], "happy", "{}", lines[0]);
    // one image per batch on three workers: the same answers, in the same order
    let mut one_by_one = args.clone();
    one_by_one.splice(1..1, ["--batch", "1", "--workers", "3"]);
    let o1 = run_bin("runtime", &one_by_one);
    assert!(o1.status.success(), "{}", text(&o1));
    let again: Vec<serde_json::Value> = String::from_utf8_lossy(&o1.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(again.len(), lines.len());
    for (a, b) in again.iter().zip(&lines) {
        assert_eq!(a["image"], b["image"]);
        assert_eq!(a["top"][0][0], b["top"][0][0], "{a} vs {b}");
        // (another batch size may pick other kernels: equal within float rounding)
        let gap = a["top"]
            .as_array()
            .unwrap()
            .iter()
            .zip(b["top"].as_array().unwrap())
            .map(|(x, y)| (x[1].as_f64().unwrap() - y[1].as_f64().unwrap()).abs())
            .fold(0.0, f64::max);
        assert!(gap < 1e-4, "{a} vs {b}");
    }

    // no metadata and no --size: the message says which flags to give
    let o = run_bin("runtime", &["predict", "--model", s(&model), s(&faces)]);
    assert!(!o.status.success() && text(&o).contains("--size WxH"), "{}", text(&o));
    // a wrong shape names the input and the shape the model expects
    let o = run_bin("runtime", &["predict", "--model", s(&model), "--size", "48x48", s(&faces)]);
    assert!(!o.status.success() && text(&o).contains("input 'input' expects [N, 64, 64, 1]"), "{}", text(&o));
    // labels that do not fit the outputs
    std::fs::write(&labels, "a\nb\n").unwrap();
    let o = run_bin("runtime", &["bench", "--model", s(&model), "--size", "64x64", "--layout", "nhwc", "--gray", "--labels", s(&labels)]);
    assert!(!o.status.success() && text(&o).contains("7 classes but there are 2 labels"), "{}", text(&o));
    // a missing and a malformed model file
    let o = run_bin("runtime", &["eval", "--model", "/nonexistent.onnx", "--data", s(&faces)]);
    assert!(!o.status.success() && text(&o).contains("/nonexistent.onnx: no such file"), "{}", text(&o));
    let o = run_bin("runtime", &["predict", "--model", s(&labels), "--size", "8x8", s(&faces)]);
    assert!(!o.status.success() && text(&o).contains(s(&labels)), "{}", text(&o));
}
