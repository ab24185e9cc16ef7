//! Derived exports against the checkpoint as trained: `--fold-bn` (BatchNorm folded into the layer
//! before it) and `--fp16` (float16 weights and compute behind a float32 input and outputs), and the
//! parity check on the run's own samples. libtorch runs the unfolded float32 network; ONNX Runtime runs
//! the written file; Python's `onnx.checker` (full check) is the independent judge of the file.

use std::path::Path;
use std::process::Command;

use exporter::fold::fold_batchnorm;
use exporter::lower::{lower, read_safetensors, write, LowerOptions, Weights};
use models::builder::{conv, GraphBuilder};
use models::graph::{Init, Network, Op, ParamKind};
use tests::{python, run_bin, text};
use trainer::net::Net;

/// Pseudo-random values in [-2, 2), one stream per small seed.
fn inputs(n: usize, seed: u64) -> Vec<f32> {
    data::rng::Xorshift64::seeded(seed).uniform(n, -2.0, 2.0)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, |m, d| if d.is_nan() { f32::NAN } else { m.max(d) })
}

fn top1_agreement(a: &[f32], b: &[f32], classes: usize) -> usize {
    let top = |v: &[f32]| -> Vec<usize> { v.chunks(classes).map(data::metrics::argmax).collect() };
    top(a).iter().zip(top(b)).filter(|(x, y)| **x == *y).count()
}

/// BatchNorms in every position: after a convolution with and without bias (folded), after a linear
/// layer that is the graph's output (folded, the output moves), on the input, after an activation and
/// after a convolution whose output is also summed (all three kept).
fn bn_cases() -> Network {
    let bn = Op::BatchNorm { eps: 1e-3, momentum: 0.5, fix_gamma: false };
    let mut b = GraphBuilder::new("bn-cases", [3, 12, 12], Init::XavierUniform);
    let x = b.input();
    let x = b.then("bn_in", bn.clone(), x); // kept: reads the input
    let x = b.then("conv_a", conv(8, 3).pad(1), x); // [8, 12, 12]
    let x = b.then("bn_a", bn.clone(), x); // folded
    let x = b.then("relu_a", Op::Relu, x);
    let x = b.then("conv_b", conv(8, 3).pad(1).no_bias(), x);
    let x = b.then("bn_b", bn.clone(), x); // folded, conv_b gains a bias
    let x = b.then("relu_b", Op::Relu, x);
    let x = b.then("bn_c", bn.clone(), x); // kept: after an activation
    let c = b.then("conv_c", conv(8, 1), x);
    let x = b.then("bn_d", bn.clone(), c); // kept: conv_c is read by the sum too
    let x = b.add_op("sum", Op::Add, &[x, c]);
    let x = b.then("pool", Op::MaxPool { kernel: [2, 2], stride: [2, 2], padding: [0, 0], ceil_mode: false }, x); // [8, 6, 6]
    let x = b.flatten("flatten", x);
    let x = b.linear("fc", x, 16);
    let x = b.then("bn_fc", bn.clone(), x); // folded (1-D)
    let x = b.then("prelu", Op::Prelu { init: 0.2 }, x);
    let x = b.linear("classifier", x, 7);
    let x = b.then("bn_out", bn, x); // folded; the output becomes the classifier
    b.finish(x).unwrap()
}

/// A network with BatchNorm scales, shifts and running statistics far from their initial values, saved
/// and read back as the exporter reads checkpoints.
fn trained_like(graph: &Network, dir: &Path) -> (Net, Weights) {
    let [c, h, w] = graph.input_shape();
    let net = Net::new_cpu(graph.clone(), 3).unwrap();
    for spec in net.graph.params() {
        let t = net.params[&spec.name].shallow_clone().set_requires_grad(false);
        match spec.kind {
            ParamKind::BnGamma => drop(t.shallow_clone().uniform_(0.5, 1.5)),
            ParamKind::BnBeta => drop(t.shallow_clone().uniform_(-0.5, 0.5)),
            ParamKind::Weight | ParamKind::Bias | ParamKind::BnRunningMean | ParamKind::BnRunningVar | ParamKind::PreluSlope | ParamKind::Scale => {}
        }
    }
    net.update_bn_statistics(&inputs(8 * c * h * w, 1), [8, c, h, w]);
    let file = dir.join(format!("{}.safetensors", graph.name));
    net.save(&file).unwrap();
    let weights = read_safetensors(&file).unwrap();
    (net, weights)
}

/// `onnx.checker` with full shape inference, then the element types of the initializers, the input
/// and the outputs (ONNX codes: 1 float, 10 float16).
fn checked_types(onnx: &Path) -> String {
    let script = "import onnx, sys\n\
        m = onnx.load(sys.argv[1]); onnx.checker.check_model(m, full_check=True)\n\
        et = lambda v: v.type.tensor_type.elem_type\n\
        print(sorted({t.data_type for t in m.graph.initializer}), [et(i) for i in m.graph.input], [et(o) for o in m.graph.output])";
    let o = Command::new(python()).args(["-c", script, onnx.to_str().unwrap()]).output().unwrap();
    assert!(o.status.success(), "{}: onnx.checker: {}", onnx.display(), String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn batchnorm_nodes(onnx: &Path) -> usize {
    exporter::inspect::inspect(onnx).unwrap().operators.get("BatchNormalization").copied().unwrap_or(0)
}

/// ONNX Runtime's probabilities for `x`.
fn run_file(onnx: &Path, x: &[f32], shape: [usize; 4]) -> Vec<f32> {
    let outs = runtime::engine::infer(onnx, &runtime::SessionOptions::default(), x.to_vec(), &shape).unwrap();
    outs.into_iter().find(|(n, _, _)| n == "probabilities").unwrap().2
}

#[test]
fn folded_batchnorm_leaves_fewer_nodes_and_the_same_function() {
    let scratch = tests::fresh_dir("export-fold");
    let dir = scratch.path().to_path_buf();
    for (graph, folded, kept) in [(bn_cases(), 4, 3), (models::zoo::build("resnet18", Some(11), None).unwrap(), 9, 10)] {
        let name = graph.name.clone();
        let (net, weights) = trained_like(&graph, &dir);
        let (fgraph, fweights, report) = fold_batchnorm(&graph, &weights).unwrap();
        assert_eq!((report.folded.len(), report.kept.len()), (folded, kept), "{name}: {report:?}");

        let plain = dir.join(format!("{name}.onnx"));
        let onnx = dir.join(format!("{name}.folded.onnx"));
        write(&graph, &weights, &LowerOptions::default(), &plain).unwrap();
        write(&fgraph, &fweights, &LowerOptions::default(), &onnx).unwrap();
        assert_eq!(batchnorm_nodes(&plain), folded + kept, "{name}");
        assert_eq!(batchnorm_nodes(&onnx), kept, "{name}");
        assert_eq!(checked_types(&onnx), "[1] [1] [1]", "{name}");

        let [c, h, w] = graph.input_shape();
        let shape = [6, c, h, w];
        let x = inputs(6 * c * h * w, 2);
        let expected = net.predict_f32(&x, shape);
        let got = run_file(&onnx, &x, shape);
        let d = max_abs_diff(&expected, &got);
        println!("{name}: {folded} BatchNorms folded, {kept} kept; max |Δp| vs libtorch {d:.2e}");
        assert!(d < 1e-5, "{name}: the folded file differs from libtorch by {d}");
    }
}

#[test]
fn fp16_files_keep_a_float32_contract_and_agree_with_libtorch() {
    let scratch = tests::fresh_dir("export-fp16");
    let dir = scratch.path().to_path_buf();
    let fp16 = LowerOptions { fp16: true, logits: true, ..LowerOptions::default() };
    for graph in [bn_cases(), models::zoo::build("resnet18", Some(11), None).unwrap(), models::zoo::build("emotion-vgg", Some(6), None).unwrap()] {
        let name = graph.name.clone();
        let (net, weights) = trained_like(&graph, &dir);
        let [c, h, w] = graph.input_shape();
        let shape = [16, c, h, w];
        let x = inputs(16 * c * h * w, 5);
        let expected = net.predict_f32(&x, shape);
        let classes = expected.len() / 16;
        // float16 as written, and float16 after folding (the combination deployments use)
        let (fgraph, fweights, _) = fold_batchnorm(&graph, &weights).unwrap();
        for (what, g, wts) in [("fp16", &graph, &weights), ("fp16+fold", &fgraph, &fweights)] {
            let onnx = dir.join(format!("{name}.{what}.onnx"));
            write(g, wts, &fp16, &onnx).unwrap();
            // float16 initializers only; float32 input, probabilities and logits
            assert_eq!(checked_types(&onnx), "[10] [1] [1, 1]", "{name} {what}");
            let got = run_file(&onnx, &x, shape);
            let (d, agree) = (max_abs_diff(&expected, &got), top1_agreement(&expected, &got, classes));
            println!("{name} {what}: max |Δp| vs libtorch fp32 {d:.2e}, top-1 agreement {agree}/16");
            assert!(d < 1e-2, "{name} {what}: differs from libtorch by {d}");
            assert!(agree >= 15, "{name} {what}: top-1 agreement {agree}/16");
            // and it is float16 indeed: not bit-identical to the float32 file's result
            assert!(d > 1e-7, "{name} {what}: no float16 rounding at all?");
        }
    }
}

#[test]
fn fp16_refuses_weights_beyond_its_range() {
    let mut b = GraphBuilder::new("big", [1, 4, 4], Init::XavierUniform);
    let x = b.input();
    let x = b.then("conv", conv(2, 3), x);
    let x = b.flatten("flatten", x);
    let y = b.linear("classifier", x, 3);
    let g = b.finish(y).unwrap();
    let mut weights: Weights = g.params().iter().map(|p| (p.name.clone(), (p.shape.clone(), vec![0.5; p.numel()]))).collect();
    weights.get_mut("conv.weight").unwrap().1[3] = 70000.0;
    let fp16 = LowerOptions { fp16: true, ..LowerOptions::default() };
    let err = lower(&g, &weights, &fp16).unwrap_err().to_string();
    assert_eq!(err, "parameter 'conv.weight': value 7e4 is beyond float16's range (±65504)");
    assert!(lower(&g, &weights, &LowerOptions::default()).is_ok(), "float32 holds it");
}

/// `n` 28x28 grey images whose class k is a bright vertical bar at column 2 + 2k over faint noise
/// (learnable in a few epochs), and their labels.
fn bars(n: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let noise = inputs(n * 28 * 28, seed);
    let mut pixels = Vec::with_capacity(n * 28 * 28);
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    for (i, &k) in labels.iter().enumerate() {
        let k = k as usize;
        for r in 0..28 {
            for col in 0..28 {
                let bar = (col == 2 + 2 * k || col == 3 + 2 * k) && (4..24).contains(&r);
                pixels.push(if bar { 230.0 } else { 20.0 + 10.0 * noise[(i * 28 + r) * 28 + col] } as u8);
            }
        }
    }
    (pixels, labels)
}

/// An IDX set (`PREFIX-images-idx3-ubyte`, `PREFIX-labels-idx1-ubyte`).
fn write_idx_set(prefix: &Path, pixels: &[u8], labels: &[u8]) {
    let n = labels.len() as u32;
    let header = |kind: u8, dims: &[u32]| -> Vec<u8> { [0, 0, 8, kind].into_iter().chain(dims.iter().flat_map(|d| d.to_be_bytes())).collect() };
    std::fs::write(format!("{}-images-idx3-ubyte", prefix.display()), [header(3, &[n, 28, 28]), pixels.to_vec()].concat()).unwrap();
    std::fs::write(format!("{}-labels-idx1-ubyte", prefix.display()), [header(1, &[n]), labels.to_vec()].concat()).unwrap();
}

/// The same images as a record file (lossless PNG, stored at their size).
fn write_records(path: &Path, pixels: &[u8], labels: &[u8]) {
    use data::image::{DynamicImage, GrayImage};
    use data::records::{pack, Item, PackOptions, Source};
    let items: Vec<Item> = labels
        .iter()
        .enumerate()
        .map(|(i, &l)| Item {
            source: Source::Image(DynamicImage::ImageLuma8(GrayImage::from_raw(28, 28, pixels[i * 784..(i + 1) * 784].to_vec()).unwrap())),
            key: format!("bar-{i}"),
            label: l as i32,
            boxes: vec![],
        })
        .collect();
    let report = pack(&items, path, &PackOptions { short_side: 0, jpeg_quality: 0, grayscale: true }, false).unwrap();
    assert_eq!(report.written, labels.len());
}

/// `trainer eval`'s rank-1 accuracy of the run's latest checkpoint on `data`.
fn trainer_accuracy(run: &Path, data: &Path) -> f64 {
    let o = run_bin("trainer", &["eval", "--run", run.to_str().unwrap(), "--data", data.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["metrics"]["rank1"].as_f64().unwrap()
}

fn parity_of(onnx: &Path) -> serde_json::Value {
    let meta = exporter::inspect::inspect(onnx).unwrap().meta().unwrap().expect("our export has metadata");
    serde_json::from_str(meta.parity.as_deref().expect("a verified export records its parity")).unwrap()
}

#[test]
fn a_run_with_data_is_also_checked_on_its_own_samples() {
    let scratch = tests::fresh_dir("export-samples");
    let dir = scratch.path().to_path_buf();
    let (train_pixels, train_labels) = bars(200, 11);
    write_idx_set(&dir.join("train"), &train_pixels, &train_labels);
    let (val_pixels, val_labels) = bars(32, 12);
    write_idx_set(&dir.join("val"), &val_pixels, &val_labels);
    let run = dir.join("run");
    let config = dir.join("bars.toml");
    let toml = format!(
        "[model]\nname = \"mini-vgg\"\n[data]\ntrain = \"{}\"\nval = \"{}\"\nmean = 40.0\nstd = 60.0\n\
         [train]\nbatch_size = 20\nepochs = 3\nlr = 0.02\nseed = 1\ndevice = \"cpu\"\nrun = \"{}\"\n[optimizer]\nname = \"sgd\"\nmomentum = 0.9\n",
        dir.join("train").display(),
        dir.join("val").display(),
        run.display()
    );
    std::fs::write(&config, toml).unwrap();
    let o = run_bin("trainer", &["train", "--config", config.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));

    // float32: both checks at 1e-4; the samples come from the validation set, through its normalisation
    let onnx = dir.join("bars.onnx");
    let o = run_bin("exporter", &["export", "--run", run.to_str().unwrap(), "--out", onnx.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    print!("{stdout}");
    assert!(stdout.contains(&format!("on 32 samples of {}: max |Δp|", dir.join("val").display())), "{stdout}");
    let p = parity_of(&onnx);
    assert_eq!(p["precision"], "fp32");
    assert_eq!(p["tolerance"].as_f64().unwrap() as f32, 1e-4);
    assert_eq!(p["fixed_inputs"]["samples"], 4);
    let s = &p["samples"];
    assert_eq!(s["samples"], 32, "{p}");
    assert!(s["inputs"].as_str().unwrap().ends_with("val"), "{p}");
    assert!(s["max_abs_diff"].as_f64().unwrap() <= 1e-4, "{p}");
    assert_eq!(s["top1_agreement"], 1.0, "{p}");
    // the network has learnt the bars (chance is 0.1), so its top-1 choices are not near-ties
    let trained = s["accuracy_libtorch"].as_f64().unwrap();
    assert!(trained >= 0.75, "three epochs learn the bars: {p}");
    assert_eq!(s["accuracy_file"], s["accuracy_libtorch"], "{p}");
    // the samples went through the trainer's evaluation preprocessing: `trainer eval` on the same 32
    // images makes the same predictions (a missing or wrong normalisation would not)
    assert_eq!(trainer_accuracy(&run, &dir.join("val")), trained, "{p}");

    // the same images as a record file go through the loader's evaluation transform
    let rec = dir.join("val.rec");
    write_records(&rec, &val_pixels, &val_labels);
    let side = run.join("checkpoints/epoch-0003.json");
    let mut info: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&side).unwrap()).unwrap();
    info["config"]["data"]["val"] = rec.to_str().unwrap().into();
    std::fs::write(&side, info.to_string()).unwrap();
    let o = run_bin("exporter", &["export", "--run", run.to_str().unwrap(), "--out", onnx.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let p = parity_of(&onnx);
    let s = &p["samples"];
    assert_eq!((s["samples"].as_u64(), s["inputs"].as_str()), (Some(32), Some(format!("32 samples of {}", rec.display()).as_str())), "{p}");
    assert!(s["max_abs_diff"].as_f64().unwrap() <= 1e-4, "{p}");
    assert_eq!(s["accuracy_libtorch"].as_f64(), Some(trained), "{p}");
    assert_eq!(trainer_accuracy(&run, &rec), trained, "{p}");

    // float16: float16 initializers behind a float32 contract; high top-1 agreement on real samples
    let half = dir.join("bars.fp16.onnx");
    let o = run_bin("exporter", &["export", "--run", run.to_str().unwrap(), "--out", half.to_str().unwrap(), "--fp16", "--fold-bn"]);
    assert!(o.status.success(), "{}", text(&o));
    print!("{}", String::from_utf8_lossy(&o.stdout));
    assert_eq!(checked_types(&half), "[10] [1] [1]");
    let p = parity_of(&half);
    assert_eq!((p["precision"].as_str(), p["tolerance"].as_f64().unwrap() as f32), (Some("fp16"), 1e-2), "{p}");
    // mini-vgg puts its BatchNorms after the activations: nothing to fold
    assert_eq!(p["fold_bn"], serde_json::json!({ "folded": 0, "kept": 5 }), "{p}");
    let s = &p["samples"];
    assert!(s["top1_agreement"].as_f64().unwrap() >= 31.0 / 32.0, "{p}");
    let d = s["max_abs_diff"].as_f64().unwrap();
    assert!(d > 0.0 && d < 1e-2, "{p}");

    // without its data on this machine the run is still exported, and the metadata says why
    std::fs::remove_file(&rec).unwrap();
    std::fs::remove_file(dir.join("train-images-idx3-ubyte")).unwrap();
    let o = run_bin("exporter", &["export", "--run", run.to_str().unwrap(), "--out", onnx.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let p = parity_of(&onnx);
    assert!(p["samples"].is_null() && p["samples_note"].as_str().unwrap().starts_with("the run's data is not here"), "{p}");
}
