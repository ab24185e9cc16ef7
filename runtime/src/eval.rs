//! `runtime eval`, `runtime predict` and `runtime bench`: the model handle driven over data.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::engine::RuntimeError;
use crate::images::SourceError;
use crate::images::{average_crops, prepare, Batches, Prepared, Skipped, Source};
use crate::metrics::{Counts, Summary};
use crate::model::{top_k, Model};

/// Why an evaluation, a prediction or a benchmark cannot be done; every message names the data.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Detect(#[from] crate::detect::DetectError),
    #[error("{}: no images to evaluate", .0.display())]
    NoImages(PathBuf),
    #[error("{name}: label {label} is outside the model's {classes} classes ({first:?}…): is this the model's dataset?")]
    LabelOutOfRange { name: String, label: usize, classes: usize, first: Vec<String> },
    #[error("{}: none of the {total} images could be used ({skipped} skipped)", path.display())]
    NothingUsable { path: PathBuf, total: usize, skipped: usize },
    #[error("{}: predict takes images or folders of images (use `runtime eval` for record files)", .0.display())]
    NotImages(PathBuf),
    #[error("{}: no readable images", .0.display())]
    NoReadableImages(PathBuf),
}

type Result<T, E = EvalError> = std::result::Result<T, E>;

/// How to run an evaluation.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub batch: usize,
    pub ten_crop: bool,
    /// Report one-off accuracy (also on when the model's metadata says its labels are ordinal).
    pub one_off: bool,
    /// Decode/preprocess threads.
    pub workers: usize,
    pub progress: bool,
}

/// What `runtime eval` reports.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub model: String,
    pub data: String,
    pub provider: String,
    pub preprocess: String,
    pub ten_crop: bool,
    /// Images read (used + skipped).
    pub read: u64,
    pub skipped: usize,
    /// The skipped samples and why (all of them).
    pub skipped_items: Vec<Skipped>,
    pub seconds: f64,
    pub images_per_sec: f64,
    #[serde(flatten)]
    pub metrics: Summary,
}

impl std::fmt::Display for EvalReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "model {} on {} ({}, {})", self.model, self.provider, self.preprocess, if self.ten_crop { "10-crop" } else { "single crop" })?;
        writeln!(f, "data {}: {} read, {} used, {} skipped", self.data, self.read, self.metrics.samples, self.skipped)?;
        for (name, why) in self.skipped_items.iter().take(10) {
            writeln!(f, "  skipped {name}: {why}")?;
        }
        if self.skipped > 10 {
            writeln!(f, "  … and {} more (all are in --json)", self.skipped - 10)?;
        }
        write!(f, "{}", self.metrics)?;
        write!(f, "\n{:.1} images/s ({:.2} s)", self.images_per_sec, self.seconds)
    }
}

/// Whether the model's labels are ordinal (its metadata says so).
pub fn ordinal(model: &Model) -> bool {
    model.meta.as_ref().is_some_and(|m| m.ordinal)
}

/// Runs `model` over prepared batches in order and hands each batch to `each` with its probabilities
/// (one row per usable image, the 10-crop averaged; empty when the batch had no usable image).
fn infer_batches(model: &mut Model, batches: Batches, mut each: impl FnMut(&Model, Prepared, Vec<f32>) -> Result<()>) -> Result<()> {
    for b in batches {
        let probs = if b.items.is_empty() {
            vec![]
        } else {
            let probs = model.run(&b.data, b.items.len() * b.crops)?;
            average_crops(&probs, model.num_classes(), b.crops)
        };
        each(model, b, probs)?;
    }
    Ok(())
}

/// Evaluates `model` on the record file or class folder `data`.
pub fn evaluate(model: &mut Model, data: &Path, o: &EvalOptions) -> Result<EvalReport> {
    let (source, mut skipped) = Source::open(data, &model.labels, true)?;
    if source.is_empty() {
        return Err(EvalError::NoImages(data.to_path_buf()));
    }
    let total = source.len();
    let bar = data::progress::bar(total as u64, "eval", o.progress);
    let start = Instant::now();
    let batches = prepare(Arc::new(source), model.preprocess.clone(), o.batch, o.ten_crop, o.workers);
    let mut counts: Option<Counts> = None;
    infer_batches(model, batches, |model, b, probs| {
        bar.inc((b.items.len() + b.skipped.len()) as u64);
        skipped.extend(b.skipped);
        if b.items.is_empty() {
            return Ok(());
        }
        let k = model.num_classes();
        let counts = counts.get_or_insert_with(|| Counts::new(k));
        for ((name, label), row) in b.items.into_iter().zip(probs.chunks(k)) {
            match label {
                Some(l) if l < k => counts.add(row, l),
                Some(l) => return Err(EvalError::LabelOutOfRange { name, label: l, classes: k, first: model.labels[..k.min(5)].to_vec() }),
                None => skipped.push((name, "no label".into())),
            }
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    let counts = counts.ok_or_else(|| EvalError::NothingUsable { path: data.to_path_buf(), total, skipped: skipped.len() })?;
    let metrics = counts.summary(&model.labels, o.one_off || ordinal(model));
    let used = metrics.samples;
    Ok(EvalReport {
        model: model.path.display().to_string(),
        data: data.display().to_string(),
        provider: model.provider.to_string(),
        preprocess: model.preprocess.to_string(),
        ten_crop: o.ten_crop,
        read: used + skipped.len() as u64,
        skipped: skipped.len(),
        skipped_items: skipped,
        seconds,
        images_per_sec: used as f64 / seconds.max(1e-9),
        metrics,
    })
}

/// One image's answer.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    pub image: String,
    /// (label, probability), best first.
    pub top: Vec<(String, f32)>,
}

/// Top-`k` predictions for each image (folders are searched for images); unreadable ones are returned
/// as skipped.
pub fn predict(model: &mut Model, images: &[PathBuf], k: usize, ten_crop: bool, batch: usize, workers: usize) -> Result<(Vec<Prediction>, Vec<Skipped>)> {
    let mut files = vec![];
    let mut skipped = vec![];
    for p in images {
        let (s, sk) = Source::open(p, &[], false)?;
        skipped.extend(sk);
        if let Source::Files(f) = s {
            files.extend(f);
        } else {
            return Err(EvalError::NotImages(p.clone()));
        }
    }
    let batches = prepare(Arc::new(Source::Files(files)), model.preprocess.clone(), batch, ten_crop, workers);
    let mut out = vec![];
    infer_batches(model, batches, |model, b, probs| {
        skipped.extend(b.skipped);
        for ((name, _), row) in b.items.into_iter().zip(probs.chunks(model.num_classes())) {
            let top = top_k(row, k).into_iter().map(|(i, p)| (model.label(i).to_string(), p)).collect();
            out.push(Prediction { image: name, top });
        }
        Ok(())
    })?;
    Ok((out, skipped))
}

/// Latency and throughput of the model alone at one batch size.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    pub batch: usize,
    pub iterations: usize,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub images_per_sec: f64,
}

/// The `q`-quantile (nearest rank) of sorted `v`.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Runs `model` on fixed pseudo-random inputs of `batch` images: `warmup` untimed runs, then at least
/// `min_iters` timed runs and until `min_time` has passed.
pub fn bench_model(model: &mut Model, batch: usize, warmup: usize, min_iters: usize, min_time: Duration) -> Result<BenchRow> {
    let sample = model.preprocess.sample_len();
    bench_runs(batch, sample, warmup, min_iters, min_time, |data| model.run(data, batch).map(drop).map_err(EvalError::from))
}

/// [`bench_model`] of any model: `run` is one inference of `batch` images of `sample` floats.
pub fn bench_runs(
    batch: usize,
    sample: usize,
    warmup: usize,
    min_iters: usize,
    min_time: Duration,
    mut run: impl FnMut(&[f32]) -> Result<()>,
) -> Result<BenchRow> {
    let data = data::rng::Xorshift64::new(0x2545F4914F6CDD1D).uniform(batch * sample, -1.0, 1.0);
    for _ in 0..warmup {
        run(&data)?;
    }
    let mut times = vec![];
    let start = Instant::now();
    while times.len() < min_iters || start.elapsed() < min_time {
        let t = Instant::now();
        run(&data)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let total: f64 = times.iter().sum();
    let mean = total / times.len() as f64;
    times.sort_by(f64::total_cmp);
    Ok(BenchRow {
        batch,
        iterations: times.len(),
        mean_ms: mean,
        p50_ms: quantile(&times, 0.5),
        p90_ms: quantile(&times, 0.9),
        p99_ms: quantile(&times, 0.99),
        images_per_sec: batch as f64 * 1e3 / mean,
    })
}

/// End to end: decode, preprocess and infer every image of a folder.
#[derive(Debug, Clone, Serialize)]
pub struct EndToEndRow {
    pub batch: usize,
    pub images: usize,
    pub skipped: usize,
    pub seconds: f64,
    pub images_per_sec: f64,
}

pub fn bench_end_to_end(model: &mut Model, images: &Path, batch: usize, workers: usize) -> Result<EndToEndRow> {
    let (source, mut skipped) = Source::open(images, &[], false)?;
    // One untimed run, as the model-alone measurement warms up: the first run of a session sets it up.
    model.run(&vec![0f32; batch * model.preprocess.sample_len()], batch)?;
    let start = Instant::now();
    let mut used = 0;
    let batches = prepare(Arc::new(source), model.preprocess.clone(), batch, false, workers);
    infer_batches(model, batches, |_, b, _| {
        skipped.extend(b.skipped);
        used += b.items.len();
        Ok(())
    })?;
    let seconds = start.elapsed().as_secs_f64();
    if used == 0 {
        return Err(EvalError::NoReadableImages(images.to_path_buf()));
    }
    Ok(EndToEndRow { batch, images: used, skipped: skipped.len(), seconds, images_per_sec: used as f64 / seconds })
}

#[cfg(test)]
mod tests {
    #[test]
    fn quantiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(super::quantile(&v, 0.5), 50.0);
        assert_eq!(super::quantile(&v, 0.99), 99.0);
        assert_eq!(super::quantile(&v[..1], 0.9), 1.0);
    }
}
