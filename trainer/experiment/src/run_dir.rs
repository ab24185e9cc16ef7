//! The run directory: one type owns every path in it, so train, init, import, plot, features, eval
//! and the exporter never spell a file name of their own.
//!
//! ```text
//! RUN/config.toml                          the config of the latest (re)start
//! RUN/graph.json                           the resolved network (classes and channels as trained)
//! RUN/checkpoints/epoch-0004.safetensors   weights, buffers and optimizer state (optim.*)
//! RUN/checkpoints/epoch-0004.json          epoch, lr, seed, the config, metrics of that epoch
//! RUN/checkpoints/interrupted.{safetensors,json}   the state Ctrl-C leaves inside an epoch
//! RUN/metrics-from-0002.jsonl              one JSON line per logged step and per epoch, one file per restart
//! RUN/train.log                            the human log, appended by every restart
//! RUN/plot.png                             `trainer plot`'s default output
//! RUN/import.json                          what `trainer import-weights` took from torchvision
//! ```
//!
//! `graph.json` records the graph that was built, so a consumer never guesses a fact the trainer knew
//! (the exporter used to read the class count off `classifier.bias`). Runs made before it existed have
//! none; [`RunDir::graph`] then rebuilds the graph from the config and the checkpoint's head.

use std::path::{Path, PathBuf};

use models::graph::{Graph, Network};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {reason}", path.display())]
    Format { path: PathBuf, reason: String },
    #[error("{}: no checkpoints (make one with `trainer init` or `trainer train`)", run.display())]
    NoCheckpoints { run: PathBuf },
    #[error(transparent)]
    Zoo(#[from] models::zoo::ZooError),
}

/// A run directory (it need not exist yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn config_path(&self) -> PathBuf {
        self.root.join("config.toml")
    }
    pub fn graph_path(&self) -> PathBuf {
        self.root.join("graph.json")
    }
    fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }
    /// The weights and the side file of `epoch`'s checkpoint.
    pub fn checkpoint(&self, epoch: usize) -> (PathBuf, PathBuf) {
        let dir = self.checkpoints();
        (dir.join(format!("epoch-{epoch:04}.safetensors")), dir.join(format!("epoch-{epoch:04}.json")))
    }
    /// Where Ctrl-C leaves the state of an epoch in progress.
    pub fn interrupted(&self) -> (PathBuf, PathBuf) {
        let dir = self.checkpoints();
        (dir.join("interrupted.safetensors"), dir.join("interrupted.json"))
    }
    /// The machine log of the restart at `start`.
    pub fn metrics_log(&self, start: usize) -> PathBuf {
        self.root.join(format!("metrics-from-{start:04}.jsonl"))
    }
    /// Every restart's machine log, by start epoch.
    pub fn metrics_logs(&self) -> Vec<(usize, PathBuf)> {
        let mut v: Vec<(usize, PathBuf)> = std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_string();
                let start = name.strip_prefix("metrics-from-")?.strip_suffix(".jsonl")?.parse().ok()?;
                Some((start, e.path()))
            })
            .collect();
        v.sort();
        v
    }
    pub fn human_log(&self) -> PathBuf {
        self.root.join("train.log")
    }
    pub fn plot_path(&self) -> PathBuf {
        self.root.join("plot.png")
    }
    pub fn import_report(&self) -> PathBuf {
        self.root.join("import.json")
    }

    /// The epochs that have a complete checkpoint (weights and side file), ascending.
    pub fn saved_epochs(&self) -> Vec<usize> {
        let mut v: Vec<usize> = std::fs::read_dir(self.checkpoints())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_prefix("epoch-")?.strip_suffix(".json")?.parse().ok())
            .filter(|&e| self.checkpoint(e).0.is_file())
            .collect();
        v.sort();
        v
    }

    /// After epoch `current`'s checkpoint is saved: deletes the checkpoints (weights and side file) of
    /// the epochs below it but the newest `keep − 1`, and returns the epochs it removed; `keep == 0`
    /// keeps every one (the book's workflow resumes at any epoch). Epoch 0 (the weights `trainer init`
    /// or `import-weights` wrote, which a fresh start restores) is never removed, nor are epochs above
    /// `current`, left by an earlier timeline of a run restarted at an earlier epoch.
    pub fn prune(&self, current: usize, keep: usize) -> Result<Vec<usize>, RunError> {
        if keep == 0 {
            return Ok(Vec::new());
        }
        let older: Vec<usize> = self.saved_epochs().into_iter().filter(|&e| e > 0 && e < current).collect();
        let old = older[..older.len().saturating_sub(keep - 1)].to_vec();
        for &e in &old {
            // the side file first: without it the weights no longer count as a checkpoint
            let (weights, side) = self.checkpoint(e);
            for p in [side, weights] {
                std::fs::remove_file(&p).map_err(|source| RunError::Io { path: p.clone(), source })?;
            }
        }
        Ok(old)
    }

    /// `epoch`, or the latest saved one.
    pub fn epoch_or_latest(&self, epoch: Option<usize>) -> Result<usize, RunError> {
        match epoch {
            Some(e) => Ok(e),
            None => self.saved_epochs().last().copied().ok_or_else(|| RunError::NoCheckpoints { run: self.root.clone() }),
        }
    }

    pub fn create(&self) -> Result<(), RunError> {
        std::fs::create_dir_all(&self.root).map_err(|source| RunError::Io { path: self.root.clone(), source })
    }

    /// Records the network as built.
    pub fn write_graph(&self, g: &Graph) -> Result<(), RunError> {
        let p = self.graph_path();
        std::fs::write(&p, serde_json::to_vec_pretty(g).expect("graphs serialise")).map_err(|source| RunError::Io { path: p, source })
    }

    /// The recorded network, `None` for runs made before `graph.json` existed. A recorded graph is
    /// validated (shapes inferred) before it is returned.
    pub fn read_graph(&self) -> Result<Option<Network>, RunError> {
        let p = self.graph_path();
        if !p.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&p).map_err(|source| RunError::Io { path: p.clone(), source })?;
        let g: Graph = serde_json::from_str(&text).map_err(|e| RunError::Format { path: p.clone(), reason: format!("not a graph: {e}") })?;
        Ok(Some(g.validate().map_err(|e| RunError::Format { path: p, reason: e.to_string() })?))
    }

    /// The run's network: `graph.json`, or for older runs the registry model `model` rebuilt with
    /// `in_channels` and the class count of its head in the checkpoint of `epoch`.
    pub fn graph(&self, model: &str, in_channels: Option<usize>, epoch: usize) -> Result<Network, RunError> {
        self.graph_or_rebuild(model, in_channels, || tensor_shapes(&self.checkpoint(epoch).0))
    }

    fn graph_or_rebuild(
        &self,
        model: &str,
        in_channels: Option<usize>,
        weights: impl FnOnce() -> Result<Vec<(String, Vec<usize>)>, RunError>,
    ) -> Result<Network, RunError> {
        if let Some(g) = self.read_graph()? {
            return Ok(g);
        }
        let weights = weights()?;
        let probe = models::zoo::build(model, None, in_channels)?;
        let head = probe.nodes.iter().rev().find(|n| n.op.is_weight_layer()).map(|n| n.name.clone());
        let classes = head.and_then(|h| weights.iter().find(|(n, _)| *n == format!("{h}.weight")).map(|(_, d)| d[0]));
        let Some(classes) = classes else {
            return Err(RunError::Format {
                path: self.graph_path(),
                reason: format!("missing, and the checkpoint has no head of '{model}' to read the class count from"),
            });
        };
        tracing::warn!(
            "{}: no graph.json (a run from before it was recorded); rebuilt '{model}' with {classes} classes from the checkpoint",
            self.root.display()
        );
        Ok(models::zoo::build(model, Some(classes), in_channels)?)
    }
}

/// The name and shape of every tensor of a safetensors file.
pub fn tensor_shapes(path: &Path) -> Result<Vec<(String, Vec<usize>)>, RunError> {
    let bytes = std::fs::read(path).map_err(|source| RunError::Io { path: path.to_path_buf(), source })?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| RunError::Format { path: path.to_path_buf(), reason: format!("not a safetensors file: {e:?}") })?;
    Ok(meta.tensors().into_iter().map(|(name, info)| (name, info.shape.clone())).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_epochs_and_the_recorded_graph() {
        let t = tempfile::tempdir().unwrap();
        let r = RunDir::new(t.path().join("run"));
        assert!(matches!(r.epoch_or_latest(None), Err(RunError::NoCheckpoints { .. })));
        assert_eq!(r.epoch_or_latest(Some(3)).unwrap(), 3);
        r.create().unwrap();
        std::fs::create_dir_all(r.checkpoint(0).0.parent().unwrap()).unwrap();
        for e in [2, 10] {
            let (w, s) = r.checkpoint(e);
            std::fs::write(w, b"").unwrap();
            std::fs::write(s, b"{}").unwrap();
        }
        // a side file without weights is not a checkpoint
        std::fs::write(r.checkpoint(11).1, b"{}").unwrap();
        assert_eq!(r.saved_epochs(), [2, 10]);
        assert_eq!(r.epoch_or_latest(None).unwrap(), 10);
        assert!(r.checkpoint(10).0.ends_with("checkpoints/epoch-0010.safetensors"));
        // pruning keeps the newest below the current epoch, and 0 keeps all; epoch 0 and the epochs
        // above the current one stay
        for e in [0, 4, 7] {
            std::fs::write(r.checkpoint(e).0, b"").unwrap();
            std::fs::write(r.checkpoint(e).1, b"{}").unwrap();
        }
        assert_eq!(r.prune(10, 0).unwrap(), Vec::<usize>::new());
        assert_eq!(r.prune(10, 5).unwrap(), Vec::<usize>::new());
        // a restart at epoch 3 that saved epoch 4: 7 and 10 belong to the abandoned timeline
        assert_eq!(r.prune(4, 2).unwrap(), Vec::<usize>::new(), "4 and the one below it");
        assert_eq!(r.prune(4, 1).unwrap(), [2]);
        assert_eq!(r.saved_epochs(), [0, 4, 7, 10]);
        assert_eq!(r.prune(10, 2).unwrap(), [4]);
        assert_eq!(r.saved_epochs(), [0, 7, 10]);
        assert!(!r.checkpoint(2).0.exists() && !r.checkpoint(4).1.exists());
        assert!(r.checkpoint(11).1.exists(), "a stray side file is not an epoch checkpoint to prune");
        std::fs::write(r.metrics_log(4), "").unwrap();
        std::fs::write(r.metrics_log(0), "").unwrap();
        assert_eq!(r.metrics_logs().iter().map(|(s, _)| *s).collect::<Vec<_>>(), [0, 4]);

        // no graph.json: rebuilt from the checkpoint's head
        assert_eq!(r.read_graph().unwrap(), None);
        let g7 = models::zoo::build("mini-vgg", Some(7), None).unwrap();
        let head = g7.nodes.iter().rev().find(|n| matches!(n.op, models::graph::Op::Linear { .. })).unwrap().name.clone();
        let weights = vec![(format!("{head}.weight"), vec![7, 512]), (format!("{head}.bias"), vec![7])];
        assert_eq!(r.graph_or_rebuild("mini-vgg", None, || Ok(weights.clone())).unwrap(), g7);
        assert!(r.graph_or_rebuild("mini-vgg", None, || Ok(vec![])).unwrap_err().to_string().contains("graph.json"));
        assert!(r.graph("mini-vgg", None, 10).unwrap_err().to_string().contains("not a safetensors file"));
        // recorded: read back as written, whatever the weights say
        let g3 = models::zoo::build("mini-vgg", Some(3), Some(1)).unwrap();
        r.write_graph(&g3).unwrap();
        assert_eq!(r.graph_or_rebuild("mini-vgg", None, || Ok(weights.clone())).unwrap(), g3);
        std::fs::write(r.graph_path(), "{\"name\": 1}").unwrap();
        assert!(r.read_graph().unwrap_err().to_string().contains("graph.json: not a graph"));
    }
}
