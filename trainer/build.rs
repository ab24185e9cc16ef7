//! Links libtorch_cuda for real when the libtorch we build against has it.
//!
//! torch-sys asks for `-ltorch_cuda`, but the linker's default `--as-needed` drops it because no symbol
//! of ours refers to it, and then `tch::Cuda::is_available()` is false even on a GPU machine
//! (the team's verified toolchain notes). Wrapping it in `--no-as-needed` keeps it in the binary's NEEDED list.
//! `rustc-link-arg` reaches this crate's own binaries, tests and benches.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-changed=build.rs");
    let Ok(libtorch) = std::env::var("LIBTORCH") else {
        println!("cargo:warning=LIBTORCH is not set: run scripts/setup.sh (or `make setup`) first");
        return;
    };
    let lib = PathBuf::from(&libtorch).join("lib");
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-L{}", lib.display());
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
        println!("cargo:rustc-cfg=libtorch_cuda");
    }
    println!("cargo:rustc-check-cfg=cfg(libtorch_cuda)");
    // The exact libtorch version, for `trainer doctor` and run directories.
    let version = std::fs::read_to_string(PathBuf::from(&libtorch).join("version.py"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("__version__ = ").map(|v| v.trim_matches(['\'', '"']).to_string())))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=DLCV_LIBTORCH_VERSION={version}");
    println!("cargo:rustc-env=DLCV_LIBTORCH_DIR={libtorch}");
}
