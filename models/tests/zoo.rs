//! Zoo-wide checks: every registered model builds and has the shapes and parameter counts that the book
//! (the book's chapter on each network) and the papers give.

use models::graph::{GraphError, Network, ParamKind};
use models::meta::Task;
use models::zoo::{self, ZooError, REGISTRY};

/// The output shape of a model with `classes` classes: one score per class, or for a detector one
/// row of the background and the classes per prior (a Faster R-CNN's: per region).
fn output_of(m: &zoo::ModelInfo, g: &Network, classes: usize) -> Vec<usize> {
    match (m.task, &g.detector) {
        (Task::Classification, None) => vec![classes],
        (Task::Detection, Some(d)) if d.rcnn.is_some() => vec![classes + 1],
        (Task::Detection, Some(d)) => vec![d.num_priors(), classes + 1],
        (task, d) => panic!("{}: task {task} with detector spec {d:?}", m.name),
    }
}

fn shape_of(g: &Network, node: &str) -> Vec<usize> {
    let (id, _) = g.node(node).unwrap_or_else(|| panic!("{}: no node '{node}'", g.name));
    g.shapes()[id].clone()
}

#[test]
fn every_model_builds_with_its_defaults_and_outputs_one_score_per_class() {
    for m in REGISTRY {
        let g = zoo::build(m.name, None, None).unwrap_or_else(|e| panic!("{e}"));
        let shapes = g.shapes();
        assert_eq!(shapes[g.output], output_of(m, &g, m.default_classes), "{}", m.name);
        assert_eq!(g.input_shape(), m.input, "{}", m.name);
        assert_eq!(g.name, m.name);
    }
}

#[test]
fn class_count_and_input_channels_are_options_of_every_model() {
    for m in REGISTRY {
        let g = zoo::build(m.name, Some(7), Some(5)).unwrap();
        assert_eq!(g.shapes()[g.output], output_of(m, &g, 7), "{}", m.name);
        assert_eq!(g.input_shape()[0], 5, "{}", m.name);
        let first_weight = g.params().iter().find(|p| p.kind == ParamKind::Weight).unwrap();
        assert_eq!(first_weight.shape[1], 5, "{}: first conv reads 5 channels", m.name);
        assert!(zoo::build(m.name, Some(0), None).is_err());
    }
}

#[test]
fn parameter_names_are_unique_dotted_and_typed() {
    for m in REGISTRY {
        let g = zoo::build(m.name, None, None).unwrap();
        let params = g.params();
        let mut names: Vec<&str> = params.iter().map(|p| p.name.as_str()).collect();
        names.sort();
        let n = names.len();
        names.dedup();
        assert_eq!(n, names.len(), "{}: duplicate parameter names", m.name);
        for p in params {
            assert!(p.name.contains('.') && !p.name.starts_with('.'), "{}", p.name);
            if p.kind.is_buffer() {
                assert!(!p.trainable, "{}: buffers are not trained", p.name);
            }
            if p.kind == ParamKind::Weight {
                assert!(p.fan_in > 0 && p.fan_out > 0, "{}", p.name);
            }
        }
        match &g.detector {
            // a detector's box codes are a named output of [priors, 4]
            Some(d) => {
                let codes = g.extra_outputs.iter().find(|o| o.name == d.codes_output).unwrap();
                // a Faster R-CNN's: per region, one code per foreground class
                let want = if d.rcnn.is_some() { vec![4 * (d.labels.len().max(m.default_classes + 1) - 1)] } else { vec![d.num_priors(), 4] };
                assert_eq!(g.shapes()[codes.node], want, "{}", m.name);
            }
            // the classifier is always called "classifier", which network surgery relies on
            None => assert!(params.iter().any(|p| p.name == "classifier.weight"), "{}", m.name),
        }
    }
}

#[test]
fn alexnet_variants_have_the_books_parameter_counts() {
    for name in ["alexnet", "alexnet-bn-relu", "alexnet-relu-bn"] {
        let c = zoo::build(name, None, None).unwrap().param_count();
        assert_eq!(c.weights, 62_378_344, "{name}");
        assert_eq!(c.bn_affine, 19_136, "{name}");
        assert_eq!(c.bn_stats, 19_136, "{name}");
        assert_eq!(c.prelu, 0, "{name}");
        // mxnet BN keeps gamma at 1: the trainable set is weights + beta only
        assert_eq!(c.trainable, 62_378_344 + 19_136 / 2, "{name}");
    }
    let g = zoo::build("alexnet", None, None).unwrap();
    assert_eq!(shape_of(&g, "block1.conv"), vec![96, 55, 55]);
    assert_eq!(shape_of(&g, "block1.pool"), vec![96, 27, 27]);
    assert_eq!(shape_of(&g, "block2.pool"), vec![256, 13, 13]);
    assert_eq!(shape_of(&g, "block3.pool"), vec![256, 6, 6]);
}

#[test]
fn alexnet_experiments_differ_only_in_unit_order_and_activation() {
    let kinds = |name: &str| -> Vec<&'static str> { zoo::build(name, None, None).unwrap().nodes.iter().map(|n| n.op.kind()).take(4).collect() };
    assert_eq!(kinds("alexnet"), ["Input", "Conv2d", "ELU", "BatchNorm"]);
    assert_eq!(kinds("alexnet-relu-bn"), ["Input", "Conv2d", "ReLU", "BatchNorm"]);
    assert_eq!(kinds("alexnet-bn-relu"), ["Input", "Conv2d", "BatchNorm", "ReLU"]);
}

#[test]
fn vgg_counts_match_the_book_and_the_paper_table() {
    let c = zoo::build("vgg16", None, None).unwrap().param_count();
    assert_eq!((c.weights, c.bn_affine, c.prelu), (138_357_544, 24_832, 12_416));
    // Conv + FC weights of configurations A, B and E (torchvision's vgg11/13/19 have the same layers).
    for (name, weights) in [("vgg11", 132_863_336), ("vgg13", 133_047_848), ("vgg19", 143_667_240)] {
        assert_eq!(zoo::build(name, None, None).unwrap().param_count().weights, weights, "{name}");
    }
    let g = zoo::build("vgg16", None, None).unwrap();
    for (block, shape) in [(1, [64, 112, 112]), (2, [128, 56, 56]), (3, [256, 28, 28]), (4, [512, 14, 14]), (5, [512, 7, 7])] {
        assert_eq!(shape_of(&g, &format!("block{block}.pool")), shape.to_vec());
    }
}

#[test]
fn googlenet_concat_widths_match_the_book() {
    let g = zoo::build("googlenet", None, None).unwrap();
    let shapes = g.shapes();
    let widths: Vec<usize> = g.nodes.iter().enumerate().filter(|(_, n)| n.name.ends_with(".concat")).map(|(i, _)| shapes[i][0]).collect();
    assert_eq!(widths, [256, 480, 512, 512, 512, 528, 832, 832, 1024]);
    assert_eq!(shape_of(&g, "stem.pool2"), vec![192, 28, 28]);
    assert_eq!(shape_of(&g, "inception5b.concat"), vec![1024, 7, 7]);
    assert_eq!(shape_of(&g, "avgpool"), vec![1024, 1, 1]);
    // conv -> BN -> ReLU: BN comes first in every module
    let (id, _) = g.node("inception3a.conv3x3").unwrap();
    assert_eq!(g.nodes[g.consumers(id)[0]].op.kind(), "BatchNorm");
}

/// Stored values of a pre-activation ResNet, counted by hand from the block definitions (conv weights,
/// BN gamma/beta/mean/var, the classifier) — independent of the graph code.
fn resnet_expected(stages: [usize; 4], filters: [usize; 5], bottleneck: bool, classes: usize) -> usize {
    let bn = |c: usize| 4 * c;
    let mut total = bn(3) + 3 * filters[0] * 49 + bn(filters[0]);
    let mut c_in = filters[0];
    for (i, &n) in stages.iter().enumerate() {
        let k = filters[i + 1];
        for j in 0..n {
            let stride = if i > 0 && j == 0 { 2 } else { 1 };
            total += bn(c_in);
            if bottleneck {
                let r = k / 4;
                total += c_in * r + bn(r) + r * r * 9 + bn(r) + r * k;
            } else {
                total += c_in * k * 9 + bn(k) + k * k * 9;
            }
            if stride != 1 || c_in != k {
                total += c_in * k;
            }
            c_in = k;
        }
    }
    total + bn(c_in) + c_in * classes + classes
}

#[test]
fn resnets_have_the_books_stage_outputs_and_hand_counted_parameters() {
    let g = zoo::build("resnet50", None, None).unwrap();
    assert_eq!(shape_of(&g, "stem.pool"), vec![64, 56, 56]);
    for (unit, shape) in [("stage1.unit3", [256, 56, 56]), ("stage2.unit4", [512, 28, 28]), ("stage3.unit6", [1024, 14, 14]), ("stage4.unit3", [2048, 7, 7])] {
        assert_eq!(shape_of(&g, &format!("{unit}.add")), shape.to_vec(), "{unit}");
    }
    // the projection reads the unit's first activation, not its raw input
    let (proj, node) = g.node("stage2.unit1.shortcut").unwrap();
    assert_eq!(g.nodes[node.inputs[0]].name, "stage2.unit1.act1");
    assert!(g.node("stage2.unit2.shortcut").is_none());
    assert_eq!(g.shapes()[proj], vec![512, 28, 28]);
    let bottleneck = [64, 256, 512, 1024, 2048];
    let basic = [64, 64, 128, 256, 512];
    for (name, stages, filters, bn) in [
        ("resnet18", [2, 2, 2, 2], basic, false),
        ("resnet34", [3, 4, 6, 3], basic, false),
        ("resnet50", [3, 4, 6, 3], bottleneck, true),
        ("resnet101", [3, 4, 23, 3], bottleneck, true),
        ("resnet152", [3, 8, 36, 3], bottleneck, true),
    ] {
        let c = zoo::build(name, None, None).unwrap().param_count();
        assert_eq!(c.total(), resnet_expected(stages, filters, bn, 1000), "{name}");
    }
    // "≈25.6M parameters including BN stats" (book.md §2.4)
    let total = zoo::build("resnet50", None, None).unwrap().param_count().total();
    assert!((25_500_000..25_700_000).contains(&total), "{total}");
}

#[test]
fn squeezenet_has_1_248_424_parameters_and_no_batchnorm() {
    for name in ["squeezenet", "squeezenet-relu"] {
        let g = zoo::build(name, None, None).unwrap();
        let c = g.param_count();
        assert_eq!((c.total(), c.weights), (1_248_424, 1_248_424), "{name}");
        assert_eq!(shape_of(&g, "fire4.concat"), vec![256, 55, 55]);
        assert_eq!(shape_of(&g, "pool8"), vec![512, 13, 13]);
        assert_eq!(shape_of(&g, "classifier"), vec![1000, 13, 13]);
    }
    let acts = |name: &str| zoo::build(name, None, None).unwrap().nodes.iter().filter(|n| n.op.kind() == "ELU").count();
    assert_eq!(acts("squeezenet"), 1 + 8 * 3 + 1);
    assert_eq!(acts("squeezenet-relu"), 0);
}

#[test]
fn emotion_vgg_has_585_958_weights_for_six_classes() {
    let g = zoo::build("emotion-vgg", None, None).unwrap();
    assert_eq!(g.param_count().weights, 585_958);
    assert_eq!(shape_of(&g, "flatten"), vec![4608]);
    assert_eq!(shape_of(&g, "block3.pool"), vec![128, 6, 6]);
}

#[test]
fn age_gender_flattens_13_824_and_builds_for_both_tasks() {
    let g = zoo::build("age-gender", None, None).unwrap();
    assert_eq!(shape_of(&g, "block1.conv"), vec![96, 56, 56]);
    assert_eq!(shape_of(&g, "flatten"), vec![13_824]);
    let gender = zoo::build("age-gender", Some(2), None).unwrap();
    assert_eq!(gender.shapes()[gender.output], vec![2]);
    // ≈8.87M parameters (book.md §2.9)
    let w = g.param_count().weights;
    assert!((8_800_000..8_950_000).contains(&w), "{w}");
}

#[test]
fn mini_vgg_is_small_enough_for_a_cpu() {
    let g = zoo::build("mini-vgg", None, None).unwrap();
    assert_eq!(shape_of(&g, "flatten"), vec![3136]);
    // convs 320 + 9,248 + 18,496 + 36,928, FC 3136*512+512 and 512*10+10
    assert_eq!(g.param_count().weights, 320 + 9_248 + 18_496 + 36_928 + 1_606_144 + 5_130);
}

#[test]
fn unknown_names_list_the_valid_ones() {
    let err = zoo::build("resnet51", None, None).unwrap_err();
    assert!(matches!(err, ZooError::Unknown { .. }));
    let msg = err.to_string();
    for m in REGISTRY {
        assert!(msg.contains(m.name), "{msg}");
    }
}

#[test]
fn shape_errors_name_the_node() {
    use models::builder::{conv, GraphBuilder};
    use models::graph::{Init, Op};
    let mut b = GraphBuilder::new("bad", [3, 8, 8], Init::XavierUniform);
    let x = b.input();
    let y = {
        let mut head = b.scope("head");
        let x = head.then("conv", conv(4, 3), x);
        head.linear("fc", x, 10) // Linear on a [4, 6, 6] map without Flatten
    };
    let err = b.finish(y).unwrap_err();
    assert!(matches!(&err, GraphError::Node { node, .. } if node == "head.fc"), "{err}");
    assert!(err.to_string().contains("add Flatten first"), "{err}");

    let mut b = GraphBuilder::new("bad2", [3, 8, 8], Init::XavierUniform);
    let x = b.input();
    let a = b.then("a", conv(4, 3), x);
    let c = b.then("c", conv(4, 1), x);
    let s = b.add_op("sum", Op::Add, &[a, c]);
    let err = b.finish(s).unwrap_err().to_string();
    assert!(err.starts_with("node 'sum': Add inputs differ in shape"), "{err}");

    let mut b = GraphBuilder::new("bad3", [3, 4, 4], Init::XavierUniform);
    let x = b.input();
    let y = b.then("big", conv(4, 7), x);
    assert!(b.finish(y).unwrap_err().to_string().starts_with("node 'big': kernel [7, 7] does not fit the input 4x4"));
}

#[test]
fn ssd300_vgg16_has_torchvisions_parameter_count_and_maps() {
    // torchvision.models.detection.ssd300_vgg16(weights=None, weights_backbone=None, num_classes=21):
    // 26,285,486 parameters (L2Norm's 512 scales included); maps 38, 19, 10, 5, 3, 1
    let g = zoo::build("ssd300-vgg16", Some(20), None).unwrap();
    assert_eq!(g.param_count().trainable, 26_285_486);
    for (node, shape) in [("conv4_3_norm", [512, 38, 38]), ("conv7_relu", [1024, 19, 19]), ("conv8_2_relu", [512, 10, 10]), ("conv11_2_relu", [256, 1, 1])] {
        assert_eq!(shape_of(&g, node), shape, "{node}");
    }
    let d = g.detector.as_ref().unwrap();
    assert_eq!((d.per_location(), d.num_priors()), (vec![4, 6, 6, 6, 4, 4], 8732));
}
