//! The run directory's bookkeeping (its layout is [`crate::run_dir::RunDir`]'s): the config and graph of
//! every (re)start, checkpoints with their side files, the interrupted step, and the metrics and human
//! logs.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::config::Config;
use crate::evaluation::EpochMetrics;
use crate::net::{Net, NetError};
use crate::optim::Optimizer;
use crate::run_dir::{RunDir, RunError};

/// A run directory file that cannot be written or read back.
#[derive(Debug, thiserror::Error)]
pub enum RunFilesError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    RunDir(#[from] RunError),
    #[error("{path}: {reason}")]
    Encode { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Tensors { path: PathBuf, source: tch::TchError },
    #[error("loading {path}: {source}")]
    Weights { path: PathBuf, source: NetError },
    #[error("no checkpoint for epoch {epoch}: {side}: {source}")]
    NoCheckpoint { epoch: usize, side: PathBuf, source: std::io::Error },
    #[error("--resume: {run} has no interrupted state ({side}): {source}")]
    NotInterrupted { run: PathBuf, side: PathBuf, source: std::io::Error },
    #[error("{path}: damaged checkpoint side file: {source}")]
    Damaged { path: PathBuf, source: serde_json::Error },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RunFilesError + '_ {
    move |source| RunFilesError::Io { path: path.to_path_buf(), source }
}

/// What a checkpoint's JSON side file records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointInfo {
    pub epoch: usize,
    pub lr: f64,
    pub seed: u64,
    pub producer: String,
    pub config: Config,
    pub metrics: Option<EpochMetrics>,
    /// Steps of `epoch` already done: 0 for an end-of-epoch checkpoint, k for an interrupted one.
    #[serde(default)]
    pub step: usize,
    /// The interrupted epoch's running sums so far: loss x samples, rank-1 hits, rank-5 hits, samples.
    #[serde(default)]
    pub partial: Option<[f64; 4]>,
    /// Processes that trained it (1 without torchrun or `--nproc`); an interrupted epoch continues only
    /// at the same number, since each rank's share of the epoch depends on it.
    #[serde(default = "one_process")]
    pub world: usize,
}

fn one_process() -> usize {
    1
}

/// The weights and side file of `epoch`'s checkpoint ([`RunDir::checkpoint`]).
pub fn checkpoint_paths(run: &Path, epoch: usize) -> (PathBuf, PathBuf) {
    RunDir::new(run).checkpoint(epoch)
}

/// Where Ctrl-C leaves the state of an epoch in progress ([`RunDir::interrupted`]).
pub fn interrupted_paths(run: &Path) -> (PathBuf, PathBuf) {
    RunDir::new(run).interrupted()
}

/// The epochs that have a complete checkpoint ([`RunDir::saved_epochs`]).
pub fn saved_epochs(run: &Path) -> Vec<usize> {
    RunDir::new(run).saved_epochs()
}

/// Writes the config of a (re)start and the network it built, side by side in the run directory.
pub fn record_run(run: &Path, c: &Config, graph: &models::graph::Graph) -> Result<(), RunFilesError> {
    let dir = RunDir::new(run);
    dir.create()?;
    let path = dir.config_path();
    let text = toml::to_string_pretty(c).map_err(|e| RunFilesError::Encode { path: path.clone(), reason: e.to_string() })?;
    std::fs::write(&path, text).map_err(io(&path))?;
    Ok(dir.write_graph(graph)?)
}

/// Writes `path` atomically: `write` fills a temporary file in the same folder, which is flushed, then
/// renamed.
fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<(), RunFilesError>) -> Result<(), RunFilesError> {
    let tmp = path.with_extension(format!("{}.tmp", path.extension().and_then(|e| e.to_str()).unwrap_or("")));
    write(&tmp)?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Saves weights, buffers and optimizer state, then the side file; the side file is written last, so a
/// checkpoint is complete only when both exist (a crash in between leaves the previous one as the latest).
pub fn save_checkpoint(run: &Path, net: &Net, opt: &Optimizer, info: &CheckpointInfo) -> Result<(), RunFilesError> {
    let (weights, side) = if info.step > 0 { interrupted_paths(run) } else { checkpoint_paths(run, info.epoch) };
    let dir = weights.parent().expect("a checkpoint lies in a folder");
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    // contiguous(): with channels-last compute the 4-d weights and their optimizer state are not in
    // the standard layout, which is the only one safetensors stores (a no-op copy otherwise).
    let mut named: Vec<(String, Tensor)> = net.params.iter().map(|(k, v)| (k.clone(), v.contiguous())).collect();
    named.extend(opt.to_named().into_iter().map(|(k, v)| (k, v.contiguous())));
    write_atomic(&weights, |tmp| Tensor::write_safetensors(&named, tmp).map_err(|source| RunFilesError::Tensors { path: tmp.to_path_buf(), source }))?;
    let json = serde_json::to_vec_pretty(info).map_err(|e| RunFilesError::Encode { path: side.clone(), reason: e.to_string() })?;
    write_atomic(&side, |tmp| std::fs::write(tmp, &json).map_err(io(tmp)))
}

pub fn load_checkpoint_info(run: &Path, epoch: usize) -> Result<CheckpointInfo, RunFilesError> {
    let (_, side) = checkpoint_paths(run, epoch);
    let text = std::fs::read_to_string(&side).map_err(|source| RunFilesError::NoCheckpoint { epoch, side: side.clone(), source })?;
    serde_json::from_str(&text).map_err(|source| RunFilesError::Damaged { path: side, source })
}

/// The side file of the step where Ctrl-C stopped `run` (`trainer train --resume`).
pub fn load_interrupted(run: &Path) -> Result<CheckpointInfo, RunFilesError> {
    let (_, side) = interrupted_paths(run);
    let text = std::fs::read_to_string(&side).map_err(|source| RunFilesError::NotInterrupted { run: run.to_path_buf(), side: side.clone(), source })?;
    serde_json::from_str(&text).map_err(|source| RunFilesError::Damaged { path: side, source })
}

/// Loads a checkpoint's weights (and optimizer state into `opt` when given).
pub fn restore(run: &Path, epoch: usize, net: &mut Net, opt: Option<&mut Optimizer>) -> Result<(), RunFilesError> {
    restore_from(&checkpoint_paths(run, epoch).0, net, opt)
}

pub(crate) fn restore_from(weights: &Path, net: &mut Net, opt: Option<&mut Optimizer>) -> Result<(), RunFilesError> {
    net.load(weights).map_err(|source| RunFilesError::Weights { path: weights.to_path_buf(), source })?;
    if let Some(opt) = opt {
        let named: BTreeMap<String, Tensor> =
            Tensor::read_safetensors(weights).map_err(|source| RunFilesError::Tensors { path: weights.to_path_buf(), source })?.into_iter().collect();
        opt.load_named(&named);
    }
    Ok(())
}

/// `metrics-from-NNNN.jsonl` of one (re)start and the human log all restarts append to.
pub(crate) struct RunLog {
    /// (metrics log, human log); `None` writes nothing.
    #[allow(clippy::type_complexity)]
    files: Option<((PathBuf, std::fs::File), (PathBuf, std::fs::File))>,
}

impl RunLog {
    pub(crate) fn open(run: &Path, start: usize) -> Result<Self, RunFilesError> {
        let dir = RunDir::new(run);
        let (metrics, human) = (dir.metrics_log(start), dir.human_log());
        let m = std::fs::File::create(&metrics).map_err(io(&metrics))?;
        let h = std::fs::OpenOptions::new().create(true).append(true).open(&human).map_err(io(&human))?;
        Ok(Self { files: Some(((metrics, m), (human, h))) })
    }
    /// A log that writes nothing: the ranks other than 0 of a multi-process run.
    pub(crate) fn silent() -> Self {
        Self { files: None }
    }
    pub(crate) fn json(&mut self, v: &serde_json::Value) -> Result<(), RunFilesError> {
        let Some(((path, file), _)) = &mut self.files else { return Ok(()) };
        writeln!(file, "{v}").map_err(io(path))
    }
    pub(crate) fn say(&mut self, line: &str) -> Result<(), RunFilesError> {
        let Some((_, (path, file))) = &mut self.files else { return Ok(()) };
        tracing::info!("{line}");
        writeln!(file, "{line}").map_err(io(path))
    }
}
