//! The IDX readers of `data::idx`, under the path other crates used when the trainer held IDX sets in
//! memory (it now packs them into records, see [`crate::idx_records`]).

pub use data::idx::{idx_files, read_idx, DataError};
