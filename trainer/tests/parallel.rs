//! Data parallelism: N shards on N replicas give the update that the whole batch gives on one.
//! The replicas here are all on the CPU; on a GPU machine the same code spreads them over devices.

use models::builder::{conv, GraphBuilder};
use models::graph::{Init, Op};
use tch::{Device, Kind, Tensor};
use trainer::net::Net;
use trainer::optim::{DecayRule, Optimizer, OptimizerConfig};
use trainer::parallel::Replicas;

/// libtorch's generator is global to the process and these tests seed it to build identical nets;
/// tests in one binary run on parallel threads, so they take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A small net without BatchNorm or dropout, whose gradient is a plain mean over the batch.
fn net(seed: i64) -> Net {
    let mut b = GraphBuilder::new("tiny", [2, 8, 8], Init::XavierUniform);
    let x = b.input();
    let x = b.then("conv", conv(4, 3).pad(1), x);
    let x = b.then("act", Op::Elu { alpha: 1.0 }, x);
    let x = b.then("pool", models::builder::max_pool(2, 2, 0), x);
    let x = b.flatten("flatten", x);
    let y = b.linear("classifier", x, 5);
    tch::manual_seed(seed);
    Net::new(b.finish(y).unwrap(), Device::Cpu).unwrap()
}

fn step(reps: &Replicas, x: &Tensor, y: &Tensor) -> Vec<Tensor> {
    let mut opt = Optimizer::new(OptimizerConfig::Sgd { momentum: 0.9, nesterov: false, weight_decay: 1e-3, decay: DecayRule::Book });
    reps.zero_grad();
    let (loss, logits) = reps.forward_backward(x, y);
    assert_eq!(logits.size(), [x.size()[0], 5]);
    assert!(loss.is_finite());
    opt.step(&reps.main().trainable(), 0.1);
    reps.sync();
    reps.main().params.values().map(|t| t.detach().copy()).collect()
}

#[test]
fn shards_give_the_same_update_as_the_full_batch() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(11);
    for batch in [6, 7] {
        let x = Tensor::randn([batch, 2, 8, 8], (Kind::Float, Device::Cpu));
        let y = Tensor::randint(5, [batch], (Kind::Int64, Device::Cpu));
        let one = step(&Replicas::new(net(3), &[Device::Cpu]).unwrap(), &x, &y);
        for shards in [2, 3] {
            let reps = Replicas::new(net(3), &vec![Device::Cpu; shards]).unwrap();
            let many = step(&reps, &x, &y);
            for (a, b) in one.iter().zip(&many) {
                let diff = (a - b).abs().max().double_value(&[]);
                assert!(diff < 1e-6, "batch {batch}, {shards} shards: max difference {diff}");
            }
            // after the step every replica holds the main replica's weights
            for r in &reps.nets[1..] {
                for (name, t) in &r.params {
                    assert!(t.equal(&reps.main().params[name]), "{name}");
                }
            }
        }
    }
}

#[test]
fn bf16_and_channels_last_compute_the_same_function() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut n = net(5);
    let x = Tensor::randn([3, 2, 8, 8], (Kind::Float, Device::Cpu));
    let fp32 = n.forward(&x, false);
    n.set_compute(trainer::net::Precision::Fp32, true);
    let cl = n.forward(&x, false);
    assert!((&fp32 - &cl).abs().max().double_value(&[]) < 1e-5);
    n.set_compute(trainer::net::Precision::Bf16, true);
    let bf = n.forward(&x, false);
    assert_eq!(bf.kind(), Kind::Float);
    let diff = (&fp32 - &bf).abs().max().double_value(&[]);
    assert!(diff > 0.0 && diff < 0.1, "bf16 differs by {diff}");
}

#[test]
fn a_channels_last_net_saves_and_loads_back_the_same_weights() {
    // safetensors stores only standard-layout tensors: saving channels-last weights used to fail with
    // "Cannot save non contiguous tensors" (seen on the first GPU run of the ResNet-50 benchmark)
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut n = net(6);
    n.set_compute(trainer::net::Precision::Fp32, true);
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().to_path_buf();
    let path = dir.join("w.safetensors");
    n.save(&path).expect("channels-last weights save");
    let mut back = net(7);
    back.load(&path).unwrap();
    for (name, t) in &n.params {
        assert!(t.contiguous().equal(&back.params[name]), "{name}");
    }
}
