//! Helpers for the cross-crate tests in `tests/tests/`: where the built binaries and the repository's assets are.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The project's Python (scripts/setup.sh makes it), or `DLCV_PYTHON`: the oracles and peers run in it.
pub fn python() -> PathBuf {
    std::env::var_os("DLCV_PYTHON").map(PathBuf::from).unwrap_or_else(|| repo_root().join(".venv/bin/python"))
}

/// A JSON-lines file, one value per line.
pub fn json_lines(p: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// `edge-demo/assets` in the repository: the FER2013 emotion model made elsewhere (`fer_emotion.onnx`) and
/// three public-domain portraits (`faces/`); provenance and licences in its README.md.
pub fn assets_dir() -> PathBuf {
    repo_root().join("edge-demo").join("assets")
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

/// A path as a command-line argument (test paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// A new empty scratch folder `dlcv-NAME-XXXXXX` in the temp dir, unique to this call (tests running in
/// parallel never share one) and removed with its contents when the returned guard drops.
pub fn fresh_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("dlcv-{name}-")).tempdir().unwrap_or_else(|e| panic!("cannot create a scratch folder for {name}: {e}"))
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

/// The classes of [`pattern_dataset`], in label order.
pub const PATTERNS: [&str; 3] = ["horizontal", "vertical", "diagonal"];

/// One `size`×`size` RGB image of pattern class `class` (0 horizontal, 1 vertical, other diagonal
/// stripes) with a period, phase and colour drawn from `seed`, over noise.
pub fn pattern_image(class: usize, size: u32, seed: u64) -> data::image::RgbImage {
    use data::image::{Rgb, RgbImage};
    let mut rng = data::rng::Xorshift64::seeded(seed);
    let mut next = move |n: u32| rng.below(u64::from(n)) as u32;
    let (period, phase) = (4 + next(5), next(8));
    let colour = [80 + next(176) as u8, 80 + next(176) as u8, 80 + next(176) as u8];
    let noise: Vec<u32> = (0..size * size).map(|_| next(40)).collect();
    RgbImage::from_fn(size, size, |x, y| {
        let t = match class {
            0 => y,
            1 => x,
            _ => x + y,
        };
        let on = (t + phase) % period < period / 2;
        let n = noise[(y * size + x) as usize] as u8;
        Rgb(colour.map(|c| if on { c.saturating_sub(n) } else { n }))
    })
}

/// Writes a small, learnable image-classification set in the `folder` layout (`dir/<class>/<n>.png`):
/// `per_class` images of [`pattern_image`] per class of [`PATTERNS`]. A network learns it in one or two
/// epochs, so a wrong preprocessing step shows up as lost accuracy.
pub fn pattern_dataset(dir: &Path, per_class: usize, size: u32, seed: u64) {
    for (class, name) in PATTERNS.iter().enumerate() {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).expect("create class folder");
        for i in 0..per_class {
            let img = pattern_image(class, size, seed.wrapping_mul(1000).wrapping_add((class * per_class + i) as u64));
            img.save(d.join(format!("{i:03}.png"))).expect("write png");
        }
    }
}

/// Writes zoo model `arch` with `labels.len()` classes and `channels` input channels, with deterministic
/// untrained weights (each parameter's own initial value; weights uniform in ±1/√fan-in), as one of our
/// self-describing ONNX files (labels and preprocessing in its metadata) at `path`. For tests that need
/// a real exported file fast and do not care what it learned.
pub fn untrained_onnx(arch: &str, labels: &[&str], channels: usize, path: &Path) {
    use models::graph::ParamInit;
    use models::meta::{Crop, Layout, ModelMeta, Preprocessing, Task};
    let net = models::zoo::build(arch, Some(labels.len()), Some(channels)).unwrap_or_else(|e| panic!("{arch}: {e}"));
    let mut rng = data::rng::Xorshift64::seeded(11);
    let mut weights = exporter::lower::Weights::new();
    for p in net.params() {
        let n: usize = p.shape.iter().product();
        let values = match p.init {
            ParamInit::Zeros => vec![0.0; n],
            ParamInit::Ones => vec![1.0; n],
            ParamInit::Const(c) => vec![c as f32; n],
            ParamInit::Scheme => {
                let a = 1.0 / (p.fan_in.max(1) as f32).sqrt();
                rng.uniform(n, -a, a)
            }
        };
        weights.insert(p.name.clone(), (p.shape.clone(), values));
    }
    let input = net.input_shape();
    let pre = Preprocessing { input, layout: Layout::Nchw, mean: vec![120.0; input[0]], std: vec![60.0; input[0]], resize_short_side: 0, crop: Crop::Stretch };
    let meta = ModelMeta::new(arch, Task::Classification, labels.iter().map(|l| l.to_string()).collect(), pre);
    let opts = exporter::lower::LowerOptions { metadata: meta.to_props(), ..Default::default() };
    exporter::lower::write(&net, &weights, &opts, path).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}
