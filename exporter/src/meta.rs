//! The metadata an exported file carries (`metadata_props`), so that the runtime, the inference server
//! and the video CLI need no second config: what the network is, its labels, and exactly how an image
//! becomes its input.

use std::collections::BTreeMap;

/// The key prefix of every entry this toolchain writes.
pub const PREFIX: &str = "dlcv.";

/// How an image becomes the network's input (what training did for validation images).
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocessing {
    /// `[C, H, W]`.
    pub input: [usize; 3],
    /// Per-channel mean and standard deviation in 0–255 pixel units: x = (pixel - mean) / std.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    /// The shorter side is resized to this before the centre crop (0: no resize).
    pub resize_short_side: u32,
}

/// Everything written into `metadata_props` when the file is lowered; `dlcv.parity` is added once the
/// written file has passed the parity check (`exporter::parity::Report`).
#[derive(Debug, Clone)]
pub struct ModelMeta {
    pub architecture: String,
    pub task: String,
    pub labels: Vec<String>,
    pub preprocessing: Preprocessing,
    pub run: String,
    pub epoch: usize,
    /// The labels are ordered (age bins): the runtime then also reports one-off accuracy.
    pub ordinal: bool,
}

impl ModelMeta {
    pub fn to_props(&self) -> BTreeMap<String, String> {
        let p = &self.preprocessing;
        let list = |v: &[f32]| format!("[{}]", v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", "));
        let mut m = BTreeMap::new();
        let mut put = |k: &str, v: String| {
            m.insert(format!("{PREFIX}{k}"), v);
        };
        put("architecture", self.architecture.clone());
        put("task", self.task.clone());
        put("ordinal", self.ordinal.to_string());
        put("labels", serde_json::to_string(&self.labels).expect("strings serialise"));
        put("input_size", format!("{}x{}", p.input[2], p.input[1]));
        put("input_channels", p.input[0].to_string());
        put("layout", "nchw".into());
        put("channel_order", if p.input[0] == 1 { "gray".into() } else { "rgb".into() });
        put("grayscale", (p.input[0] == 1).to_string());
        put("mean", list(&p.mean));
        put("std", list(&p.std));
        put("resize_short_side", p.resize_short_side.to_string());
        put("crop", "center".into());
        put("outputs", "probabilities (softmax over classes)".into());
        put("run", self.run.clone());
        put("epoch", self.epoch.to_string());
        put("producer", format!("dlcv exporter {}", models::VERSION));
        m
    }
}
