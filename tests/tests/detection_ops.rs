//! The detection-head ops of the IR (`Clip`, `L2Norm`, `AnchorRows`, `ConcatRows`) in the exporter's ONNX form:
//! ONNX Runtime computes what libtorch computes (their row order is trainer/tests/detection_ops.rs).

use exporter::lower::{read_safetensors, write, LowerOptions};
use models::builder::{conv, GraphBuilder};
use models::graph::{Init, Network, Op};
use trainer::net::Net;

/// Two heads (2 anchors on 6×6, 3 anchors on 3×3, 4 columns) after a ReLU6, joined, then a small
/// classifier so that the file has the exporter's [classes] output; the rows are a named output.
fn heads() -> Network {
    let mut b = GraphBuilder::new("heads", [3, 6, 6], Init::XavierUniform);
    let x = b.input();
    let x = b.then("stem", conv(8, 3).pad(1), x);
    let x = b.then("relu6", Op::Clip { min: 0.0, max: 6.0 }, x);
    let n = b.then("l2norm", Op::L2Norm { scale: 20.0 }, x);
    let a = b.then("head_a", conv(2 * 4, 3).pad(1), n);
    let a = b.then("rows_a", Op::AnchorRows { columns: 4 }, a);
    let s = b.then("down", conv(8, 3).pad(1).stride(2), x);
    let s = b.then("head_b", conv(3 * 4, 1), s);
    let s = b.then("rows_b", Op::AnchorRows { columns: 4 }, s);
    let rows = b.add_op("rows", Op::ConcatRows, &[a, s]);
    let p = b.then("row_softmax", Op::Softmax, rows);
    let f = b.flatten("flatten", p);
    let y = b.linear("classifier", f, 5);
    b.finish_with(y, &[("rows", rows)]).unwrap()
}

#[test]
fn detection_head_ops_in_onnx_runtime_equal_libtorch() {
    let scratch = tests::fresh_dir("detection-ops");
    let graph = heads();
    let mut net = Net::new_cpu(graph.clone(), 5).unwrap();
    // a different L2Norm scale per channel, so that the broadcast over channels is checked
    net.set_param("l2norm.weight", &(1..=8).map(|c| c as f32 * 2.5).collect::<Vec<_>>());
    // inputs large enough that ReLU6 clips on both sides (trainer/tests/detection_ops.rs checks it clips)
    let n = 3;
    let x: Vec<f32> = data::rng::Xorshift64::seeded(9).uniform(n * 3 * 6 * 6, -8.0, 8.0);
    assert_eq!(graph.shape(graph.extra_outputs[0].node), &vec![6 * 6 * 2 + 3 * 3 * 3, 4], "the named output holds the rows");
    let file = scratch.path().join("heads.safetensors");
    net.save(&file).unwrap();
    let onnx = scratch.path().join("heads.onnx");
    write(&graph, &read_safetensors(&file).unwrap(), &LowerOptions::default(), &onnx).unwrap();
    let ours = net.predict_f32(&x, [n, 3, 6, 6]);
    let theirs = runtime::engine::infer(&onnx, &runtime::SessionOptions::default(), x, &[n, 3, 6, 6]).unwrap();
    let theirs = &theirs.iter().find(|(name, _, _)| name == "probabilities").unwrap().2;
    let diff = ours.iter().zip(theirs).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(diff < 1e-5, "ONNX Runtime vs libtorch: {diff}");
    // the file is not trivially constant: the first class's probability varies over the batch
    let first: Vec<f32> = ours.chunks(5).map(|r| r[0]).collect();
    let spread = first.iter().cloned().fold(f32::MIN, f32::max) - first.iter().cloned().fold(f32::MAX, f32::min);
    assert!(spread > 1e-4, "{first:?}");
}
