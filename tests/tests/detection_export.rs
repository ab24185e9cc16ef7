//! A trained detector exported as one ONNX file in the TFOD contract: the exporter's parity check
//! (heads and final detections against libtorch and the Rust post-process) passes on the run's own
//! samples, the file has NMS and top-M inside and no Loop or If, its batch is dynamic, and its
//! metadata says what it is.

use models::meta::Task;
use tests::{run_bin, s, text};

#[test]
fn a_trained_ssd_exports_with_nms_inside_and_detection_parity() {
    let scratch = tests::fresh_dir("detection-export");
    let dir = scratch.path();
    let (data, run, out) = (dir.join("fashion-detect"), dir.join("run"), dir.join("ssd.onnx"));
    let config = tests::repo_root().join("configs/fashion-detect-ssd.toml");
    let sets = [
        format!("data.train=\"{}\"", data.join("train.rec").display()),
        format!("data.val=\"{}\"", data.join("test.rec").display()),
        "data.limit_train=960".into(),
        "data.limit_val=64".into(),
        "train.epochs=2".into(),
        format!("train.run=\"{}\"", run.display()),
    ];
    let mut args = vec!["train", "--config", s(&config)];
    for set in &sets {
        args.extend(["--set", set]);
    }
    let o = run_bin("trainer", &args);
    assert!(o.status.success(), "{}", text(&o));

    let o = run_bin("exporter", &["export", "--run", s(&run), "--out", s(&out), "--samples", "32"]);
    let said = text(&o);
    assert!(o.status.success(), "{said}");
    // "detections vs the reference post-process of libtorch's heads: K of K matched on 32 images"
    let line = said.lines().find(|l| l.contains("detections vs the reference")).unwrap_or_else(|| panic!("{said}"));
    let nums: Vec<usize> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
    assert!(nums.len() >= 3 && nums[0] == nums[1] && nums[0] > 32 && nums[2] == 32, "{line}");

    let summary = exporter::inspect::inspect(&out).unwrap();
    for op in ["NonMaxSuppression", "TopK", "Softmax", "Exp"] {
        assert!(summary.operators.contains_key(op), "no {op}: {:?}", summary.operators);
    }
    assert!(!summary.operators.contains_key("Loop") && !summary.operators.contains_key("If"), "{:?}", summary.operators);
    let outputs: Vec<(&str, Vec<String>)> = summary.outputs.iter().map(|p| (p.name.as_str(), p.dims.clone())).collect();
    let dims = |v: &[&str]| v.iter().map(|d| d.to_string()).collect::<Vec<_>>();
    assert_eq!(
        outputs,
        [
            ("detection_boxes", dims(&["N", "100", "4"])),
            ("detection_scores", dims(&["N", "100"])),
            ("detection_classes", dims(&["N", "100"])),
            ("num_detections", dims(&["N"]))
        ]
    );
    let meta = summary.meta().unwrap().unwrap();
    assert_eq!(meta.task, Task::Detection);
    assert_eq!(meta.labels, ["background", "T-shirt/top", "Trouser", "Sneaker", "Bag"]);
    let spec = meta.detector.as_ref().unwrap();
    assert_eq!((spec.image, spec.num_priors()), ([128, 128], 1504));
    assert!(meta.parity.as_deref().unwrap().contains("\"detections\""));

    // a dynamic batch: three scenes at once give what each gives alone
    let t = data::DetectTransform::eval([128, 128], 1, meta.preprocessing.mean.clone(), meta.preprocessing.std.clone());
    let file = data::records::RecordFile::open(&data.join("test.rec")).unwrap();
    let opts = data::LoaderOptions { batch_size: 3, workers: 1, ..Default::default() };
    let batch = data::Loader::detection(file, t, opts).epoch(0).next().unwrap().unwrap();
    let so = runtime::SessionOptions::default();
    let together = runtime::engine::infer(&out, &so, batch.data.clone(), &[3, 1, 128, 128]).unwrap();
    let plane = 128 * 128;
    let mut found = 0.0;
    for i in 0..3 {
        let alone = runtime::engine::infer(&out, &so, batch.data[i * plane..(i + 1) * plane].to_vec(), &[1, 1, 128, 128]).unwrap();
        for ((name, d3, v3), (_, d1, v1)) in together.iter().zip(&alone) {
            let per = d1.iter().product::<usize>();
            assert_eq!(d3[0], 3, "{name}");
            assert_eq!(&v3[i * per..(i + 1) * per], &v1[..], "{name} of image {i}");
        }
        found += together.iter().find(|(n, _, _)| n == "num_detections").unwrap().2[i];
    }
    assert!(found >= 3.0, "{found} detections in 3 scenes");
}
