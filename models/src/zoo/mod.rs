//! The model zoo: every network of the book, registered by name.
//!
//! Each family has its own file that opens with the paper it follows and the book's deviations. Names
//! are a user-facing contract (configs, run directories and exported files record them). Tests iterate
//! [`REGISTRY`], so every model added here is covered by the zoo-wide checks.

mod age_gender;
mod alexnet;
mod blocks;
mod emotion;
mod googlenet;
mod mini_vgg;
mod rcnn;
mod resnet;
mod squeezenet;
mod ssd;
pub mod torchvision;
mod vgg;

use serde::Serialize;

use crate::graph::{GraphError, Network, Op};
use crate::meta::Task;

/// What a user may change about a registry model without changing the architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ModelOptions {
    pub num_classes: usize,
    pub in_channels: usize,
}

/// A registry entry.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ModelInfo {
    pub name: &'static str,
    pub family: &'static str,
    pub task: Task,
    /// `[channels, height, width]` as the book trains it.
    pub input: [usize; 3],
    pub default_classes: usize,
    pub summary: &'static str,
    #[serde(skip)]
    build: fn(&ModelOptions) -> Result<Network, GraphError>,
}

impl ModelInfo {
    pub fn default_options(&self) -> ModelOptions {
        ModelOptions { num_classes: self.default_classes, in_channels: self.input[0] }
    }

    /// Builds the graph with these options.
    pub fn build(&self, opts: &ModelOptions) -> Result<Network, ZooError> {
        if opts.num_classes == 0 || opts.in_channels == 0 {
            return Err(ZooError::BadOptions { model: self.name, reason: "num_classes and in_channels must be at least 1".into() });
        }
        (self.build)(opts).map_err(|source| ZooError::Graph { model: self.name, source })
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ZooError {
    #[error("unknown model '{name}'; available: {}", names().join(", "))]
    Unknown { name: String },
    #[error("model '{model}': {reason}")]
    BadOptions { model: &'static str, reason: String },
    #[error("model '{model}': {source}")]
    Graph { model: &'static str, source: GraphError },
}

const CLS: Task = Task::Classification;

macro_rules! entry {
    ($name:literal, $family:literal, $input:expr, $classes:expr, $summary:literal, $build:expr) => {
        ModelInfo { name: $name, family: $family, task: CLS, input: $input, default_classes: $classes, summary: $summary, build: $build }
    };
}

/// Every registered model, in the order `trainer models` lists them.
pub static REGISTRY: &[ModelInfo] = &[
    entry!("alexnet", "alexnet", [3, 227, 227], 1000, "AlexNet, book Exp. 3: conv -> ELU -> BN", |o| alexnet::build(o, alexnet::Variant::EluBn)),
    entry!("alexnet-bn-relu", "alexnet", [3, 227, 227], 1000, "AlexNet, book Exp. 1: conv -> BN -> ReLU", |o| alexnet::build(o, alexnet::Variant::BnRelu)),
    entry!("alexnet-relu-bn", "alexnet", [3, 227, 227], 1000, "AlexNet, book Exp. 2: conv -> ReLU -> BN", |o| alexnet::build(o, alexnet::Variant::ReluBn)),
    entry!("vgg11", "vgg", [3, 224, 224], 1000, "VGG configuration A with the book's PReLU -> BN units", |o| vgg::build(o, "vgg11", vgg::VGG11)),
    entry!("vgg13", "vgg", [3, 224, 224], 1000, "VGG configuration B with the book's PReLU -> BN units", |o| vgg::build(o, "vgg13", vgg::VGG13)),
    entry!("vgg16", "vgg", [3, 224, 224], 1000, "The book's VGG16 (configuration D): PReLU -> BN, dropout 0.25 per block", |o| vgg::build(
        o,
        "vgg16",
        vgg::VGG16
    )),
    entry!("vgg19", "vgg", [3, 224, 224], 1000, "VGG configuration E with the book's PReLU -> BN units", |o| vgg::build(o, "vgg19", vgg::VGG19)),
    entry!("googlenet", "googlenet", [3, 224, 224], 1000, "The book's Inception v1: conv -> BN -> ReLU modules, no auxiliary heads", googlenet::build),
    entry!("resnet18", "resnet", [3, 224, 224], 1000, "Pre-activation ResNet-18 (basic blocks, stages 2,2,2,2)", |o| resnet::build(
        o,
        "resnet18",
        resnet::RESNET18
    )),
    entry!("resnet34", "resnet", [3, 224, 224], 1000, "Pre-activation ResNet-34 (basic blocks, stages 3,4,6,3)", |o| resnet::build(
        o,
        "resnet34",
        resnet::RESNET34
    )),
    entry!("resnet50", "resnet", [3, 224, 224], 1000, "The book's ResNet-50: pre-activation bottlenecks, stages 3,4,6,3", |o| resnet::build(
        o,
        "resnet50",
        resnet::RESNET50
    )),
    entry!("resnet101", "resnet", [3, 224, 224], 1000, "Pre-activation ResNet-101 (bottlenecks, stages 3,4,23,3)", |o| resnet::build(
        o,
        "resnet101",
        resnet::RESNET101
    )),
    entry!("resnet152", "resnet", [3, 224, 224], 1000, "Pre-activation ResNet-152 (bottlenecks, stages 3,8,36,3)", |o| resnet::build(
        o,
        "resnet152",
        resnet::RESNET152
    )),
    entry!("squeezenet", "squeezenet", [3, 227, 227], 1000, "The book's SqueezeNet, Exp. 4: fire modules with ELU", |o| squeezenet::build(
        o,
        "squeezenet",
        ELU_BOOK
    )),
    entry!("squeezenet-relu", "squeezenet", [3, 227, 227], 1000, "The book's SqueezeNet, Exp. 1/2: fire modules with ReLU", |o| squeezenet::build(
        o,
        "squeezenet-relu",
        Op::Relu
    )),
    entry!("emotion-vgg", "emotion", [1, 48, 48], 6, "The book's EmotionVGGNet for FER2013 (48x48 grey faces)", emotion::build),
    entry!("age-gender", "age-gender", [3, 227, 227], 8, "The book's MxAgeGenderNet (Levi & Hassner): 8 age bins or 2 genders", age_gender::build),
    entry!("mini-vgg", "mini-vgg", [1, 28, 28], 10, "A small VGG-style net for 28x28 grey images (Fashion-MNIST)", mini_vgg::build),
    entry!(
        "tv-vgg16",
        "vgg",
        [3, 224, 224],
        1000,
        "torchvision's vgg16 (no BN, ReLU, dropout 0.5): loads its state_dict (trainer import-weights)",
        torchvision::vgg16
    ),
    entry!(
        "tv-resnet50",
        "resnet",
        [3, 224, 224],
        1000,
        "torchvision's resnet50 (v1.5, post-activation): loads its state_dict (trainer import-weights)",
        torchvision::resnet50
    ),
    ModelInfo {
        name: "ssd-tiny",
        family: "ssd",
        task: Task::Detection,
        input: [3, 128, 128],
        default_classes: 4,
        summary: "A small SSD for 2 CPU cores: dense 3x3 conv-BN-ReLU, maps at strides 8/16/32, 2,016 priors",
        build: ssd::tiny,
    },
    ModelInfo {
        name: "ssdlite-tiny",
        family: "ssd",
        task: Task::Detection,
        input: [3, 128, 128],
        default_classes: 4,
        summary: "ssd-tiny's maps with SSDLite layers: depthwise-separable ReLU6 backbone and heads",
        build: ssd::lite_tiny,
    },
    ModelInfo {
        name: "ssd300-vgg16",
        family: "ssd",
        task: Task::Detection,
        input: [3, 300, 300],
        default_classes: 20,
        summary: "The paper's SSD300 (torchvision's ssd300_vgg16 layout): VGG16, L2Norm conv4_3, 8,732 priors",
        build: ssd::ssd300_vgg16,
    },
    ModelInfo {
        name: "rcnn-tiny",
        family: "faster-rcnn",
        task: Task::Detection,
        input: [3, 128, 128],
        default_classes: 4,
        summary: "A small Faster R-CNN for 2 CPU cores: conv stack to stride 16, 9 anchors, RoiAlign 14 + max pool, 256-wide head",
        build: rcnn::tiny,
    },
    ModelInfo {
        name: "faster-rcnn-resnet50",
        family: "faster-rcnn",
        task: Task::Detection,
        input: [3, 608, 608],
        default_classes: 3,
        summary: "The book's LISA Faster R-CNN on ResNet-50 C4 (torchvision names): 512-filter RPN, 12 anchors, two 1024-wide layers",
        build: rcnn::resnet50,
    },
];

const ELU_BOOK: Op = crate::builder::ELU_MXNET;

/// The registered names.
pub fn names() -> Vec<&'static str> {
    REGISTRY.iter().map(|m| m.name).collect()
}

/// The registry entry for `name`, or an error listing the valid names.
pub fn info(name: &str) -> Result<&'static ModelInfo, ZooError> {
    REGISTRY.iter().find(|m| m.name == name).ok_or_else(|| ZooError::Unknown { name: name.into() })
}

/// Builds a registered model; `None` options take the model's defaults.
pub fn build(name: &str, num_classes: Option<usize>, in_channels: Option<usize>) -> Result<Network, ZooError> {
    let m = info(name)?;
    let d = m.default_options();
    m.build(&ModelOptions { num_classes: num_classes.unwrap_or(d.num_classes), in_channels: in_channels.unwrap_or(d.in_channels) })
}
