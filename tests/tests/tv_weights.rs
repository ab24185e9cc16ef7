//! torchvision weights in our toolchain: Python torchvision (the oracle) builds `vgg16` and `resnet50`
//! at a fixed seed, randomises every BatchNorm's γ, β and running statistics (so that BatchNorm is not
//! the identity), saves the `state_dict` with safetensors and its eval-mode logits on two fixed images;
//! `trainer import-weights` turns the file into a run, the trainer's network (libtorch, through the
//! library) and the exported ONNX file (ONNX Runtime) must give the same logits and probabilities.
//!
//! Tolerances: torchvision and the trainer call the same libtorch kernels in the same order (measured:
//! bit-identical logits for both networks); ONNX Runtime has its own kernels and summation orders, and
//! float32 rounding (≈ 6e-8 relative per operation) accumulates over 16 (VGG) and 53 (ResNet) layers
//! (measured: ≤ 1e-6 of the largest logit). Logits are compared relative to the largest logit (1e-4),
//! probabilities absolutely (1e-4, the exporter's own float32 bound). A wrong name mapping, layer
//! order, stride placement, padding or BatchNorm epsilon moves the logits by far more: BatchNorm eps
//! 1e-3 instead of torchvision's 1e-5 alone changes ResNet-50's by 1.4e-2 of the largest on these
//! weights.

use std::path::{Path, PathBuf};
use std::process::Command;

use tests::{python, run_bin, s, text};

const N: usize = 2;
const SHAPE: [usize; 4] = [N, 3, 224, 224];

/// Two fixed images, already normalised: values in [-2, 2).
fn images() -> Vec<f32> {
    data::rng::Xorshift64::new(0x853C_49E6_748F_EA9B).uniform(SHAPE.iter().product(), -2.0, 2.0)
}

/// The oracle: torchvision's model at a fixed seed, BatchNorm randomised, eval mode.
const TORCHVISION: &str = r#"
import sys, numpy as np, torch, torchvision
from safetensors.torch import save_file
name, weights, x_path, logits_path = sys.argv[1:5]
torch.manual_seed(1234)
model = getattr(torchvision.models, name)(weights=None)
with torch.no_grad():
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.5, 0.5)
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.num_batches_tracked.fill_(1000)
model.eval()
x = torch.from_numpy(np.fromfile(x_path, dtype=np.float32).reshape(2, 3, 224, 224))
with torch.no_grad():
    y = model(x)
save_file(model.state_dict(), weights)
y.numpy().astype(np.float32).tofile(logits_path)
print(torchvision.__version__, len(model.state_dict()))
"#;

fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path).unwrap().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

/// Probabilities of each row, computed in f64.
fn softmax_rows(logits: &[f32], classes: usize) -> Vec<f32> {
    logits.chunks(classes).flat_map(|row| data::metrics::softmax(&row.iter().map(|&v| f64::from(v)).collect::<Vec<_>>())).map(|p| p as f32).collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn max_abs(a: &[f32]) -> f32 {
    a.iter().fold(0.0, |m, v| m.max(v.abs()))
}

/// torchvision's file and logits, imported into a run, then the trainer's and ONNX Runtime's logits
/// compared with torchvision's. Returns the work folder (removed when it drops) and the imported run for
/// further steps.
fn parity(model: &str, tv: &str, state_dict_keys: usize, nbt: usize) -> (tempfile::TempDir, PathBuf) {
    let scratch = tests::fresh_dir(&format!("tv-{tv}"));
    let dir = scratch.path().to_path_buf();
    let x = images();
    let x_path = dir.join("x.f32");
    std::fs::write(&x_path, x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    let (weights, logits_path) = (dir.join(format!("{tv}.safetensors")), dir.join(format!("{tv}.logits.f32")));
    let o = Command::new(python()).args(["-c", TORCHVISION, tv, s(&weights), s(&x_path), s(&logits_path)]).output().unwrap();
    assert!(o.status.success(), "torchvision {tv}: {}", text(&o));
    let printed = String::from_utf8_lossy(&o.stdout);
    assert!(printed.trim().ends_with(&format!(" {state_dict_keys}")), "{printed}");
    let expected = read_f32(&logits_path);
    assert_eq!(expected.len(), N * 1000);

    let run = dir.join("run");
    let o = run_bin("trainer", &["-q", "import-weights", "--model", model, "--weights", s(&weights), "--run", s(&run)]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let loaded = state_dict_keys - nbt;
    assert!(out.contains(&format!(": {loaded} tensors, {nbt} num_batches_tracked ignored, 1000 classes")), "{out}");
    std::fs::remove_file(&weights).unwrap(); // 528 MB for VGG16: keep one copy on disk at a time

    // the trainer: the run's checkpoint in the registry graph, eval mode
    let ours = trainer::import::checkpoint_logits(&run, 0, &x, SHAPE).unwrap();
    let scale = max_abs(&expected);
    let d_trainer = max_diff(&ours, &expected);
    let p_expected = softmax_rows(&expected, 1000);
    let dp_trainer = max_diff(&softmax_rows(&ours, 1000), &p_expected);

    // the exported file in ONNX Runtime (the export runs its own parity check against libtorch first)
    let onnx = dir.join(format!("{model}.onnx"));
    let o = run_bin("exporter", &["-q", "export", "--run", s(&run), "--out", s(&onnx), "--logits"]);
    assert!(o.status.success(), "{}", text(&o));
    let outs = runtime::engine::infer(&onnx, &runtime::SessionOptions::default(), x.clone(), &SHAPE).unwrap();
    let get = |name: &str| outs.iter().find(|(n, _, _)| n == name).map(|(_, d, v)| (d.clone(), v.clone())).unwrap();
    let (dims, file_logits) = get("logits");
    assert_eq!(dims, [N, 1000]);
    let (_, file_probs) = get("probabilities");
    std::fs::remove_file(&onnx).unwrap();
    let d_onnx = max_diff(&file_logits, &expected);
    let dp_onnx = max_diff(&file_probs, &p_expected);

    println!(
        "{model}: max |logit| {scale:.4}; max |Δlogit| vs torchvision: trainer {d_trainer:.3e}, ONNX Runtime {d_onnx:.3e}; \
         max |Δp|: trainer {dp_trainer:.3e}, ONNX Runtime {dp_onnx:.3e}"
    );
    assert!(scale > 1e-3 && expected.iter().all(|v| v.is_finite()), "{model}: degenerate reference logits (max {scale})");
    assert!(d_trainer <= 1e-4 * scale, "{model}: trainer vs torchvision logits differ by {d_trainer} (max logit {scale})");
    assert!(d_onnx <= 1e-4 * scale, "{model}: ONNX Runtime vs torchvision logits differ by {d_onnx} (max logit {scale})");
    assert!(dp_trainer <= 1e-4 && dp_onnx <= 1e-4, "{model}: probabilities differ: trainer {dp_trainer}, ONNX Runtime {dp_onnx}");
    // the same top-1 class everywhere (the two images' classes differ only by chance)
    let top1 =
        |v: &[f32]| v.chunks(1000).map(|r| r.iter().enumerate().fold((0, f32::MIN), |b, (i, &p)| if p > b.1 { (i, p) } else { b }).0).collect::<Vec<_>>();
    assert_eq!(top1(&ours), top1(&expected), "{model}");
    assert_eq!(top1(&file_logits), top1(&expected), "{model}");
    (scratch, run)
}

#[test]
fn tv_resnet50_from_torchvision_gives_torchvisions_outputs_in_the_trainer_and_in_onnx() {
    // 320 keys: 267 tensors + 53 num_batches_tracked
    let (_scratch, _) = parity("tv-resnet50", "resnet50", 320, 53);
}

/// VGG16 is 138M parameters (528 MB a copy); this also runs the recipe: fine-tuning from the imported
/// run with `model.init_from` and a new 3-class head, at learning rate 0, so every imported tensor
/// must come through training unchanged, then `trainer eval` on the result.
#[test]
fn tv_vgg16_from_torchvision_gives_torchvisions_outputs_and_fine_tunes_with_the_recipe() {
    let (scratch, imported_run) = parity("tv-vgg16", "vgg16", 32, 0);
    let dir = scratch.path().to_path_buf();
    let data_root = dir.join("images");
    tests::pattern_dataset(&data_root, 4, 64, 3);
    let data = dir.join("data");
    let o = run_bin(
        "trainer",
        &["-q", "prepare", "folder", s(&data_root), "--out", s(&data), "--short-side", "64", "--val-fraction", "0.25", "--test-fraction", "0"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let imported = imported_run.join("checkpoints/epoch-0000.safetensors");
    let run = dir.join("cars");
    let sets = [
        format!("model.init_from=\"{}\"", s(&imported)),
        format!("data.train=\"{}\"", s(&data.join("train.rec"))),
        format!("data.val=\"{}\"", s(&data.join("val.rec"))),
        "model.num_classes=3".into(),
        "train.device=\"cpu\"".into(),
        "train.batch_size=2".into(),
        "train.log_every=0".into(),
        "data.limit_train=4".into(),
        "data.limit_val=2".into(),
    ];
    let config = tests::repo_root().join("configs/cars-tv-vgg16-finetune.toml");
    let mut args = vec!["-q", "train", "--config", s(&config), "--run", s(&run), "--epochs", "1", "--lr", "0"];
    for v in &sets {
        args.extend(["--set", v.as_str()]);
    }
    let o = run_bin("trainer", &args);
    assert!(o.status.success(), "{}", text(&o));

    // every tensor but the new head is the imported one; the head has 3 classes
    let trained = exporter::lower::read_safetensors(&run.join("checkpoints/epoch-0001.safetensors")).unwrap();
    let source = exporter::lower::read_safetensors(&imported).unwrap();
    for (name, (dims, values)) in &source {
        if name.starts_with("classifier.") {
            assert_eq!(trained[name].0[0], 3, "{name}: the new head");
        } else {
            assert!(trained[name] == (dims.clone(), values.clone()), "{name} changed at learning rate 0");
        }
    }
    drop((trained, source));
    let o = run_bin("trainer", &["eval", "--run", s(&run), "--data", s(&data.join("val.rec")), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let m: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap();
    assert_eq!(m["epoch"], 1, "{m}");
    assert!(m["metrics"]["samples"].as_u64().unwrap() >= 1, "{m}");
}
