//! The builders of `trainer prepare folder | fer2013 | orientation` under their first names: each now
//! has its own file ([`super::folder`], [`super::fer2013`], [`super::orientation`]); this module keeps
//! the old paths (`data::prepare::simple::build_folder`, …) working.

pub use super::fer2013::{build as build_fer2013, Fer2013Options, FER_LABELS};
pub use super::folder::{build as build_folder, FolderOptions};
pub use super::orientation::{build as build_orientation, OrientationOptions, ANGLES};
pub use crate::files::{is_image, rel, IMAGE_EXTENSIONS};
