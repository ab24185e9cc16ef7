//! The book's case studies, end to end on small generated data in each dataset's real format, with the
//! repository's own recipe configs (configs/*.toml) and commands (docs/case-studies.md):
//! ImageNet (the five networks, stop / new rate / resume, rank-1 and rank-5 on the test split), vehicle
//! identification (surgery from the ImageNet VGG16, top-5), emotion (EmotionVGGNet, then the real-time
//! detector with the exported model) and age / gender (both networks, one-off, 10-crop prediction).
//! The orientation case study has its own file. Sizes are tiny: these check that every step runs and
//! hands the next one what it needs, not accuracy.

use std::path::Path;
use std::process::Command;

use data::image::{self, ImageFormat};
use tests::{assets_dir, fresh_dir, pattern_image, repo_root, run_bin, s, text};

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn jpeg(path: &Path, class: usize, size: u32, seed: u64) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    pattern_image(class, size, seed).save_with_format(path, ImageFormat::Jpeg).unwrap();
}

fn ok(args: &[&str]) -> String {
    let o = run_bin(args[0], &args[1..]);
    assert!(o.status.success(), "{args:?}\n{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `trainer train` with a recipe config, pointed at `data` and cut down to a few samples on the CPU.
fn train(config: &str, run: &Path, data: &Path, classes: usize, extra: &[&str]) -> serde_json::Value {
    let sets = [
        format!("data.train=\"{}\"", s(&data.join("train.rec"))),
        format!("data.val=\"{}\"", s(&data.join("val.rec"))),
        format!("data.mean_file=\"{}\"", s(&data.join("mean.json"))),
        format!("model.num_classes={classes}"),
        "train.devices=[]".into(),
        "train.device=\"cpu\"".into(),
        "train.batch_size=2".into(),
        "train.log_every=0".into(),
        "data.limit_train=4".into(),
        "data.limit_val=2".into(),
    ];
    let config = repo_root().join("configs").join(config);
    let mut args = vec!["-q", "train", "--config", s(&config), "--run", s(run)];
    for v in &sets {
        args.extend(["--set", v.as_str()]);
    }
    args.extend(extra);
    let o = run_bin("trainer", &args);
    assert!(o.status.success(), "{args:?}\n{}", text(&o));
    serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().last().unwrap()).unwrap()
}

fn eval(run: &Path, data: &Path) -> serde_json::Value {
    serde_json::from_str::<serde_json::Value>(&ok(&["trainer", "eval", "--run", s(run), "--data", s(data), "--json"])).unwrap()["metrics"].clone()
}

/// ILSVRC2015 CLS-LOC tree + devkit: 3 synsets, 8 train images each, 6 val images.
fn imagenet_tree(root: &Path) {
    let wnids = ["n01440764", "n01443537", "n01484850"];
    write(&root.join("devkit/data/map_clsloc.txt"), "n01440764 1 tench\nn01443537 2 goldfish\nn01484850 3 great_white_shark\n");
    let mut list = String::new();
    for (c, w) in wnids.iter().enumerate() {
        for j in 0..8 {
            list.push_str(&format!("{w}/{w}_{j} {}\n", c * 8 + j + 1));
            jpeg(&root.join(format!("Data/CLS-LOC/train/{w}/{w}_{j}.JPEG")), c, 80, (c * 8 + j) as u64);
        }
    }
    write(&root.join("ImageSets/CLS-LOC/train_cls.txt"), &list);
    let (mut val, mut truth) = (String::new(), String::new());
    for i in 1..=6 {
        val.push_str(&format!("ILSVRC2012_val_{i:08} {i}\n"));
        truth.push_str(&format!("{}\n", (i - 1) % 3 + 1));
        jpeg(&root.join(format!("Data/CLS-LOC/val/ILSVRC2012_val_{i:08}.JPEG")), (i - 1) % 3, 80, 100 + i as u64);
    }
    write(&root.join("ImageSets/CLS-LOC/val.txt"), &val);
    write(&root.join("devkit/data/ILSVRC2015_clsloc_validation_ground_truth.txt"), &truth);
    write(&root.join("devkit/data/ILSVRC2015_clsloc_validation_blacklist.txt"), "6\n");
}

#[test]
fn imagenet_five_networks_resume_with_a_new_rate_then_cars_surgery_and_top5() {
    let scratch = fresh_dir("case-imagenet");
    let dir = scratch.path().to_path_buf();
    imagenet_tree(&dir.join("ILSVRC2015"));
    let data = dir.join("imagenet");
    ok(&["trainer", "-q", "prepare", "imagenet", s(&dir.join("ILSVRC2015")), "--out", s(&data), "--test-per-class", "2", "--short-side", "64"]);
    let test = data.join("test.rec");
    for net in ["alexnet", "vgg16", "googlenet", "resnet50", "squeezenet"] {
        let run = dir.join(format!("run-{net}"));
        let config = format!("imagenet-{net}.toml");
        // keep_checkpoints = 1: a VGG16 checkpoint with its momentum is over 1 GB, and CI disks are small
        let keep = ["--set", "train.keep_checkpoints=1"];
        let first = train(&config, &run, &data, 3, &[&["--epochs", "1"][..], &keep].concat());
        assert_eq!(first["epoch"], 1, "{net}: {first}");
        // the book's workflow: stop, lower the rate, resume from the saved epoch
        let second = train(&config, &run, &data, 3, &[&["--start-epoch", "1", "--epochs", "2", "--lr", "0.001"][..], &keep].concat());
        assert_eq!(second["epoch"], 2, "{net}: {second}");
        assert_eq!(trainer::run_dir::RunDir::new(&run).saved_epochs(), [2], "{net}: only the newest checkpoint is kept");
        let lr = second["lr"].as_f64().unwrap();
        assert!(lr > 0.0 && lr <= 0.001 + 1e-12, "{net}: the resumed epoch ran at lr {lr}");
        let m = eval(&run, &test);
        assert_eq!(m["samples"], 6, "{net}: 2 test images per class: {m}");
        let (r1, r5) = (m["rank1"].as_f64().unwrap(), m["rank5"].as_f64().unwrap());
        assert!((0.0..=1.0).contains(&r1) && r5 == 1.0, "{net}: 3 classes, so rank-5 is 1: {m}");
        if net != "vgg16" {
            let _ = std::fs::remove_dir_all(&run);
        }
    }

    // vehicle identification: Stanford Cars layout, surgery from the ImageNet VGG16 just trained
    let cars = dir.join("cars");
    let mut csv = String::from("Image Filename,Make,Model,Vehicle Type,Year\n");
    for (i, (make, model)) in [("Audi", "A5"), ("BMW", "M3"), ("Tesla", "S")].iter().cycle().take(21).enumerate() {
        csv.push_str(&format!("car_ims/{:06}.jpg,{make},{model},Sedan,2012\n", i + 1));
        jpeg(&cars.join(format!("car_ims/{:06}.jpg", i + 1)), i % 3, 72, 500 + i as u64);
    }
    write(&cars.join("complete_dataset.csv"), &csv);
    let cars_data = dir.join("cars-rec");
    ok(&["trainer", "-q", "prepare", "cars", s(&cars), "--out", s(&cars_data), "--short-side", "64"]);
    let pretrained = dir.join("run-vgg16/checkpoints/epoch-0002.safetensors");
    let init = format!("model.init_from=\"{}\"", s(&pretrained));
    let run = dir.join("run-cars");
    let r = train("cars-vgg16-finetune.toml", &run, &cars_data, 3, &["--epochs", "1", "--set", &init]);
    assert_eq!(r["epoch"], 1, "{r}");
    let _ = std::fs::remove_dir_all(dir.join("run-vgg16"));
    let onnx = dir.join("cars.onnx");
    ok(&["exporter", "-q", "export", "--run", s(&run), "--out", s(&onnx)]);
    // top-5 on a single image: printed, and drawn onto a copy of the image
    let car = cars.join("car_ims/000002.jpg");
    let out = ok(&["runtime", "predict", "--model", s(&onnx), s(&car), "--top", "5", "--json"]);
    let p: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let top: Vec<&str> = p["top"].as_array().unwrap().iter().map(|t| t[0].as_str().unwrap()).collect();
    let mut sorted = top.clone();
    sorted.sort();
    assert_eq!(sorted, ["Audi:A5", "BMW:M3", "Tesla:S"], "three classes, all ranked: {p}");
    let single = dir.join("one-car");
    std::fs::create_dir_all(&single).unwrap();
    std::fs::copy(&car, single.join("car.jpg")).unwrap();
    ok(&["edge-demo", "-q", "classify", "--model", s(&onnx), "--source", s(&single), "--top", "5", "--output", s(&dir.join("top5"))]);
    let drawn = image::open(dir.join("top5/car.jpg")).unwrap();
    assert_eq!((drawn.width(), drawn.height()), image::open(&car).map(|i| (i.width(), i.height())).unwrap());
}

#[test]
fn emotion_recipe_trains_emotion_vgg_and_runs_the_real_time_detector_with_it() {
    let scratch = fresh_dir("case-emotion");
    let dir = scratch.path().to_path_buf();
    // the Kaggle CSV: emotion, pixels (48x48 grey, space-separated), Usage
    let mut csv = String::from("emotion,pixels,Usage\n");
    for i in 0..49 {
        let usage = ["Training", "Training", "Training", "Training", "Training", "PrivateTest", "PublicTest"][i % 7];
        let img = image::DynamicImage::ImageRgb8(pattern_image(i % 3, 48, i as u64)).into_luma8();
        let pixels: Vec<String> = img.pixels().map(|p| p.0[0].to_string()).collect();
        csv.push_str(&format!("{},{},{usage}\n", (i / 7) % 7, pixels.join(" ")));
    }
    write(&dir.join("fer2013.csv"), &csv);
    let data = dir.join("fer2013");
    ok(&["trainer", "-q", "prepare", "fer2013", s(&dir.join("fer2013.csv")), "--merge-disgust", "--out", s(&data)]);
    let run = dir.join("run");
    let r = train("fer2013-emotion-vgg.toml", &run, &data, 6, &["--epochs", "1"]);
    assert_eq!(r["epoch"], 1, "{r}");
    let onnx = dir.join("emotion.onnx");
    ok(&["exporter", "-q", "export", "--run", s(&run), "--out", s(&onnx)]);
    // the detector with our own export: no preprocessing flags, labels from the file
    let video = dir.join("faces.mp4");
    let o = Command::new("bash").arg(repo_root().join("scripts/faces_video.sh")).arg(assets_dir().join("faces")).arg(&video).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let jsonl = dir.join("frames.jsonl");
    ok(&["edge-demo", "-q", "emotion", "--model", s(&onnx), "--source", s(&video), "--max-frames", "12", "--json", s(&jsonl)]);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&jsonl).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 13);
    let labels = ["angry", "fear", "happy", "sad", "surprise", "neutral"];
    let face = &lines[0]["faces"][0];
    assert!(labels.contains(&face["label"].as_str().unwrap()), "{face}");
    assert_eq!(face["probabilities"].as_object().unwrap().len(), 6);
}

#[test]
fn age_and_gender_recipes_report_one_off_and_predict_with_ten_crops() {
    let scratch = fresh_dir("case-adience");
    let dir = scratch.path().to_path_buf();
    let root = dir.join("adience");
    let bins = ["(0, 2)", "(4, 6)", "(8, 12)", "(15, 20)", "(25, 32)", "(38, 43)", "(48, 53)", "(60, 100)"];
    let header = "user_id\toriginal_image\tface_id\tage\tgender\tx\ty\tdx\tdy\ttilt_ang\tfiducial_yaw_angle\tfiducial_score\n";
    for fold in 0..5 {
        let mut rows = String::from(header);
        for k in 0..8 {
            let n = fold * 8 + k;
            let (user, orig, face) = (format!("user{fold}"), format!("img{n}.jpg"), n + 1);
            rows.push_str(&format!("{user}\t{orig}\t{face}\t{}\t{}\t0\t0\t10\t10\t0\t0\t50\n", bins[n % 8], ["m", "f"][n % 2]));
            jpeg(&root.join(format!("aligned/{user}/landmark_aligned_face.{face}.{orig}")), n % 3, 72, 900 + n as u64);
        }
        write(&root.join(format!("fold_{fold}_data.txt")), &rows);
    }
    for (task, config, classes) in [("age", "adience-age.toml", 8), ("gender", "adience-gender.toml", 2)] {
        let data = dir.join(task);
        ok(&["trainer", "-q", "prepare", "adience", s(&root), "--task", task, "--out", s(&data), "--short-side", "64"]);
        let run = dir.join(format!("run-{task}"));
        let r = train(config, &run, &data, classes, &["--epochs", "1"]);
        assert_eq!(r["epoch"], 1, "{task}: {r}");
        let m = eval(&run, &data.join("test.rec"));
        // age bins are ordinal: one-off accuracy is reported, and it can only exceed rank-1
        match task {
            "age" => assert!(m["one_off"].as_f64().unwrap() >= m["rank1"].as_f64().unwrap(), "{m}"),
            _ => assert!(m.get("one_off").is_none_or(serde_json::Value::is_null), "{m}"),
        }
        let onnx = dir.join(format!("{task}.onnx"));
        ok(&["exporter", "-q", "export", "--run", s(&run), "--out", s(&onnx)]);
        // the user's own images, 10-crop: probabilities over every class, best first
        let own = assets_dir().join("faces/obama.jpg");
        let out = ok(&["runtime", "predict", "--model", s(&onnx), s(&own), "--ten-crop", "--top", "8", "--json"]);
        let p: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
        let probs: Vec<f64> = p["top"].as_array().unwrap().iter().map(|t| t[1].as_f64().unwrap()).collect();
        assert_eq!(probs.len(), classes, "{p}");
        assert!(probs.windows(2).all(|w| w[0] >= w[1]) && (probs.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{p}");
    }
    // both networks in the video pipeline, on the user's own photos
    let jsonl = dir.join("ag.jsonl");
    ok(&[
        "edge-demo",
        "-q",
        "age-gender",
        "--age-model",
        s(&dir.join("age.onnx")),
        "--gender-model",
        s(&dir.join("gender.onnx")),
        "--source",
        s(&assets_dir().join("faces")),
        "--json",
        s(&jsonl),
    ]);
    let first: serde_json::Value = serde_json::from_str(std::fs::read_to_string(&jsonl).unwrap().lines().next().unwrap()).unwrap();
    // `trainer prepare adience` names the bins 0-2 … 60-100, in age order
    let names = ["0-2", "4-6", "8-12", "15-20", "25-32", "38-43", "48-53", "60-100"];
    assert!(names.contains(&first["faces"][0]["age"]["label"].as_str().unwrap()), "{first}");
    assert!(["female", "male"].contains(&first["faces"][0]["gender"]["label"].as_str().unwrap()), "{first}");
}
