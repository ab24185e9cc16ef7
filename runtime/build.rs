//! 1. Records, at build time, the libonnxruntime.so that scripts/setup.sh installed (passed by the generated
//!    `.cargo/config.toml` as DLCV_ORT_DYLIB), so the binaries find ONNX Runtime with nothing exported.
//!    `ORT_DYLIB_PATH` still overrides it at run time.
//! 2. Compiles `proto/inference.proto` (the Open Inference Protocol with Triton's extensions) with protox, a
//!    pure-Rust protobuf compiler, so no system `protoc` is needed; tonic + prost generate the messages and
//!    the gRPC service from it, and the encoded descriptors are kept for prost-reflect (config.pbtxt, JSON).
use prost::Message;

fn main() {
    println!("cargo:rerun-if-env-changed=DLCV_ORT_DYLIB");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=proto/inference.proto");
    match std::env::var("DLCV_ORT_DYLIB") {
        Ok(p) => println!("cargo:rustc-env=DLCV_ORT_DYLIB={p}"),
        Err(_) => println!("cargo:warning=DLCV_ORT_DYLIB is not set: run scripts/setup.sh first, or set ORT_DYLIB_PATH at run time"),
    }
    let fds = match protox::compile(["inference.proto"], ["proto"]) {
        Ok(fds) => fds,
        Err(e) => panic!("proto/inference.proto: {e}"),
    };
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("inference.bin"), fds.encode_to_vec()).expect("write the descriptor set to OUT_DIR");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .bytes(".inference.ModelInferRequest.raw_input_contents")
        .bytes(".inference.ModelInferResponse.raw_output_contents")
        .compile_fds(fds)
        .expect("generate the gRPC service from proto/inference.proto");
}
