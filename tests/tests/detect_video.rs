//! Object detection on real video with a real detector made elsewhere: `edge-demo detect` with the
//! TFOD SSDLite-MobileNetV2 person detector in edge-demo/assets (uint8 NHWC in, normalised yxyx out,
//! NMS inside) on OpenCV's `vtest.avi` (pedestrians; extracted from Debian's opencv-doc by
//! scripts/vtest_video.sh), checked frame by frame against the same loop in Python with cv2 and
//! onnxruntime (bench/cv2_detect.py); and `runtime predict` with the same model on still photos.

use std::path::{Path, PathBuf};
use std::process::Command;

use tests::{assets_dir, fresh_dir, json_lines, python, repo_root, run_bin, s, text};

fn vtest(dir: &Path) -> PathBuf {
    let out = dir.join("vtest.avi");
    let o = Command::new("bash").arg(repo_root().join("scripts/vtest_video.sh")).arg(&out).output().unwrap();
    assert!(o.status.success() && out.is_file(), "{}", text(&o));
    out
}

fn bbox(v: &serde_json::Value) -> [f64; 4] {
    let b: Vec<f64> = v["box"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    [b[0], b[1], b[2], b[3]]
}

fn iou(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    let (ix, iy) = ((a[2].min(b[2]) - a[0].max(b[0])).max(0.0), (a[3].min(b[3]) - a[1].max(b[1])).max(0.0));
    let i = ix * iy;
    i / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - i)
}

const FRAMES: usize = 120;

#[test]
fn edge_demo_detect_finds_the_pedestrians_of_vtest_as_python_does() {
    let scratch = fresh_dir("detect-video");
    let dir = scratch.path().to_path_buf();
    let video = vtest(&dir);
    let model = assets_dir().join("ped_ssdlite.onnx");
    let labels = dir.join("person.txt");
    std::fs::write(&labels, "person\n").unwrap();
    let (out, jsonl) = (dir.join("boxes.avi"), dir.join("frames.jsonl"));
    let n = FRAMES.to_string();
    let o = run_bin(
        "edge-demo",
        &["-q", "detect", "-m", s(&model), "--labels", s(&labels), "--source", s(&video), "--max-frames", &n, "--workers", "2"]
            .into_iter()
            .chain(["--output", s(&out), "--json", s(&jsonl)])
            .collect::<Vec<_>>(),
    );
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains(&format!("{FRAMES} frames")) && stdout.contains("infer p50"), "{stdout}");

    let lines = json_lines(&jsonl);
    assert_eq!(lines.len(), FRAMES + 1, "one line per frame and the summary");
    assert_eq!(lines[FRAMES]["summary"]["frames"], FRAMES);
    let (mut total, mut upright) = (0usize, 0usize);
    for (i, l) in lines[..FRAMES].iter().enumerate() {
        assert_eq!(l["frame"], i, "frames in order with two workers");
        let dets = l["detections"].as_array().unwrap();
        assert_eq!(l["objects"], dets.len());
        for d in dets {
            assert_eq!((d["label"].as_str(), d["class"].as_u64()), (Some("person"), Some(1)), "{d}");
            assert!(d["score"].as_f64().unwrap() >= 0.5, "--min-score 0.5 by default: {d}");
            let b = bbox(d);
            assert!(b[0] >= -1.0 && b[1] >= -1.0 && b[2] <= 769.0 && b[3] <= 577.0 && b[0] < b[2] && b[1] < b[3], "box in the 768x576 frame: {d}");
            // pedestrians stand: a swapped x/y would make the boxes lie down
            upright += usize::from(b[3] - b[1] > b[2] - b[0]);
        }
        total += dets.len();
    }
    let per_frame = total as f64 / FRAMES as f64;
    assert!((2.0..8.0).contains(&per_frame), "{per_frame} persons per frame (the clip has 3-6 in view)");
    assert!(upright * 10 >= total * 9, "{upright} of {total} boxes taller than wide");

    // the annotated video: every frame, at the source's size
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries", "stream=width,height,nb_read_frames", "-of", "csv=p=0"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&probe.stdout).trim(), format!("768,576,{FRAMES}"), "{}", text(&probe));

    // the same loop in Python (cv2 resize, onnxruntime): the same persons in the same places
    let py_json = dir.join("python.jsonl");
    let o = Command::new(python())
        .arg(repo_root().join("bench/cv2_detect.py"))
        .args([s(&video), s(&model), "--json", s(&py_json), "--max-frames", &n])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let theirs = json_lines(&py_json);
    assert_eq!(theirs.len(), FRAMES);
    let (mut same_count, mut matched, mut all) = (0, 0, 0);
    for (ours, theirs) in lines.iter().zip(&theirs) {
        same_count += usize::from(ours["objects"] == theirs["objects"]);
        for t in theirs["detections"].as_array().unwrap() {
            all += 1;
            let tb = bbox(t);
            let best = ours["detections"].as_array().unwrap().iter().max_by(|a, b| iou(&bbox(a), &tb).total_cmp(&iou(&bbox(b), &tb)));
            if let Some(b) = best.filter(|b| iou(&bbox(b), &tb) > 0.9) {
                matched += 1;
                let ds = (b["score"].as_f64().unwrap() - t["score"].as_f64().unwrap()).abs();
                assert!(ds < 0.05, "frame {}: score {} against Python's {}", ours["frame"], b["score"], t["score"]);
            }
        }
    }
    assert!(same_count * 100 >= FRAMES * 95, "{same_count} of {FRAMES} frames with Python's count");
    assert!(matched * 100 >= all * 98, "{matched} of Python's {all} boxes found (IoU > 0.9)");
}

#[test]
fn runtime_runs_a_tfod_detector_made_elsewhere_on_photos_and_says_what_it_cannot() {
    let scratch = fresh_dir("detect-tfod");
    let dir = scratch.path().to_path_buf();
    let model = assets_dir().join("ped_ssdlite.onnx");
    let faces = assets_dir().join("faces");
    // no labels: classes are named by number
    let o = run_bin("runtime", &["predict", "-m", s(&model), "--json", s(&faces.join("obama.jpg"))]);
    assert!(o.status.success(), "{}", text(&o));
    let line: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap();
    assert_eq!((line["width"].as_u64(), line["height"].as_u64()), (Some(910), Some(1137)));
    let dets = line["detections"].as_array().unwrap();
    assert_eq!(dets.len(), 1, "one person in the portrait: {line}");
    assert_eq!((dets[0]["label"].as_str(), dets[0]["class"].as_u64()), (Some("1"), Some(1)));
    let b = bbox(&dets[0]);
    // the portrait is a person from the top of the frame to the bottom, in the image's own pixels
    assert!(b[2] - b[0] > 600.0 && b[3] - b[1] > 900.0 && b[3] <= 1138.0, "{b:?}");

    let labels = dir.join("person.txt");
    std::fs::write(&labels, "person\n").unwrap();
    let drawn = dir.join("drawn");
    let o = run_bin("runtime", &["predict", "-m", s(&model), "--labels", s(&labels), "--out", s(&drawn), s(&faces)]);
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(stdout.matches("person 0.9").count(), 3, "a person in each of the three photos above 0.9: {stdout}");
    assert!(drawn.join("grace_hopper.png").is_file());

    let o = run_bin("runtime", &["bench", "-m", s(&model), "--batch", "1", "--iters", "3", "--warmup", "1"]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("TFOD-contract detector, uint8, 3x300x300"), "{}", text(&o));

    // flags a TFOD detector does not use are refused, not dropped
    let o = run_bin("runtime", &["predict", "-m", s(&model), "--gray", s(&faces.join("obama.jpg"))]);
    assert!(!o.status.success() && text(&o).contains("--gray"), "{}", text(&o));

    // eval runs a model made elsewhere on each record's image at its own pixels (tests/tests/face_detectors.rs
    // checks that path against predict); a record file that is not there is named
    let o = run_bin("runtime", &["eval", "-m", s(&model), "--data", s(&dir.join("none.rec"))]);
    assert!(!o.status.success() && text(&o).contains("none.rec"), "{}", text(&o));
}
