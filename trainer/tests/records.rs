//! From an image folder to a trained network through record files: `trainer prepare folder`, then
//! training and evaluation that stream the records (random crops, flips, rotation and shear on the
//! training side, centre crops on the validation side).

use std::path::Path;
use std::process::Command;

use data::image::{Rgb, RgbImage};

/// Class 0: horizontal stripes; class 1: vertical stripes; a random phase and colour per image.
fn make_folder(root: &Path, per_class: usize) {
    for class in 0..2 {
        let dir = root.join(["horizontal", "vertical"][class]);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            let phase = (i * 7) % 6;
            let tint = (i * 37 % 200) as u8 + 40;
            let img = RgbImage::from_fn(40, 36, |x, y| {
                let t = if class == 0 { y } else { x } as usize;
                if (t + phase) % 6 < 3 {
                    Rgb([tint, 255 - tint, 128])
                } else {
                    Rgb([10, 20, 30])
                }
            });
            img.save(dir.join(format!("{i}.png"))).unwrap();
        }
    }
    std::fs::write(root.join("vertical/corrupt.png"), b"\x89PNG\r\n\x1a\n truncated").unwrap();
}

#[test]
fn prepare_a_folder_then_train_and_evaluate_on_the_records() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().to_path_buf();
    make_folder(&dir.join("images"), 60);
    let data = dir.join("data");
    let trainer = env!("CARGO_BIN_EXE_trainer");
    let o = Command::new(trainer)
        .args(["prepare", "folder", dir.join("images").to_str().unwrap(), "--out", data.to_str().unwrap(), "--short-side", "32", "--quality", "0"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}{}", String::from_utf8_lossy(&o.stderr));
    // 121 files: 120 written, the corrupt one skipped and reported
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(data.join("report.json")).unwrap()).unwrap();
    let written: u64 = report["splits"].as_array().unwrap().iter().map(|s| s["written"].as_u64().unwrap()).sum();
    let skipped: usize = report["splits"].as_array().unwrap().iter().map(|s| s["skipped"].as_array().unwrap().len()).sum();
    assert_eq!((written, skipped), (120, 1), "{stdout}");
    assert!(stdout.contains("corrupt.png"), "the skipped file is named: {stdout}");

    let config = dir.join("exp.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[model]
name = "mini-vgg"
in_channels = 3
[data]
train = "{d}/train.rec"
val = "{d}/val.rec"
mean_file = "{d}/mean.json"
std = 64.0
[train]
batch_size = 8
epochs = 30
lr = 0.003
seed = 1
log_every = 0
run = "{r}"
[optimizer]
name = "adam"
[augment]
flip = true
rotate = 5.0
shear = 0.05
"#,
            d = data.display(),
            r = dir.join("run").display()
        ),
    )
    .unwrap();
    let o = Command::new(trainer).args(["train", "--config", config.to_str().unwrap()]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let last: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let val_rank1 = last["val"]["rank1"].as_f64().unwrap();
    assert!(val_rank1 >= 0.9, "stripes should be learned: {last}");

    let o = Command::new(trainer)
        .args(["eval", "--run", dir.join("run").to_str().unwrap(), "--data", data.join("test.rec").to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(e["metrics"]["samples"], 12);
    assert!(e["metrics"]["rank1"].as_f64().unwrap() >= 0.8, "{e}");
}
