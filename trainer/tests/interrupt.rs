//! Ctrl-C during training: the trainer finishes the step, saves, exits 0 saying how to continue, and
//! the continued run ends with exactly the weights of a run that was never interrupted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tch::Tensor;

fn write_config(dir: &Path, run: &Path) -> PathBuf {
    write(
        dir,
        &format!(
            r#"
[model]
name = "mini-vgg"
[data]
train = "/usr/share/datasets/fashion-mnist/train"
limit_train = 1024
[train]
batch_size = 32
epochs = 2
seed = 5
log_every = 1
run = "{}"
[optimizer]
name = "sgd"
momentum = 0.9
[augment]
flip = true
shift = 1
"#,
            run.display()
        ),
    )
}

fn write(dir: &Path, text: &str) -> PathBuf {
    let cfg = dir.join("exp.toml");
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// ssd-tiny on 640 of the composites (built on first use into `data`), its augmentation on.
fn write_detector_config(dir: &Path, data: &Path, run: &Path) -> PathBuf {
    write(
        dir,
        &format!(
            r#"
[model]
name = "ssd-tiny"
in_channels = 1
[data]
prepare = "fashion-detect"
train = "{}"
limit_train = 640
mean = 30.0
std = 55.0
[train]
batch_size = 32
epochs = 2
seed = 5
log_every = 1
run = "{}"
[optimizer]
name = "adam"
[augment]
flip = true
crop = true
expand = 1.5
photometric = true
"#,
            data.join("train.rec").display(),
            run.display()
        ),
    )
}

fn trainer(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_trainer"));
    c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

fn weights(run: &Path) -> BTreeMap<String, Tensor> {
    Tensor::read_safetensors(run.join("checkpoints/epoch-0002.safetensors")).unwrap().into_iter().collect()
}

#[test]
fn sigint_saves_the_step_and_resume_matches_an_uninterrupted_run() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().to_path_buf();
    straight_then_interrupted(&dir, &|run| write_config(&dir, run));
}

#[test]
fn a_detector_interrupted_and_resumed_matches_an_uninterrupted_run() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().to_path_buf();
    let data = dir.join("fashion-detect");
    straight_then_interrupted(&dir, &|run| write_detector_config(&dir, &data, run));
}

/// Trains the config `config(run)` straight, then again interrupted by SIGINT and resumed; the
/// final weights must be equal.
fn straight_then_interrupted(dir: &Path, config: &dyn Fn(&Path) -> PathBuf) {
    let (a, b) = (dir.join("straight"), dir.join("interrupted"));
    let cfg_a = config(&a);
    let o = trainer(&["train", "--config", cfg_a.to_str().unwrap()]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let cfg_b = config(&b);
    let child = trainer(&["train", "--config", cfg_b.to_str().unwrap()]).spawn().unwrap();
    // wait until a few steps are logged, then Ctrl-C
    let metrics = b.join("metrics-from-0000.jsonl");
    let t0 = Instant::now();
    while std::fs::read_to_string(&metrics).map_or(0, |s| s.lines().count()) < 5 {
        assert!(t0.elapsed() < Duration::from_secs(120), "training never logged a step");
        std::thread::sleep(Duration::from_millis(20));
    }
    let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "exit {:?}: {err}", o.status);
    assert!(err.contains("interrupted at step") && err.contains("--resume"), "{err}");
    assert!(b.join("checkpoints/interrupted.safetensors").is_file());
    assert!(!b.join("checkpoints/epoch-0002.json").exists(), "the interrupt came too late to test anything");

    let o = trainer(&["train", "--config", cfg_b.to_str().unwrap(), "--resume"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!b.join("checkpoints/interrupted.json").exists(), "the interrupted state is removed once superseded");
    let (wa, wb) = (weights(&a), weights(&b));
    for (k, t) in &wa {
        assert!(t.equal(&wb[k]), "{k}: interrupted + resumed differs from straight");
    }
}
