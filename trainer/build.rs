//! Links libtorch_cuda for real when the libtorch we build against has it.
//!
//! torch-sys asks for `-ltorch_cuda`, but the linker's default `--as-needed` drops it because no symbol
//! of ours refers to it, and then `tch::Cuda::is_available()` is false even on a GPU machine
//! (the team's verified toolchain notes). Wrapping it in `--no-as-needed` keeps it in the binary's NEEDED list.
//! `rustc-link-arg` reaches this crate's own binaries, tests and benches.
//!
//! It also compiles the trainer's bridge to libtorch's c10d (`csrc/`, the collectives of
//! multi-process training) against the same libtorch: Gloo always (its headers come from Debian's
//! `libgloo-dev`, installed by scripts/setup.sh; no Gloo symbol is linked, libtorch_cpu has them), NCCL
//! when libtorch has CUDA and the CUDA crt/CCCL headers and `nccl.h` are in the venv
//! (requirements.txt); `trainer doctor` reports which (cfg `c10d_nccl`). The same library bridges
//! libtorch's fused optimizer kernels, which tch has no bindings for (`csrc/optim_shim.cpp`), and its
//! device-generic streams and events (`csrc/stream_shim.cpp`).
use std::path::{Path, PathBuf};

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
    println!("cargo:rustc-check-cfg=cfg(c10d_nccl)");
    build_c10d(Path::new(&libtorch), &lib);
    // The exact libtorch version, for `trainer doctor` and run directories.
    let version = std::fs::read_to_string(PathBuf::from(&libtorch).join("version.py"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("__version__ = ").map(|v| v.trim_matches(['\'', '"']).to_string())))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=DLCV_LIBTORCH_VERSION={version}");
    println!("cargo:rustc-env=DLCV_LIBTORCH_DIR={libtorch}");
}

/// Compiles `csrc/c10d_shim.cpp` (and `c10d_nccl.cpp` when it can) and `csrc/optim_shim.cpp` (the fused
/// optimizer kernels, see src/fused.rs) into a static library.
fn build_c10d(libtorch: &Path, lib: &Path) {
    for f in ["c10d_shim.h", "c10d_shim.cpp", "c10d_nccl.cpp", "optim_shim.cpp", "stream_shim.cpp"] {
        println!("cargo:rerun-if-changed=csrc/{f}");
    }
    let gloo = ["/usr/include/gloo/algorithm.h"].iter().map(PathBuf::from).find(|p| p.exists());
    if gloo.is_none() {
        panic!("Gloo's headers (/usr/include/gloo) are missing: run scripts/setup.sh (Debian package libgloo-dev)");
    }
    let include = libtorch.join("include");
    let mut b = cc::Build::new();
    b.cpp(true)
        .std("c++17")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .define("USE_C10D_GLOO", None)
        // libtorch's headers are not warning-clean under -Wall; ours are checked by reading them
        .warnings(false)
        .file("csrc/c10d_shim.cpp")
        .file("csrc/optim_shim.cpp")
        .file("csrc/stream_shim.cpp");
    // The venv's CUDA pieces: site-packages/nvidia next to site-packages/torch.
    let nvidia = libtorch.parent().map(|s| s.join("nvidia")).unwrap_or_default();
    let cu = nvidia.join("cu13/include");
    let nccl_inc = nvidia.join("nccl/include");
    let have_nccl = lib.join("libtorch_cuda.so").exists()
        && cu.join("cuda_runtime_api.h").exists()
        && cu.join("crt/host_config.h").exists()
        && cu.join("cccl/cuda/std/version").exists()
        && nccl_inc.join("nccl.h").exists();
    if have_nccl {
        b.define("DLCV_WITH_NCCL", None)
            .define("USE_C10D_NCCL", None)
            .define("USE_CUDA", None)
            .include(&cu)
            .include(cu.join("cccl"))
            .include(&nccl_inc)
            .file("csrc/c10d_nccl.cpp");
        println!("cargo:rustc-cfg=c10d_nccl");
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-lc10_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    } else {
        println!(
            "cargo:rustc-env=DLCV_NCCL_MISSING=libtorch_cuda.so, the CUDA crt/CCCL headers (PyPI nvidia-cuda-crt, nvidia-cuda-cccl) or nccl.h were not found next to {}",
            libtorch.display()
        );
    }
    b.compile("dlcv_c10d");
    // the shim's own references into libtorch (c10d lives in libtorch_cpu)
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
}
