//! torchvision's networks, layer for layer, so that their published ImageNet weights load by name:
//! `tv-vgg16` computes what `torchvision.models.vgg16()` computes and `tv-resnet50` what
//! `torchvision.models.resnet50()` computes (torchvision 0.26, `torchvision/models/{vgg,resnet}.py`),
//! in eval mode and in train mode. `trainer import-weights` reads a `state_dict` saved as safetensors.
//!
//! `tv-vgg16`: Simonyan & Zisserman 2014, configuration D as torchvision builds it: 13 conv 3x3 pad 1
//! (with bias) -> ReLU, max pool 2x2/2 after each of the five blocks, no BatchNorm; then
//! Linear(25088, 4096) -> ReLU -> Dropout 0.5 -> Linear(4096, 4096) -> ReLU -> Dropout 0.5 -> Linear.
//! torchvision's `AdaptiveAvgPool2d((7, 7))` between the two halves is left out: the registry input is
//! 224x224, where the last pool already gives 7x7 and the adaptive pool is the identity.
//! 138,357,544 parameters with 1000 classes.
//!
//! `tv-resnet50`: He et al. 2015 ("Deep Residual Learning"), post-activation, in torchvision's "v1.5"
//! form: the stride of a bottleneck sits on its 3x3 convolution (the paper puts it on the first 1x1).
//! Stem conv 7x7/2 (64, no bias) -> BN -> ReLU -> max pool 3x3/2 pad 1; stages of (3, 4, 6, 3)
//! bottlenecks, conv 1x1 (w) -> BN -> ReLU -> conv 3x3 (w, stride) -> BN -> ReLU -> conv 1x1 (4w) -> BN,
//! added to the shortcut, then ReLU, w = 64, 128, 256, 512; the first bottleneck of each stage has a
//! downsample shortcut conv 1x1 (4w, stride, no bias) -> BN; global average pool -> Linear.
//! BatchNorm eps 1e-5, momentum 0.1 (torch's defaults), γ learned. 25,557,032 parameters plus 53,120
//! running statistics with 1000 classes.
//!
//! Names: every node carries torchvision's module path (`features.0`, `layer2.0.downsample.1`), so a
//! parameter's name is its `state_dict` key, with one exception, our convention that surgery
//! (`init_skip = ["classifier"]`) and the exporter rely on: the final linear layer is `classifier`
//! (torchvision's `fc` in ResNet, `classifier.6` in VGG). VGG's two hidden linear layers, which
//! torchvision keeps under the same `classifier.` prefix (`classifier.0`, `classifier.3`), are `fc1`
//! and `fc2` here, so that the prefix `classifier` names the head alone. [`Torchvision`] translates
//! between the two namings.
//!
//! Initialisation (used without imported weights, and for a new head after surgery): torchvision
//! draws convolution weights from kaiming_normal, N(0, 2 / fan_out); the nearest scheme of our closed
//! set is MSRAPrelu with slope 0, N(0, 2 / ((fan_in + fan_out) / 2)), the same for the 3x3 convs of
//! equal width (VGG's linear layers: torchvision N(0, 0.01²), here σ ≈ 0.012 and 0.022, the head
//! 0.028 at 1000 classes). Preprocessing: torchvision's ImageNet [`MEAN`] and [`STD`] on RGB pixels.

use super::vgg::{Layer, VGG16};
use super::ModelOptions;
use crate::builder::{conv, max_pool, GraphBuilder};
use crate::graph::{GraphError, Init, Network, NodeId, Op};

/// torchvision's ImageNet mean, (0.485, 0.456, 0.406) x 255, in 0–255 pixel units (RGB).
pub const MEAN: [f64; 3] = [123.675, 116.28, 103.53];
/// torchvision's ImageNet standard deviation, (0.229, 0.224, 0.225) x 255.
pub const STD: [f64; 3] = [58.395, 57.12, 57.375];

/// A registry model that mirrors a torchvision constructor, and how its parameter names differ.
#[derive(Debug, Clone, Copy)]
pub struct Torchvision {
    /// The registry name (`tv-vgg16`).
    pub model: &'static str,
    /// The torchvision constructor (`torchvision.models.vgg16`).
    pub constructor: &'static str,
    /// `(ours, torchvision's)` name prefixes that differ; every other name is the same.
    renames: &'static [(&'static str, &'static str)],
}

/// The torchvision-compatible registry models.
pub static TORCHVISION: &[Torchvision] = &[
    Torchvision { model: "tv-vgg16", constructor: "vgg16", renames: &[("fc1.", "classifier.0."), ("fc2.", "classifier.3."), ("classifier.", "classifier.6.")] },
    Torchvision { model: "tv-resnet50", constructor: "resnet50", renames: &[("classifier.", "fc.")] },
];

impl Torchvision {
    /// The torchvision description of a registry model, or `None` when it has none.
    pub fn of(model: &str) -> Option<&'static Torchvision> {
        TORCHVISION.iter().find(|t| t.model == model)
    }

    /// Our parameter name for a torchvision `state_dict` key, or `None` when the key is not one of
    /// torchvision's names (e.g. `classifier.weight` in a ResNet file is ours, not torchvision's).
    /// Whether the graph has that parameter is for the caller to check.
    pub fn from_torchvision(&self, key: &str) -> Option<String> {
        if let Some((ours, rest)) = self.renames.iter().find_map(|(ours, tv)| Some((ours, key.strip_prefix(tv)?))) {
            return Some(format!("{ours}{rest}"));
        }
        if self.renames.iter().any(|(ours, _)| key.starts_with(ours)) {
            return None;
        }
        Some(key.to_string())
    }

    /// torchvision's `state_dict` key for one of our parameter names.
    pub fn to_torchvision(&self, name: &str) -> String {
        match self.renames.iter().find_map(|(ours, tv)| Some((tv, name.strip_prefix(ours)?))) {
            Some((tv, rest)) => format!("{tv}{rest}"),
            None => name.to_string(),
        }
    }
}

const INIT: Init = Init::MsraPrelu { slope: 0.0 };
const BN: Op = Op::BatchNorm { eps: 1e-5, momentum: 0.1, fix_gamma: false };

/// `tv-vgg16`: torchvision's `make_layers(cfgs["D"])`, nodes named by their index in its `features`
/// Sequential.
pub(crate) fn vgg16(o: &ModelOptions) -> Result<Network, GraphError> {
    let mut b = GraphBuilder::new("tv-vgg16", [o.in_channels, 224, 224], INIT);
    let mut x = b.input();
    let mut i = 0;
    // [64,112,112] [128,56,56] [256,28,28] [512,14,14] [512,7,7] after the five pools
    for &layer in VGG16 {
        match layer {
            Layer::M => {
                x = b.then(&format!("features.{i}"), max_pool(2, 2, 0), x);
                i += 1;
            }
            Layer::C(width) => {
                x = b.then(&format!("features.{i}"), conv(width, 3).pad(1), x);
                x = b.then(&format!("features.{}", i + 1), Op::Relu, x);
                i += 2;
            }
        }
    }
    x = b.flatten("flatten", x); // [25088]
    for fc in ["fc1", "fc2"] {
        x = b.then(fc, Op::Linear { out_features: 4096, bias: true }, x);
        x = b.then(&format!("{fc}_relu"), Op::Relu, x);
        x = b.dropout(&format!("{fc}_drop"), x, 0.5);
    }
    let logits = b.linear("classifier", x, o.num_classes);
    b.finish(logits)
}

/// One post-activation bottleneck in the current scope (`layerN.M`); returns the final ReLU.
fn bottleneck(b: &mut GraphBuilder, x: NodeId, width: usize, stride: usize, downsample: bool) -> NodeId {
    let y = b.then("conv1", conv(width, 1).no_bias(), x);
    let y = b.then("bn1", BN, y);
    let y = b.then("relu1", Op::Relu, y);
    let y = b.then("conv2", conv(width, 3).stride(stride).pad(1).no_bias(), y);
    let y = b.then("bn2", BN, y);
    let y = b.then("relu2", Op::Relu, y);
    let y = b.then("conv3", conv(4 * width, 1).no_bias(), y);
    let y = b.then("bn3", BN, y);
    let shortcut = if downsample {
        let s = b.then("downsample.0", conv(4 * width, 1).stride(stride).no_bias(), x);
        b.then("downsample.1", BN, s)
    } else {
        x
    };
    let sum = b.add_op("add", Op::Add, &[y, shortcut]);
    b.then("relu3", Op::Relu, sum)
}

/// torchvision's resnet50 from `conv1` through `layerN` (`stages` of 4) under its state_dict's names:
/// all four end at stride 32 with 2,048 channels, three at stride 16 with 1,024 (the "C4" backbone
/// of Faster R-CNN).
pub(crate) fn resnet50_stages(b: &mut GraphBuilder, x: NodeId, stages: usize) -> NodeId {
    let x = b.then("conv1", conv(64, 7).stride(2).pad(3).no_bias(), x); // [64, 112, 112]
    let x = b.then("bn1", BN, x);
    let x = b.then("relu", Op::Relu, x);
    let mut x = b.then("maxpool", max_pool(3, 2, 1), x); // [64, 56, 56]
    let mut channels = 64;
    // [256, 56, 56] [512, 28, 28] [1024, 14, 14] [2048, 7, 7]
    for (stage, (blocks, width)) in [(3, 64), (4, 128), (6, 256), (3, 512)].into_iter().take(stages).enumerate() {
        for j in 0..blocks {
            let stride = if stage > 0 && j == 0 { 2 } else { 1 };
            x = bottleneck(&mut b.scope(&format!("layer{}.{j}", stage + 1)), x, width, stride, stride != 1 || channels != 4 * width);
            channels = 4 * width;
        }
    }
    x
}

/// `tv-resnet50`.
pub(crate) fn resnet50(o: &ModelOptions) -> Result<Network, GraphError> {
    let mut b = GraphBuilder::new("tv-resnet50", [o.in_channels, 224, 224], INIT);
    let x = b.input();
    let x = resnet50_stages(&mut b, x, 4);
    let x = b.then("avgpool", Op::GlobalAvgPool, x); // [2048, 1, 1]
    let x = b.flatten("flatten", x);
    let logits = b.linear("classifier", x, o.num_classes);
    b.finish(logits)
}
