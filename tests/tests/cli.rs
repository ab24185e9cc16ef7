//! The command-line contract shared by the four binaries: --help, --version, a clear error on bad
//! arguments, and each back end's doctor doing real work on this machine.

use tests::{assets_dir, has_nvidia_gpu, run_bin, text};

const BINARIES: [&str; 4] = ["trainer", "exporter", "runtime", "edge-demo"];

#[test]
fn every_binary_has_help_and_the_workspace_version() {
    for b in BINARIES {
        let o = run_bin(b, &["--version"]);
        assert!(o.status.success(), "{b} --version: {}", text(&o));
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), format!("{b} {}", models::VERSION));
        let o = run_bin(b, &["--help"]);
        let help = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success() && help.contains("Usage:") && help.contains("--verbose"), "{b} --help: {}", text(&o));
    }
}

#[test]
fn unknown_flags_fail_naming_the_flag() {
    for b in BINARIES {
        let o = run_bin(b, &["--no-such-flag"]);
        assert_eq!(o.status.code(), Some(2), "{b}: {}", text(&o));
        assert!(String::from_utf8_lossy(&o.stderr).contains("--no-such-flag"), "{b}: {}", text(&o));
    }
}

#[test]
fn trainer_doctor_computes_on_the_cpu() {
    let o = run_bin("trainer", &["doctor", "--device", "cpu", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["device_check"], serde_json::json!({"ok": true, "value": "conv2d on Cpu gives 9 as it should"}), "{r}");
    assert!(r["libtorch_version"].as_str().unwrap().starts_with("2.11.0"), "{r}");
}

#[test]
fn trainer_refuses_a_bad_or_missing_device() {
    let o = run_bin("trainer", &["doctor", "--device", "tpu"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown device 'tpu'"), "{}", text(&o));
    if !has_nvidia_gpu() {
        let o = run_bin("trainer", &["doctor", "--device", "cuda:0"]);
        assert!(!o.status.success(), "cuda without a GPU must fail: {}", text(&o));
        assert!(String::from_utf8_lossy(&o.stderr).contains("device 'cuda:0' was requested but"), "{}", text(&o));
    }
}

#[test]
fn runtime_doctor_runs_a_real_model_on_the_cpu() {
    let model = assets_dir().join("fer_emotion.onnx");
    let o = run_bin("runtime", &["doctor", "--provider", "cpu", "--model", model.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(r["providers"].as_array().unwrap().iter().any(|p| p == "CPUExecutionProvider"), "{r}");
    let lines = r["model"]["value"].as_array().unwrap_or_else(|| panic!("model run failed: {r}"));
    // fer_emotion.onnx: one output of 7 emotion probabilities for the one (zero) input image.
    assert_eq!(lines.len(), 1, "{r}");
    assert!(lines[0].as_str().unwrap().contains("shape [1, 7], 7 values, all finite: true"), "{r}");
}

#[test]
fn runtime_cuda_without_a_gpu_is_an_error_never_a_cpu_fallback() {
    if has_nvidia_gpu() {
        return; // the GPU test below covers that machine
    }
    let model = assets_dir().join("fer_emotion.onnx");
    let o = run_bin("runtime", &["doctor", "--provider", "cuda", "--model", model.to_str().unwrap()]);
    assert!(!o.status.success(), "{}", text(&o));
    let all = text(&o);
    assert!(all.contains("cuda:0 is not available") && all.contains("ORT_DYLIB_PATH"), "{all}");
}

#[test]
#[ignore = "needs a CUDA GPU and onnxruntime-gpu (ORT_DYLIB_PATH): run with `make test-gpu`"]
fn gpu_trainer_and_runtime_use_cuda() {
    let o = run_bin("trainer", &["doctor", "--device", "cuda"]);
    assert!(o.status.success(), "{}", text(&o));
    let model = assets_dir().join("fer_emotion.onnx");
    let o = run_bin("runtime", &["doctor", "--provider", "cuda", "--model", model.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn runtime_names_a_missing_model_file() {
    let o = run_bin("runtime", &["doctor", "--model", "/nonexistent/model.onnx"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("/nonexistent/model.onnx: no such file"), "{}", text(&o));
}

#[test]
fn exporter_inspects_the_shared_emotion_model() {
    let model = assets_dir().join("fer_emotion.onnx");
    let o = run_bin("exporter", &["inspect", model.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // DATA.md: input [N,64,64,1] float NHWC, output [N,7] softmax, opset 13, no metadata.
    assert_eq!(s["inputs"].as_array().unwrap().len(), 1, "{s}");
    let dims: Vec<String> = serde_json::from_value(s["inputs"][0]["dims"].clone()).unwrap();
    assert_eq!(&dims[1..], ["64", "64", "1"], "{s}");
    assert_eq!(s["inputs"][0]["elem_type"], "FLOAT");
    assert_eq!(s["outputs"][0]["dims"][1], "7", "{s}");
    assert!(s["opsets"].as_array().unwrap().iter().any(|o| o[0] == "ai.onnx" && o[1] == 13), "{s}");
    assert!(s["metadata"].as_object().unwrap().is_empty(), "{s}");
    assert!(s["parameters"].as_u64().unwrap() > 10_000, "{s}");
}

#[test]
fn edge_demo_doctor_finds_the_face_detector_and_onnxruntime() {
    let o = run_bin("edge-demo", &["doctor", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(r["video"]["opencv"].as_str().unwrap().starts_with("4."), "{r}");
    assert!(r["video"]["face_cascade"]["value"].as_str().unwrap().ends_with("haarcascade_frontalface_default.xml"), "{r}");
    assert!(r["onnxruntime"]["value"]["providers"].as_array().is_some(), "{r}");
}

#[test]
fn edge_demo_reads_a_real_image_and_finds_its_face() {
    // OpenCV's VideoCapture opens a still image as a one-frame source; the astronaut's face is found.
    let img = assets_dir().join("faces/astronaut.png");
    let o = run_bin("edge-demo", &["doctor", "--source", img.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let s = r["video"]["source"]["value"].as_str().unwrap_or_else(|| panic!("{r}"));
    assert!(s.contains("1 face(s) in the first frame"), "{r}");
}

#[test]
fn edge_demo_names_a_source_it_cannot_open() {
    let o = run_bin("edge-demo", &["doctor", "--source", "/nonexistent/video.mp4"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("/nonexistent/video.mp4"), "{}", text(&o));
}
