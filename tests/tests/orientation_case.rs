//! The book's orientation case study (ch. 11) end to end through the `trainer` CLI, on generated
//! scenes: `prepare orientation` -> `init` (a frozen, randomly initialised mini-vgg) -> `features` for
//! train and test -> `logreg fit` (grid search over C, report) -> `logreg eval` of the saved model ->
//! `orientation-correct` on rotated copies of unseen scenes, checked pixel by pixel -> `exporter
//! export-head` (the network cut at the feature layer plus the fitted head, as one verified ONNX file)
//! -> `runtime eval`, `runtime predict` and `edge-demo orientation` on it, which agree with the trainer.
//!
//! The scenes have a bright sky above a dark ground, so each of the four rotations puts the bright part
//! on another side; random horizons, brightness, objects and noise make every image different. Even
//! random convolution filters keep where things are in the 7x7 pooled map, which is what the book's
//! lesson says: CNN features are not rotation invariant, so the angle can be read from them.

use std::collections::BTreeMap;
use std::process::Command;

use data::image::{self, DynamicImage, Rgb, RgbImage};
use tests::{fresh_dir, python, run_bin, s, text};

fn ok(args: &[&str]) -> String {
    let o = run_bin("trainer", args);
    assert!(o.status.success(), "trainer {}\n{}", args.join(" "), text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// An upright scene of `w`x`h` pixels drawn from `seed`.
fn scene(seed: u64, w: u32, h: u32) -> RgbImage {
    // a number below n per call
    let mut rng = data::rng::Xorshift64::seeded(seed);
    let mut next = move |n: u32| rng.below(u64::from(n)) as u32;
    let horizon = h * (35 + next(30)) / 100;
    let sky = [150 + next(100), 150 + next(100), 180 + next(75)];
    let ground = [next(90), 20 + next(90), next(60)];
    // a tree or a building standing on the ground, and a cloud
    let (ox, ow, oh) = (next(w - 6), 3 + next(5), 4 + next(horizon.max(5)));
    let (cx, cy, cr) = (next(w), next(horizon.max(1)), 2 + next(4));
    let noise: Vec<u32> = (0..w * h).map(|_| next(30)).collect();
    RgbImage::from_fn(w, h, |x, y| {
        let n = noise[(y * w + x) as usize];
        let mut px = if y < horizon { sky } else { ground };
        if x >= ox && x < ox + ow && y < horizon && y + oh >= horizon {
            px = [60, 40, 30];
        }
        if (x as i64 - cx as i64).pow(2) + (y as i64 - cy as i64).pow(2) <= (cr * cr) as i64 {
            px = [250, 250, 250];
        }
        Rgb(px.map(|v| (v + n).min(255) as u8))
    })
}

/// Turned clockwise as `trainer prepare orientation` turns its copies.
fn turned(img: &RgbImage, angle: u32) -> RgbImage {
    let d = DynamicImage::ImageRgb8(img.clone());
    match angle {
        90 => d.rotate90(),
        180 => d.rotate180(),
        270 => d.rotate270(),
        _ => d,
    }
    .to_rgb8()
}

/// Whether an image path as a tool prints it is the case `name` (a path relative to the input folder).
fn names_case(image: &str, name: &str) -> bool {
    image == name || image.ends_with(&format!("/{name}"))
}

#[test]
fn rotated_set_features_logreg_grid_search_and_corrected_images() {
    let scratch = fresh_dir("orientation-case");
    let d = scratch.path().to_path_buf();
    let (scenes, data, run) = (d.join("scenes"), d.join("data"), d.join("run"));
    for i in 0..48u64 {
        let w = 32 + (i as u32 % 3) * 6; // some landscape images, some square
        let p = scenes.join(format!("{}/scene{i:02}.png", ["indoor", "outdoor"][i as usize % 2]));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        scene(i, w, 32).save(&p).unwrap();
    }

    // 1. the rotated dataset: every scene at 0, 90, 180 and 270 degrees, stored lossless at 28 pixels
    let out = ok(&[
        "prepare",
        "orientation",
        s(&scenes),
        "--all-angles",
        "--val-fraction",
        "0",
        "--test-fraction",
        "0.25",
        "--short-side",
        "28",
        "--quality",
        "0",
        "--out",
        s(&data),
    ]);
    assert!(out.contains("report.json"), "{out}");
    assert_eq!(std::fs::read_to_string(data.join("labels.txt")).unwrap(), "0\n90\n180\n270\n");

    // 2. a frozen network: mini-vgg as `trainer init` leaves it (28x28 grey input)
    ok(&["init", "--model", "mini-vgg", "--num-classes", "4", "--seed", "7", "--run", s(&run)]);

    // 3. features of its last pooling layer, block2.pool = 64x7x7
    let (train_f, test_f) = (d.join("train.features"), d.join("test.features"));
    let out = ok(&["features", "--run", s(&run), "--data", s(&data.join("train.rec")), "--out", s(&train_f), "--batch", "16"]);
    assert!(out.contains("144 rows x 3136 features") && out.contains("block2.pool [64, 7, 7]") && out.contains("4 classes"), "{out}");
    let out = ok(&["features", "--run", s(&run), "--epoch", "0", "--data", s(&data.join("test.rec")), "--out", s(&test_f)]);
    assert!(out.contains("48 rows x 3136 features"), "{out}");
    let out = ok(&["features", "--run", s(&run), "--data", s(&data.join("test.rec")), "--out", s(&d.join("early.features")), "--layer", "block1.pool"]);
    assert!(out.contains("48 rows x 6272 features"), "{out}");
    let o = run_bin("trainer", &["features", "--run", s(&run), "--data", s(&data.join("test.rec")), "--out", s(&d.join("x.features")), "--layer", "nope"]);
    assert!(!o.status.success() && text(&o).contains("no node 'nope'"), "{}", text(&o));

    // the file is plain safetensors with its labels and keys: read it with Python's safetensors
    let py = python();
    if py.is_file() {
        let script = "import json,sys\nfrom safetensors import safe_open\nfrom safetensors.numpy import load_file\nt = load_file(sys.argv[1])\nm = safe_open(sys.argv[1], 'np').metadata()\nprint(json.dumps({'features': list(t['features'].shape), 'labels': sorted(set(t['labels'].tolist())), 'label_names': json.loads(m['label_names']), 'keys': len(json.loads(m['keys'])), 'layer': json.loads(m['info'])['layer'], 'finite': bool((abs(t['features']) < 1e30).all())}))";
        let o = Command::new(&py).args(["-c", script, s(&test_f)]).output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"features": [48, 3136], "labels": [0, 1, 2, 3], "label_names": ["0", "90", "180", "270"], "keys": 48, "layer": "block2.pool", "finite": true})
        );
    } else {
        eprintln!("{} missing: the Python check of the features file is skipped", py.display());
    }

    // 4. logistic regression, 3-fold grid search over C, report on the test features
    let model = d.join("orientation.json");
    let grid = [0.0001, 0.001, 0.01, 0.1, 1.0, 10.0];
    let fit: serde_json::Value = serde_json::from_str(&ok(&[
        "logreg",
        "fit",
        "--features",
        s(&train_f),
        "--val",
        s(&test_f),
        "--c",
        "0.0001,0.001,0.01,0.1,1,10",
        "--folds",
        "3",
        "--out",
        s(&model),
        "--json",
    ]))
    .unwrap();
    eprintln!("logreg fit: C={} cv={} report={}", fit["c"], fit["cv"], fit["report"]);
    let c = fit["c"].as_f64().unwrap();
    assert!(grid.contains(&c), "C {c} is not from the grid");
    let cv = fit["cv"].as_array().unwrap();
    assert_eq!(cv.iter().map(|s| s["c"].as_f64().unwrap()).collect::<Vec<_>>(), grid);
    assert!(cv.iter().all(|s| s["folds"].as_array().unwrap().len() == 3));
    let best = cv.iter().map(|s| s["mean"].as_f64().unwrap()).fold(0.0, f64::max);
    assert_eq!(cv.iter().find(|s| s["c"] == fit["c"]).unwrap()["mean"].as_f64().unwrap(), best, "the chosen C has the best CV score");
    let report = &fit["report"];
    let labels: Vec<&str> = report["classes"].as_array().unwrap().iter().map(|c| c["label"].as_str().unwrap()).collect();
    assert_eq!(labels, ["0", "90", "180", "270"]);
    assert!(report["classes"].as_array().unwrap().iter().all(|c| c["support"] == 12), "{report}");
    let accuracy = report["accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.75, "test accuracy {accuracy} (chance is 0.25)\n{report}");

    // 5. the saved model reloads and reports exactly the same numbers
    let eval: serde_json::Value = serde_json::from_str(&ok(&["logreg", "eval", "--model", s(&model), "--features", s(&test_f), "--json"])).unwrap();
    assert_eq!(eval["report"], fit["report"]);
    let table = ok(&["logreg", "eval", "--model", s(&model), "--features", s(&test_f)]);
    assert!(table.contains("precision") && table.contains("weighted avg") && table.contains(&format!("{accuracy:.4}")), "{table}");
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&model).unwrap()).unwrap();
    assert_eq!(saved["weights"].as_array().unwrap().len(), 4);
    assert_eq!(saved["weights"][0].as_array().unwrap().len(), 3136);
    assert_eq!(saved["standardize"]["mean"].as_array().unwrap().len(), 3136);
    assert_eq!(saved["features"]["short_side"], 28);

    // 6. unseen scenes, turned, plus files that are not images: corrected and written upright
    let (input, fixed) = (d.join("incoming"), d.join("fixed"));
    std::fs::create_dir_all(input.join("sub")).unwrap();
    let mut cases = vec![];
    for i in 0..12u64 {
        let upright = scene(1000 + i, 32 + (i as u32 % 2) * 8, 32);
        let angle = [0, 90, 180, 270][i as usize % 4];
        let name = if i < 6 { format!("photo{i}.png") } else { format!("sub/photo{i}.png") };
        turned(&upright, angle).save(input.join(&name)).unwrap();
        cases.push((name, upright, angle));
    }
    std::fs::write(input.join("broken.png"), b"\x89PNG not really").unwrap();
    std::fs::write(input.join("notes.txt"), b"hello").unwrap();
    let out = ok(&["orientation-correct", "--run", s(&run), "--model", s(&model), "--images", s(&input), "--out", s(&fixed)]);
    assert!(out.contains("12 images written") && out.contains(", 2 skipped"), "{out}");
    let rep: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixed.join("report.json")).unwrap()).unwrap();
    let skipped: Vec<&str> = rep["skipped"].as_array().unwrap().iter().map(|s| s[0].as_str().unwrap()).collect();
    assert_eq!(skipped.len(), 2);
    assert!(skipped.contains(&"broken.png") && skipped.contains(&"notes.txt"), "{skipped:?}");
    assert!(!fixed.join(".orientation-input").exists(), "the scratch records are removed");
    let mut right = 0;
    for (name, upright, angle) in &cases {
        let entry = rep["images"].as_array().unwrap().iter().find(|e| e["image"] == name.as_str()).unwrap_or_else(|| panic!("{name} not in the report"));
        let predicted = entry["angle"].as_u64().unwrap() as u32;
        let p = entry["probability"].as_f64().unwrap();
        assert!(p > 0.25 && p <= 1.0, "{entry}");
        assert!(out.contains(&format!("{name}\t{predicted}\t")), "{out}");
        let written = image::open(fixed.join(name)).unwrap().to_rgb8();
        // whatever was predicted, the file was turned back by 360 - predicted
        assert_eq!(written, turned(&turned(upright, *angle), (360 - predicted) % 360), "{name}");
        if predicted == *angle {
            assert_eq!(&written, upright, "{name}: predicted right, so the output is the upright scene exactly");
            right += 1;
        }
    }
    eprintln!("orientation-correct: {right}/12 predicted right");
    assert!(right >= 9, "{right}/12 angles right\n{out}");
    let corrected: BTreeMap<String, u64> =
        rep["images"].as_array().unwrap().iter().map(|e| (e["image"].as_str().unwrap().to_string(), e["angle"].as_u64().unwrap())).collect();

    // 7. the deployment: the logistic model and its frozen network as one verified ONNX file
    let onnx = d.join("orientation.onnx");
    let o = run_bin("exporter", &["export-head", "--logreg", s(&model), "--out", s(&onnx)]);
    assert!(o.status.success(), "{}", text(&o));
    let printed = String::from_utf8_lossy(&o.stdout).into_owned();
    eprintln!("exporter export-head:\n{printed}");
    assert!(printed.contains("mini-vgg cut at block2.pool [64, 7, 7], then a linear head over 4 classes, standardisation folded in"), "{printed}");
    assert!(printed.contains("on 4 fixed pseudo-random images: max |Δp|") && printed.contains("on 32 samples of"), "{printed}");
    let summary = exporter::inspect::inspect(&onnx).unwrap();
    let meta = summary.meta().unwrap().expect("the export describes itself");
    assert_eq!(meta.labels, ["0", "90", "180", "270"]);
    assert_eq!((meta.architecture.as_str(), meta.epoch, meta.run.as_str()), ("mini-vgg+logreg", 0, s(&run)));
    let pre = &meta.preprocessing;
    assert_eq!((pre.input, pre.resize_short_side, pre.crop), ([1, 28, 28], 28, models::meta::Crop::Center));
    assert_eq!(
        (pre.mean.clone(), pre.std.clone()),
        (
            saved["features"]["mean"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect::<Vec<_>>(),
            saved["features"]["std"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect::<Vec<_>>()
        )
    );
    let parity: serde_json::Value = serde_json::from_str(meta.parity.as_deref().expect("the parity report is in the file")).unwrap();
    assert!(parity["max_abs_diff"].as_f64().unwrap() <= 1e-4 && parity["tolerance"].as_f64().unwrap() <= 1e-4, "{parity}");
    let real = &parity["samples"];
    assert_eq!((real["samples"].as_u64(), real["top1_agree"].as_u64()), (Some(32), Some(32)), "{parity}");
    assert_eq!(real["accuracy_libtorch"], real["accuracy_file"], "{parity}");
    // one network: the classifier mini-vgg was initialised with is cut away, the head is one Gemm
    let outputs: Vec<&str> = summary.outputs.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(outputs, ["probabilities"]);
    assert_eq!(summary.outputs[0].dims, ["N", "4"]);
    // a bound that cannot be met: refused and removed
    let refused = d.join("refused.onnx");
    let o = run_bin("exporter", &["export-head", "--logreg", s(&model), "--out", s(&refused), "--tolerance=-1", "--samples", "0"]);
    assert!(!o.status.success() && text(&o).contains("parity check failed") && !refused.exists(), "{}", text(&o));

    // 8. served like any export: `runtime eval` on the test records scores what `logreg eval` scored
    let eval_json = d.join("eval.json");
    let o = run_bin("runtime", &["eval", "--model", s(&onnx), "--data", s(&data.join("test.rec")), "--json", s(&eval_json)]);
    assert!(o.status.success(), "{}", text(&o));
    let served: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&eval_json).unwrap()).unwrap();
    assert_eq!(served["confusion"], eval["report"]["confusion"], "runtime eval {served}\nlogreg eval {}", eval["report"]);
    assert_eq!(served["rank1"].as_f64().unwrap(), accuracy);

    // `runtime predict` on the turned images: the angles `orientation-correct` predicted
    let o = run_bin("runtime", &["predict", "--model", s(&onnx), s(&input), "--top", "4", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let predicted: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(predicted.len(), 12, "{}", text(&o));
    for p in &predicted {
        let image = p["image"].as_str().unwrap();
        let name = cases.iter().map(|c| c.0.as_str()).find(|n| names_case(image, n)).unwrap_or_else(|| panic!("{image} is none of the cases"));
        let top = p["top"].as_array().unwrap();
        let mut labels: Vec<&str> = top.iter().map(|t| t[0].as_str().unwrap()).collect();
        let best: u64 = labels[0].parse().unwrap();
        assert_eq!(best, corrected[name], "{name}: runtime predict {p}, orientation-correct {}", corrected[name]);
        labels.sort();
        assert_eq!(labels, ["0", "180", "270", "90"], "{p}");
    }

    // `edge-demo orientation` on the folders (it reads one folder, not its sub-folders): the same
    // angles, and the images written upright
    let (turned_back, mut lines) = (d.join("edge-out"), vec![]);
    for folder in [input.clone(), input.join("sub")] {
        let frames = d.join("edge.jsonl");
        let o = run_bin("edge-demo", &["-q", "orientation", "--model", s(&onnx), "--source", s(&folder), "--output", s(&turned_back), "--json", s(&frames)]);
        assert!(o.status.success(), "{}", text(&o));
        lines.extend(std::fs::read_to_string(&frames).unwrap().lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()));
    }
    let per_image: Vec<&serde_json::Value> = lines.iter().filter(|l| l.get("rotation").is_some()).collect();
    assert_eq!(per_image.len(), 12, "{lines:?}");
    for l in per_image {
        let image = l["image"].as_str().unwrap();
        let (name, upright, angle) = cases.iter().find(|c| names_case(image, &c.0)).unwrap_or_else(|| panic!("{l}"));
        let rotation = l["rotation"].as_u64().unwrap();
        assert_eq!(rotation, corrected[name.as_str()], "{name}: edge-demo {l}, orientation-correct {}", corrected[name.as_str()]);
        let file_name = std::path::Path::new(name).file_name().unwrap();
        let written = image::open(turned_back.join(file_name)).unwrap().to_rgb8();
        assert_eq!(written, turned(&turned(upright, *angle), (360 - rotation as u32) % 360), "{name}");
    }
}
