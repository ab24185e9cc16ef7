//! The run directory's bookkeeping (its layout is [`crate::run_dir::RunDir`]'s): the config and graph of
//! every (re)start, checkpoints with their side files, the interrupted step, and the metrics and human
//! logs.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::config::Config;
use crate::evaluation::EpochMetrics;
use crate::net::Net;
use crate::optim::Optimizer;
use crate::run_dir::RunDir;

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
pub fn record_run(run: &Path, c: &Config, graph: &models::graph::Graph) -> Result<()> {
    let dir = RunDir::new(run);
    dir.create()?;
    std::fs::write(dir.config_path(), toml::to_string_pretty(c)?).with_context(|| format!("writing {}", dir.config_path().display()))?;
    Ok(dir.write_graph(graph)?)
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, flushed, then renamed.
fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = path.with_extension(format!("{}.tmp", path.extension().and_then(|e| e.to_str()).unwrap_or("")));
    write(&tmp)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// Saves weights, buffers and optimizer state, then the side file; the side file is written last, so a
/// checkpoint is complete only when both exist (a crash in between leaves the previous one as the latest).
pub fn save_checkpoint(run: &Path, net: &Net, opt: &Optimizer, info: &CheckpointInfo) -> Result<()> {
    let (weights, side) = if info.step > 0 { interrupted_paths(run) } else { checkpoint_paths(run, info.epoch) };
    std::fs::create_dir_all(weights.parent().unwrap())?;
    // contiguous(): with channels-last compute the 4-d weights and their optimizer state are not in
    // the standard layout, which is the only one safetensors stores (a no-op copy otherwise).
    let mut named: Vec<(String, Tensor)> = net.params.iter().map(|(k, v)| (k.clone(), v.contiguous())).collect();
    named.extend(opt.to_named().into_iter().map(|(k, v)| (k, v.contiguous())));
    write_atomic(&weights, |tmp| Ok(Tensor::write_safetensors(&named, tmp)?))?;
    write_atomic(&side, |tmp| Ok(std::fs::write(tmp, serde_json::to_vec_pretty(info)?)?))
}

pub fn load_checkpoint_info(run: &Path, epoch: usize) -> Result<CheckpointInfo> {
    let (_, side) = checkpoint_paths(run, epoch);
    let text = std::fs::read_to_string(&side).with_context(|| format!("no checkpoint for epoch {epoch}: {}", side.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: damaged checkpoint side file", side.display()))
}

/// Loads a checkpoint's weights (and optimizer state into `opt` when given).
pub fn restore(run: &Path, epoch: usize, net: &mut Net, opt: Option<&mut Optimizer>) -> Result<()> {
    restore_from(&checkpoint_paths(run, epoch).0, net, opt)
}

pub(crate) fn restore_from(weights: &Path, net: &mut Net, opt: Option<&mut Optimizer>) -> Result<()> {
    net.load(weights)?;
    if let Some(opt) = opt {
        let named: BTreeMap<String, Tensor> = Tensor::read_safetensors(weights)?.into_iter().collect();
        opt.load_named(&named);
    }
    Ok(())
}

/// `metrics-from-NNNN.jsonl` of one (re)start and the human log all restarts append to.
pub(crate) struct RunLog {
    metrics: std::fs::File,
    human: std::fs::File,
}

impl RunLog {
    pub(crate) fn open(run: &Path, start: usize) -> Result<Self> {
        let dir = RunDir::new(run);
        let metrics = std::fs::File::create(dir.metrics_log(start)).with_context(|| format!("creating {}", dir.metrics_log(start).display()))?;
        let human =
            std::fs::OpenOptions::new().create(true).append(true).open(dir.human_log()).with_context(|| format!("opening {}", dir.human_log().display()))?;
        Ok(Self { metrics, human })
    }
    pub(crate) fn json(&mut self, v: &serde_json::Value) -> Result<()> {
        writeln!(self.metrics, "{v}")?;
        Ok(())
    }
    pub(crate) fn say(&mut self, line: &str) -> Result<()> {
        tracing::info!("{line}");
        writeln!(self.human, "{line}")?;
        Ok(())
    }
}
