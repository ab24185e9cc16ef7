//! The detection-head ops of the IR in the trainer's libtorch form: `AnchorRows` lists rows in the
//! priors' order (location, then anchor) and a graph's named outputs come out of `forward_outputs`.

use models::builder::{conv, GraphBuilder};
use models::graph::{Init, Op};
use tch::Tensor;
use trainer::net::Net;

#[test]
fn anchor_rows_follow_location_then_anchor() {
    let mut b = GraphBuilder::new("rows", [6, 2, 3], Init::XavierUniform);
    let x = b.input();
    let r = b.then("rows", Op::AnchorRows { columns: 2 }, x);
    let net = Net::new_cpu(b.finish(r).unwrap(), 0).unwrap();
    // channel c at (y, x) holds 100c + 10y + x
    let x = Tensor::from_slice(&(0..36).map(|i| (100 * (i / 6) + 10 * ((i % 6) / 3) + i % 3) as f32).collect::<Vec<_>>()).view([1, 6, 2, 3]);
    let out = net.forward(&x, false);
    assert_eq!(out.size(), [1, 2 * 3 * 3, 2]);
    for y in 0..2 {
        for xx in 0..3 {
            for a in 0..3 {
                for k in 0..2 {
                    let row = (y * 3 + xx) * 3 + a;
                    let want = (100 * (a * 2 + k) + 10 * y + xx) as f64;
                    assert_eq!(out.double_value(&[0, row, k]), want, "row {row} column {k}");
                }
            }
        }
    }
}

#[test]
fn named_outputs_come_out_beside_the_logits() {
    let mut b = GraphBuilder::new("two", [3, 4, 4], Init::XavierUniform);
    let x = b.input();
    let x = b.then("relu6", Op::Clip { min: 0.0, max: 6.0 }, x);
    let h = b.then("head", conv(3 * 2, 1), x);
    let rows = b.then("rows", Op::AnchorRows { columns: 2 }, h);
    let other = b.then("other", conv(2 * 4, 1), x);
    let other = b.then("other_rows", Op::AnchorRows { columns: 4 }, other);
    let net = Net::new_cpu(b.finish_with(rows, &[("boxes", other)]).unwrap(), 1).unwrap();
    let x = Tensor::linspace(-8.0, 8.0, 2 * 3 * 16, (tch::Kind::Float, tch::Device::Cpu)).view([2, 3, 4, 4]);
    let outs = tch::no_grad(|| net.forward_outputs(&x, false));
    assert_eq!(outs.len(), 2);
    assert_eq!(outs[0].size(), [2, 16 * 3, 2]);
    assert_eq!(outs[1].size(), [2, 16 * 2, 4]);
    assert!(outs[0].equal(&net.forward(&x, false)), "the first output is the graph's output");
    let clipped = tch::no_grad(|| net.forward_to(&x, false, 1));
    assert_eq!((clipped.min().double_value(&[]), clipped.max().double_value(&[])), (0.0, 6.0));
}
