//! The model-repository contract, shared by the writer (`exporter triton`) and the reader (`runtime
//! serve`): Triton's layout `DIR/NAME/config.pbtxt`, `DIR/NAME/VERSION/model.onnx`, labels beside the
//! config; its platform and backend names for ONNX files; and which model names are allowed (a name is
//! a folder name and a URL path segment, so never a path).

/// The file names of an entry, as Triton expects them.
pub const CONFIG_FILE: &str = "config.pbtxt";
pub const MODEL_FILE: &str = "model.onnx";
pub const LABELS_FILE: &str = "labels.txt";
/// Triton's platform and backend for ONNX files.
pub const PLATFORM: &str = "onnxruntime_onnx";
pub const BACKEND: &str = "onnxruntime";
/// Defaults of a written entry, and of a model served without a config (Triton's auto-complete).
pub const DEFAULT_MAX_BATCH: u32 = 8;
pub const DEFAULT_QUEUE_DELAY_US: u64 = 100;

/// Whether `c` may be part of a model name.
pub fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// Why `name` cannot be a model name (one plain folder name of `[A-Za-z0-9_.-]`), or `None` when it can.
pub fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("it is empty")
    } else if name == "." || name == ".." {
        Some("it is not a folder name")
    } else if name.contains(['/', '\\']) {
        Some("it must be one folder name, not a path")
    } else if !name.chars().all(name_char) {
        Some("use only letters, digits, '_', '.' and '-'")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_plain_folder_name() {
        for ok in ["mini-vgg", "resnet_18", "m.v2", "A1"] {
            assert_eq!(name_problem(ok), None, "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "..\\x", "sp ace", "é", "a%2Fb"] {
            assert!(name_problem(bad).is_some(), "{bad:?}");
        }
    }
}
