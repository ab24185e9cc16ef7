//! Data-parallel training over processes and machines on libtorch's own c10d, the engine under
//! PyTorch's `DistributedDataParallel`: a `TCPStore` rendezvous, `ProcessGroupGloo` on the CPU and
//! `ProcessGroupNCCL` on CUDA, reached through a small C++ bridge (`csrc/`, [`ffi`]).
//!
//! A process learns its place from the variables `torchrun` (and SLURM or Kubernetes' PyTorchJob
//! through it) sets: `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `LOCAL_WORLD_SIZE`, `MASTER_ADDR`,
//! `MASTER_PORT`, and with torchrun's elastic agent `TORCHELASTIC_USE_AGENT_STORE` (the agent hosts the
//! store; every rank is a client) and `TORCHELASTIC_RESTART_COUNT` (part of every store key, so a
//! restarted group never reads the keys of the one before). [`launch`] starts such processes itself
//! for `trainer train --nproc G`.
//!
//! What is synchronised (DDP's rules): parameters and buffers are broadcast from rank 0 at the start
//! (also after a resume); gradients are summed in buckets of about [`BUCKET_BYTES`] (all buckets
//! started before any is waited on) and divided by the world size, so the update equals one process
//! stepping on the global batch; BatchNorm statistics stay per rank and rank 0's are saved and
//! evaluated (broadcast before validation), unless `sync_bn` makes every BatchNorm layer normalise
//! with the statistics of the global batch ([`BnSync`], PyTorch's `SyncBatchNorm`); the loss, a stop
//! flag and the metrics are summed with the gradients.

pub mod ffi;
pub mod launch;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tch::{Device, Kind, Tensor};

use crate::net::Net;

/// Gradient bytes per all-reduce, as DDP's default `bucket_cap_mb = 25`.
pub const BUCKET_BYTES: usize = 25 << 20;

/// Why the process group could not be formed or a collective failed; each names the rank.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    #[error("{var}={value:?}: {why}")]
    Env { var: &'static str, value: String, why: String },
    #[error("rank {rank} of {world}: connecting to the rendezvous store at {addr} (MASTER_ADDR:MASTER_PORT): {msg}")]
    Store { rank: usize, world: usize, addr: String, msg: String },
    #[error("rank {rank} of {world}: forming the {backend} process group: {msg}")]
    Group { rank: usize, world: usize, backend: &'static str, msg: String },
    #[error("rank {rank} of {world}: {collective} failed: {msg} (another rank stopped, died or was cut off; its own output says why)")]
    Collective { rank: usize, world: usize, collective: String, msg: String },
    #[error("rank {rank} of {world}: after {when}, {ranks} rank(s) hold parameters that differ from rank 0's ({tensors} tensor checksums differ here); the ranks no longer train one model")]
    Desync { rank: usize, world: usize, when: String, ranks: usize, tensors: usize },
    #[error("rank {rank} of {world}: device {device:?} cannot use the {backend} backend: {why}")]
    Device { rank: usize, world: usize, device: Device, backend: &'static str, why: String },
}

/// Where this process stands in the job, from the launcher's environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    pub rank: usize,
    pub world: usize,
    pub local_rank: usize,
    pub local_world: usize,
    pub master_addr: String,
    pub master_port: u16,
    /// torchrun's agent hosts the store (`TORCHELASTIC_USE_AGENT_STORE=True`): every rank is a client.
    pub agent_store: bool,
    /// `TORCHELASTIC_RESTART_COUNT`: which attempt of the job this is.
    pub restart: usize,
}

impl Env {
    /// The job's layout, or `None` when `WORLD_SIZE` is not set (a plain single process).
    pub fn from_env() -> Result<Option<Env>, DistError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// As [`Env::from_env`], over any variable lookup (tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Option<Env>, DistError> {
        let Some(world_text) = get("WORLD_SIZE") else { return Ok(None) };
        let num = |var: &'static str, default: Option<usize>| -> Result<usize, DistError> {
            match get(var) {
                Some(v) => v.trim().parse::<usize>().map_err(|_| DistError::Env { var, value: v.clone(), why: "not a whole number".into() }),
                None => default.ok_or_else(|| DistError::Env { var, value: String::new(), why: "not set, and WORLD_SIZE is".into() }),
            }
        };
        let world = num("WORLD_SIZE", None)?;
        if world == 0 {
            return Err(DistError::Env { var: "WORLD_SIZE", value: world_text, why: "must be at least 1".into() });
        }
        let rank = num("RANK", None)?;
        if rank >= world {
            return Err(DistError::Env { var: "RANK", value: rank.to_string(), why: format!("must be below WORLD_SIZE={world}") });
        }
        let local_rank = num("LOCAL_RANK", Some(rank))?;
        let local_world = num("LOCAL_WORLD_SIZE", Some(world))?;
        if local_rank >= local_world.max(1) {
            return Err(DistError::Env { var: "LOCAL_RANK", value: local_rank.to_string(), why: format!("must be below LOCAL_WORLD_SIZE={local_world}") });
        }
        let master_addr = get("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".into());
        let port_text = get("MASTER_PORT").unwrap_or_else(|| "29500".into());
        let master_port =
            port_text.trim().parse::<u16>().map_err(|_| DistError::Env { var: "MASTER_PORT", value: port_text.clone(), why: "not a port number".into() })?;
        let agent_store = get("TORCHELASTIC_USE_AGENT_STORE").is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
        let restart = num("TORCHELASTIC_RESTART_COUNT", Some(0))?;
        Ok(Some(Env { rank, world, local_rank, local_world, master_addr, master_port, agent_store, restart }))
    }

    /// The key prefix of this attempt: restarted groups never see an earlier attempt's keys.
    pub fn store_prefix(&self) -> String {
        format!("dlcv/attempt_{}", self.restart)
    }

    /// Intra-op threads for this rank: the machine's cores shared by its local ranks, unless
    /// `OMP_NUM_THREADS` says otherwise (oversubscribed ranks run many times slower).
    pub fn threads(&self, cores: usize) -> Option<usize> {
        if std::env::var_os("OMP_NUM_THREADS").is_some() {
            return None;
        }
        Some((cores / self.local_world.max(1)).max(1))
    }
}

/// The collective back end: Gloo for CPU tensors, NCCL for CUDA ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Gloo,
    Nccl,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Gloo => "gloo",
            Backend::Nccl => "nccl",
        }
    }

    /// What PyTorch picks: NCCL for CUDA devices, Gloo otherwise; `DLCV_DIST_BACKEND=gloo|nccl` overrides.
    pub fn for_device(device: Device) -> Result<Backend, DistError> {
        match std::env::var("DLCV_DIST_BACKEND").ok().as_deref() {
            Some("gloo") => Ok(Backend::Gloo),
            Some("nccl") => Ok(Backend::Nccl),
            Some(other) => Err(DistError::Env { var: "DLCV_DIST_BACKEND", value: other.into(), why: "expected gloo or nccl".into() }),
            None => Ok(if device.is_cuda() { Backend::Nccl } else { Backend::Gloo }),
        }
    }
}

/// Whether this trainer was built with the NCCL bridge, and if not, why.
pub fn nccl_built() -> Result<(), &'static str> {
    match option_env!("DLCV_NCCL_MISSING") {
        None => Ok(()),
        Some(why) => Err(why),
    }
}

/// This process's membership of the job: the store, the process group and who it is.
pub struct Dist {
    pub env: Env,
    pub backend: Backend,
    /// Where the collectives' tensors live (the rank's training device).
    pub device: Device,
    group: Arc<ffi::Group>,
    _store: ffi::Store,
    timeout_ms: i64,
}

impl Dist {
    /// Joins the job: connects to (rank 0 without torchrun's agent: hosts) the store at
    /// MASTER_ADDR:MASTER_PORT and forms the process group; fails within `timeout` when a rank never comes.
    pub fn init(env: Env, device: Device, timeout: Duration) -> Result<Dist, DistError> {
        let backend = Backend::for_device(device)?;
        let (rank, world) = (env.rank, env.world);
        if backend == Backend::Nccl && !device.is_cuda() {
            return Err(DistError::Device { rank, world, device, backend: "nccl", why: "NCCL reduces CUDA tensors only; use gloo for the CPU".into() });
        }
        let timeout_ms = timeout.as_millis().min(i64::MAX as u128) as i64;
        let server = env.rank == 0 && !env.agent_store;
        let addr = format!("{}:{}", env.master_addr, env.master_port);
        let store = ffi::Store::connect(&env.master_addr, env.master_port, server, world, timeout_ms, &env.store_prefix()).map_err(|msg| DistError::Store {
            rank,
            world,
            addr,
            msg,
        })?;
        let group = match backend {
            Backend::Gloo => {
                let interface = std::env::var("GLOO_SOCKET_IFNAME").unwrap_or_default();
                ffi::Group::gloo(&store, rank, world, timeout_ms, 0, &interface)
            }
            Backend::Nccl => ffi::Group::nccl(&store, rank, world, timeout_ms),
        }
        .map_err(|msg| DistError::Group { rank, world, backend: backend.name(), msg })?;
        Ok(Dist { env, backend, device, group: Arc::new(group), _store: store, timeout_ms })
    }

    pub fn rank(&self) -> usize {
        self.env.rank
    }

    pub fn world(&self) -> usize {
        self.env.world
    }

    /// Rank 0 writes checkpoints, logs and plots.
    pub fn is_main(&self) -> bool {
        self.env.rank == 0
    }

    fn failed(&self, collective: &str, msg: String) -> DistError {
        DistError::Collective { rank: self.env.rank, world: self.env.world, collective: collective.to_string(), msg }
    }

    /// Sums each tensor across the ranks, in place.
    pub fn all_reduce(&self, tensors: &mut [Tensor], what: &str) -> Result<(), DistError> {
        self.group.allreduce(tensors, self.timeout_ms).map_err(|m| self.failed(&format!("all-reduce of {what}"), m))
    }

    /// Overwrites each tensor with rank 0's.
    pub fn broadcast(&self, tensors: &mut [Tensor], what: &str) -> Result<(), DistError> {
        self.group.broadcast(tensors, 0, self.timeout_ms).map_err(|m| self.failed(&format!("broadcast of {what}"), m))
    }

    pub fn barrier(&self, what: &str) -> Result<(), DistError> {
        self.group.barrier(self.timeout_ms).map_err(|m| self.failed(&format!("barrier ({what})"), m))
    }

    /// The sums over the ranks of `values` (exact for counts below 2^53).
    pub fn sum(&self, values: &[f64], what: &str) -> Result<Vec<f64>, DistError> {
        let mut t = [Tensor::from_slice(values).to_device(self.device)];
        self.all_reduce(&mut t, what)?;
        Ok(Vec::<f64>::try_from(t[0].to_device(Device::Cpu)).expect("a float64 vector"))
    }

    /// The handle SyncBatchNorm layers reduce their statistics through (see [`BnSync`]).
    pub fn bn_sync(&self) -> Arc<BnSync> {
        Arc::new(BnSync { group: self.group.clone(), rank: self.env.rank, world: self.env.world, timeout_ms: self.timeout_ms, failure: Mutex::new(None) })
    }

    /// Gives every rank rank 0's parameters and buffers (BTreeMap order: the same on every rank).
    pub fn broadcast_net(&self, net: &Net, buffers_only: bool) -> Result<(), DistError> {
        let _guard = tch::no_grad_guard();
        let trainable: std::collections::HashSet<&str> = net.trainable().iter().map(|(s, _)| s.name.as_str()).collect();
        let mut ts: Vec<Tensor> = net.params.iter().filter(|(n, _)| !buffers_only || !trainable.contains(n.as_str())).map(|(_, t)| t.shallow_clone()).collect();
        if ts.is_empty() {
            return Ok(());
        }
        // collectives want dense, contiguous buffers: channels-last weights go through a copy
        let mut dense: Vec<Tensor> = ts.iter().map(|t| if t.is_contiguous() { t.shallow_clone() } else { t.contiguous() }).collect();
        self.broadcast(&mut dense, if buffers_only { "the buffers" } else { "the parameters and buffers" })?;
        for (t, d) in ts.iter_mut().zip(&dense) {
            if !t.is_contiguous() {
                t.copy_(d);
            }
        }
        Ok(())
    }
}

impl Dist {
    /// Fails on every rank when some rank's parameters and buffers differ from rank 0's: two
    /// checksums per tensor (the sum and an index-weighted sum, in f64) are compared with rank 0's.
    pub fn check_identical(&self, net: &Net, when: &str) -> Result<(), DistError> {
        let _guard = tch::no_grad_guard();
        let sums: Vec<Tensor> = net
            .params
            .values()
            .flat_map(|t| {
                let flat = t.detach().to_kind(Kind::Double).contiguous().view(-1);
                let ramp = Tensor::arange(flat.numel() as i64, (Kind::Double, flat.device())) / flat.numel().max(1) as f64 + 1.0;
                [flat.sum(Kind::Double), (&flat * ramp).sum(Kind::Double)]
            })
            .collect();
        if sums.is_empty() {
            return Ok(());
        }
        let mine = Tensor::stack(&sums, 0);
        let mut theirs = [mine.copy()];
        self.broadcast(&mut theirs, "the parameter checksums")?;
        let differ = mine.ne_tensor(&theirs[0]).sum(Kind::Int64).int64_value(&[]);
        let ranks = self.sum(&[(differ > 0) as u8 as f64], "the checksum comparison")?[0].round() as usize;
        if ranks > 0 {
            return Err(DistError::Desync { rank: self.env.rank, world: self.env.world, when: when.into(), ranks, tensors: differ as usize });
        }
        Ok(())
    }
}

/// SyncBatchNorm's link to the job: each BatchNorm layer in training sums its per-channel
/// statistics over the ranks through a differentiable all-reduce, whose backward pass sums their
/// gradients over the ranks again (as PyTorch's `SyncBatchNorm` does with its two collectives).
///
/// The forward pass cannot return an error, so a failed forward all-reduce is recorded here and
/// the layer goes on with this rank's own statistics; the training step asks [`BnSync::take_failure`]
/// after the forward pass and stops with the error. A failed backward all-reduce is the error of the
/// backward call.
pub struct BnSync {
    group: Arc<ffi::Group>,
    rank: usize,
    world: usize,
    timeout_ms: i64,
    failure: Mutex<Option<String>>,
}

impl BnSync {
    /// The sum of `x` over the ranks, differentiable; `x` itself after a failure (recorded).
    pub fn sum(&self, x: &Tensor) -> Tensor {
        match self.group.allreduce_autograd(x, self.timeout_ms) {
            Ok(t) => t,
            Err(msg) => {
                let mut f = self.failure.lock().unwrap_or_else(|p| p.into_inner());
                f.get_or_insert(msg);
                x.shallow_clone()
            }
        }
    }

    /// The first failure of a forward all-reduce since the last call, as the error to stop with.
    pub fn take_failure(&self) -> Option<DistError> {
        let msg = self.failure.lock().unwrap_or_else(|p| p.into_inner()).take()?;
        Some(self.error("the all-reduce of the SyncBatchNorm statistics", msg))
    }

    /// The error of a backward pass that ran SyncBatchNorm's gradient all-reduces.
    pub fn error(&self, collective: &str, msg: String) -> DistError {
        DistError::Collective { rank: self.rank, world: self.world, collective: collective.into(), msg }
    }
}

/// DDP's gradient averaging: the trainable parameters' gradients packed into buckets (reverse
/// graph order, as DDP fills them in backward), one all-reduce per bucket, all in flight together.
pub struct GradBuckets {
    /// Parameter names per bucket.
    buckets: Vec<Vec<String>>,
}

impl GradBuckets {
    pub fn new(net: &Net, cap_bytes: usize) -> Self {
        let mut buckets: Vec<Vec<String>> = vec![];
        let (mut bytes, mut kind) = (0usize, None::<Kind>);
        for (spec, t) in net.trainable().into_iter().rev() {
            let size = t.numel() * t.kind().elt_size_in_bytes();
            if buckets.is_empty() || bytes + size > cap_bytes || kind != Some(t.kind()) {
                buckets.push(vec![]);
                bytes = 0;
                kind = Some(t.kind());
            }
            bytes += size;
            buckets.last_mut().expect("pushed").push(spec.name.clone());
        }
        Self { buckets }
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Averages every gradient over the ranks and sums `extra` (the step's loss, stop flag, …) in the
    /// same round; returns the summed `extra`.
    pub fn sync(&self, dist: &Dist, net: &Net, extra: &[f64]) -> Result<Vec<f64>, DistError> {
        let _guard = tch::no_grad_guard();
        let world = dist.world() as f64;
        let mut flats = Vec::with_capacity(self.buckets.len() + 1);
        for names in &self.buckets {
            let parts: Vec<Tensor> = names
                .iter()
                .map(|n| {
                    let p = &net.params[n];
                    let g = p.grad();
                    if g.defined() {
                        g.contiguous().view(-1)
                    } else {
                        Tensor::zeros([p.numel() as i64], (p.kind(), p.device()))
                    }
                })
                .collect();
            flats.push(Tensor::cat(&parts, 0));
        }
        flats.push(Tensor::from_slice(extra).to_device(dist.device));
        dist.all_reduce(&mut flats, "the gradients")?;
        let summed = Vec::<f64>::try_from(flats.pop().expect("the extra values").to_device(Device::Cpu)).expect("a float64 vector");
        for (names, flat) in self.buckets.iter().zip(&flats) {
            let flat = flat / world;
            let mut at = 0i64;
            for n in names {
                let p = &net.params[n];
                let len = p.numel() as i64;
                let mut g = p.grad();
                if g.defined() {
                    g.copy_(&flat.narrow(0, at, len).view_as(&g));
                }
                at += len;
            }
        }
        Ok(summed)
    }
}

/// Waits for the device's queued work (CUDA); nothing to wait for on the CPU.
fn sync_device(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// One size of `trainer allreduce-bench`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AllreduceTiming {
    pub floats: usize,
    /// Median milliseconds per all-reduce over the timed iterations.
    pub ms: f64,
    /// Bytes reduced per second (the buffer's size over the time), in GB/s.
    pub algbw_gbps: f64,
    /// NCCL-tests' bus bandwidth: algbw × 2(n−1)/n, what each link carried.
    pub busbw_gbps: f64,
}

/// Times in-place sums of f32 buffers of each size across the job (this process is one rank of it):
/// `warmup` untimed, then `iters` timed, each ended by the collective's own wait. Checks the result.
pub fn allreduce_bench(dist: &Dist, sizes: &[usize], warmup: usize, iters: usize) -> Result<Vec<AllreduceTiming>, DistError> {
    let world = dist.world() as f64;
    let mut rows = vec![];
    for &n in sizes {
        let mut t = [Tensor::ones([n as i64], (Kind::Float, dist.device))];
        let mut times = vec![];
        for i in 0..warmup + iters {
            let _ = t[0].fill_(1.0);
            sync_device(dist.device);
            let t0 = std::time::Instant::now();
            dist.all_reduce(&mut t, "the benchmark buffer")?;
            sync_device(dist.device);
            if i >= warmup {
                times.push(t0.elapsed().as_secs_f64());
            }
        }
        let got = t[0].get(n as i64 - 1).double_value(&[]);
        if got != world {
            return Err(dist.failed("the benchmark's check", format!("the sum of {n} ones over {world} ranks came out as {got}")));
        }
        times.sort_by(f64::total_cmp);
        let s = times[times.len() / 2];
        let algbw = (n * 4) as f64 / s / 1e9;
        rows.push(AllreduceTiming { floats: n, ms: s * 1e3, algbw_gbps: algbw, busbw_gbps: algbw * 2.0 * (world - 1.0) / world });
    }
    Ok(rows)
}
