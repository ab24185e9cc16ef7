//! Classification metrics as the book reports them: rank-1, rank-5, one-off (ordinal labels such as age
//! bins: the prediction is at most one class away), plus per-class precision / recall / F1 and the
//! confusion matrix. They are written once, in `data::metrics` (which `trainer logreg` reports with
//! too); this module keeps their paths.

pub use data::metrics::{ClassScores, ClassScores as ClassReport, Counts, Summary};
