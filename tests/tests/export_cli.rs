//! `exporter export` on a run directory: the file carries its labels and preprocessing, passes the
//! parity check against libtorch, and is refused when the check fails.

use tests::{run_bin, text};

#[test]
fn export_writes_a_verified_self_describing_file_or_refuses() {
    let scratch = tests::fresh_dir("export-cli");
    let dir = scratch.path().to_path_buf();
    let run = dir.join("run");
    let o = run_bin("trainer", &["init", "--model", "emotion-vgg", "--num-classes", "6", "--run", run.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));

    let onnx = dir.join("emotion.onnx");
    let o = run_bin("exporter", &["export", "--run", run.to_str().unwrap(), "--out", onnx.to_str().unwrap(), "--logits"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("top-1 agreement 4/4"), "{}", text(&o));

    let o = run_bin("exporter", &["inspect", onnx.to_str().unwrap(), "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // the metadata, read back by the one reader the runtime uses
    let meta = exporter::inspect::inspect(&onnx).unwrap().meta().unwrap().expect("our export has metadata");
    assert_eq!((meta.architecture.as_str(), meta.task, meta.epoch), ("emotion-vgg", models::meta::Task::Classification, 0));
    assert_eq!(meta.preprocessing.input, [1, 48, 48]);
    assert_eq!(meta.labels.len(), 6);
    let parity: serde_json::Value = serde_json::from_str(meta.parity.as_deref().unwrap()).unwrap();
    assert!(parity["max_abs_diff"].as_f64().unwrap() <= 1e-4, "{parity}");
    assert_eq!((parity["precision"].as_str(), parity["fixed_inputs"]["top1_agree"].as_u64()), (Some("fp32"), Some(4)), "{parity}");
    // `trainer init` names no data: there are no real samples to compare on, and the metadata says so
    assert!(parity["samples"].is_null() && parity["samples_note"] == "the run's config names no data", "{parity}");
    // the batch dimension is symbolic; dropout is gone; both outputs are there
    assert_eq!(s["inputs"][0]["dims"], serde_json::json!(["N", "1", "48", "48"]));
    assert!(s["operators"].get("Dropout").is_none(), "{s}");
    let outputs: Vec<&str> = s["outputs"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(outputs, ["probabilities", "logits"]);

    // a check that cannot pass: the file is refused and removed
    let refused = dir.join("refused.onnx");
    let o = run_bin("exporter", &["export", "--run", run.to_str().unwrap(), "--out", refused.to_str().unwrap(), "--tolerance=-1"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("parity check failed") && !refused.exists(), "{}", text(&o));
    // float16 passes its own bound but cannot reach a float32 one: the bound applies to it too
    let o = run_bin("exporter", &["export", "--run", run.to_str().unwrap(), "--out", refused.to_str().unwrap(), "--fp16"]);
    assert!(o.status.success() && refused.exists(), "{}", text(&o));
    let o = run_bin("exporter", &["export", "--run", run.to_str().unwrap(), "--out", refused.to_str().unwrap(), "--fp16", "--tolerance", "1e-6"]);
    assert!(!o.status.success() && !refused.exists(), "{}", text(&o));
    assert!(text(&o).contains("on 4 fixed pseudo-random images: max |Δp|") && text(&o).contains("> 1e-6"), "{}", text(&o));
}
