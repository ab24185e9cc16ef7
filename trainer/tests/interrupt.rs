//! Ctrl-C during training: the trainer finishes the step, saves, exits 0 saying how to continue, and
//! the continued run ends with exactly the weights of a run that was never interrupted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tch::Tensor;

fn write_config(dir: &Path, run: &Path) -> PathBuf {
    let cfg = dir.join("exp.toml");
    std::fs::write(
        &cfg,
        format!(
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
    .unwrap();
    cfg
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
    let (a, b) = (dir.join("straight"), dir.join("interrupted"));

    let cfg_a = write_config(&dir, &a);
    let o = trainer(&["train", "--config", cfg_a.to_str().unwrap()]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let cfg_b = write_config(&dir, &b);
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
