//! `edge-demo` on real video: the book's emotion detector with the FER2013 model in edge-demo/assets (made
//! elsewhere, preprocessing from flags) on a video of the faces there, plus the other pipelines and the errors.

use std::path::{Path, PathBuf};
use std::process::Command;

use tests::{assets_dir, fresh_dir, json_lines, repo_root, run_bin, s, text};

/// The face video of scripts/faces_video.sh: astronaut, obama, grace_hopper, 75 frames each.
fn faces_video(dir: &Path) -> PathBuf {
    let out = dir.join("faces.mp4");
    let o = Command::new("bash").arg(repo_root().join("scripts/faces_video.sh")).arg(assets_dir().join("faces")).arg(&out).output().unwrap();
    assert!(o.status.success() && out.is_file(), "{}", text(&o));
    out
}

fn fer_flags(labels: &Path) -> Vec<String> {
    let model = assets_dir().join("fer_emotion.onnx");
    ["--model", s(&model), "--size", "64x64", "--layout", "nhwc", "--gray", "--mean", "127.5", "--std", "127.5", "--labels", s(labels)]
        .map(String::from)
        .to_vec()
}

fn fer_labels(dir: &Path) -> PathBuf {
    let p = dir.join("fer_labels.txt");
    std::fs::write(&p, "angry\ndisgust\nfear\nhappy\nsad\nsurprise\nneutral\n").unwrap();
    p
}

/// The most frequent label of the largest face over frames `range`.
fn majority(lines: &[serde_json::Value], range: std::ops::Range<u64>) -> (String, usize) {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for l in lines.iter().filter(|l| l["frame"].as_u64().is_some_and(|f| range.contains(&f))) {
        if let Some(label) = l["faces"][0]["label"].as_str() {
            *counts.entry(label.to_string()).or_default() += 1;
        }
    }
    counts.into_iter().max_by_key(|(_, n)| *n).unwrap_or_default()
}

#[test]
fn emotion_labels_the_astronaut_and_obama_happy_on_a_real_video() {
    let scratch = fresh_dir("edge-emotion");
    let dir = scratch.path().to_path_buf();
    let video = faces_video(&dir);
    let labels = fer_labels(&dir);
    let (out, jsonl) = (dir.join("annotated.mp4"), dir.join("frames.jsonl"));
    let mut args = vec!["-q".to_string(), "emotion".into()];
    args.extend(fer_flags(&labels));
    args.extend(["--source", s(&video), "--output", s(&out), "--json", s(&jsonl)].map(String::from));
    let o = run_bin("edge-demo", &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("225 frames") && stdout.contains("detect p50"), "{stdout}");

    let lines = json_lines(&jsonl);
    assert_eq!(lines.len(), 226, "one line per frame and the summary");
    // every frame, in order, with its timestamp (25 fps)
    for (i, l) in lines[..225].iter().enumerate() {
        assert_eq!(l["frame"], i as u64);
    }
    assert!((lines[100]["timestamp_ms"].as_f64().unwrap() - 4000.0).abs() < 1.0, "{}", lines[100]);
    let (astronaut, n1) = majority(&lines, 0..75);
    let (obama, n2) = majority(&lines, 75..150);
    assert_eq!((astronaut.as_str(), obama.as_str()), ("happy", "happy"), "{n1} {n2}");
    assert!(n1 > 50 && n2 > 50, "happy in most frames: {n1}/75, {n2}/75");
    // a face per frame: box inside the 640x480 frame, probabilities over the 7 labels
    let face = &lines[10]["faces"][0];
    let b: Vec<i64> = serde_json::from_value(face["box"].clone()).unwrap();
    assert!(b[0] >= 0 && b[1] >= 0 && b[0] + b[2] <= 640 && b[1] + b[3] <= 480, "{face}");
    let p = face["probabilities"].as_object().unwrap();
    assert_eq!(p.len(), 7);
    assert!((p.values().map(|v| v.as_f64().unwrap()).sum::<f64>() - 1.0).abs() < 1e-4);
    let summary = &lines[225]["summary"];
    assert_eq!((summary["frames"].as_u64(), summary["skipped"].as_u64()), (Some(225), Some(0)), "{summary}");
    assert!(summary["fps"].as_f64().unwrap() > 0.0);
    // the annotated video: the frame with the 260-pixel panel beside it, every frame written
    let o = run_bin("edge-demo", &["doctor", "--source", s(&out)]);
    assert!(o.status.success() && text(&o).contains("900x480 frames, 225 frames"), "{}", text(&o));
}

#[test]
fn age_gender_classify_and_folders_run_and_skip_broken_images() {
    let scratch = fresh_dir("edge-pipelines");
    let dir = scratch.path().to_path_buf();
    let labels = fer_labels(&dir);
    // an image folder: the three faces and one broken file
    let folder = dir.join("images");
    std::fs::create_dir_all(&folder).unwrap();
    for f in ["astronaut.png", "obama.jpg", "grace_hopper.jpg"] {
        std::fs::copy(assets_dir().join("faces").join(f), folder.join(f)).unwrap();
    }
    std::fs::write(folder.join("broken.jpg"), b"\xff\xd8 not an image").unwrap();
    let model = assets_dir().join("fer_emotion.onnx");
    let flags: Vec<String> = fer_flags(&labels)[2..].to_vec();

    // age-gender mechanics with the FER model in both roles, eye alignment on
    let jsonl = dir.join("ag.jsonl");
    let mut args: Vec<String> = [
        "-q",
        "age-gender",
        "--age-model",
        s(&model),
        "--gender-model",
        s(&model),
        "--align",
        "--source",
        s(&folder),
        "--json",
        s(&jsonl),
        "--output",
        s(&dir.join("ag-out")),
    ]
    .map(String::from)
    .to_vec();
    args.extend(flags.clone());
    let o = run_bin("edge-demo", &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", text(&o));
    let lines = json_lines(&jsonl);
    assert_eq!(lines.len(), 4, "three images and the summary");
    let summary = &lines[3]["summary"];
    assert_eq!((summary["frames"].as_u64(), summary["skipped"].as_u64()), (Some(3), Some(1)), "{summary}");
    assert!(summary["skipped_items"][0][0].as_str().unwrap().ends_with("broken.jpg"));
    let astronaut = &lines[0];
    assert!(astronaut["image"].as_str().unwrap().ends_with("astronaut.png"), "{astronaut}");
    assert!(astronaut["faces"][0]["age"]["label"].is_string() && astronaut["faces"][0]["gender"]["label"].is_string(), "{astronaut}");
    assert!(dir.join("ag-out/obama.jpg").is_file(), "annotated images are written into the output folder");

    // classify the whole frame, one line per image, written to an .avi
    let jsonl = dir.join("cls.jsonl");
    let mut args: Vec<String> =
        ["-q", "classify", "--model", s(&model), "--source", s(&folder), "--json", s(&jsonl), "--output", s(&dir.join("cls.avi")), "--workers", "1"]
            .map(String::from)
            .to_vec();
    args.extend(flags.clone());
    let o = run_bin("edge-demo", &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", text(&o));
    let lines = json_lines(&jsonl);
    assert_eq!(lines[0]["label"], "happy", "{}", lines[0]);
    assert!(dir.join("cls.avi").metadata().unwrap().len() > 1000);

    // orientation needs angle labels: this model's are emotions
    let mut args: Vec<String> = ["orientation", "--model", s(&model), "--source", s(&folder)].map(String::from).to_vec();
    args.extend(flags.clone());
    let o = run_bin("edge-demo", &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!o.status.success() && text(&o).contains("labels are rotation angles"), "{}", text(&o));
}

#[test]
fn edge_demo_errors_name_what_is_wrong() {
    let scratch = fresh_dir("edge-errors");
    let dir = scratch.path().to_path_buf();
    let labels = fer_labels(&dir);
    let model = assets_dir().join("fer_emotion.onnx");
    let faces = assets_dir().join("faces");
    let run = |extra: &[&str]| {
        let mut args: Vec<String> = vec!["emotion".into()];
        args.extend(fer_flags(&labels));
        args.extend(extra.iter().map(|s| s.to_string()));
        run_bin("edge-demo", &args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let o = run(&["--source", "/no/such/video.mp4"]);
    assert!(!o.status.success() && text(&o).contains("/no/such/video.mp4: no such file"), "{}", text(&o));
    let o = run(&["--source", s(&faces), "--output", s(&dir.join("out.xyz"))]);
    assert!(!o.status.success() && text(&o).contains("unsupported video extension 'xyz'"), "{}", text(&o));
    let o = run(&["--source", "97"]);
    assert!(!o.status.success() && text(&o).contains("no camera with this index"), "{}", text(&o));
    let not_video = dir.join("notes.mp4");
    std::fs::write(&not_video, b"this is not a video").unwrap();
    let o = run(&["--source", s(&not_video)]);
    assert!(!o.status.success() && text(&o).contains("cannot decode this file"), "{}", text(&o));
    // a model whose input does not fit the preprocessing
    let o = run_bin("edge-demo", &["emotion", "--model", s(&model), "--size", "48x48", "--source", s(&faces)]);
    assert!(!o.status.success() && text(&o).contains("expects [N, 64, 64, 1]"), "{}", text(&o));
}
