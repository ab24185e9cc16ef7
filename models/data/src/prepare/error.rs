//! What can stop a dataset builder or [`super::write`]. A row, box or file that is merely unusable is not
//! an error: it is dropped and listed in the report with its reason. These are the problems that leave
//! nothing sensible to build: a file that cannot be read, a label map that does not parse, an option
//! out of range. Every variant names the file (and line) or the option it is about; the underlying
//! error, where there is one, is the [`source`](std::error::Error::source), so `{:#}` on an
//! `anyhow::Error` prints the whole chain.

use std::path::{Path, PathBuf};

use crate::folder::FolderError;
use crate::idx::DataError;
use crate::records::RecordError;

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// A file or folder could not be opened, read or listed; `doing` says which, e.g. "reading".
    #[error("{doing} {path}")]
    Io {
        doing: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A CSV file could not be opened or one of its records not read (the `csv` error has the line).
    #[error("{doing} {path}")]
    Csv {
        doing: &'static str,
        path: PathBuf,
        #[source]
        source: csv::Error,
    },
    /// An XML file is not well-formed.
    #[error("{path}:{line}:{column}: not well-formed XML")]
    Xml {
        path: PathBuf,
        line: u32,
        column: u32,
        #[source]
        source: roxmltree::Error,
    },
    /// Line `line` of a file the builder cannot do without (a header, a label map, a blacklist) is wrong.
    #[error("{path}:{line}: {reason}")]
    Parse { path: PathBuf, line: usize, reason: String },
    /// A file is wrong as a whole (empty, the wrong root element, out of step with another file).
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },
    /// A fraction option (`test fraction`, …) outside 0..=1.
    #[error("{option} {value} is not between 0 and 1")]
    Fraction { option: &'static str, value: f64 },
    /// An option out of its range, e.g. `--max-side 10` below `--min-side`.
    #[error("{option}: {why}")]
    Setting { option: &'static str, why: String },
    /// A class of the class filter is empty or repeated.
    #[error("class filter {classes:?}: '{class}' is empty or listed twice")]
    ClassFilter { classes: Vec<String>, class: String },
    /// Fewer label names were given than the data has classes.
    #[error("{given} label names for {classes} classes")]
    LabelNames { given: usize, classes: usize },
    /// The IDX images file and labels file of one prefix disagree.
    #[error("{images} {image_dims:?} and {labels} {label_dims:?} do not describe one image set")]
    IdxMismatch { images: PathBuf, image_dims: Vec<usize>, labels: PathBuf, label_dims: Vec<usize> },
    /// A folder dataset without class sub-folders.
    #[error("{root}: no class sub-folders (expected ROOT/<class>/<images>)")]
    NoClassFolders { root: PathBuf },
    /// An Adience fold directory without fold files.
    #[error("no Adience fold files (fold_N_data.txt or fold_frontal_N_data.txt) in {dir}")]
    NoFoldFiles { dir: PathBuf },
    /// An ImageNet class with fewer training images than the test split takes from every class.
    #[error("{list}: class {wnid} ({name}, {map} line {map_line}) has {have} usable training images, fewer than the {want} to move to the test split")]
    TooFewTrainImages { list: PathBuf, wnid: String, name: String, map: &'static str, map_line: usize, have: usize, want: usize },
    #[error(transparent)]
    Idx(#[from] DataError),
    #[error(transparent)]
    Folder(#[from] FolderError),
    /// Packing the record file `path` failed.
    #[error("packing {path}")]
    Pack {
        path: PathBuf,
        #[source]
        source: RecordError,
    },
}

/// `map_err` helper: an [`PrepareError::Io`] while `doing` something to `path`.
pub(crate) fn io<'a>(doing: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> PrepareError + 'a {
    move |source| PrepareError::Io { doing, path: path.to_path_buf(), source }
}

/// `map_err` helper: a [`PrepareError::Csv`] while `doing` something to `path`.
pub(crate) fn csv_err<'a>(doing: &'static str, path: &'a Path) -> impl FnOnce(csv::Error) -> PrepareError + 'a {
    move |source| PrepareError::Csv { doing, path: path.to_path_buf(), source }
}

/// `fs::read_to_string` whose error names the file.
pub(crate) fn read_text(path: &Path) -> Result<String, PrepareError> {
    std::fs::read_to_string(path).map_err(io("reading", path))
}
