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

use crate::streams::DeviceEvent;

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
    /// Waiting for the loader's next batch and queueing its copy to the device (and, for bytes,
    /// their normalisation there): with `train.prefetch`, the batch after the step's.
    Data,
    /// The step waiting for its batch's copy: on a GPU the device waits for the side stream (near 0
    /// when the copy was done during the previous step), the host does not.
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

/// Where a step's time goes. Off, it costs nothing. On, every phase's host time is measured (what
/// the training thread spent: on a GPU that is queueing work, not waiting for it), and on a CUDA
/// device also its device time, from timing events recorded on the step's stream at each phase's
/// end ([`DeviceEvent`]): no synchronisation in the step, so the profiled run queues work ahead as a
/// plain one does. The events are read in groups of [`EVENTS_HELD`] (one host wait each) and at the
/// report. On the CPU, where work runs as it is called, the host times are the phases' times.
pub struct Profile {
    on: bool,
    /// The CUDA device whose events are recorded.
    cuda: Option<usize>,
    host: [Duration; 6],
    /// Milliseconds on the device, from the events read so far.
    device_ms: [f64; 6],
    /// Events not read yet: the phase each one ends (`None`: a new start, ending nothing).
    events: Vec<(Option<Phase>, DeviceEvent)>,
    /// Why device times are missing, when recording an event failed.
    event_error: Option<String>,
    steps: usize,
    reads_at_start: usize,
    last: Instant,
}

/// How many unread events a profile holds before it reads them.
const EVENTS_HELD: usize = 4096;

impl Profile {
    /// A profile of steps on `device`; `on` false makes every call a no-op.
    pub fn new(device: Device, on: bool) -> Self {
        let cuda = match device {
            Device::Cuda(i) if on => Some(i),
            Device::Cuda(_) | Device::Cpu | Device::Mps | Device::Vulkan => None,
        };
        Self {
            on,
            cuda,
            host: [Duration::ZERO; 6],
            device_ms: [0.0; 6],
            events: Vec::new(),
            event_error: None,
            steps: 0,
            reads_at_start: host_reads(),
            last: Instant::now(),
        }
    }

    pub fn is_on(&self) -> bool {
        self.on
    }

    /// Starts timing from now (before a step's first phase); the time since the last mark is nobody's.
    pub fn start(&mut self) {
        if self.on {
            self.record(None);
            self.last = Instant::now();
        }
    }

    /// Ends `phase`: the time since the last mark is its.
    pub fn mark(&mut self, phase: Phase) {
        if self.on {
            let now = Instant::now();
            self.host[phase as usize] += now - self.last;
            self.record(Some(phase));
            self.last = Instant::now();
        }
    }

    fn record(&mut self, ends: Option<Phase>) {
        let Some(index) = self.cuda else { return };
        if self.event_error.is_some() {
            return;
        }
        if self.events.len() >= EVENTS_HELD {
            self.read_events();
        }
        match DeviceEvent::record(index, true) {
            Ok(e) => self.events.push((ends, e)),
            Err(e) => self.event_error = Some(e),
        }
    }

    /// Adds the device time between consecutive events to their phases (waits for the last one),
    /// keeping the last as the start of what follows.
    fn read_events(&mut self) {
        for pair in self.events.windows(2) {
            let (Some(phase), (_, earlier), (_, later)) = (pair[1].0, &pair[0], &pair[1]) else { continue };
            match earlier.elapsed_ms(later) {
                Ok(ms) => self.device_ms[phase as usize] += ms,
                Err(e) => {
                    self.event_error = Some(e);
                    break;
                }
            }
        }
        if let Some((_, last)) = self.events.pop() {
            self.events.clear();
            self.events.push((None, last));
        }
    }

    /// One more step done.
    pub fn step_done(&mut self) {
        self.steps += 1;
    }

    /// Device times per phase (milliseconds over all steps), once the events are read.
    fn device_times(&mut self) -> Option<[f64; 6]> {
        self.cuda?;
        self.read_events();
        self.event_error.is_none().then_some(self.device_ms)
    }

    /// The table of milliseconds per step and shares, and the host reads per step; reads the events.
    pub fn report(&mut self) -> Option<String> {
        if !self.on {
            return None;
        }
        let steps = self.steps.max(1) as f64;
        let host: Vec<f64> = self.host.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        let host_total: f64 = host.iter().sum();
        let device = self.device_times();
        let mut out = match &device {
            Some(d) => format!(
                "profile over {} steps ({:.3} ms a step on the device's timeline, from CUDA events, idle time included; the host spent {:.3} ms queueing it):\n  {:<15} {:>12} {:>6} {:>12}\n",
                self.steps,
                d.iter().sum::<f64>() / steps,
                host_total / steps,
                "phase",
                "device ms",
                "share",
                "host ms"
            ),
            None => format!("profile over {} steps ({:.3} ms a step):\n", self.steps, host_total / steps),
        };
        for (phase, name) in PHASES {
            let i = phase as usize;
            out += &match &device {
                Some(d) => {
                    let total: f64 = d.iter().sum();
                    format!("  {name:<15} {:>12.3} {:>5.1}% {:>12.3}\n", d[i] / steps, 100.0 * d[i] / total.max(1e-12), host[i] / steps)
                }
                None => format!("  {name:<15} {:>9.3} ms {:>5.1}%\n", host[i] / steps, 100.0 * host[i] / host_total.max(1e-12)),
            };
        }
        if let (Some(_), Some(e)) = (self.cuda, &self.event_error) {
            out += &format!("  (no device times: {e})\n");
        }
        let reads = host_reads() - self.reads_at_start;
        out += &format!("  host reads      {reads} in {} steps ({:.3} a step)", self.steps, reads as f64 / steps);
        Some(out)
    }

    /// The same figures as JSON (milliseconds per step) for the run's log: `<phase>_ms` are host
    /// times, `device_<phase>_ms` device times (CUDA only).
    pub fn json(&mut self) -> Option<serde_json::Value> {
        if !self.on {
            return None;
        }
        let steps = self.steps.max(1) as f64;
        let device = self.device_times();
        let mut m = serde_json::Map::new();
        for (phase, name) in PHASES {
            let key = name.replace(' ', "_");
            m.insert(format!("{key}_ms"), (self.host[phase as usize].as_secs_f64() * 1e3 / steps).into());
            if let Some(d) = &device {
                m.insert(format!("device_{key}_ms"), (d[phase as usize] / steps).into());
            }
        }
        m.insert("steps".into(), self.steps.into());
        m.insert("host_reads".into(), (host_reads() - self.reads_at_start).into());
        Some(serde_json::Value::Object(m))
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
