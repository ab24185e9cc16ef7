//! `labels.txt`: one class name per line, line i = class i. The one reader of the workspace (the
//! trainer's prepared folders, `--labels FILE` in runtime and edge-demo).

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LabelsError {
    #[error("labels file {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("labels file {}: line {line} is empty", path.display())]
    EmptyLine { path: PathBuf, line: usize },
}

/// Parses labels text: each line trimmed, blank lines at the end ignored, a blank line before the last
/// label an error (it would shift every later class by one).
pub fn parse(text: &str, path: &Path) -> Result<Vec<String>, LabelsError> {
    let labels: Vec<String> = text.trim_end().lines().map(|l| l.trim().to_string()).collect();
    if labels.len() == 1 && labels[0].is_empty() {
        return Ok(vec![]);
    }
    if let Some(i) = labels.iter().position(String::is_empty) {
        return Err(LabelsError::EmptyLine { path: path.to_path_buf(), line: i + 1 });
    }
    Ok(labels)
}

/// Reads a labels file.
pub fn read(path: &Path) -> Result<Vec<String>, LabelsError> {
    let text = std::fs::read_to_string(path).map_err(|source| LabelsError::Io { path: path.to_path_buf(), source })?;
    parse(&text, path)
}

/// Writes a labels file (one per line, a newline after each).
pub fn write(path: &Path, labels: &[String]) -> Result<(), LabelsError> {
    let text: String = labels.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(path, text).map_err(|source| LabelsError::Io { path: path.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_ignores_trailing_blank_lines_and_refuses_holes() {
        let p = Path::new("l.txt");
        assert_eq!(parse(" cat \ndog\r\n\n\n", p).unwrap(), ["cat", "dog"]);
        assert_eq!(parse("", p).unwrap(), Vec::<String>::new());
        let e = parse("cat\n\ndog\n", p).unwrap_err();
        assert!(matches!(e, LabelsError::EmptyLine { line: 2, .. }), "{e}");
        assert_eq!(e.to_string(), "labels file l.txt: line 2 is empty");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("labels.txt");
        write(&f, &["a b".into(), "c".into()]).unwrap();
        assert_eq!(read(&f).unwrap(), ["a b", "c"]);
        assert!(read(&dir.path().join("none.txt")).unwrap_err().to_string().contains("none.txt"));
    }
}
