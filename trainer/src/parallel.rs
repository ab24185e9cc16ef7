//! Data parallelism over several devices of one machine (the book trains on 2 to 8 GPUs).
//!
//! One replica of the network per device; replica 0 is the main one (the optimizer updates it and it is
//! what checkpoints save). Each step splits the batch into one shard per device, runs forward and
//! backward on every replica with the shard's loss weighted by its share of the batch, adds the
//! replicas' gradients into the main replica's, steps, and copies the main replica's parameters and
//! buffers back to the others (BatchNorm statistics follow replica 0, as torch's DataParallel does).
//! Shards are launched from one thread in turn; CUDA's asynchronous launches let the devices overlap.
//! The effective batch is the per-device batch times the number of devices.

use tch::{Device, Tensor};

use crate::net::{Net, NetError};

pub struct Replicas {
    pub nets: Vec<Net>,
}

impl Replicas {
    /// Replicates `main` onto every device after the first (which must be `main`'s).
    pub fn new(main: Net, devices: &[Device]) -> Result<Self, NetError> {
        let mut nets = vec![];
        for &d in devices.iter().skip(1) {
            let mut r = Net::new(main.graph.clone(), d)?;
            r.set_compute(main.precision, main.channels_last);
            nets.push(r);
        }
        nets.insert(0, main);
        let r = Self { nets };
        r.sync();
        Ok(r)
    }

    pub fn main(&self) -> &Net {
        &self.nets[0]
    }

    pub fn main_mut(&mut self) -> &mut Net {
        &mut self.nets[0]
    }

    /// Copies every parameter and buffer of the main replica to the others.
    pub fn sync(&self) {
        let _guard = tch::no_grad_guard();
        for r in &self.nets[1..] {
            for (name, t) in &r.params {
                t.shallow_clone().copy_(&self.nets[0].params[name]);
            }
        }
    }

    /// Zeroes every replica's gradients.
    pub fn zero_grad(&self) {
        for net in &self.nets {
            for (_, p) in net.trainable() {
                let mut g = p.grad();
                if g.defined() {
                    let _ = g.zero_();
                }
            }
        }
    }

    /// Forward and backward of one batch (already on the main device), split across the replicas.
    /// Returns the batch's mean loss and its logits on the main device; the main replica then holds
    /// the gradient of the mean loss over the whole batch.
    pub fn forward_backward(&self, x: &Tensor, y: &Tensor) -> (f64, Tensor) {
        let n = x.size()[0];
        let k = self.nets.len() as i64;
        let per = (n + k - 1) / k;
        let mut loss_sum = 0.0;
        let mut logits = vec![];
        for (i, net) in self.nets.iter().enumerate() {
            let start = i as i64 * per;
            if start >= n {
                break;
            }
            let len = per.min(n - start);
            let xs = x.narrow(0, start, len).to_device(net.device);
            let ys = y.narrow(0, start, len).to_device(net.device);
            let out = net.forward(&xs, true);
            let loss = out.cross_entropy_for_logits(&ys) * (len as f64 / n as f64);
            loss.backward();
            loss_sum += loss.double_value(&[]);
            logits.push(out.detach().to_device(self.nets[0].device));
        }
        if self.nets.len() > 1 {
            let _guard = tch::no_grad_guard();
            for (spec, p) in self.nets[0].trainable() {
                let mut g = p.grad();
                for r in &self.nets[1..] {
                    let rg = r.params[&spec.name].grad();
                    if rg.defined() {
                        let _ = g.g_add_(&rg.to_device(self.nets[0].device));
                    }
                }
            }
        }
        (loss_sum, Tensor::cat(&logits, 0))
    }
}

/// The devices of a config: `devices` when given, else the single `device`.
pub fn resolve_devices(devices: &[crate::device::DeviceSpec], device: crate::device::DeviceSpec) -> Result<Vec<Device>, crate::device::DeviceError> {
    if devices.is_empty() {
        return Ok(vec![device.resolve()?]);
    }
    devices.iter().map(|d| d.resolve()).collect()
}
