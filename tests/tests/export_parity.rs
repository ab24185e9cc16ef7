//! Export → run parity: networks initialised and run on libtorch (the trainer) are lowered to ONNX by
//! the exporter, checked by Python's `onnx.checker` (full check) as an independent oracle, and run by
//! ONNX Runtime through the runtime crate and by Python onnxruntime as a second client; the class
//! probabilities agree within 1e-4.

use std::path::Path;
use std::process::Command;

use exporter::lower::{read_safetensors, write, LowerOptions};
use models::builder::{conv, GraphBuilder};
use models::graph::{Init, Network, Op};
use tests::python;
use trainer::net::Net;

/// Deterministic pseudo-random inputs in [-2, 2).
fn inputs(n: usize, seed: u64) -> Vec<f32> {
    data::rng::Xorshift64::seeded(seed).uniform(n, -2.0, 2.0)
}

/// A graph with the ops no registry model uses: PReLU, LeakyReLU, LRN, ceil-mode and padded pooling,
/// global pooling, a grouped and dilated convolution without bias, a 1-D BatchNorm.
fn odd_ops() -> Network {
    let mut b = GraphBuilder::new("odd-ops", [4, 17, 17], Init::MsraPrelu { slope: 0.25 });
    let x = b.input();
    let x = b.then("conv", conv(8, 3).pad(2).dilation(2).groups(2).no_bias(), x);
    let x = b.then("prelu", Op::Prelu { init: 0.25 }, x);
    let x = b.then("lrn", Op::Lrn { size: 5, alpha: 1e-2, beta: 0.75, k: 2.0 }, x);
    let x = b.then("pool", Op::MaxPool { kernel: [3, 3], stride: [2, 2], padding: [0, 0], ceil_mode: true }, x);
    let x = b.then("leaky", Op::LeakyRelu { slope: 0.1 }, x);
    let x = b.then("avg", Op::AvgPool { kernel: [3, 3], stride: [1, 1], padding: [1, 1], ceil_mode: false }, x);
    let x = b.then("gap", Op::GlobalAvgPool, x);
    let x = b.flatten("flatten", x);
    let x = b.then("bn", Op::BatchNorm { eps: 1e-3, momentum: 0.5, fix_gamma: false }, x);
    let x = b.then("prelu1d", Op::Prelu { init: 0.1 }, x);
    let y = b.linear("classifier", x, 6);
    b.finish(y).unwrap()
}

fn check(graph: Network, dir: &Path) {
    let name = graph.name.clone();
    let [c, h, w] = graph.input_shape();
    let shape = [3, c, h, w];
    let net = Net::new_cpu(graph.clone(), 7).unwrap();
    // non-trivial BatchNorm statistics, then fixed eval inputs
    net.update_bn_statistics(&inputs(8 * c * h * w, 1), [8, c, h, w]);
    let x = inputs(3 * c * h * w, 2);
    let expected = net.predict_f32(&x, shape);

    let weights_file = dir.join(format!("{name}.safetensors"));
    net.save(&weights_file).unwrap();
    let onnx = dir.join(format!("{name}.onnx"));
    write(&graph, &read_safetensors(&weights_file).unwrap(), &LowerOptions { logits: true, ..Default::default() }, &onnx).unwrap();

    // independent oracle: the ONNX checker with full shape inference
    let o = Command::new(python())
        .args(["-c", "import onnx,sys; onnx.checker.check_model(sys.argv[1], full_check=True); print('ok')", onnx.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{name}: onnx.checker: {}", String::from_utf8_lossy(&o.stderr));

    let outs = runtime::engine::infer(&onnx, &runtime::SessionOptions::default(), x.clone(), &shape).unwrap();
    let (oname, oshape, probs) = &outs[0];
    assert_eq!((oname.as_str(), oshape.as_slice()), ("probabilities", &[3, expected.len() / 3][..]), "{name}");
    let max = probs.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(max < 1e-4, "{name}: ONNX Runtime and libtorch differ by {max}");
    assert!(outs.iter().any(|(n, _, _)| n == "logits"), "{name}: logits output requested");

    // a second client: Python onnxruntime on the same input
    let raw = dir.join(format!("{name}.input.f32"));
    std::fs::write(&raw, x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    let script = "import numpy as np, onnxruntime as ort, sys\n\
        s = ort.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n\
        x = np.fromfile(sys.argv[2], dtype=np.float32).reshape([int(v) for v in sys.argv[3].split(',')])\n\
        p = s.run(['probabilities'], {'input': x})[0]\n\
        print(','.join(repr(float(v)) for v in p.ravel()))";
    let dims = shape.map(|d| d.to_string()).join(",");
    let o = Command::new(python()).args(["-c", script, onnx.to_str().unwrap(), raw.to_str().unwrap(), &dims]).output().unwrap();
    assert!(o.status.success(), "{name}: python onnxruntime: {}", String::from_utf8_lossy(&o.stderr));
    let py: Vec<f32> = String::from_utf8_lossy(&o.stdout).trim().split(',').map(|v| v.parse().unwrap()).collect();
    let max = py.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(max < 1e-4, "{name}: Python onnxruntime and libtorch differ by {max}");
}

#[test]
fn exported_models_compute_what_the_trainer_computes() {
    let scratch = tests::fresh_dir("export");
    let dir = scratch.path().to_path_buf();
    check(odd_ops(), &dir);
    for name in ["mini-vgg", "emotion-vgg", "squeezenet-relu", "resnet18", "googlenet", "alexnet"] {
        check(models::zoo::build(name, Some(11), None).unwrap(), &dir);
    }
}

/// The rest of the registry, VGG19 and ResNet-152 included (about 90 s on 2 cores): together with the
/// test above, every registered model is exported, checked and run.
#[test]
fn every_other_registry_model_exports_with_parity() {
    let scratch = tests::fresh_dir("export-all");
    let dir = scratch.path().to_path_buf();
    let fast = ["mini-vgg", "emotion-vgg", "squeezenet-relu", "resnet18", "googlenet", "alexnet"];
    // (the classifiers; a detector's file is the detection export's, with its own parity check)
    let classifiers = models::zoo::REGISTRY.iter().filter(|m| m.task == models::meta::Task::Classification);
    for m in classifiers.filter(|m| !fast.contains(&m.name)) {
        check(models::zoo::build(m.name, Some(11), None).unwrap(), &dir);
        for f in std::fs::read_dir(&dir).unwrap().flatten() {
            let _ = std::fs::remove_file(f.path()); // keep the disk use to one model at a time
        }
    }
}
