//! `trainer`: everything that runs on libtorch (through `tch`). This is the only crate that links it.
//!
//! What is where: `config` (the experiment config), `batches` (record files as normalised, augmented
//! batches), `idx_records` (IDX sets packed into cached record files), `train` (the training loop),
//! `evaluation` (metrics, `trainer eval`), `run_files` (checkpoints and logs in the run directory).

pub mod batches;
pub mod config;
pub mod detection;
pub mod device;
pub mod dist;
pub mod doctor;
pub mod evaluation;
pub mod features;
pub mod fused;
pub mod idx_records;
pub mod import;
pub mod net;
pub mod optim;
pub mod orientation;
pub mod progress;
pub mod rcnn;
pub mod run_files;
pub mod step;
pub mod streams;
pub mod train;

// The run directory, plots, the features file and the logistic-regression head are pure Rust: they
// live in trainer/experiment and are re-exported here under their old paths.
pub use experiment::{features as features_file, logreg, plot, run_dir};

/// The old path of [`batches`] (`RecordBatches` was `Dataset`).
pub mod dataset {
    pub use crate::batches::{RecordBatches as Dataset, *};
    pub use crate::train::step_seed;
}

/// The IDX readers of `data::idx` under the path other crates used when the trainer held IDX sets in
/// memory (it now packs them into records: [`crate::idx_records`]).
pub mod data {
    pub use ::data::idx::{idx_files, read_idx, DataError};
}

/// The libtorch version this binary was built against (read from the torch package at build time).
pub const LIBTORCH_VERSION: &str = env!("DLCV_LIBTORCH_VERSION");
