//! Records, at build time, the libonnxruntime.so that scripts/setup.sh installed (passed by the generated
//! `.cargo/config.toml` as DLCV_ORT_DYLIB), so the binaries find ONNX Runtime with nothing exported.
//! `ORT_DYLIB_PATH` still overrides it at run time.
fn main() {
    println!("cargo:rerun-if-env-changed=DLCV_ORT_DYLIB");
    println!("cargo:rerun-if-changed=build.rs");
    match std::env::var("DLCV_ORT_DYLIB") {
        Ok(p) => println!("cargo:rustc-env=DLCV_ORT_DYLIB={p}"),
        Err(_) => println!("cargo:warning=DLCV_ORT_DYLIB is not set: run scripts/setup.sh first, or set ORT_DYLIB_PATH at run time"),
    }
}
