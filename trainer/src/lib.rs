//! `trainer`: everything that runs on libtorch (through `tch`). This is the only crate that links it.

pub mod cli;
pub mod data;
pub mod dataset;
pub mod device;
pub mod doctor;
pub mod features;
pub mod import;
pub mod logreg;
pub mod net;
pub mod optim;
pub mod orientation;
pub mod parallel;
pub mod plot;
pub mod progress;
pub mod run_dir;
pub mod train;

/// The libtorch version this binary was built against (read from the torch package at build time).
pub const LIBTORCH_VERSION: &str = env!("DLCV_LIBTORCH_VERSION");
