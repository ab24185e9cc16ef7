//! The export pipeline: a run's checkpoint → a self-describing ONNX file, verified numerically
//! (the `verify` feature, on by default; the binary requires it).
//!
//! The rest of the library lowers the graph (pure Rust), folds BatchNorm (`--fold-bn`) and writes
//! float16 (`--fp16`) with neither libtorch nor ONNX Runtime; this module adds what needs the two back
//! ends: the checkpoint as trained runs in libtorch
//! (through the trainer) and the written file in ONNX Runtime (through the runtime) on fixed inputs and
//! on real samples of the run's data, and the file is refused when they differ by more than the
//! tolerance (see `exporter::parity` for the rule).

use std::path::{Path, PathBuf};

use data::records::RecordFile;
use data::{Loader, LoaderOptions, Transform};
use models::meta::{parity_key, Crop, Layout, ModelMeta, Preprocessing};
use trainer::dataset::{labels_beside, short_side_beside};
use trainer::run_dir::RunDir;
use trainer::train::Config;

use crate::fold::fold_batchnorm;
use crate::lower::{self, LowerOptions};
use crate::parity::{fixed_inputs, Comparison, FoldCounts, Report, Variant};

/// Why an export failed; each names the run, checkpoint or file it is about.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Lower(#[from] lower::ExportError),
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    #[error(transparent)]
    Model(#[from] models::zoo::ZooError),
    /// A fitted head that cannot be made part of its network (`exporter export-head`).
    #[error(transparent)]
    Head(#[from] crate::head::HeadError),
    /// The run directory, its checkpoint or its data (the trainer's message, with its context).
    #[error("{0}")]
    Run(String),
    #[error("parity check failed: ONNX Runtime and libtorch differ {why}; {} not written", out.display())]
    Parity { why: String, out: PathBuf },
}

type Result<T, E = PipelineError> = std::result::Result<T, E>;

/// A trainer, data or experiment error with its chain of causes (`a: b: c`), as a typed error.
pub(crate) fn run_err(e: impl std::error::Error) -> PipelineError {
    let mut message = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        message.push_str(": ");
        message.push_str(&c.to_string());
        cause = c.source();
    }
    PipelineError::Run(message)
}

macro_rules! bail {
    ($($t:tt)*) => { return Err(PipelineError::Run(format!($($t)*))) };
}

/// What to export and how (the `exporter export` flags).
#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub run: PathBuf,
    pub epoch: Option<usize>,
    pub out: PathBuf,
    pub opset: i64,
    pub logits: bool,
    /// `None`: the variant's default (`Variant::default_tolerance`).
    pub tolerance: Option<f32>,
    pub fp16: bool,
    pub fold_bn: bool,
    /// Real samples of the run's data to compare on (0: none).
    pub samples: usize,
}

/// How many fixed pseudo-random inputs the check runs.
pub(crate) const FIXED_INPUTS: usize = 4;

/// The seed of the fixed inputs (every export since the first has used these images).
pub(crate) const FIXED_SEED: u64 = 0x2545_F491_4F6C_DD1D;

/// Normalised images `[n, C, H, W]` with their labels, and where they came from.
pub(crate) struct Samples {
    pub(crate) source: PathBuf,
    pub(crate) data: Vec<f32>,
    pub(crate) labels: Vec<i64>,
}

pub(crate) fn is_records(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "rec")
}

/// The data set the check reads: the run's validation set, else its training set, whichever exists
/// here (a record file or an IDX prefix). `Err` says why there is none.
fn sample_source(c: &Config) -> Result<&Path, String> {
    let named: Vec<&Path> = c.data.val.iter().map(PathBuf::as_path).chain([c.data.train.as_path()]).filter(|p| !p.as_os_str().is_empty()).collect();
    let exists = |p: &Path| if is_records(p) { p.is_file() } else { trainer::data::idx_files(p).is_ok() };
    match named.iter().copied().find(|p| exists(p)) {
        Some(p) => Ok(p),
        None if named.is_empty() => Err("the run's config names no data".into()),
        None => Err(format!("the run's data is not here: {}", named.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))),
    }
}

/// The first `n` samples of `source` through the trainer's evaluation preprocessing: for record files
/// the loader's deterministic transform (centre crop, no augmentation, normalisation), for IDX sets the
/// normalisation (pixel - mean) / std that the trainer applies to in-memory sets. `input` is the
/// network's `[C, H, W]`, `mean` and `std` its normalisation in 0–255 pixel units.
pub(crate) fn read_samples(source: &Path, input: [usize; 3], mean: &[f32], std: &[f32], n: usize) -> Result<Samples> {
    let [c, h, w] = input;
    if is_records(source) {
        let file = RecordFile::open(source).map_err(run_err)?;
        let transform = Transform::eval([h as u32, w as u32], c as u32, mean.to_vec(), std.to_vec());
        let opts = LoaderOptions { batch_size: n, shuffle: false, workers: 1, prefetch: 1, ..LoaderOptions::default() };
        let Some(batch) = Loader::new(file, transform, opts).epoch(0).next() else { bail!("{}: no records", source.display()) };
        let batch = batch.map_err(|e| PipelineError::Run(format!("reading {}: {e}", source.display())))?;
        for (key, why) in &batch.skipped {
            tracing::warn!("{}: skipped {key}: {why}", source.display());
        }
        return Ok(Samples { source: source.into(), data: batch.data, labels: batch.labels });
    }
    let (images, labels) = trainer::data::idx_files(source).map_err(run_err)?;
    let (dims, pixels) = trainer::data::read_idx(&images).map_err(run_err)?;
    let (_, label_bytes) = trainer::data::read_idx(&labels).map_err(run_err)?;
    if dims.len() != 3 || [1, dims[1], dims[2]] != input {
        bail!("{}: images of shape {:?}, the network takes {c}x{h}x{w}", images.display(), &dims[1..]);
    }
    let n = n.min(dims[0]).min(label_bytes.len());
    let (mean, std) = (mean[0], std[0]);
    let data = pixels[..n * h * w].iter().map(|&p| (p as f32 - mean) / std).collect();
    Ok(Samples { source: source.into(), data, labels: label_bytes[..n].iter().map(|&l| l as i64).collect() })
}

/// The file's probabilities on a `[n, C, H, W]` batch, checked to be `[n, classes]`.
pub(crate) fn file_probabilities(path: &Path, x: Vec<f32>, shape: [usize; 4], classes: usize) -> Result<Vec<f32>> {
    let outs = runtime::engine::infer(path, &runtime::SessionOptions::default(), x, &shape)?;
    let Some((_, dims, p)) = outs.into_iter().find(|(n, _, _)| n == "probabilities") else {
        bail!("{}: the written file has no probabilities output", path.display())
    };
    if dims != [shape[0], classes] {
        bail!("{}: the written file's probabilities have shape {dims:?}, expected [{}, {classes}]", path.display(), shape[0]);
    }
    Ok(p)
}

/// What an export wrote and how it compared with libtorch.
#[derive(Debug, Clone)]
pub struct ExportReport {
    /// The checkpoint that was exported, and the file written.
    pub checkpoint: PathBuf,
    pub out: PathBuf,
    pub epoch: usize,
    pub classes: usize,
    /// `[C, H, W]`.
    pub input: [usize; 3],
    pub opset: i64,
    pub variant: Variant,
    /// BatchNorm folded and kept (`--fold-bn`).
    pub fold: Option<FoldCounts>,
    /// The metadata written into the file (with the parity report).
    pub meta: ModelMeta,
    /// The parity check it passed.
    pub parity: Report,
}

impl std::fmt::Display for ExportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [c, h, w] = self.input;
        let mut what = format!("{} classes, input {c}x{h}x{w}, opset {}, {}", self.classes, self.opset, self.variant.precision());
        if let Some(fc) = self.fold {
            what += &format!(", BatchNorm folded {} / kept {}", fc.folded, fc.kept);
        }
        write!(f, "{} → {} ({what})", self.checkpoint.display(), self.out.display())?;
        for set in std::iter::once(&self.parity.fixed_inputs).chain(&self.parity.samples) {
            write!(f, "\nparity vs libtorch fp32 on {}: {}", set.inputs, set.summary(Some(self.parity.tolerance)))?;
        }
        if let Some(st) = self.parity.detections.as_ref().and_then(|d| d.get("stages")) {
            let num = |k: &str| st[k].as_f64().unwrap_or(f64::NAN);
            write!(
                f,
                "\nRPN vs libtorch: objectness max |Δp| {:.2e}, box codes max |Δ| {:.2e}; proposals {} of {} at the same rank within {:.2e} px (max {:.2e} px); head box codes on them max |Δ| {:.2e}",
                num("rpn_objectness_max_abs_diff"),
                num("rpn_codes_max_abs_diff"),
                st["proposals_matched"],
                st["proposals"],
                num("proposal_bound_px"),
                num("proposal_max_abs_diff_px"),
                num("head_codes_max_abs_diff")
            )?;
            if let Some(d) = self.parity.detections.as_ref().map(|d| &d["detections"]).filter(|d| !d.is_null()) {
                write!(f, "\ndetections vs the trainer's (rcnn_detections): {} of {} matched on {} images", d["matched"], d["reference"], d["images"])?;
            }
        } else if let Some(d) = &self.parity.detections {
            write!(
                f,
                "\ndetections vs the reference post-process of libtorch's heads: {} of {} matched on {} images; box codes max |Δ| {:.2e}",
                d["matched"],
                d["reference"],
                d["images"],
                d["codes_max_abs_diff"].as_f64().unwrap_or(f64::NAN)
            )?;
        }
        if let Some(note) = &self.parity.samples_note {
            write!(f, "\nno parity check on real samples: {note}")?;
        }
        Ok(())
    }
}

/// Exports the run's checkpoint to `a.out` and proves it: libtorch on the checkpoint as trained against
/// ONNX Runtime on the written file, on fixed inputs and on real samples of the run's data. A file that
/// fails the check is removed and the error says by how much it differed.
pub fn export(a: &ExportOptions) -> Result<ExportReport> {
    let dir = RunDir::new(&a.run);
    let epoch = dir.epoch_or_latest(a.epoch).map_err(run_err)?;
    let info = trainer::train::load_checkpoint_info(&a.run, epoch).map_err(run_err)?;
    let c = &info.config;
    let ckpt = dir.checkpoint(epoch).0;
    // the network as trained (graph.json), never guessed from the weights
    let graph = dir.graph(&c.model.name, c.model.in_channels, epoch).map_err(run_err)?;
    let weights = lower::read_safetensors(&ckpt)?;
    if graph.detector.is_some() {
        return crate::detect_export::export(a, c, epoch, graph, weights, &ckpt);
    }
    let zoo = models::zoo::info(&c.model.name)?;
    let input = graph.input_shape();
    let classes = graph.shapes().last().map_or(0, |s| s.iter().product());
    let spec = trainer::train::batch_spec(c, input, false).map_err(run_err)?;
    let labels = labels_beside(&c.data.train).map_err(run_err)?.unwrap_or_else(|| (0..classes).map(|c| c.to_string()).collect());
    if labels.len() != classes {
        bail!("{}: {} labels for a {classes}-class network", c.data.train.with_file_name("labels.txt").display(), labels.len());
    }
    let preprocessing = Preprocessing {
        input,
        layout: Layout::Nchw,
        mean: spec.mean.clone(),
        std: spec.std.clone(),
        resize_short_side: short_side_beside(&c.data.train).map_err(run_err)?.unwrap_or(0),
        crop: Crop::Center,
    };
    let mut meta = ModelMeta::new(&c.model.name, zoo.task, labels, preprocessing);
    meta.run = a.run.display().to_string();
    meta.epoch = epoch;
    meta.ordinal = c.data.ordinal;
    let variant = Variant { fp16: a.fp16, fold_bn: a.fold_bn };
    let tolerance = a.tolerance.unwrap_or(variant.default_tolerance());

    // what is written: the graph as trained, or with its BatchNorms folded into their layers
    let opts = LowerOptions { opset: a.opset, logits: a.logits, metadata: meta.to_props(), fp16: a.fp16 };
    let (mut model, fold) = if a.fold_bn {
        let (folded, folded_weights, report) = fold_batchnorm(&graph, &weights)?;
        tracing::debug!("BatchNorm folded: {:?}; kept: {:?}", report.folded, report.kept);
        (lower::lower(&folded, &folded_weights, &opts)?, Some(FoldCounts { folded: report.folded.len(), kept: report.kept.len() }))
    } else {
        (lower::lower(&graph, &weights, &opts)?, None)
    };
    drop(weights);
    lower::save(&model, &a.out)?;

    // parity: libtorch on the checkpoint as trained against ONNX Runtime on the written file
    let mut net = trainer::net::Net::new_cpu(graph, 0).map_err(run_err)?;
    net.load(&ckpt).map_err(run_err)?;
    let shape = [FIXED_INPUTS, input[0], input[1], input[2]];
    let x = fixed_inputs(shape.iter().product(), FIXED_SEED);
    let expected = net.predict_f32(&x, shape);
    let got = file_probabilities(&a.out, x, shape, classes)?;
    let fixed = Comparison::new(&format!("{FIXED_INPUTS} fixed pseudo-random images"), &expected, &got, classes, None);
    let source = if a.samples == 0 { Err("not requested (--samples 0)".to_string()) } else { sample_source(c) };
    let samples = match source {
        Err(note) => Err(note),
        Ok(source) => {
            let s = read_samples(source, spec.input, &spec.mean, &spec.std, a.samples)?;
            let shape = [s.labels.len(), input[0], input[1], input[2]];
            let expected = net.predict_f32(&s.data, shape);
            let got = file_probabilities(&a.out, s.data, shape, classes)?;
            let what = format!("{} samples of {}", s.labels.len(), s.source.display());
            Ok(Comparison::new(&what, &expected, &got, classes, Some(&s.labels)))
        }
    };
    let report = Report::new(variant, fold, tolerance, fixed, samples);
    if let Err(why) = report.check() {
        let _ = std::fs::remove_file(&a.out);
        return Err(PipelineError::Parity { why, out: a.out.clone() });
    }
    meta.parity = Some(report.to_json());
    lower::set_metadata(&mut model, &parity_key(), &report.to_json());
    lower::save(&model, &a.out)?;
    Ok(ExportReport { checkpoint: ckpt, out: a.out.clone(), epoch, classes, input, opset: a.opset, variant, fold, meta, parity: report })
}
