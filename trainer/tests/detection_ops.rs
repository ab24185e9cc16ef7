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

/// Runs `trainer/tests/python/roi_align_oracle.py` on `cases`.
fn roi_align_oracle(cases: &serde_json::Value) -> Vec<serde_json::Value> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let python = std::env::var_os("DLCV_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"));
    let mut child = Command::new(python)
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/roi_align_oracle.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the venv's python (scripts/setup.sh)");
    child.stdin.take().unwrap().write_all(cases.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "roi_align_oracle.py failed");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn roi_align_equals_torchvision_in_values_and_gradients() {
    use data::rng::Xorshift64;
    use tch::{Device, Kind};
    let mut rng = Xorshift64::new(19);
    let mut uniform = |lo: f64, hi: f64| rng.range(lo as f32, hi as f32) as f64;
    let mut cases = vec![];
    let mut ours = vec![];
    // regions inside, across the border, beyond it, thinner than a pixel, and one that is a point
    for (k, (aligned, sampling, output, scale)) in
        [(false, 2, [7, 7], 0.25), (true, 2, [14, 14], 0.25), (false, 1, [3, 5], 0.5), (true, 3, [2, 2], 1.0)].into_iter().enumerate()
    {
        let (n, c, h, w) = (2i64, 3i64, 9i64 + k as i64, 11i64);
        let features: Vec<f32> = (0..n * c * h * w).map(|_| uniform(-2.0, 2.0) as f32).collect();
        let (iw, ih) = (w as f64 / scale, h as f64 / scale);
        let mut rois: Vec<f32> = vec![];
        for r in 0..9 {
            let b = (r % 2) as f32;
            let (x0, y0) = (uniform(-0.2 * iw, iw), uniform(-0.2 * ih, ih));
            let (bw, bh) = match r {
                6 => (0.3, 0.2),
                7 => (0.0, 0.0),
                _ => (uniform(1.0, 0.8 * iw), uniform(1.0, 0.8 * ih)),
            };
            rois.extend([b, x0 as f32, y0 as f32, (x0 + bw) as f32, (y0 + bh) as f32]);
        }
        let r = 9i64;
        let upstream: Vec<f32> = (0..r * c * output[0] as i64 * output[1] as i64).map(|_| uniform(-1.0, 1.0) as f32).collect();
        let x = Tensor::from_slice(&features).view([n, c, h, w]).set_requires_grad(true);
        let y = trainer::net::roi_align(&x, &Tensor::from_slice(&rois).view([r, 5]), output, scale, sampling, aligned);
        assert_eq!(y.size(), [r, c, output[0] as i64, output[1] as i64]);
        (&y * Tensor::from_slice(&upstream).view(y.size().as_slice())).sum(Kind::Float).backward();
        let values: Vec<f32> = Vec::try_from(y.detach().to_device(Device::Cpu).view([-1])).unwrap();
        let grad: Vec<f32> = Vec::try_from(x.grad().view([-1])).unwrap();
        ours.push((values, grad));
        cases.push(serde_json::json!({
            "features": features, "shape": [n, c, h, w], "rois": rois, "output": output, "spatial_scale": scale,
            "sampling_ratio": sampling, "aligned": aligned, "upstream": upstream,
        }));
    }
    let answers = roi_align_oracle(&serde_json::Value::Array(cases));
    for (k, ((values, grad), a)) in ours.iter().zip(&answers).enumerate() {
        for (what, got, want) in [("values", values, &a["values"]), ("grad", grad, &a["grad"])] {
            let want: Vec<f32> = want.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
            assert_eq!(got.len(), want.len(), "case {k} {what}");
            let worst = got.iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0.0f32, f32::max);
            assert!(worst < 1e-5, "case {k} {what}: differs from torchvision by up to {worst}");
            assert!(want.iter().any(|v| v.abs() > 0.1), "case {k} {what}: the case is degenerate");
        }
    }
}

#[test]
fn a_faster_rcnn_runs_per_image_then_per_region_and_trains_through_the_roi_align() {
    use tch::{Device, Kind};
    let g = models::zoo::build("rcnn-tiny", Some(3), Some(1)).unwrap();
    let net = Net::new_cpu(g, 3).unwrap();
    let spec = net.graph.detector.clone().unwrap();
    let r = spec.rcnn.clone().unwrap();
    let out = |name: &str| net.graph.extra_outputs.iter().find(|o| o.name == name).unwrap().node;
    let roi = net.graph.roi_node().unwrap();
    let map = net.graph.nodes[roi].inputs[0];
    let x = Tensor::randn([2, 1, 128, 128], (Kind::Float, Device::Cpu));
    let image = net.forward_nodes(&x, true, &[out(&r.scores_output), out(&r.codes_output), map]);
    assert_eq!(image[0].size(), [2, 576, 1]);
    assert_eq!(image[1].size(), [2, 576, 4]);
    assert_eq!(image[2].size(), [2, 96, 8, 8]);
    let rois = Tensor::from_slice(&[0.0f32, 10.0, 10.0, 60.0, 50.0, 1.0, 0.0, 0.0, 128.0, 128.0, 1.0, 30.0, 70.0, 40.0, 90.0]).view([3, 5]);
    let region = net.forward_rois(&image[2], &rois, true, &[net.graph.output, out(&spec.codes_output)]);
    assert_eq!(region[0].size(), [3, 4]);
    assert_eq!(region[1].size(), [3, 12]);
    (region[0].sum(Kind::Float) + region[1].sum(Kind::Float) + image[0].sum(Kind::Float)).backward();
    for p in ["stage16.conv.weight", "roi.fc6.weight", "rpn.objectness.weight"] {
        let g = net.params[p].grad();
        assert!(g.defined() && g.abs().sum(Kind::Float).double_value(&[]) > 0.0, "{p} has no gradient");
    }
}
