//! Every registry model pinned: a change to the builder, the blocks or a zoo file that renames a node,
//! changes an op, an input, or a parameter's name, shape, kind, trainability or fans fails here. Such a
//! change would break checkpoints, recorded `graph.json` files and exported ONNX files, so it must be
//! made on purpose (and the table regenerated) or not at all.
//!
//! The fingerprint of a graph is FNV-1a (64 bits) over `serde_json::to_string(&graph)` followed by one
//! line per parameter, `\n{name} {shape:?} {kind:?} {trainable} {fan_in} {fan_out}`. The table was
//! written by code computing exactly this on the graphs built before the graph IR refactor (commit
//! 59f4188, `Graph::params()`); to regenerate it after a deliberate change run
//! `PRINT_FINGERPRINTS=1 cargo test -p models --test fingerprints -- --nocapture` and paste the output.
//! The old `graph.json` fixture under `tests/fixtures/` was written by that same commit.

use models::graph::{Network, Op, ParamInit, ParamKind};
use models::zoo::{self, REGISTRY};

/// (model, classes, input channels, nodes, parameter tensors, stored values, fingerprint)
type Pin = (&'static str, Option<usize>, Option<usize>, usize, usize, usize, u64);

#[rustfmt::skip]
const PINS: &[Pin] = &[
    ("alexnet", None, None, 32, 44, 62416616, 0x5a723e2057a2e8d8),
    ("alexnet", Some(7), Some(1), 32, 44, 58325063, 0xf4bc0c80f631768e),
    ("alexnet-bn-relu", None, None, 32, 44, 62416616, 0x739de9b609d82907),
    ("alexnet-bn-relu", Some(7), Some(1), 32, 44, 58325063, 0x12d6f328aae640fd),
    ("alexnet-relu-bn", None, None, 32, 44, 62416616, 0x743dc1ddb254947f),
    ("alexnet-relu-bn", Some(7), Some(1), 32, 44, 58325063, 0xdce1605910bfd655),
    ("vgg11", None, None, 45, 72, 132918056, 0x05d67de171a1f333),
    ("vgg11", Some(7), Some(1), 45, 72, 128848583, 0x736ecf1d57605617),
    ("vgg13", None, None, 51, 86, 133103528, 0x4c1819d90fa8ef08),
    ("vgg13", Some(7), Some(1), 51, 86, 129034055, 0x5e6d61044e902bb8),
    ("vgg16", None, None, 60, 107, 138419624, 0x930259d9a50d3231),
    ("vgg16", Some(7), Some(1), 60, 107, 134350151, 0x56adf9a1718948a5),
    ("vgg19", None, None, 69, 128, 143735720, 0xbb307df49840e3a6),
    ("vgg19", Some(7), Some(1), 69, 128, 139666247, 0x3c1453bd644f27ac),
    ("googlenet", None, None, 198, 344, 7027672, 0xdb4acfd1daff8adf),
    ("googlenet", Some(7), Some(1), 198, 344, 6003575, 0x26166707f5355674),
    ("resnet18", None, None, 70, 98, 11695796, 0xb178c85f2b9988fa),
    ("resnet18", Some(7), Some(1), 70, 98, 11180107, 0x40de8b60a0a19e93),
    ("resnet34", None, None, 126, 178, 21811380, 0x4b4969d520409058),
    ("resnet34", Some(7), Some(1), 126, 178, 21295691, 0xbaba0e009372f82d),
    ("resnet50", None, None, 175, 259, 25595060, 0xecb3dbf26ae5ac15),
    ("resnet50", Some(7), Some(1), 175, 259, 23554123, 0x40973918add47c0a),
    ("resnet101", None, None, 345, 514, 44639412, 0xd39b207ceaa0225f),
    ("resnet101", Some(7), Some(1), 345, 514, 42598475, 0x0970bba22f8cb6fc),
    ("resnet152", None, None, 515, 769, 60329140, 0xf3e188c6097fa7c3),
    ("resnet152", Some(7), Some(1), 515, 769, 58288203, 0xf87f739821314476),
    ("squeezenet", None, None, 67, 52, 1248424, 0xbf7290cc323400a1),
    ("squeezenet", Some(7), Some(1), 67, 52, 729607, 0x19ffbcfd993e96c8),
    ("squeezenet-relu", None, None, 67, 52, 1248424, 0x10f1aa81f392f0f8),
    ("squeezenet-relu", Some(7), Some(1), 67, 52, 729607, 0xc96cff24a32cd23d),
    ("emotion-vgg", None, None, 35, 50, 588262, 0x8a2a0139b37d1dc9),
    ("emotion-vgg", Some(7), Some(1), 35, 50, 588327, 0xf69bd3ff94664b5b),
    ("age-gender", None, None, 26, 32, 8866184, 0xe6c9b3dfadd7f927),
    ("age-gender", Some(7), Some(1), 26, 32, 8856263, 0xf479faa005b73f84),
    ("mini-vgg", None, None, 23, 32, 1679082, 0xd2df15bcd16e7d8e),
    ("mini-vgg", Some(7), Some(1), 23, 32, 1677543, 0xd948f1a27f60e316),
    ("tv-vgg16", None, None, 40, 32, 138357544, 0x731bcf5ed44a931d),
    ("tv-vgg16", Some(7), Some(1), 40, 32, 134288071, 0xfff0e540b523668f),
    ("tv-resnet50", None, None, 176, 267, 25610152, 0x7fb6ceaddd3f3d0e),
    ("tv-resnet50", Some(7), Some(1), 176, 267, 23569223, 0x6882e52bd59701dd),
    ("ssd-tiny", None, None, 33, 42, 329792, 0x55a113fa10f919e6),
    ("ssd-tiny", Some(7), Some(1), 33, 42, 372752, 0x4aa269c55e8c3f3d),
    ("ssdlite-tiny", None, None, 66, 97, 49072, 0xd0081430c8e1d4f4),
    ("ssdlite-tiny", Some(7), Some(1), 66, 97, 53632, 0x04a3cc264b6297d3),
    ("ssd300-vgg16", None, None, 79, 71, 26285486, 0xf4f04db68f7fdac4),
    ("ssd300-vgg16", Some(7), Some(1), 79, 71, 24546728, 0x0343c06c239d6ebc),
    ("rcnn-tiny", None, None, 31, 39, 1481138, 0xfc2f8d30abec2cd1),
    ("rcnn-tiny", Some(7), Some(1), 31, 39, 1484705, 0x36400b9ea44ad9b3),
    ("faster-rcnn-resnet50", None, None, 156, 229, 65771020, 0xc3d278f9a261606f),
    ("faster-rcnn-resnet50", Some(7), Some(1), 156, 229, 65785248, 0x9a436a4259367092),
];

/// FNV-1a, 64 bits.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3))
}

fn fingerprint(g: &Network) -> u64 {
    let mut text = serde_json::to_string(g).unwrap();
    for p in g.params() {
        text += &format!("\n{} {:?} {:?} {} {} {}", p.name, p.shape, p.kind, p.trainable, p.fan_in, p.fan_out);
    }
    fnv1a(text.as_bytes())
}

#[test]
fn every_registry_model_builds_the_graph_it_always_built() {
    let mut got = vec![];
    for m in REGISTRY {
        for (classes, channels) in [(None, None), (Some(7), Some(1))] {
            let g = zoo::build(m.name, classes, channels).unwrap();
            let values = g.params().iter().map(|p| p.numel()).sum();
            got.push((m.name, classes, channels, g.nodes.len(), g.params().len(), values, fingerprint(&g)));
        }
    }
    if std::env::var_os("PRINT_FINGERPRINTS").is_some() {
        for (name, classes, channels, nodes, params, values, hash) in &got {
            println!("    ({name:?}, {classes:?}, {channels:?}, {nodes}, {params}, {values}, 0x{hash:016x}),");
        }
    }
    // one pin per model and option set, none left over for a model that was removed
    assert_eq!(got.len(), PINS.len(), "models or options were added or removed: regenerate the table");
    for (got, pin) in got.iter().zip(PINS) {
        assert_eq!(got, pin, "{} (classes {:?}, channels {:?}) no longer builds the graph it built", pin.0, pin.1, pin.2);
    }
}

#[test]
fn a_graph_json_written_before_the_refactor_loads_and_is_written_back_byte_for_byte() {
    let old = include_str!("fixtures/graph-mini-vgg-7-classes-1-channel.json");
    let loaded: Network = serde_json::from_str(old).unwrap();
    assert_eq!(loaded, zoo::build("mini-vgg", Some(7), Some(1)).unwrap());
    // the run directory writes graph.json with serde_json's pretty printer
    assert_eq!(serde_json::to_string_pretty(&loaded).unwrap(), old.trim_end());
    assert_eq!(loaded.param_count().weights, 320 + 9_248 + 18_496 + 36_928 + 1_606_144 + 512 * 7 + 7);
}

/// Each parameter belongs to the node its name starts with and starts where the trainer always started
/// it: weights by the model's scheme, biases, β and running means at 0, γ and running variances at 1,
/// PReLU slopes at their op's `init`.
#[test]
fn every_parameter_knows_its_node_and_its_initial_value() {
    for m in REGISTRY {
        let g = zoo::build(m.name, None, None).unwrap();
        for (id, node) in g.nodes.iter().enumerate() {
            for p in g.node_params(id) {
                assert_eq!(p.node, id, "{}", p.name);
                let suffix = p.name.strip_prefix(&format!("{}.", node.name)).unwrap_or_else(|| panic!("{}: not under node '{}'", p.name, node.name));
                assert!(!suffix.contains('.'), "{}", p.name);
                let expected = match p.kind {
                    ParamKind::Weight => ParamInit::Scheme,
                    ParamKind::Bias | ParamKind::BnBeta | ParamKind::BnRunningMean => ParamInit::Zeros,
                    ParamKind::BnGamma | ParamKind::BnRunningVar => ParamInit::Ones,
                    ParamKind::PreluSlope => {
                        let Op::Prelu { init } = node.op else { panic!("{}: a PReLU slope on a {} node", p.name, node.op.kind()) };
                        ParamInit::Const(init)
                    }
                    ParamKind::Scale => {
                        let Op::L2Norm { scale } = node.op else { panic!("{}: a scale on a {} node", p.name, node.op.kind()) };
                        ParamInit::Const(scale)
                    }
                };
                assert_eq!(p.init, expected, "{}: {}", m.name, p.name);
            }
        }
        let owned: usize = (0..g.nodes.len()).map(|id| g.node_params(id).len()).sum();
        assert_eq!(owned, g.params().len(), "{}", m.name);
    }
    // the book's VGG starts its PReLU slopes at 0.25
    let vgg = zoo::build("vgg11", None, None).unwrap();
    assert_eq!(vgg.param("block1.act1.weight").map(|p| p.init), Some(ParamInit::Const(0.25)));
}
