//! Training a detector: the targets matched on the device and SSD's multibox loss against
//! torchvision's own (`SSDMatcher`, `BoxCoder`, `SSD.compute_loss`, one Python run for every case),
//! and `ssd-tiny` trained on the real Fashion-MNIST composites through `trainer train`'s workflow.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use data::records::BoundingBox;
use data::rng::Xorshift64;
use models::detect::{DetectorSpec, SsdPriors};
use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};
use trainer::detection::{match_targets, multibox_loss, priors_tensor};

fn python() -> PathBuf {
    std::env::var_os("DLCV_PYTHON").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"))
}

fn spec() -> DetectorSpec {
    let priors = SsdPriors { aspect_ratios: vec![vec![2.0], vec![2.0, 3.0]], min_ratio: 0.2, max_ratio: 0.6, scales: None, steps: None, clip: true };
    DetectorSpec::ssd(priors, vec![[8, 8], [4, 4]], [64, 64])
}

#[test]
fn targets_and_multibox_loss_equal_torchvision() {
    let spec = spec();
    let priors = spec.prior_boxes().unwrap();
    let p = priors.len();
    let classes = 4;
    // seeded: the cases are the same on every run
    let mut rng = Xorshift64::seeded(7);
    let mut cases = vec![];
    let mut ours = vec![];
    for case in 0..10 {
        let n = 3;
        let mut images = vec![];
        for i in 0..n {
            // image 0 of case 0 has no objects; some boxes sit exactly on a prior (IoU 1)
            let count = if case == 0 && i == 0 { 0 } else { 1 + rng.index(5) };
            let boxes: Vec<BoundingBox> = (0..count)
                .map(|_| {
                    if rng.index(4) == 0 {
                        let b = priors[rng.index(p)];
                        return BoundingBox { class: rng.index(classes - 1) as u32, x0: b[0], y0: b[1], x1: b[2], y1: b[3] };
                    }
                    let (x, y) = (rng.range(0.0, 50.0), rng.range(0.0, 50.0));
                    let (w, h) = (rng.range(4.0, 40.0), rng.range(4.0, 40.0));
                    BoundingBox { class: rng.index(classes - 1) as u32, x0: x, y0: y, x1: (x + w).min(64.0), y1: (y + h).min(64.0) }
                })
                .collect();
            images.push(boxes);
        }
        let logits: Vec<f32> = (0..n * p * classes).map(|_| rng.range(-3.0, 3.0)).collect();
        let codes: Vec<f32> = (0..n * p * 4).map(|_| rng.range(-2.0, 2.0)).collect();
        cases.push(json!({
            "priors": priors,
            "match_iou": spec.match_iou,
            "neg_pos": spec.neg_pos_ratio,
            "images": images.iter().map(|bs| json!({
                "boxes": bs.iter().map(|b| [b.x0, b.y0, b.x1, b.y1]).collect::<Vec<_>>(),
                "labels": bs.iter().map(|b| b.class + 1).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "logits": logits.chunks(p * classes).map(|im| im.chunks(classes).collect::<Vec<_>>()).collect::<Vec<_>>(),
            "codes": codes.chunks(p * 4).map(|im| im.chunks(4).collect::<Vec<_>>()).collect::<Vec<_>>(),
        }));
        let pt = priors_tensor(&spec, Device::Cpu).unwrap();
        let t = match_targets(&pt, &images, &spec);
        let scores = Tensor::from_slice(&logits).view([n as i64, p as i64, classes as i64]);
        let codes = Tensor::from_slice(&codes).view([n as i64, p as i64, 4]);
        let (total, b, c) = multibox_loss(&scores, &codes, &t, spec.neg_pos_ratio as f64);
        ours.push((t, total.double_value(&[]), b.double_value(&[]), c.double_value(&[])));
    }
    let mut child = Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/ssd_loss_oracle.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the project's Python (scripts/setup.sh)");
    child.stdin.take().unwrap().write_all(json!(cases).to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the oracle failed");
    let answers: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut matched = 0;
    for (k, ((t, total, b, c), want)) in ours.iter().zip(&answers).enumerate() {
        let labels: Vec<Vec<i64>> = Vec::try_from(&t.labels).unwrap();
        let want_labels: Vec<Vec<i64>> = serde_json::from_value(want["labels"].clone()).unwrap();
        assert_eq!(labels, want_labels, "case {k}: the priors' classes");
        let codes = Vec::<f32>::try_from(t.codes.view([-1])).unwrap();
        let want_codes: Vec<Vec<[f32; 4]>> = serde_json::from_value(want["codes"].clone()).unwrap();
        for (i, img) in want_codes.iter().enumerate() {
            for (j, w) in img.iter().enumerate() {
                if want_labels[i][j] > 0 {
                    matched += 1;
                    let got = &codes[(i * p + j) * 4..][..4];
                    for (g, w) in got.iter().zip(w) {
                        assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "case {k} image {i} prior {j}: codes {got:?} vs {w:?}");
                    }
                }
            }
        }
        let (wb, wc) = (want["box_loss"].as_f64().unwrap(), want["class_loss"].as_f64().unwrap());
        assert!((b - wb).abs() <= 1e-5 * wb.abs().max(1.0), "case {k}: box loss {b} vs torchvision {wb}");
        assert!((c - wc).abs() <= 1e-5 * wc.abs().max(1.0), "case {k}: class loss {c} vs torchvision {wc}");
        assert!((total - (b + c)).abs() <= 1e-6 * total.abs(), "case {k}: the total is the sum of the parts (f32)");
    }
    assert!(matched > 100, "only {matched} matched priors: the cases do not exercise the matcher");
}

#[test]
fn the_loss_gradient_reaches_only_the_kept_priors() {
    // one image, one object: 1 matched prior, 3 hard negatives; every other prior has zero gradient
    let spec = spec();
    let pt = priors_tensor(&spec, Device::Cpu).unwrap();
    let b = spec.prior_boxes().unwrap()[10];
    let t = match_targets(&pt, &[vec![BoundingBox { class: 1, x0: b[0], y0: b[1], x1: b[2], y1: b[3] }]], &spec);
    let fg: i64 = t.labels.gt(0).sum(Kind::Int64).int64_value(&[]);
    let p = pt.size()[0];
    let scores = Tensor::randn([1, p, 4], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let codes = Tensor::randn([1, p, 4], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let (loss, _, _) = multibox_loss(&scores, &codes, &t, 3.0);
    loss.backward();
    let touched = scores.grad().abs().sum_dim_intlist(&[2i64][..], false, Kind::Float).gt(0.0).sum(Kind::Int64).int64_value(&[]);
    assert_eq!(touched, 4 * fg, "class loss on {fg} matched priors and 3 negatives each");
    let boxed = codes.grad().abs().sum_dim_intlist(&[2i64][..], false, Kind::Float).gt(0.0).sum(Kind::Int64).int64_value(&[]);
    assert_eq!(boxed, fg);
}

/// configs/fashion-detect-ssd.toml on a share of the composites (built on first use into `data`),
/// trained for `epochs` into `run`.
fn composites_config(data: &Path, run: &Path, epochs: usize) -> trainer::train::Config {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/fashion-detect-ssd.toml");
    let sets = [
        format!("data.train=\"{}\"", data.join("train.rec").display()),
        format!("data.val=\"{}\"", data.join("test.rec").display()),
        "data.limit_train=960".into(),
        "data.limit_val=200".into(),
        format!("train.epochs={epochs}"),
        "train.log_every=0".into(),
        format!("train.run=\"{}\"", run.display()),
    ];
    trainer::train::Config::from_file_with(&config, &sets).unwrap()
}

#[test]
fn ssd_tiny_learns_the_composites_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("fashion-detect");
    let o = trainer::train::Overrides::default();
    let whole = trainer::train::train(composites_config(&data, &dir.path().join("a"), 2), &o).unwrap();
    assert!(data.join("labels.txt").is_file(), "the composites are built on first use");
    let [first, second] = &whole[..] else { panic!("{whole:?}") };
    let map = |m: &trainer::train::EpochMetrics| m.val.as_ref().and_then(|v| v.map).unwrap();
    // the control: the same network untrained, on the same validation images
    let c = composites_config(&data, &dir.path().join("a"), 2);
    let labels: Vec<String> = ["T-shirt/top", "Trouser", "Sneaker", "Bag"].map(String::from).to_vec();
    let fresh = trainer::detection::build_detector(&c, &labels).unwrap();
    let t = trainer::detection::detect_transform(&c, [1, 128, 128], false).unwrap();
    let opts = data::LoaderOptions { batch_size: 64, ..Default::default() };
    let val = trainer::detection::DetectionSet::open(&data.join("test.rec"), 200, t, opts).unwrap();
    let untrained = trainer::detection::evaluate_detector(&fresh, &val).unwrap().map.unwrap();
    assert!(untrained < 0.1, "untrained mAP {untrained}");
    eprintln!("mAP@0.5 on 200 test scenes: untrained {untrained:.4}, epoch 1 {:.4}, epoch 2 {:.4}", map(first), map(second));
    assert!(second.train_loss < first.train_loss, "{} → {}", first.train_loss, second.train_loss);
    assert!(map(second) > 0.5, "mAP@0.5 after 2 epochs of 960 scenes: {} (0.61 here)", map(second));
    let ap = &second.val.as_ref().unwrap().ap;
    assert_eq!(ap.iter().map(|a| a.label.as_str()).collect::<Vec<_>>(), ["T-shirt/top", "Trouser", "Sneaker", "Bag"]);
    assert!(ap.iter().all(|a| a.objects > 20 && a.ap.is_some()), "{ap:?}");
    // `trainer eval` on scenes prepared elsewhere, with other classes in another order: matched by name
    let fashion = Path::new(data::prepare::detection::FASHION_MNIST_DIR);
    let other = |classes: &[&str], out: &Path| {
        let mut o = data::prepare::detection::CompositeOptions::new(fashion.join("train"), Some(fashion.join("t10k")));
        (o.classes, o.train_images, o.test_images, o.seed) = (classes.iter().map(|c| c.to_string()).collect(), 10, 200, 9);
        let prepared = data::prepare::detection::build_composites(&o).unwrap();
        data::prepare::write(prepared, out, &data::records::PackOptions { short_side: 0, jpeg_quality: 0, grayscale: false }, false).unwrap();
        out.join("test.rec")
    };
    let swapped = other(&["Bag", "Trouser"], &dir.path().join("swapped"));
    let (_, m) = trainer::train::eval(&dir.path().join("a"), None, &swapped, 64).unwrap();
    let ap: Vec<(&str, Option<f64>)> = m.ap.iter().map(|a| (a.label.as_str(), a.ap)).collect();
    assert!(matches!(ap[..], [("T-shirt/top", None), ("Trouser", Some(t)), ("Sneaker", None), ("Bag", Some(b))] if t > 0.5 && b > 0.5), "{ap:?}");
    let unknown = other(&["Bag", "Dress"], &dir.path().join("unknown"));
    let err = trainer::train::eval(&dir.path().join("a"), None, &unknown, 64).unwrap_err().to_string();
    assert!(err.contains("[\"Dress\"]") && err.contains("labels.txt"), "{err}");
    // the plot draws the mAP and each class's AP
    let h = trainer::plot::plot(&dir.path().join("a"), &dir.path().join("plot.png")).unwrap();
    let drawn: Vec<f64> = h.points.iter().map(|p| p.val_map.unwrap()).collect();
    assert!(drawn.len() == 2 && (drawn[0] - map(first)).abs() < 1e-12 && (drawn[1] - map(second)).abs() < 1e-12, "{drawn:?}");
    assert_eq!(h.points[1].val_ap.len(), 4);
    assert!(std::fs::metadata(dir.path().join("plot.png")).unwrap().len() > 10_000);
    // stop after epoch 1, resume at epoch 1: the same epoch 2, bit for bit
    let run = dir.path().join("b");
    trainer::train::train(composites_config(&data, &run, 1), &o).unwrap();
    let resumed = trainer::train::train(composites_config(&data, &run, 2), &trainer::train::Overrides { start_epoch: Some(1), ..o.clone() }).unwrap();
    let [again] = &resumed[..] else { panic!("{resumed:?}") };
    assert_eq!((again.train_loss, map(again)), (second.train_loss, map(second)));
    // the run directory records the detector: its graph.json carries the spec with the labels
    let graph: Value = serde_json::from_str(&std::fs::read_to_string(run.join("graph.json")).unwrap()).unwrap();
    assert_eq!(graph["detector"]["labels"][0], "background");
    assert_eq!(graph["detector"]["labels"][4], "Bag");
}
