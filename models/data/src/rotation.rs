//! Orientation classes: the rotation each label names. `trainer prepare orientation` writes the labels
//! (one per angle of [`ANGLES`]); `trainer orientation-correct` and `edge-demo orientation` read them
//! back here.

pub use crate::prepare::simple::ANGLES;

/// The clockwise rotation in degrees that an orientation class label names: one of [`ANGLES`], as
/// `trainer prepare orientation` writes it ("90"), or with a unit ("90deg", "90°"); None for any other
/// label.
pub fn angle_of(label: &str) -> Option<u32> {
    label.trim().trim_end_matches("deg").trim_end_matches('°').parse().ok().filter(|a| ANGLES.contains(a))
}

#[cfg(test)]
mod tests {
    use super::angle_of;

    #[test]
    fn reads_rotation_labels() {
        assert_eq!(angle_of("90"), Some(90));
        assert_eq!(angle_of(" 0 "), Some(0));
        assert_eq!(angle_of("270deg"), Some(270));
        assert_eq!(angle_of("180°"), Some(180));
        assert_eq!(angle_of("45"), None);
        assert_eq!(angle_of("360"), None);
        assert_eq!(angle_of("-90"), None);
        assert_eq!(angle_of("cat"), None);
    }
}
