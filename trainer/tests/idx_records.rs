//! A config naming IDX sets trains through the loader: the first run packs the sets into record files in
//! the cache ($DLCV_CACHE_DIR) and says so, a second run reads those records again without packing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `n` 28x28 images of 5 classes: class k is a bright horizontal bar at rows 3 + 5k .. 6 + 5k on noise.
fn write_bars(prefix: &Path, n: usize, seed: u64) {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut noise = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 59) as u8
    };
    let labels: Vec<u8> = (0..n).map(|i| (i % 5) as u8).collect();
    let mut pixels = Vec::with_capacity(n * 784);
    for &k in &labels {
        for row in 0..28 {
            for _ in 0..28 {
                let bar = (3 + 5 * k as usize..6 + 5 * k as usize).contains(&row);
                pixels.push(if bar { 230 } else { 20 + noise() });
            }
        }
    }
    let header = |kind: u8, dims: &[u32]| -> Vec<u8> { [0, 0, 8, kind].into_iter().chain(dims.iter().flat_map(|d| d.to_be_bytes())).collect() };
    std::fs::write(format!("{}-images-idx3-ubyte", prefix.display()), [header(3, &[n as u32, 28, 28]), pixels].concat()).unwrap();
    std::fs::write(format!("{}-labels-idx1-ubyte", prefix.display()), [header(1, &[n as u32]), labels].concat()).unwrap();
}

fn train(dir: &Path, cache: &Path, run: &str) -> (Output, serde_json::Value) {
    let config = dir.join(format!("{run}.toml"));
    std::fs::write(
        &config,
        format!(
            "[model]\nname = \"mini-vgg\"\n[data]\ntrain = \"{}\"\nval = \"{}\"\nmean = 40.0\nstd = 60.0\n\
             [train]\nbatch_size = 20\nepochs = 3\nlr = 0.02\nseed = 1\ndevice = \"cpu\"\nlog_every = 0\nrun = \"{}\"\n\
             [optimizer]\nname = \"sgd\"\nmomentum = 0.9\n[augment]\nshift = 2\n",
            dir.join("train").display(),
            dir.join("val").display(),
            dir.join(run).display()
        ),
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_trainer")).args(["train", "--config", config.to_str().unwrap()]).env("DLCV_CACHE_DIR", cache).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(o.status.success(), "{err}");
    let last: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)));
    (o, last)
}

fn packed(cache: &Path) -> Vec<PathBuf> {
    let mut recs: Vec<PathBuf> = std::fs::read_dir(cache.join("idx")).unwrap().map(|e| e.unwrap().path().join("train.rec")).collect();
    recs.sort();
    recs
}

#[test]
fn an_idx_config_trains_on_packed_records_and_a_second_run_reuses_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    write_bars(&dir.join("train"), 200, 1);
    write_bars(&dir.join("val"), 40, 2);
    let cache = dir.join("cache");

    let (first, m1) = train(&dir, &cache, "first");
    let err = String::from_utf8_lossy(&first.stderr);
    // the training set with the 2-pixel border that augment.shift asks for, the validation set without
    let recs = packed(&cache);
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert!(recs.iter().all(|r| r.is_file()), "{recs:?}");
    for rec in &recs {
        assert!(err.contains(&format!("packed into {}", rec.display())), "{err}");
    }
    let border = recs.iter().find(|r| r.parent().unwrap().to_string_lossy().ends_with("-border2")).expect("the training set's border");
    let file = data::records::RecordFile::open(border).unwrap();
    assert_eq!(file.len(), 200);
    let img = data::image::load_from_memory(&file.read(0).unwrap().image).unwrap();
    assert_eq!((img.width(), img.height()), (32, 32));
    // it learnt the bars from the records (chance is 0.2)
    let val = m1["val"]["rank1"].as_f64().unwrap();
    assert!(val > 0.6, "{m1}");
    assert_eq!(m1["val"]["samples"], 40, "{m1}");

    let stamps: Vec<_> = recs.iter().map(|r| std::fs::metadata(r).unwrap().modified().unwrap()).collect();
    let (second, m2) = train(&dir, &cache, "second");
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!err.contains("packed into"), "{err}");
    for rec in &recs {
        assert!(err.contains(&format!("reading the records packed by an earlier run, {}", rec.display())), "{err}");
    }
    assert_eq!(packed(&cache), recs);
    assert_eq!(recs.iter().map(|r| std::fs::metadata(r).unwrap().modified().unwrap()).collect::<Vec<_>>(), stamps, "not packed again");
    // the same records, seed and config: the same training
    for key in ["train_loss", "train_rank1", "val"] {
        assert_eq!(m1[key], m2[key], "{key}: {m1} vs {m2}");
    }
}
