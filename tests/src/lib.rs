//! Helpers for the cross-crate tests in `tests/tests/`: where the built binaries and the shared data are.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// `../shared` beside the repository, where the project's real data and models live.
pub fn shared_dir() -> PathBuf {
    repo_root().join("..").join("shared")
}

/// Runs one of the workspace's binaries with `args` and waits for it.
pub fn run_bin(name: &str, args: &[&str]) -> Output {
    let path = bin(name);
    Command::new(&path).args(args).output().unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()))
}

/// Stdout and stderr of a finished command, for assertion messages.
pub fn text(o: &Output) -> String {
    format!("status {}\n--- stdout\n{}\n--- stderr\n{}", o.status, String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// True where an NVIDIA GPU is visible; GPU tests are `#[ignore]`d and run by `make test-gpu`.
pub fn has_nvidia_gpu() -> bool {
    Path::new("/dev/nvidia0").exists()
}

/// Path of a workspace binary in the same target directory as the running test. `cargo test` does not
/// build other packages' binaries, so a missing one is built here (`cargo build -p NAME --bin NAME`, with
/// the same cargo and profile), which makes a plain `cargo test` work on a fresh clone.
pub fn bin(name: &str) -> PathBuf {
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let exe = std::env::current_exe().expect("current test executable");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("test binary lives in target/<profile>/deps");
    let p = dir.join(name);
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    if !p.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-q", "-p", name, "--bin", name]).current_dir(repo_root());
        if dir.file_name().is_some_and(|d| d == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().unwrap_or_else(|e| panic!("cannot run cargo to build {name}: {e}"));
        assert!(status.success() && p.is_file(), "{} could not be built (cargo build -p {name})", p.display());
    }
    p
}
