//! `exporter triton` (and `exporter export --triton`): a Triton model repository entry for an ONNX file.
//! The written `config.pbtxt` is parsed with Triton's own schema (tritonclient's `ModelConfig`, by
//! protobuf's text-format parser in the project's Python) and compared with the ONNX file itself.

use std::path::{Path, PathBuf};
use std::process::Command;

use exporter::lower::{lower, save, set_metadata, LowerOptions, Weights};
use exporter::onnx::ModelProto;
use models::graph::ParamKind;
use models::meta::{Crop, Layout, ModelMeta, Preprocessing, Task};
use serde_json::{json, Value};
use tests::{python, run_bin, s, text};

/// Labels that the text format must escape (quotes, a backslash) and UTF-8 that it passes through.
const LABELS: [&str; 3] = ["t-shirt \"top\"", "back\\slash", "café ☕"];

/// mini-vgg with 3 classes and deterministic weights (no training), lowered with `probabilities` and
/// `logits`, its metadata carrying [`LABELS`], plus one entry with control characters.
fn mini_vgg() -> ModelProto {
    let graph = models::zoo::build("mini-vgg", Some(3), None).unwrap();
    let mut rng = data::rng::Xorshift64::seeded(11);
    let weights: Weights = graph
        .params()
        .iter()
        .map(|p| {
            let n = p.shape.iter().product();
            let v = if p.kind == ParamKind::BnRunningVar { rng.uniform(n, 0.5, 1.5) } else { rng.uniform(n, -0.1, 0.1) };
            (p.name.clone(), (p.shape.clone(), v))
        })
        .collect();
    let pre = Preprocessing { input: graph.input_shape(), layout: Layout::Nchw, mean: vec![127.5], std: vec![64.0], resize_short_side: 0, crop: Crop::Center };
    let mut meta = ModelMeta::new("mini-vgg", Task::Classification, LABELS.iter().map(|l| l.to_string()).collect(), pre);
    meta.run = "runs/a\tb\nc\rd".into();
    let opts = LowerOptions { metadata: meta.to_props(), logits: true, ..LowerOptions::default() };
    let mut m = lower(&graph, &weights, &opts).unwrap();
    set_metadata(&mut m, "note", "bell \u{7} del \u{7f} nul \u{0} end");
    m
}

fn write_model(m: &ModelProto, path: &Path) -> PathBuf {
    save(m, path).unwrap();
    path.to_path_buf()
}

/// `config.pbtxt` parsed by Triton's schema, as protobuf's JSON mapping.
fn parsed(config: &Path) -> Value {
    let script = tests::repo_root().join("tests/python/check_model_config.py");
    let o = Command::new(python()).arg(&script).arg(config).output().unwrap_or_else(|e| panic!("cannot run {}: {e}", python().display()));
    assert!(o.status.success(), "{}: Triton's ModelConfig does not parse it: {}", config.display(), text(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn triton(args: &[&str]) -> std::process::Output {
    run_bin("exporter", &[&["triton"], args].concat())
}

/// The strings of a JSON list (protobuf's JSON writes 64-bit integers as strings).
fn dims(v: &Value) -> Vec<i64> {
    v.as_array().unwrap().iter().map(|d| d.as_str().unwrap().parse().unwrap()).collect()
}

/// An ONNX port's dims as in `exporter inspect` (numbers, or the symbolic batch `N`).
fn onnx_dims_after_batch(p: &exporter::inspect::Port) -> Vec<i64> {
    assert_eq!(p.dims[0], "N");
    p.dims[1..].iter().map(|d| d.parse().unwrap()).collect()
}

#[test]
fn writes_an_entry_that_tritons_schema_parses_and_that_matches_the_file() {
    let scratch = tests::fresh_dir("triton");
    let dir = scratch.path();
    let onnx = write_model(&mini_vgg(), &dir.join("mini vgg.onnx"));
    let repo = dir.join("repo");
    let o = triton(&["--model", s(&onnx), "--repository", s(&repo), "--preferred-batch", "4", "--preferred-batch", "2", "--instances", "2"]);
    assert!(o.status.success(), "{}", text(&o));
    // the name is the file's stem made a folder name
    let entry = repo.join("mini_vgg");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("Triton model 'mini_vgg' version 1") && stdout.contains(s(&entry.join("labels.txt"))), "{}", text(&o));
    assert_eq!(std::fs::read(entry.join("1/model.onnx")).unwrap(), std::fs::read(&onnx).unwrap());
    let labels = std::fs::read_to_string(entry.join("labels.txt")).unwrap();
    assert_eq!(labels.lines().collect::<Vec<_>>(), LABELS);

    let summary = exporter::inspect::inspect(&onnx).unwrap();
    let c = parsed(&entry.join("config.pbtxt"));
    assert_eq!(c["name"], "mini_vgg");
    assert_eq!((c["platform"].as_str(), c["backend"].as_str()), (Some("onnxruntime_onnx"), Some("onnxruntime")));
    assert_eq!(c["max_batch_size"], 8);
    let input = &c["input"].as_array().unwrap()[..];
    assert_eq!(input.len(), 1);
    assert_eq!((input[0]["name"].as_str(), input[0]["data_type"].as_str()), (Some("input"), Some("TYPE_FP32")));
    assert_eq!(dims(&input[0]["dims"]), onnx_dims_after_batch(&summary.inputs[0]));
    assert_eq!(dims(&input[0]["dims"]), [1, 28, 28]);
    let output = &c["output"].as_array().unwrap()[..];
    let names: Vec<&str> = output.iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["probabilities", "logits"]);
    for (o, p) in output.iter().zip(&summary.outputs) {
        assert_eq!((o["data_type"].as_str(), dims(&o["dims"])), (Some("TYPE_FP32"), onnx_dims_after_batch(p)));
    }
    // the labels belong to the classification output only
    assert_eq!((output[0]["label_filename"].as_str(), output[1]["label_filename"].as_str()), (Some("labels.txt"), Some("")));
    assert_eq!(dims(&output[0]["dims"]), [labels.lines().count() as i64]);
    assert_eq!(c["dynamic_batching"]["preferred_batch_size"], json!([2, 4]));
    assert_eq!(c["dynamic_batching"]["max_queue_delay_microseconds"], "100");
    assert_eq!((c["instance_group"][0]["count"].as_i64(), c["instance_group"][0]["kind"].as_str()), (Some(2), Some("KIND_AUTO")));
    // every metadata entry, byte for byte through the escaper (JSON labels, tabs, newlines, control bytes)
    let params: std::collections::BTreeMap<String, String> =
        c["parameters"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v["string_value"].as_str().unwrap().to_string())).collect();
    assert_eq!(params, summary.metadata);
    assert_eq!(ModelMeta::from_props(&params).unwrap().unwrap().labels, LABELS);
    assert_eq!(params["note"], "bell \u{7} del \u{7f} nul \u{0} end");

    // the same file again: nothing to refuse, the model is kept
    let o = triton(&["--model", s(&onnx), "--repository", s(&repo)]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("kept"), "{}", text(&o));
    // a different file into the same version is refused; into a new version it is written
    let mut other = mini_vgg();
    set_metadata(&mut other, "note", "another model");
    let other = write_model(&other, &dir.join("other.onnx"));
    let o = triton(&["--model", s(&other), "--repository", s(&repo), "--name", "mini_vgg"]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains(s(&entry.join("1/model.onnx"))) && text(&o).contains("--version"), "{}", text(&o));
    assert_eq!(std::fs::read(entry.join("1/model.onnx")).unwrap(), std::fs::read(&onnx).unwrap());
    let o = triton(&["--model", s(&other), "--repository", s(&repo), "--name", "mini_vgg", "--version", "2"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read(entry.join("2/model.onnx")).unwrap(), std::fs::read(&other).unwrap());
    assert_eq!(parsed(&entry.join("config.pbtxt"))["parameters"]["note"]["string_value"], "another model");
}

#[test]
fn a_model_made_elsewhere_takes_labels_from_a_file_and_serves_unbatched() {
    let scratch = tests::fresh_dir("triton-elsewhere");
    let dir = scratch.path();
    let mut m = mini_vgg();
    m.metadata_props.clear();
    let onnx = write_model(&m, &dir.join("plain.onnx"));
    let labels = dir.join("classes.txt");
    std::fs::write(&labels, "cat\ndog\nbird\n").unwrap();
    let repo = dir.join("repo");
    let o = triton(&["--model", s(&onnx), "--repository", s(&repo), "--name", "pets", "--max-batch", "0", "--labels", s(&labels)]);
    assert!(o.status.success(), "{}", text(&o));
    let c = parsed(&repo.join("pets/config.pbtxt"));
    assert_eq!((c["name"].as_str(), c["max_batch_size"].as_i64()), (Some("pets"), Some(0)));
    // without batching the dims are the full shapes and there is no dynamic batching
    assert_eq!(dims(&c["input"][0]["dims"]), [-1, 1, 28, 28]);
    assert_eq!(dims(&c["output"][0]["dims"]), [-1, 3]);
    assert!(c.get("dynamic_batching").is_none(), "{c}");
    assert_eq!(c["output"][0]["label_filename"], "labels.txt");
    assert_eq!(c["parameters"], json!({}));
    assert_eq!(std::fs::read_to_string(repo.join("pets/labels.txt")).unwrap(), "cat\ndog\nbird\n");
    // no labels at all: no labels file and no label_filename
    let o = triton(&["--model", s(&onnx), "--repository", s(&repo), "--name", "bare"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!repo.join("bare/labels.txt").exists());
    assert_eq!(parsed(&repo.join("bare/config.pbtxt"))["output"][0]["label_filename"], "");
}

#[test]
fn refuses_with_a_message_naming_what_is_wrong() {
    let scratch = tests::fresh_dir("triton-errors");
    let dir = scratch.path();
    let repo = dir.join("repo");
    let onnx = write_model(&mini_vgg(), &dir.join("m.onnx"));
    let refused = |args: &[&str], needles: &[&str]| {
        let o = triton(&[&["--repository", s(&repo)], args].concat());
        assert!(!o.status.success(), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        for n in needles {
            assert!(err.contains(n), "expected {n:?} in:\n{}", text(&o));
        }
    };
    // a fixed batch dimension cannot be batched by Triton
    let mut fixed = mini_vgg();
    fixed.graph.mut_or_insert_default().input[0].type_.mut_or_insert_default().mut_tensor_type().shape.mut_or_insert_default().dim[0].set_dim_value(1);
    let fixed = write_model(&fixed, &dir.join("fixed.onnx"));
    refused(&["--model", s(&fixed)], &["fixed.onnx", "input 'input' has the fixed first dimension 1", "--max-batch 0"]);
    let o = triton(&["--model", s(&fixed), "--repository", s(&repo), "--max-batch", "0"]);
    assert!(o.status.success(), "{}", text(&o));
    // a preferred batch larger than the largest batch
    refused(&["--model", s(&onnx), "--max-batch", "4", "--preferred-batch", "8"], &["--preferred-batch 8", "--max-batch 4"]);
    // as many labels as classes
    let two = dir.join("two.txt");
    std::fs::write(&two, "a\nb\n").unwrap();
    refused(&["--model", s(&onnx), "--labels", s(&two)], &["--labels", "two.txt", "2 labels", "'probabilities' has 3 classes"]);
    // a name is one folder name
    refused(&["--model", s(&onnx), "--name", "../escape"], &["--name '../escape'"]);
    refused(&["--model", s(&onnx), "--name", ".."], &["--name '..'"]);
    refused(&["--model", s(&dir.join("missing.onnx"))], &["missing.onnx"]);
    // nothing of a refused entry was written
    let written: Vec<_> = std::fs::read_dir(&repo).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(written, ["fixed"]);
    assert!(!dir.join("escape").exists());
}

#[test]
fn export_with_triton_writes_the_entry_of_the_exported_file() {
    let scratch = tests::fresh_dir("triton-export");
    let dir = scratch.path();
    let run = dir.join("run");
    let o = run_bin("trainer", &["init", "--model", "mini-vgg", "--num-classes", "3", "--seed", "5", "--run", s(&run)]);
    assert!(o.status.success(), "{}", text(&o));
    let onnx = dir.join("fashion.onnx");
    let repo = dir.join("repo");
    let o = run_bin("exporter", &["export", "--run", s(&run), "--out", s(&onnx), "--samples", "0", "--triton", s(&repo)]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Triton model 'fashion' version 1"), "{}", text(&o));
    // the copy is the verified file, with its parity report in the config's parameters
    assert_eq!(std::fs::read(repo.join("fashion/1/model.onnx")).unwrap(), std::fs::read(&onnx).unwrap());
    let c = parsed(&repo.join("fashion/config.pbtxt"));
    let meta = exporter::inspect::inspect(&onnx).unwrap().metadata;
    let params: std::collections::BTreeMap<String, String> =
        c["parameters"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v["string_value"].as_str().unwrap().to_string())).collect();
    assert_eq!(params, meta);
    assert!(ModelMeta::from_props(&params).unwrap().unwrap().parity.is_some());
    // trainer init names no data: the labels are the class indices, written beside the config
    assert_eq!(std::fs::read_to_string(repo.join("fashion/labels.txt")).unwrap(), "0\n1\n2\n");
    assert_eq!(dims(&c["input"][0]["dims"]), [1, 28, 28]);
}
