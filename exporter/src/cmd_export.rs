//! `exporter export`: a run's checkpoint → a self-describing ONNX file, verified numerically.
//!
//! The library lowers the graph (pure Rust); this command adds what needs the two back ends: the same
//! weights run in libtorch (through the trainer) and the written file in ONNX Runtime (through the
//! runtime) on fixed inputs, and the file is refused when they differ by more than the tolerance.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use exporter::lower::{self, LowerOptions};
use exporter::meta::{ModelMeta, Preprocessing};

pub struct ExportArgs {
    pub run: PathBuf,
    pub epoch: Option<usize>,
    pub out: PathBuf,
    pub opset: i64,
    pub logits: bool,
    pub tolerance: f32,
}

/// Deterministic pseudo-random inputs in [-2, 2) (the same on every machine).
fn fixed_inputs(n: usize) -> Vec<f32> {
    let mut s: u64 = 0x2545_F491_4F6C_DD1D;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

fn labels_near(data: &Path, classes: usize) -> Vec<String> {
    let file = data.with_file_name("labels.txt");
    match std::fs::read_to_string(&file) {
        Ok(t) => t.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect(),
        Err(_) => (0..classes).map(|c| c.to_string()).collect(),
    }
}

fn short_side_near(data: &Path) -> u32 {
    std::fs::read_to_string(data.with_file_name("report.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["short_side"].as_u64())
        .unwrap_or(0) as u32
}

pub fn run(a: &ExportArgs) -> Result<()> {
    let epoch = match a.epoch {
        Some(e) => e,
        None => *trainer::train::saved_epochs(&a.run).last().with_context(|| format!("{}: no checkpoints to export", a.run.display()))?,
    };
    let info = trainer::train::load_checkpoint_info(&a.run, epoch)?;
    let c = &info.config;
    let ckpt = trainer::train::checkpoint_paths(&a.run, epoch).0;
    let weights = lower::read_safetensors(&ckpt)?;
    let classes = weights.get("classifier.bias").or_else(|| weights.get("classifier.weight")).map(|(d, _)| d[0]).with_context(|| format!("{}: no classifier parameters", ckpt.display()))?;
    let zoo = models::zoo::info(&c.model.name)?;
    let input = [c.model.in_channels.unwrap_or(zoo.input[0]), zoo.input[1], zoo.input[2]];
    let graph = models::zoo::build(&c.model.name, Some(classes), Some(input[0]))?;
    let spec = trainer::train::batch_spec(c, input, false)?;
    let labels = labels_near(&c.data.train, classes);
    if labels.len() != classes {
        bail!("{}: {} labels for a {classes}-class network", c.data.train.with_file_name("labels.txt").display(), labels.len());
    }
    let mut meta = ModelMeta {
        architecture: c.model.name.clone(),
        task: zoo.task.to_string(),
        labels,
        preprocessing: Preprocessing { input, mean: spec.mean.clone(), std: spec.std.clone(), resize_short_side: short_side_near(&c.data.train) },
        run: a.run.display().to_string(),
        epoch,
        parity: None,
    };
    let opts = |meta: &ModelMeta| LowerOptions { opset: a.opset, logits: a.logits, metadata: meta.to_props() };
    lower::write(&graph, &weights, &opts(&meta), &a.out)?;

    // parity: libtorch on the checkpoint against ONNX Runtime on the written file
    let shape = [4, input[0], input[1], input[2]];
    let x = fixed_inputs(shape.iter().product());
    let mut net = trainer::net::Net::new_cpu(graph.clone(), 0)?;
    net.load(&ckpt)?;
    let expected = net.predict_f32(&x, shape);
    let outs = runtime::engine::infer(&a.out, &runtime::SessionOptions::default(), x, &shape)?;
    let got = &outs.iter().find(|(n, _, _)| n == "probabilities").context("the written file has no probabilities output")?.2;
    let max = got.iter().zip(&expected).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max);
    let argmax = |v: &[f32]| -> Vec<usize> { v.chunks(classes).map(|r| r.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i)).collect() };
    let agree = argmax(got).iter().zip(argmax(&expected)).filter(|(a, b)| **a == *b).count();
    if max > a.tolerance || !max.is_finite() {
        let _ = std::fs::remove_file(&a.out);
        bail!("parity check failed: ONNX Runtime and libtorch differ by {max:e} (tolerance {:e}); {} not written", a.tolerance, a.out.display());
    }
    meta.parity = Some(serde_json::json!({ "inputs": "4 fixed pseudo-random images", "max_abs_diff": max, "tolerance": a.tolerance, "top1_agreement": format!("{agree}/4") }).to_string());
    lower::write(&graph, &weights, &opts(&meta), &a.out)?;
    println!(
        "{} → {} ({} classes, input {}x{}x{}, opset {}); parity vs libtorch: max |Δp| {max:.2e} ≤ {:.0e}, top-1 agreement {agree}/4",
        ckpt.display(),
        a.out.display(),
        classes,
        input[0],
        input[1],
        input[2],
        a.opset,
        a.tolerance
    );
    Ok(())
}
