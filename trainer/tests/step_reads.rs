//! The training step reads nothing back to the host between log points (crate::step), the fused
//! optimizer trains what the per-tensor loop trains, and a loss that goes non-finite between two
//! reads is still caught, at the step it went.
//!
//! One test function: the host-read counter is global to the process, so nothing else may train in
//! this binary while it counts.

use std::path::Path;

use tch::Tensor;
use trainer::step::host_reads;
use trainer::train::{self, Config, Overrides};

const FASHION: &str = "/usr/share/datasets/fashion-mnist";

/// mini-vgg (with dropout) on 320 Fashion-MNIST images: 5 batches of 64 an epoch, no validation set.
fn config(run: &Path, log_every: usize, lr: f64, fused: bool) -> Config {
    let text = format!(
        r#"
[model]
name = "mini-vgg"
[data]
train = "{FASHION}/train"
limit_train = 320
mean = 72.94
std = 90.02
[train]
batch_size = 64
epochs = 2
lr = {lr}
seed = 11
log_every = {log_every}
fused_optimizer = {fused}
run = "{}"
[optimizer]
name = "sgd"
momentum = 0.9
nesterov = true
weight_decay = 5e-4
[augment]
flip = true
"#,
        run.display()
    );
    toml::from_str(&text).unwrap()
}

fn weights(run: &Path, epoch: usize) -> Vec<(String, Tensor)> {
    let mut w = Tensor::read_safetensors(train::checkpoint_paths(run, epoch).0).unwrap();
    w.retain(|(k, _)| !k.starts_with("optim."));
    w.sort_by(|a, b| a.0.cmp(&b.0));
    w
}

#[test]
fn steps_read_the_device_only_at_log_points_and_still_catch_a_diverged_loss() {
    let scratch = tempfile::tempdir().unwrap();
    let run = |name: &str| scratch.path().join(name);

    // log_every 0: one read at the end of each of the 2 epochs, none in the 10 steps
    let before = host_reads();
    let fused = train::train(config(&run("quiet"), 0, 0.02, true), &Overrides::default()).unwrap();
    assert_eq!(host_reads() - before, 2, "10 steps over 2 epochs read the device only at the epochs' ends");

    // log_every 2: 2 more reads an epoch (after steps 2 and 4 of 5)
    let before = host_reads();
    let logged = train::train(config(&run("logged"), 2, 0.02, true), &Overrides::default()).unwrap();
    assert_eq!(host_reads() - before, 2 * 3);
    // reading more often changes nothing that is trained or reported
    for (a, b) in fused.iter().zip(&logged) {
        assert_eq!(a.train_loss, b.train_loss);
        assert_eq!(a.train_rank1, b.train_rank1);
    }
    for ((k, a), (_, b)) in weights(&run("quiet"), 2).iter().zip(weights(&run("logged"), 2).iter()) {
        assert!(a.equal(b), "{k} differs between log_every 0 and 2");
    }

    // the per-tensor optimizer loop (the reference) trains the same network to float rounding
    let reference = train::train(config(&run("reference"), 0, 0.02, false), &Overrides::default()).unwrap();
    for (a, b) in fused.iter().zip(&reference) {
        assert!((a.train_loss - b.train_loss).abs() < 1e-4 * b.train_loss.abs().max(1.0), "epoch {}: {} vs {}", a.epoch, a.train_loss, b.train_loss);
    }
    let mut worst = 0f64;
    for ((k, a), (_, b)) in weights(&run("quiet"), 2).iter().zip(weights(&run("reference"), 2).iter()) {
        let d = (a - b).abs().max().double_value(&[]) / b.abs().max().double_value(&[]).max(1.0);
        assert!(d < 1e-3, "{k}: fused and per-tensor differ by {d} of its magnitude after 10 steps");
        worst = worst.max(d);
    }
    println!(
        "fused vs per-tensor SGD after 10 steps: parameters within {worst:.2e} of their magnitude; losses {:?} vs {:?}",
        fused.iter().map(|m| m.train_loss).collect::<Vec<_>>(),
        reference.iter().map(|m| m.train_loss).collect::<Vec<_>>()
    );

    // a rate that blows the loss up: found at the end of the epoch (no read before it) at the same
    // step as when every step is read, and nothing is saved for the diverged epoch
    let late = train::train(config(&run("late"), 0, 1e12, true), &Overrides::default()).unwrap_err().to_string();
    let every = train::train(config(&run("every"), 1, 1e12, true), &Overrides::default()).unwrap_err().to_string();
    println!("{late}");
    assert!(late.starts_with("epoch 1, batch "), "{late}");
    assert!(late.contains("lower the learning rate"), "{late}");
    let batch = |e: &str| e["epoch 1, batch ".len()..].split(':').next().unwrap().parse::<usize>().unwrap();
    assert_eq!(batch(&late), batch(&every), "{late} / {every}");
    assert!((1..5).contains(&batch(&late)), "the loss went bad before the last step, so the epoch-end read found it late");
    assert!(train::saved_epochs(&run("late")).is_empty(), "a diverged epoch saves no checkpoint");

    // --profile: the phases and the reads (the epoch-end read is the profile's only one)
    let before = host_reads();
    train::train(config(&run("profiled"), 0, 0.02, true), &Overrides { profile: true, epochs: Some(1), ..Overrides::default() }).unwrap();
    assert_eq!(host_reads() - before, 1);
    let log = std::fs::read_to_string(run("profiled").join("metrics-from-0000.jsonl")).unwrap();
    let profile: serde_json::Value =
        log.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()).find(|v| v.get("profile").is_some()).expect("a profile line")["profile"]
            .clone();
    assert_eq!(profile["steps"], 5);
    assert_eq!(profile["host_reads"], 1);
    for phase in ["data_wait_ms", "host_to_device_ms", "forward_ms", "backward_ms", "optimizer_ms", "bookkeeping_ms"] {
        assert!(profile[phase].as_f64().is_some_and(|t| t >= 0.0), "{phase}: {profile}");
    }
    assert!(profile["forward_ms"].as_f64().unwrap() > 0.0 && profile["backward_ms"].as_f64().unwrap() > 0.0, "{profile}");
}
