//! The shipped experiment configs (configs/): every one parses, names a registry model, and replays
//! the book's learning-rate tables.

use std::path::PathBuf;

use trainer::train::Config;

fn configs() -> Vec<(String, Config)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut v: Vec<(String, Config)> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| (p.file_stem().unwrap().to_string_lossy().into_owned(), Config::from_file(&p).unwrap_or_else(|e| panic!("{}: {e:#}", p.display()))))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn every_book_experiment_has_a_config_that_parses() {
    let all = configs();
    let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
    for expected in [
        "imagenet-alexnet",
        "imagenet-vgg16",
        "imagenet-googlenet",
        "imagenet-resnet50",
        "imagenet-squeezenet",
        "fer2013-emotion-vgg",
        "cars-vgg16-finetune",
        "adience-age",
        "adience-gender",
        "fashion-mnist-mini-vgg",
    ] {
        assert!(names.contains(&expected), "configs/{expected}.toml is missing");
    }
    for (name, c) in &all {
        models::zoo::info(&c.model.name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(c.train.epochs > 0 && c.train.batch_size > 0, "{name}");
    }
}

/// The rate of each 1-based epoch, as the book's tables give it.
fn rates(c: &Config, epochs: &[usize]) -> Vec<f64> {
    epochs.iter().map(|&e| (c.schedule.lr(c.train.lr, e - 1) * 1e6).round() / 1e6).collect()
}

#[test]
fn schedules_replay_the_books_tables() {
    let all: std::collections::HashMap<String, Config> = configs().into_iter().collect();
    // AlexNet Table 5.3: 1-65 1e-2, 66-85 1e-3, 86-100 1e-4
    assert_eq!(rates(&all["imagenet-alexnet"], &[1, 65, 66, 85, 86, 100]), [1e-2, 1e-2, 1e-3, 1e-3, 1e-4, 1e-4]);
    // ResNet-50 Exp. 3: 1-30 1e-1, 31-35 1e-2, 36-40 1e-3
    assert_eq!(rates(&all["imagenet-resnet50"], &[30, 31, 35, 36]), [1e-1, 1e-2, 1e-2, 1e-3]);
    // SqueezeNet Exp. 4: 1-50 1e-2, 51-65 1e-3, 66-75 1e-4, 76-80 1e-5
    assert_eq!(rates(&all["imagenet-squeezenet"], &[50, 51, 66, 76]), [1e-2, 1e-3, 1e-4, 1e-5]);
    // EmotionVGGNet Table 10.3: 1-40 1e-3, 41-60 1e-4, 61-75 1e-5
    assert_eq!(rates(&all["fer2013-emotion-vgg"], &[40, 41, 61]), [1e-3, 1e-4, 1e-5]);
    // Cars Exp. 3: 1-50 5e-4, 51-55 5e-5
    assert_eq!(rates(&all["cars-vgg16-finetune"], &[50, 51]), [5e-4, 5e-5]);
    let age = &all["adience-age"];
    assert!(age.data.ordinal && age.model.num_classes == Some(8));
    assert_eq!(all["cars-vgg16-finetune"].model.init_skip, ["classifier"]);
    // effective batch = per-device batch x devices (book.md §3.11)
    assert_eq!(all["imagenet-resnet50"].train.batch_size * all["imagenet-resnet50"].train.devices.len(), 256);
    assert_eq!(all["imagenet-googlenet"].train.batch_size * all["imagenet-googlenet"].train.devices.len(), 384);
}
