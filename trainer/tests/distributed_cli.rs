//! Multi-process training from the command line, as users launch it: `trainer train --nproc 2`, real
//! `torchrun --no-python` (the exact command docs/distributed.md gives), a rank killed mid-run, and
//! Ctrl-C under two ranks followed by `--resume`. Every 2-rank run of one config must end with the
//! same bits; each rank uses one thread (the launcher's rule on these 2 cores, torchrun's default).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tch::Tensor;

fn write_config(dir: &Path, name: &str, epochs: usize) -> (PathBuf, PathBuf) {
    write_config_with(dir, name, epochs, "")
}

/// `train_extra`: more lines for the `[train]` table.
fn write_config_with(dir: &Path, name: &str, epochs: usize, train_extra: &str) -> (PathBuf, PathBuf) {
    let run = dir.join(name);
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(
        &cfg,
        format!(
            r#"
[model]
name = "mini-vgg"
[data]
train = "/usr/share/datasets/fashion-mnist/train"
val = "/usr/share/datasets/fashion-mnist/t10k"
limit_train = 2048
limit_val = 300
[train]
batch_size = 16
epochs = {epochs}
seed = 3
log_every = 1
dist_timeout = 60
run = "{}"
{train_extra}
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
    (cfg, run)
}

fn trainer(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_trainer"));
    c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).env_remove("OMP_NUM_THREADS");
    c
}

fn ok(o: &Output, what: &str) -> String {
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{what}: exit {:?}\n{err}\n{}", o.status, String::from_utf8_lossy(&o.stdout));
    err
}

fn weights(run: &Path, epoch: usize) -> BTreeMap<String, Tensor> {
    Tensor::read_safetensors(run.join(format!("checkpoints/epoch-{epoch:04}.safetensors"))).unwrap().into_iter().collect()
}

fn assert_same(a: &Path, b: &Path, epoch: usize, what: &str) {
    let (wa, wb) = (weights(a, epoch), weights(b, epoch));
    assert_eq!(wa.len(), wb.len());
    for (k, t) in &wa {
        assert!(t.equal(&wb[k]), "{what}: {k} differs");
    }
}

fn torchrun() -> PathBuf {
    let python = std::env::var_os("DLCV_PYTHON").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"));
    python.with_file_name("torchrun")
}

fn wait_for_steps(child: &mut Child, metrics: &Path, steps: usize) {
    let t0 = Instant::now();
    while std::fs::read_to_string(metrics).map_or(0, |s| s.lines().count()) < steps {
        assert!(child.try_wait().unwrap().is_none(), "training ended before {steps} steps were logged");
        assert!(t0.elapsed() < Duration::from_secs(180), "training never logged {steps} steps");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The rank processes the launcher started: (rank, pid).
fn ranks_of(launcher: u32) -> Vec<(usize, u32)> {
    let children = std::fs::read_to_string(format!("/proc/{launcher}/task/{launcher}/children")).unwrap();
    children
        .split_whitespace()
        .map(|p| {
            let pid: u32 = p.parse().unwrap();
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
            let rank = env.split(|&b| b == 0).find_map(|kv| kv.strip_prefix(b"RANK=")).map(|r| String::from_utf8_lossy(r).parse().unwrap()).unwrap();
            (rank, pid)
        })
        .collect()
}

#[test]
fn two_ranks_by_nproc_by_torchrun_and_interrupted_then_resumed_end_with_the_same_weights() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();

    // 1. the launcher of our own
    let (cfg, straight) = write_config(dir, "straight", 2);
    let err = ok(&trainer(&["train", "--nproc", "2", "--config", cfg.to_str().unwrap()]).output().unwrap(), "--nproc 2");
    assert!(err.contains("2 processes (gloo backend"), "{err}");
    assert!(err.contains("all 2 ranks hold identical parameters"), "{err}");
    assert!(err.contains("batch 32"), "the global batch is 2 x 16: {err}");
    let human = std::fs::read_to_string(straight.join("train.log")).unwrap_or_default();
    assert_eq!(human.matches("epoch 2/2").count(), 1, "rank 0 alone writes the log:\n{human}");

    // 2. torchrun, the command docs/distributed.md gives (`--` keeps torchrun off the trainer's flags)
    let (cfg_t, by_torchrun) = write_config(dir, "torchrun", 2);
    let o = Command::new(torchrun())
        .args(["--standalone", "--nproc-per-node=2", "--no-python", "--", env!("CARGO_BIN_EXE_trainer"), "train", "--config"])
        .arg(&cfg_t)
        .output()
        .unwrap();
    ok(&o, "torchrun");
    assert_same(&straight, &by_torchrun, 2, "torchrun vs --nproc");

    // 3. Ctrl-C to the launcher: passed on, every rank stops at the same step, rank 0 saves; --resume
    let (cfg_i, interrupted) = write_config(dir, "interrupted", 2);
    let mut child = trainer(&["train", "--nproc", "2", "--config", cfg_i.to_str().unwrap()]).spawn().unwrap();
    wait_for_steps(&mut child, &interrupted.join("metrics-from-0000.jsonl"), 5);
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let err = ok(&child.wait_with_output().unwrap(), "interrupted run");
    assert!(err.contains("interrupted at step"), "{err}");
    assert!(interrupted.join("checkpoints/interrupted.safetensors").is_file());
    assert!(!interrupted.join("checkpoints/epoch-0002.json").exists(), "the interrupt came too late to test anything");
    ok(&trainer(&["train", "--nproc", "2", "--config", cfg_i.to_str().unwrap(), "--resume"]).output().unwrap(), "resume");
    assert_same(&straight, &interrupted, 2, "interrupted + resumed vs straight");
}

#[test]
fn a_killed_rank_stops_the_job_with_an_error_naming_it() {
    let scratch = tempfile::tempdir().unwrap();
    // under SyncBatchNorm (mini-vgg has BatchNorm): its all-reduces inside the forward and backward
    // passes, where the dead peer is most often noticed, must fail as cleanly as the gradients' one
    let (cfg, run) = write_config_with(scratch.path(), "killed", 50, "sync_bn = true");
    let mut child = trainer(&["train", "--nproc", "2", "--config", cfg.to_str().unwrap()]).spawn().unwrap();
    wait_for_steps(&mut child, &run.join("metrics-from-0000.jsonl"), 3);
    let ranks = ranks_of(child.id());
    let (_, pid) = ranks.iter().find(|(r, _)| *r == 1).copied().unwrap_or_else(|| panic!("no rank 1 among {ranks:?}"));
    let t0 = Instant::now();
    assert!(Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap().success());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("rank 1 of 2 was killed"), "the launcher names the dead rank: {err}");
    assert!(err.contains("rank 0 of 2:") && err.contains("failed"), "rank 0 says which collective failed: {err}");
    assert!(err.contains("SyncBatchNorm)"), "the job ran with SyncBatchNorm: {err}");
    assert!(t0.elapsed() < Duration::from_secs(45), "stopping took {:?}", t0.elapsed());
}
