//! Face detectors beside the book's Haar cascade: MediaPipe's BlazeFace (edge-demo/assets, short and full
//! range) through the runtime and edge-demo.
//!
//! - On the face video, `edge-demo emotion --face-detector blazeface` finds the faces the same Python loop
//!   finds (bench/cv2_emotion.py --blazeface: cv2 + onnxruntime + numpy decoding written after MediaPipe),
//!   with the eye keypoints on the face, and the emotions come out as with Haar.
//! - `age-gender --align` with BlazeFace aligns every face from its eyes (the book's FaceAligner).
//! - Accuracy on real ground truth: dlib's `testing.xml` photos (scripts/dlib_faces.sh) through `trainer
//!   prepare dlib-xml --label face`, scored by mAP@0.5: `runtime eval` for both BlazeFace models, and
//!   `runtime eval-detections` for what `edge-demo faces` finds (Haar and BlazeFace) and for `runtime
//!   predict --json`, which must equal `runtime eval` on the same model.

use std::path::{Path, PathBuf};
use std::process::Command;

use tests::{assets_dir, fresh_dir, json_lines, python, repo_root, run_bin, s, text};

fn iou(a: [f64; 4], b: [f64; 4]) -> f64 {
    let ix = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let iy = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = ix * iy;
    inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)
}

/// `[x, y, w, h]` → corners.
fn corners(v: &serde_json::Value) -> [f64; 4] {
    let b: Vec<f64> = serde_json::from_value(v.clone()).unwrap();
    [b[0], b[1], b[0] + b[2], b[1] + b[3]]
}

fn fer_args(dir: &Path) -> Vec<String> {
    let labels = dir.join("fer_labels.txt");
    std::fs::write(&labels, "angry\ndisgust\nfear\nhappy\nsad\nsurprise\nneutral\n").unwrap();
    let model = assets_dir().join("fer_emotion.onnx");
    ["--size", "64x64", "--layout", "nhwc", "--gray", "--mean", "127.5", "--std", "127.5", "--labels", s(&labels), "--model", s(&model)]
        .map(String::from)
        .to_vec()
}

fn run(args: &[String]) -> String {
    let o = run_bin("edge-demo", &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", text(&o));
    text(&o)
}

#[test]
fn blazeface_finds_the_faces_the_python_loop_finds_and_aligns_by_the_eyes() {
    let scratch = fresh_dir("blazeface-video");
    let dir = scratch.path().to_path_buf();
    let video = dir.join("faces.mp4");
    let o = Command::new("bash").arg(repo_root().join("scripts/faces_video.sh")).arg(assets_dir().join("faces")).arg(&video).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let short = assets_dir().join("face_detection_short_range.onnx");

    let ours = dir.join("ours.jsonl");
    let mut args = vec!["-q".to_string(), "emotion".into(), "--face-detector".into(), "blazeface".into()];
    args.extend(fer_args(&dir));
    args.extend(["--source", s(&video), "--output", s(&dir.join("ours.mp4")), "--json", s(&ours)].map(String::from));
    run(&args);
    let py = dir.join("py.jsonl");
    let o = Command::new(python())
        .arg(repo_root().join("bench/cv2_emotion.py"))
        .args([s(&video), s(&assets_dir().join("fer_emotion.onnx")), "--output", s(&dir.join("py.mp4")), "--blazeface", s(&short), "--json", s(&py)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let (ours, py) = (json_lines(&ours), json_lines(&py));
    assert_eq!((ours.len(), py.len()), (226, 225), "225 frames (and our summary)");
    let (mut same, mut close) = (0, 0);
    for (o, p) in ours[..225].iter().zip(&py) {
        let (of, pf) = (o["faces"].as_array().unwrap(), p["faces"].as_array().unwrap());
        // edge-demo reports the largest face for emotion (as the book does); Python lists every face
        let largest = pf.iter().max_by_key(|f| f["box"][2].as_i64().unwrap() * f["box"][3].as_i64().unwrap());
        if of.len() == largest.iter().len() {
            same += 1;
        }
        if let (Some(a), Some(b)) = (of.first(), largest) {
            let (ia, sa) = (iou(corners(&a["box"]), corners(&b["box"])), a["score"].as_f64().unwrap() - b["score"].as_f64().unwrap());
            if ia > 0.9 && sa.abs() < 0.02 {
                close += 1;
            }
            // the eye keypoints lie in the box's upper half, the image's left eye first
            let r = corners(&a["box"]);
            let k: Vec<[f64; 2]> = serde_json::from_value(a["keypoints"].clone()).unwrap();
            assert_eq!(k.len(), 6, "{a}");
            let (l, e) = (k[0], k[1]);
            assert!(l[0] < e[0] && [l, e].iter().all(|p| p[0] > r[0] && p[0] < r[2] && p[1] > r[1] && p[1] < (r[1] + r[3]) / 2.0), "{a}");
        }
    }
    assert!(same >= 223, "a face in the same frames as Python in {same} of 225");
    assert!(close >= 220, "the same largest face (IoU > 0.9, |Δscore| < 0.02) in {close} of 225");
    // the emotions, as with Haar: the astronaut and obama are happy in most of their frames
    let happy = |r: std::ops::Range<usize>| ours[r].iter().filter(|l| l["faces"][0]["label"] == "happy").count();
    assert!(happy(0..75) > 50 && happy(75..150) > 50, "happy {} / 75 and {} / 75", happy(0..75), happy(75..150));

    // age-gender: every face aligned from its eyes (256 px, the book's FaceAligner)
    let folder = dir.join("photos");
    std::fs::create_dir_all(&folder).unwrap();
    for f in ["astronaut.png", "obama.jpg", "grace_hopper.jpg"] {
        std::fs::copy(assets_dir().join("faces").join(f), folder.join(f)).unwrap();
    }
    let fer = fer_args(&dir);
    let model = fer.last().unwrap().clone();
    let ag = dir.join("ag.jsonl");
    let mut args: Vec<String> =
        ["-q", "age-gender", "--face-detector", "blazeface-full", "--align", "--age-model", &model, "--source", s(&folder), "--json", s(&ag)]
            .map(String::from)
            .to_vec();
    args.extend(fer[..fer.len() - 2].iter().cloned());
    run(&args);
    let lines = json_lines(&ag);
    assert_eq!(lines.len(), 4);
    for l in &lines[..3] {
        assert_eq!(l["faces_detected"], 1, "{l}");
        assert_eq!(l["faces"][0]["aligned"], true, "{l}");
        assert!(l["faces"][0]["score"].as_f64().unwrap() > 0.7, "{l}");
    }
}

#[test]
fn a_wrong_face_detector_is_named() {
    let photos = assets_dir().join("faces");
    let fer = assets_dir().join("fer_emotion.onnx");
    for (detector, extra, says) in [
        ("nope.onnx", None, "--face-detector nope.onnx: no such file"),
        (s(&fer), None, "nor a BlazeFace detector's"),
        ("blazeface", Some(["--face-nms", "2"]), "--face-detector face NMS IoU threshold: 2 is not in 0..1"),
    ] {
        let mut args = vec!["faces", "--face-detector", detector, "--source", s(&photos)];
        args.extend(extra.iter().flatten());
        let o = run_bin("edge-demo", &args);
        assert!(!o.status.success() && text(&o).contains(says), "{detector}: {}", text(&o));
    }
}

/// dlib's face photos prepared with the class named "face", the test split dumped to a folder.
fn dlib_test_set(dir: &Path) -> (PathBuf, PathBuf) {
    let o = Command::new("bash").arg(repo_root().join("scripts/dlib_faces.sh")).arg(dir).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let faces = dir.join("faces");
    let prep = dir.join("prepared");
    let o = run_bin(
        "trainer",
        &[
            "-q",
            "prepare",
            "dlib-xml",
            s(&faces.join("training.xml")),
            "--test-xml",
            s(&faces.join("testing.xml")),
            "--label",
            "face",
            "--out",
            s(&prep),
            "--short-side",
            "0",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(prep.join("labels.txt")).unwrap(), "face\n");
    let dump = dir.join("test-images");
    let rec = prep.join("test.rec");
    let o = run_bin("trainer", &["dump", s(&rec), "--out", s(&dump)]);
    assert!(o.status.success(), "{}", text(&o));
    (rec, dump)
}

fn report(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn haar_and_both_blazeface_models_scored_by_map_on_dlibs_test_photos() {
    let scratch = fresh_dir("face-map");
    let dir = scratch.path().to_path_buf();
    let (rec, images) = dlib_test_set(&dir);
    let mut maps = vec![];
    for (name, file) in [("blazeface", "face_detection_short_range.onnx"), ("blazeface-full", "face_detection_full_range.onnx")] {
        let model = assets_dir().join(file);
        let out = dir.join(format!("{name}.json"));
        let o = run_bin("runtime", &["-q", "eval", "-m", s(&model), "--data", s(&rec), "--json", s(&out)]);
        assert!(o.status.success(), "{}", text(&o));
        let r = report(&out);
        assert_eq!(
            (r["images"].as_u64(), r["per_class"][0]["label"].as_str(), r["per_class"][0]["objects"].as_u64()),
            (Some(5), Some("face"), Some(25)),
            "{r}"
        );
        let map = r["map"].as_f64().unwrap();

        // the same model through predict --json, scored by eval-detections: the same detections, the same mAP
        let o = run_bin("runtime", &["predict", "-m", s(&model), s(&images), "--json", "--min-score", "0"]);
        assert!(o.status.success(), "{}", text(&o));
        let predicted = dir.join(format!("{name}-predict.jsonl"));
        std::fs::write(&predicted, &o.stdout).unwrap();
        let out2 = dir.join(format!("{name}-predict.json"));
        let o = run_bin("runtime", &["eval-detections", "--detections", s(&predicted), "--data", s(&rec), "--json", s(&out2)]);
        assert!(o.status.success(), "{}", text(&o));
        assert!((report(&out2)["map"].as_f64().unwrap() - map).abs() < 1e-9, "predict + eval-detections {} vs eval {map}", report(&out2)["map"]);

        // edge-demo faces (OpenCV's letterbox) scores within a few points of the runtime's
        let jsonl = dir.join(format!("{name}-edge.jsonl"));
        run(&["-q", "faces", "--face-detector", name, "--source", s(&images), "--json", s(&jsonl)].map(String::from));
        let out3 = dir.join(format!("{name}-edge.json"));
        let o = run_bin("runtime", &["eval-detections", "--detections", s(&jsonl), "--data", s(&rec), "--json", s(&out3)]);
        assert!(o.status.success(), "{}", text(&o));
        let edge = report(&out3)["map"].as_f64().unwrap();
        assert!((edge - map).abs() < 0.1, "edge-demo {edge} vs runtime {map}");
        maps.push((name, map));
    }

    // the book's Haar cascade, found by edge-demo and scored by eval-detections
    let jsonl = dir.join("haar.jsonl");
    run(&["-q", "faces", "--face-detector", "haar", "--source", s(&images), "--json", s(&jsonl)].map(String::from));
    let lines = json_lines(&jsonl);
    let first = lines.iter().find_map(|l| l["detections"].get(0)).expect("the cascade finds some face");
    assert!(first["box"].as_array().is_some_and(|b| b.len() == 4) && first["label"] == "face", "{first}");
    let out = dir.join("haar.json");
    let o = run_bin("runtime", &["eval-detections", "--detections", s(&jsonl), "--data", s(&rec), "--json", s(&out)]);
    assert!(o.status.success(), "{}", text(&o));
    let haar = report(&out)["map"].as_f64().unwrap();
    eprintln!("mAP@0.5 on dlib testing.xml (5 photos, 25 faces): haar {haar:.4}, {maps:?}");
    // what these photos show (group photos with small faces): the full-range model finds nearly all,
    // the cascade about half, the short-range model (faces within ~2 m) few
    let (short, full) = (maps[0].1, maps[1].1);
    assert!(full > 0.9 && full > haar && haar > short && haar > 0.3, "full {full}, haar {haar}, short {short}");

    // eval-detections names what does not fit: a record without a line, a label the data lacks
    let partial = dir.join("partial.jsonl");
    std::fs::write(&partial, std::fs::read_to_string(&jsonl).unwrap().lines().skip(1).collect::<Vec<_>>().join("\n")).unwrap();
    let o = run_bin("runtime", &["eval-detections", "--detections", s(&partial), "--data", s(&rec)]);
    assert!(!o.status.success() && text(&o).contains("record 0") && text(&o).contains("has no line"), "{}", text(&o));
    let renamed = dir.join("renamed.jsonl");
    std::fs::write(&renamed, std::fs::read_to_string(&jsonl).unwrap().replace("\"face\"", "\"person\"")).unwrap();
    let o = run_bin("runtime", &["eval-detections", "--detections", s(&renamed), "--data", s(&rec)]);
    assert!(!o.status.success() && text(&o).contains("line 1") && text(&o).contains("'person'"), "{}", text(&o));
}
