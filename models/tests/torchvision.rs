//! The torchvision-compatible registry models: torchvision's parameter counts, and a name for every
//! `state_dict` key (counted from torchvision's module definitions, not read from a torchvision file).

use models::graph::{Network, ParamKind};
use models::zoo::{self, torchvision::Torchvision};

fn shape(g: &Network, param: &str) -> Vec<usize> {
    g.params().iter().find(|p| p.name == param).unwrap_or_else(|| panic!("{}: no parameter '{param}'", g.name)).shape.clone()
}

#[test]
fn tv_vgg16_has_torchvisions_parameters_under_torchvisions_names() {
    let g = zoo::build("tv-vgg16", None, None).unwrap();
    let c = g.param_count();
    // torchvision vgg16(): sum(p.numel() for p in model.parameters()) = 138,357,544, no buffers
    assert_eq!((c.weights, c.bn_affine, c.bn_stats, c.prelu, c.trainable), (138_357_544, 0, 0, 0, 138_357_544));
    let tv = Torchvision::of("tv-vgg16").unwrap();
    let keys: Vec<String> = g.params().iter().map(|p| tv.to_torchvision(&p.name)).collect();
    // 13 convolutions at their index in `features`, then classifier.0, .3, .6: 32 keys
    let convs = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28];
    let mut expected: Vec<String> = convs.iter().flat_map(|i| [format!("features.{i}.weight"), format!("features.{i}.bias")]).collect();
    expected.extend(["0", "3", "6"].iter().flat_map(|i| [format!("classifier.{i}.weight"), format!("classifier.{i}.bias")]));
    assert_eq!(keys, expected);
    assert_eq!(shape(&g, "features.28.weight"), [512, 512, 3, 3]);
    assert_eq!(shape(&g, "fc1.weight"), [4096, 25088]);
    assert_eq!(shape(&g, "classifier.weight"), [1000, 4096]);
    // no BatchNorm; the adaptive pool is the identity at 224 and left out: pool -> flatten
    let (id, _) = g.node("features.30").unwrap();
    assert_eq!(g.shapes()[id], [512, 7, 7]);
    assert_eq!(g.nodes[g.consumers(id)[0]].name, "flatten");
    assert!(g.nodes.iter().all(|n| n.op.kind() != "BatchNorm"));
}

#[test]
fn tv_resnet50_has_torchvisions_parameters_and_v1_5_strides() {
    let g = zoo::build("tv-resnet50", None, None).unwrap();
    let c = g.param_count();
    // torchvision resnet50(): 25,557,032 parameters, 53,120 running statistics (+ 53 num_batches_tracked)
    assert_eq!((c.weights + c.bn_affine, c.bn_stats, c.trainable), (25_557_032, 53_120, 25_557_032));
    let params = g.params();
    let bns = params.iter().filter(|p| p.kind == ParamKind::BnRunningMean).count();
    assert_eq!(bns, 53, "one BatchNorm per num_batches_tracked key");
    // 320 state_dict keys = 267 tensors + 53 num_batches_tracked
    assert_eq!(params.len(), 267);
    // v1.5: the stride is on the 3x3 conv; the 1x1 before it keeps the input's size
    let shapes = g.shapes();
    let out = |n: &str| shapes[g.node(n).unwrap().0].clone();
    assert_eq!(out("layer2.0.conv1"), [128, 56, 56]);
    assert_eq!(out("layer2.0.conv2"), [128, 28, 28]);
    assert_eq!(out("layer2.0.downsample.1"), [512, 28, 28]);
    for (block, shape) in [("layer1.2", [256, 56, 56]), ("layer2.3", [512, 28, 28]), ("layer3.5", [1024, 14, 14]), ("layer4.2", [2048, 7, 7])] {
        assert_eq!(out(&format!("{block}.relu3")), shape, "{block}");
    }
    // downsample only where the width or the stride changes: the first block of each stage
    for layer in 1..=4 {
        assert!(g.node(&format!("layer{layer}.0.downsample.0")).is_some());
        assert!(g.node(&format!("layer{layer}.1.downsample.0")).is_none());
    }
    // post-activation: the sum reads bn3 and the shortcut, and a ReLU follows it
    let (add, node) = g.node("layer1.1.add").unwrap();
    let ins: Vec<&str> = node.inputs.iter().map(|&i| g.nodes[i].name.as_str()).collect();
    assert_eq!(ins, ["layer1.1.bn3", "layer1.0.relu3"]);
    assert_eq!(g.nodes[g.consumers(add)[0]].op.kind(), "ReLU");
    assert_eq!(shape(&g, "classifier.weight"), [1000, 2048]);
    assert!(g
        .nodes
        .iter()
        .all(|n| !matches!(n.op, models::graph::Op::BatchNorm { eps, momentum, fix_gamma } if (eps, momentum, fix_gamma) != (1e-5, 0.1, false))));
}

#[test]
fn names_translate_both_ways_and_only_the_head_is_classifier() {
    let vgg = Torchvision::of("tv-vgg16").unwrap();
    let resnet = Torchvision::of("tv-resnet50").unwrap();
    assert!(Torchvision::of("vgg16").is_none(), "the book's VGG16 is not torchvision's");
    assert_eq!(vgg.from_torchvision("classifier.6.weight").as_deref(), Some("classifier.weight"));
    assert_eq!(vgg.from_torchvision("classifier.0.bias").as_deref(), Some("fc1.bias"));
    assert_eq!(vgg.from_torchvision("classifier.3.weight").as_deref(), Some("fc2.weight"));
    assert_eq!(vgg.from_torchvision("features.0.weight").as_deref(), Some("features.0.weight"));
    assert_eq!(resnet.from_torchvision("fc.bias").as_deref(), Some("classifier.bias"));
    assert_eq!(resnet.from_torchvision("layer4.2.bn3.running_var").as_deref(), Some("layer4.2.bn3.running_var"));
    // our own names are not torchvision's: a file using them is reported, not silently accepted
    for (t, key) in [(vgg, "classifier.weight"), (vgg, "fc1.weight"), (vgg, "classifier.1.weight"), (resnet, "classifier.weight")] {
        assert_eq!(t.from_torchvision(key), None, "{} {key}", t.model);
    }
    for t in [vgg, resnet] {
        let g = zoo::build(t.model, None, None).unwrap();
        for p in g.params() {
            assert_eq!(t.from_torchvision(&t.to_torchvision(&p.name)).as_deref(), Some(p.name.as_str()), "{}", t.model);
        }
        // surgery's prefix selects the final layer and nothing else
        let head: Vec<String> = g.params().iter().map(|p| p.name.clone()).filter(|n| n == "classifier" || n.starts_with("classifier.")).collect();
        assert_eq!(head, ["classifier.weight", "classifier.bias"], "{}", t.model);
    }
}

#[test]
fn preprocessing_is_torchvisions_imagenet_normalisation() {
    use models::zoo::torchvision::{MEAN, STD};
    for (ours, tv) in MEAN.iter().zip([0.485, 0.456, 0.406]).chain(STD.iter().zip([0.229, 0.224, 0.225])) {
        assert!((ours - tv * 255.0).abs() < 1e-9, "{ours} vs {tv} x 255");
    }
}
