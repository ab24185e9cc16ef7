//! `trainer`: everything that runs on libtorch (through `tch`). This is the only crate that links it.

pub mod data;
pub mod dataset;
pub mod device;
pub mod doctor;
pub mod features;
pub mod idx_records;
pub mod import;
pub mod net;
pub mod optim;
pub mod orientation;
pub mod parallel;
pub mod progress;
pub mod train;

// The run directory, plots, the features file and the logistic-regression head are pure Rust: they
// live in trainer/experiment and are re-exported here under their old paths.
pub use experiment::{features as features_file, logreg, plot, run_dir};

/// The libtorch version this binary was built against (read from the torch package at build time).
pub const LIBTORCH_VERSION: &str = env!("DLCV_LIBTORCH_VERSION");
