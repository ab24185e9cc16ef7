//! What a classifier's training step keeps on the device, and how its time is measured.
//!
//! A step reads nothing back to the host: the loss sum, the rank-1 and rank-5 hits and the sample
//! count accumulate in one device tensor ([`DeviceSums`]), and the first step whose loss went
//! non-finite is recorded on the device too. They are read ([`read_back`]) only where a person or
//! a file needs them: at `log_every`, at the heartbeat of a run without a terminal, at an interrupt
//! and at the end of the epoch. Each host read waits for the device to drain, so between two reads
//! the CPU keeps queueing the next steps' kernels while the GPU runs the current one.
//!
//! [`host_reads`] counts the reads, so a test can hold the loop to that, and `trainer train
//! --profile` ([`Profile`]) prints where a step's time goes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tch::{Device, Kind, Tensor};

static HOST_READS: AtomicUsize = AtomicUsize::new(0);

/// How many times the training loops of this process read device values back so far.
pub fn host_reads() -> usize {
    HOST_READS.load(Ordering::SeqCst)
}

/// Copies a small tensor to the host as f64s: the training loop's only device-to-host read.
pub fn read_back(t: &Tensor) -> Vec<f64> {
    HOST_READS.fetch_add(1, Ordering::SeqCst);
    Vec::<f64>::try_from(t.to_kind(Kind::Double).to_device(Device::Cpu).flatten(0, -1)).expect("a float tensor reads back as f64s")
}

/// Rank-1 and rank-5 hits of a batch as 0-d device tensors (nothing is read back).
pub fn rank_hit_sums(logits: &Tensor, labels: &Tensor) -> (Tensor, Tensor) {
    let k = logits.size()[1].min(5);
    let (_, top) = logits.topk(k, 1, true, true);
    let hit = top.eq_tensor(&labels.unsqueeze(1));
    (hit.narrow(1, 0, 1).sum(Kind::Double), hit.sum(Kind::Double))
}

/// No step has gone non-finite yet.
const NONE_BAD: i64 = i64::MAX;

/// An epoch's running sums on the device: loss × samples, rank-1 hits, rank-5 hits, samples; and the
/// first step whose loss was NaN or infinite.
pub struct DeviceSums {
    sums: Tensor,
    first_bad: Tensor,
}

/// What [`DeviceSums::read`] found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Read {
    /// loss × samples, rank-1 hits, rank-5 hits, samples.
    pub sums: [f64; 4],
    /// The first step (1-based, in the epoch) whose loss was not finite.
    pub first_bad: Option<i64>,
}

impl DeviceSums {
    /// Sums on `device` starting from `partial` (a resumed epoch's).
    pub fn new(device: Device, partial: [f64; 4]) -> Self {
        Self { sums: Tensor::from_slice(&partial).to_device(device), first_bad: Tensor::scalar_tensor(NONE_BAD, (Kind::Int64, device)) }
    }

    /// Adds step `step`'s loss (the batch mean, a 0-d tensor) and hits; queues work only.
    pub fn add(&mut self, step: i64, loss: &Tensor, logits: &Tensor, labels: &Tensor) {
        let _guard = tch::no_grad_guard();
        let n = labels.size()[0] as f64;
        let loss = loss.detach().to_kind(Kind::Double);
        let (r1, r5) = rank_hit_sums(logits, labels);
        let row = Tensor::stack(&[&loss * n, r1, r5, Tensor::scalar_tensor(n, (Kind::Double, self.sums.device()))], 0);
        let _ = self.sums.g_add_(&row);
        let here = Tensor::where_scalar(&loss.isfinite(), NONE_BAD, step);
        self.first_bad = self.first_bad.minimum(&here);
    }

    /// The sums so far (one host read).
    pub fn read(&self) -> Read {
        let v = read_back(&Tensor::cat(&[self.sums.shallow_clone(), self.first_bad.to_kind(Kind::Double).unsqueeze(0)], 0));
        // (an i64 step count is exact in f64 far past any epoch's length; NONE_BAD is not)
        let first_bad = (v[4] < 9.0e15).then_some(v[4] as i64);
        Read { sums: [v[0], v[1], v[2], v[3]], first_bad }
    }
}

/// The parts of a training step `--profile` times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the loader's next batch.
    Data,
    /// The batch's copy to the device (and, on a GPU, its normalisation there).
    ToDevice,
    Forward,
    Backward,
    Optimizer,
    /// Metrics, the progress bar, logging.
    Bookkeeping,
}

const PHASES: [(Phase, &str); 6] = [
    (Phase::Data, "data wait"),
    (Phase::ToDevice, "host to device"),
    (Phase::Forward, "forward"),
    (Phase::Backward, "backward"),
    (Phase::Optimizer, "optimizer"),
    (Phase::Bookkeeping, "bookkeeping"),
];

/// Where a step's time goes. Off, it costs nothing; on, each phase ends with a device
/// synchronisation so that its time is the device's as well as the host's (this serialises host
/// and device, so a profiled run is slower than a plain one: its shares are what to look at).
pub struct Profile {
    device: Option<Device>,
    times: [Duration; 6],
    steps: usize,
    reads_at_start: usize,
    last: Instant,
}

impl Profile {
    /// A profile of steps on `device`; `on` false makes every call a no-op.
    pub fn new(device: Device, on: bool) -> Self {
        Self { device: on.then_some(device), times: [Duration::ZERO; 6], steps: 0, reads_at_start: host_reads(), last: Instant::now() }
    }

    pub fn is_on(&self) -> bool {
        self.device.is_some()
    }

    /// Starts timing from now (before a step's first phase).
    pub fn start(&mut self) {
        if let Some(d) = self.device {
            sync(d);
            self.last = Instant::now();
        }
    }

    /// Ends `phase`: the time since the last mark is its.
    pub fn mark(&mut self, phase: Phase) {
        if let Some(d) = self.device {
            sync(d);
            let now = Instant::now();
            self.times[phase as usize] += now - self.last;
            self.last = now;
        }
    }

    /// One more step done.
    pub fn step_done(&mut self) {
        self.steps += 1;
    }

    /// The table of milliseconds per step and shares, and the host reads per step.
    pub fn report(&self) -> Option<String> {
        self.device?;
        let steps = self.steps.max(1) as f64;
        let total: f64 = self.times.iter().map(Duration::as_secs_f64).sum();
        let mut out = format!("profile over {} steps ({:.3} ms a step):\n", self.steps, total * 1e3 / steps);
        for (phase, name) in PHASES {
            let t = self.times[phase as usize].as_secs_f64();
            out += &format!("  {name:<15} {:>9.3} ms {:>5.1}%\n", t * 1e3 / steps, 100.0 * t / total.max(1e-12));
        }
        let reads = host_reads() - self.reads_at_start;
        out += &format!("  host reads      {reads} in {} steps ({:.3} a step)", self.steps, reads as f64 / steps);
        Some(out)
    }

    /// The same figures as JSON (milliseconds per step) for the run's log.
    pub fn json(&self) -> Option<serde_json::Value> {
        self.device?;
        let steps = self.steps.max(1) as f64;
        let mut m = serde_json::Map::new();
        for (phase, name) in PHASES {
            m.insert(name.replace(' ', "_") + "_ms", (self.times[phase as usize].as_secs_f64() * 1e3 / steps).into());
        }
        m.insert("steps".into(), self.steps.into());
        m.insert("host_reads".into(), (host_reads() - self.reads_at_start).into());
        Some(serde_json::Value::Object(m))
    }
}

/// Waits for the work queued on `device` (nothing to wait for on the CPU).
pub fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_accumulate_on_the_device_and_name_the_first_bad_step() {
        let logits = Tensor::from_slice(&[3.0f32, 1.0, 0.0, 0.0, 2.0, 1.0]).view([2, 3]);
        let labels = Tensor::from_slice(&[0i64, 2]);
        let mut s = DeviceSums::new(Device::Cpu, [1.0, 1.0, 1.0, 1.0]);
        let before = host_reads();
        s.add(1, &Tensor::from(0.5f32), &logits, &labels);
        s.add(2, &Tensor::from(f32::NAN), &logits, &labels);
        s.add(3, &Tensor::from(f32::INFINITY), &logits, &labels);
        assert_eq!(host_reads(), before, "adding reads nothing back");
        let r = s.read();
        assert_eq!(host_reads(), before + 1);
        assert_eq!(r.first_bad, Some(2));
        // image 0: rank-1 hit; image 1 (label 2, logits 0 2 1): rank-2, so a rank-5 hit only
        assert_eq!(&r.sums[1..], &[1.0 + 3.0, 1.0 + 6.0, 1.0 + 6.0]);
        assert!(r.sums[0].is_nan());
        let mut fine = DeviceSums::new(Device::Cpu, [0.0; 4]);
        fine.add(1, &Tensor::from(0.25f32), &logits, &labels);
        assert_eq!(fine.read(), Read { sums: [0.5, 1.0, 2.0, 2.0], first_bad: None });
    }
}
