//! The book's experiment workflow on real data (a slice of Fashion-MNIST from Debian's package):
//! train, stop, resume at epoch N, and get exactly what an uninterrupted run gets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::Tensor;
use trainer::train::{self, Config, Overrides};

const FASHION: &str = "/usr/share/datasets/fashion-mnist";

fn config(run: &Path) -> Config {
    let text = format!(
        r#"
[model]
name = "mini-vgg"
[data]
train = "{FASHION}/train"
val = "{FASHION}/t10k"
limit_train = 320
limit_val = 128
mean = 72.94
std = 90.02
[train]
batch_size = 64
epochs = 4
lr = 0.02
seed = 7
log_every = 2
run = "{}"
[optimizer]
name = "sgd"
momentum = 0.9
nesterov = true
weight_decay = 5e-4
[schedule]
name = "step"
step_size = 2
gamma = 0.5
[augment]
flip = true
shift = 2
"#,
        run.display()
    );
    toml::from_str(&text).unwrap()
}

/// libtorch's default generator is global to the process and each run reseeds it per epoch; tests in
/// one binary run on parallel threads, so runs are serialised to keep their random streams apart.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A path `NAME` (not created) in a fresh scratch folder, which is removed when the guard drops.
fn tmp(name: &str) -> (tempfile::TempDir, PathBuf) {
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join(name);
    (scratch, path)
}

fn tensors(path: &Path) -> BTreeMap<String, Tensor> {
    Tensor::read_safetensors(path).unwrap().into_iter().collect()
}

#[test]
fn four_epochs_straight_equal_two_plus_resume_for_two() {
    let _serial = serial();
    let ((_scratch_a, a), (_scratch_b, b)) = (tmp("straight"), tmp("resumed"));
    let straight = train::train(config(&a), &Overrides::default()).unwrap();
    assert_eq!(straight.iter().map(|m| m.epoch).collect::<Vec<_>>(), [1, 2, 3, 4]);
    // the step schedule halves the rate after epoch 2
    assert_eq!(straight.iter().map(|m| m.lr).collect::<Vec<_>>(), [0.02, 0.02, 0.01, 0.01]);

    let first = train::train(config(&b), &Overrides { epochs: Some(2), ..Overrides::default() }).unwrap();
    assert_eq!(first.len(), 2);
    let second = train::train(config(&b), &Overrides { start_epoch: Some(2), ..Overrides::default() }).unwrap();
    assert_eq!(second.iter().map(|m| m.epoch).collect::<Vec<_>>(), [3, 4]);

    let (ta, tb) = (tensors(&train::checkpoint_paths(&a, 4).0), tensors(&train::checkpoint_paths(&b, 4).0));
    assert_eq!(ta.keys().collect::<Vec<_>>(), tb.keys().collect::<Vec<_>>());
    assert!(ta.keys().any(|k| k.starts_with("optim.momentum.")), "optimizer state is checkpointed");
    for (k, t) in &ta {
        assert!(t.equal(&tb[k]), "{k} differs between the straight and the resumed run");
    }
    let (x, y) = (&straight[3], &second[1]);
    assert_eq!((x.train_loss, x.train_rank1, &x.val), (y.train_loss, y.train_rank1, &y.val), "same metrics at epoch 4");
    // one metrics file per restart, every epoch checkpointed, no temporary files left behind
    assert!(b.join("metrics-from-0000.jsonl").is_file() && b.join("metrics-from-0002.jsonl").is_file());
    assert_eq!(train::saved_epochs(&b), [1, 2, 3, 4]);
    assert!(std::fs::read_dir(b.join("checkpoints")).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".tmp")));
    // the plot covers both restarts, marks the restart, and the later restart's epochs win
    let h = trainer::plot::history(&b).unwrap();
    assert_eq!(h.restarts, [2]);
    assert_eq!(h.points.iter().map(|p| p.epoch).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert!((h.points[3].train_loss - second[1].train_loss).abs() < 1e-12, "{:?} vs {:?}", h.points, second);
    let png = b.join("curves.png");
    trainer::plot::plot(&b, &png).unwrap();
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000, "{} bytes", bytes.len());
    // and the training did something: the loss fell
    assert!(straight[3].train_loss < straight[0].train_loss, "{straight:?}");
}

#[test]
fn a_new_rate_on_resume_is_used_and_recorded() {
    let _serial = serial();
    let (_scratch, r) = tmp("lr");
    train::train(config(&r), &Overrides { epochs: Some(1), ..Overrides::default() }).unwrap();
    let resumed = train::train(config(&r), &Overrides { start_epoch: Some(1), epochs: Some(2), lr: Some(0.001), ..Overrides::default() }).unwrap();
    assert_eq!(resumed[0].lr, 0.001);
    assert_eq!(train::load_checkpoint_info(&r, 2).unwrap().lr, 0.001);
    let (epoch, m) = train::eval(&r, None, Path::new(&format!("{FASHION}/t10k")), 256).unwrap();
    assert_eq!((epoch, m.samples), (2, 10_000));
    assert!(m.rank5 >= m.rank1 && m.rank1 > 0.1, "{m:?}");
}

#[test]
fn bad_resume_requests_are_refused_with_the_reason() {
    let _serial = serial();
    let (_scratch, r) = tmp("bad");
    let err = train::train(config(&r), &Overrides { start_epoch: Some(3), ..Overrides::default() }).unwrap_err().to_string();
    assert!(err.contains("no checkpoint for epoch 3"), "{err}");
    let err = train::train(config(&r), &Overrides { start_epoch: Some(4), epochs: Some(4), ..Overrides::default() }).unwrap_err().to_string();
    assert!(err.contains("--epochs 4 is the epoch to stop at"), "{err}");
}

#[test]
fn init_writes_epoch_zero_that_training_starts_from() {
    let _serial = serial();
    let (_scratch, r) = tmp("init");
    train::init("mini-vgg", 10, 3, &r, None).unwrap();
    let w0 = tensors(&train::checkpoint_paths(&r, 0).0);
    assert!(w0.contains_key("block1.conv1.weight") && w0.contains_key("classifier.bias"));
    // Xavier uniform bound for block1.conv1: sqrt(6 / (9 + 32*9))
    let bound = (6.0f64 / (9.0 + 288.0)).sqrt();
    let max = w0["block1.conv1.weight"].abs().max().double_value(&[]);
    assert!(max <= bound && max > 0.8 * bound, "{max} vs {bound}");
    let mut c = config(&r);
    c.train.epochs = 1;
    train::train(c, &Overrides::default()).unwrap();
}

#[test]
fn every_config_field_can_be_set_from_the_command_line() {
    let (_scratch, dir) = tmp("set");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("exp.toml");
    std::fs::write(&path, toml::to_string(&config(&dir)).unwrap()).unwrap();
    let sets = ["train.lr=0.5", "augment.flip=false", "optimizer.weight_decay=0.001", "train.devices=[\"cpu\", \"cpu\"]", "schedule.gamma=0.3"];
    let c = Config::from_file_with(&path, &sets.map(String::from)).unwrap();
    assert_eq!(c.train.lr, 0.5);
    assert!(!c.augment.flip);
    assert!(matches!(c.optimizer, trainer::optim::OptimizerConfig::Sgd { weight_decay, .. } if weight_decay == 0.001));
    assert!(matches!(c.schedule, trainer::optim::Schedule::Step { gamma, .. } if gamma == 0.3));
    assert_eq!(c.train.devices.len(), 2);
    // an empty value puts the field back to its default: no validation set, the default rate
    assert!(config(&dir).data.val.is_some());
    let c = Config::from_file_with(&path, &["data.val=".to_string(), "train.lr= ".to_string()]).unwrap();
    assert_eq!((c.data.val, c.train.lr), (None, trainer::train::TrainConfig::default().lr));
    let err = format!("{:#}", Config::from_file_with(&path, &["train.lr=fast".to_string()]).unwrap_err());
    assert!(err.contains("exp.toml (with --set train.lr=fast): invalid experiment config"), "{err}");
    let err = format!("{:#}", Config::from_file_with(&path, &["train.no_such=1".to_string()]).unwrap_err());
    assert!(err.contains("no_such"), "{err}");
}

#[test]
fn taking_the_next_batch_a_step_ahead_trains_to_the_same_weights() {
    let _serial = serial();
    let ((_sa, a), (_sb, b)) = (tmp("ahead"), tmp("in-step"));
    let with = |run: &Path, prefetch: bool| {
        let mut c = config(run);
        c.train.prefetch = prefetch;
        c
    };
    assert!(config(&a).train.prefetch, "prefetch is the default");
    let ahead = train::train(with(&a, true), &Overrides { epochs: Some(2), ..Overrides::default() }).unwrap();
    let in_step = train::train(with(&b, false), &Overrides { epochs: Some(2), ..Overrides::default() }).unwrap();
    assert_eq!(ahead.iter().map(|m| m.train_loss).collect::<Vec<_>>(), in_step.iter().map(|m| m.train_loss).collect::<Vec<_>>());
    let (wa, wb) = (tensors(&train::checkpoint_paths(&a, 2).0), tensors(&train::checkpoint_paths(&b, 2).0));
    assert_eq!(wa.keys().collect::<Vec<_>>(), wb.keys().collect::<Vec<_>>());
    for (k, t) in &wa {
        assert!(t.equal(&wb[k]), "{k} differs with and without prefetch");
    }
}

#[test]
fn batches_sent_as_bytes_and_normalised_after_the_copy_train_exactly_as_floats() {
    let _serial = serial();
    let ((_sa, a), (_sb, b)) = (tmp("floats"), tmp("bytes"));
    // the config's flip and 2-pixel shift are a plain crop: the same inputs bit for bit either way
    let with = |run: &Path, transfer: &str| {
        let mut c = config(run);
        c.train.transfer = toml::from_str::<BTreeMap<String, trainer::batches::Transfer>>(&format!("t = \"{transfer}\"")).unwrap()["t"];
        c
    };
    let floats = train::train(with(&a, "f32"), &Overrides { epochs: Some(1), ..Overrides::default() }).unwrap();
    let bytes = train::train(with(&b, "u8"), &Overrides { epochs: Some(1), ..Overrides::default() }).unwrap();
    assert_eq!(floats[0].train_loss, bytes[0].train_loss);
    let (wa, wb) = (tensors(&train::checkpoint_paths(&a, 1).0), tensors(&train::checkpoint_paths(&b, 1).0));
    assert_eq!(wa.keys().collect::<Vec<_>>(), wb.keys().collect::<Vec<_>>());
    for (k, t) in &wa {
        assert!(t.equal(&wb[k]), "{k} differs between u8 and f32 transfer");
    }
    // a rotation interpolates, and the bytes round it: u8 really travelled (and trains as well)
    let ((_sc, c), (_sd, d)) = (tmp("turned-floats"), tmp("turned-bytes"));
    let turned = |run: &Path, transfer: &str| {
        let mut cfg = with(run, transfer);
        cfg.augment.rotate = 10.0;
        cfg
    };
    let floats = train::train(turned(&c, "f32"), &Overrides { epochs: Some(1), ..Overrides::default() }).unwrap();
    let bytes = train::train(turned(&d, "u8"), &Overrides { epochs: Some(1), ..Overrides::default() }).unwrap();
    assert_ne!(floats[0].train_loss, bytes[0].train_loss);
    assert!((floats[0].train_loss - bytes[0].train_loss).abs() < 0.05 * floats[0].train_loss, "{floats:?} vs {bytes:?}");
}
