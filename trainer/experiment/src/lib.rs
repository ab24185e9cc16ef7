//! `experiment`: the pure-Rust parts of the book's experiment workflow, beside the trainer that runs
//! libtorch: the run directory ([`run_dir::RunDir`]), the training plots ([`plot`]), the features
//! file ([`features`]) and the logistic-regression head fitted on it ([`logreg`]). No libtorch:
//! their tests run on any machine, and the trainer re-exports them under its own paths.

pub mod features;
pub mod logreg;
pub mod plot;
pub mod run_dir;
