//! Optimizers and learning-rate schedules whose state is ours.
//!
//! tch's `nn::Optimizer` cannot read or restore its state (momentum buffers, Adam moments), so an exact
//! resume needs optimizers written over tch tensors under `no_grad`, their state saved beside the
//! weights as named tensors (`optim.momentum.<param>`, `optim.exp_avg.<param>`, ...). The update rules
//! are PyTorch's (`torch.optim.SGD`, `Adam`, `AdamW`), so runs compare with PyTorch's.

use std::collections::BTreeMap;

use models::graph::{ParamKind, ParamSpec};
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// Which parameters weight decay applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DecayRule {
    /// The book's (mxnet's) rule: only conv/linear weights, BatchNorm γ and PReLU slopes (the
    /// parameters mxnet names `*_weight` or `*_gamma`); biases and BatchNorm β are not decayed.
    #[default]
    Book,
    /// Every trainable parameter, as `torch.optim` does by default.
    All,
}

impl DecayRule {
    pub fn applies(self, kind: ParamKind) -> bool {
        match self {
            DecayRule::All => true,
            DecayRule::Book => match kind {
                ParamKind::Weight | ParamKind::BnGamma | ParamKind::PreluSlope | ParamKind::Scale => true,
                ParamKind::Bias | ParamKind::BnBeta | ParamKind::BnRunningMean | ParamKind::BnRunningVar => false,
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerConfig {
    Sgd {
        #[serde(default = "d_momentum")]
        momentum: f64,
        #[serde(default)]
        nesterov: bool,
        #[serde(default)]
        weight_decay: f64,
        #[serde(default)]
        decay: DecayRule,
    },
    Adam {
        #[serde(default = "d_beta1")]
        beta1: f64,
        #[serde(default = "d_beta2")]
        beta2: f64,
        #[serde(default = "d_eps")]
        eps: f64,
        #[serde(default)]
        weight_decay: f64,
        #[serde(default)]
        decay: DecayRule,
    },
    /// Adam with decoupled weight decay (Loshchilov & Hutter).
    Adamw {
        #[serde(default = "d_beta1")]
        beta1: f64,
        #[serde(default = "d_beta2")]
        beta2: f64,
        #[serde(default = "d_eps")]
        eps: f64,
        #[serde(default = "d_adamw_wd")]
        weight_decay: f64,
        #[serde(default)]
        decay: DecayRule,
    },
}

fn d_momentum() -> f64 {
    0.9
}
fn d_beta1() -> f64 {
    0.9
}
fn d_beta2() -> f64 {
    0.999
}
fn d_eps() -> f64 {
    1e-8
}
fn d_adamw_wd() -> f64 {
    0.01
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        OptimizerConfig::Sgd { momentum: 0.9, nesterov: false, weight_decay: 0.0, decay: DecayRule::Book }
    }
}

/// Which kernels an [`Optimizer`] updates with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kernel {
    /// libtorch's fused multi-tensor kernels ([`crate::fused`]): one call per group of parameters
    /// (same dtype, device and decay), as `torch.optim` with `fused=True`.
    #[default]
    Fused,
    /// The reference: a loop over the parameters, two to four tensor operations each.
    PerTensor,
}

/// A fused kernel that libtorch refused (a dtype or device it has no kernel for).
#[derive(Debug, thiserror::Error)]
#[error("the fused {optimizer} kernel on {params} {kind:?} parameter(s) on {device:?}: {message} (train.fused_optimizer = false uses the per-tensor loop; this step is not to be continued)")]
pub struct OptimError {
    pub optimizer: &'static str,
    pub params: usize,
    pub kind: tch::Kind,
    pub device: tch::Device,
    pub message: String,
}

/// An optimizer and its state.
pub struct Optimizer {
    pub config: OptimizerConfig,
    /// Steps taken so far (Adam's bias correction needs it).
    pub steps: i64,
    /// Named state tensors, e.g. `momentum.block1.conv1.weight`.
    pub state: BTreeMap<String, Tensor>,
    pub kernel: Kernel,
    /// The state keys of each parameter, by position (built once, not formatted every step).
    keys: Vec<(String, [String; 2])>,
    /// State was restored and not yet moved to the parameters' devices and layouts.
    restored: bool,
}

/// The state tensor `key` (a handle sharing it), made by `new` the first time: the key is copied
/// only then, not on every step.
fn state_of(state: &mut BTreeMap<String, Tensor>, key: &str, new: impl FnOnce() -> Tensor) -> Tensor {
    match state.get(key) {
        Some(t) => t.shallow_clone(),
        None => {
            let t = new();
            state.insert(key.to_string(), t.shallow_clone());
            t
        }
    }
}

/// Parameters updated by one fused call: same dtype, device and weight decay, and (SGD) all with or
/// all without a momentum buffer yet.
struct Group {
    kind: tch::Kind,
    device: tch::Device,
    decays: bool,
    fresh: bool,
    params: Vec<Tensor>,
    grads: Vec<Tensor>,
    /// positions in the parameter list (for their state keys)
    at: Vec<usize>,
}

impl Optimizer {
    /// An optimizer on the fused kernels.
    pub fn new(config: OptimizerConfig) -> Self {
        Self { config, steps: 0, state: BTreeMap::new(), kernel: Kernel::Fused, keys: vec![], restored: false }
    }

    /// The same optimizer on `kernel`.
    pub fn with_kernel(mut self, kernel: Kernel) -> Self {
        self.kernel = kernel;
        self
    }

    /// One update of every parameter that has a gradient, at learning rate `lr`.
    pub fn step(&mut self, params: &[(&ParamSpec, &Tensor)], lr: f64) -> Result<(), OptimError> {
        match self.kernel {
            Kernel::Fused => self.step_fused(params, lr),
            Kernel::PerTensor => {
                self.step_per_tensor(params, lr);
                Ok(())
            }
        }
    }

    /// The state keys of parameter `i` (`[momentum, -]` or `[exp_avg, exp_avg_sq]`), from the cache.
    fn keys_of<'a>(keys: &'a mut Vec<(String, [String; 2])>, adam: bool, i: usize, name: &str) -> &'a [String; 2] {
        if keys.len() <= i {
            keys.resize_with(i + 1, Default::default);
        }
        if keys[i].0 != name {
            let k = if adam { [format!("exp_avg.{name}"), format!("exp_avg_sq.{name}")] } else { [format!("momentum.{name}"), String::new()] };
            keys[i] = (name.to_string(), k);
        }
        &keys[i].1
    }

    fn step_fused(&mut self, params: &[(&ParamSpec, &Tensor)], lr: f64) -> Result<(), OptimError> {
        let _guard = tch::no_grad_guard();
        self.steps += 1;
        self.adopt_layouts(params);
        let (decay, sgd_momentum) = match self.config {
            OptimizerConfig::Sgd { decay, momentum, .. } => (decay, Some(momentum)),
            OptimizerConfig::Adam { decay, .. } | OptimizerConfig::Adamw { decay, .. } => (decay, None),
        };
        let mut groups: Vec<Group> = vec![];
        // a gradient laid out unlike its parameter cannot share the fused kernels' flat walk
        let mut apart = vec![];
        for (i, (spec, p)) in params.iter().enumerate() {
            let g = p.grad();
            if !g.defined() {
                continue;
            }
            if g.stride() != p.stride() {
                apart.push((i, g));
                continue;
            }
            let decays = decay.applies(spec.kind);
            let fresh = match sgd_momentum {
                Some(m) if m != 0.0 => !self.state.contains_key(&Self::keys_of(&mut self.keys, false, i, &spec.name)[0]),
                _ => false,
            };
            let (kind, device) = (p.kind(), p.device());
            let at = match groups.iter().position(|x| x.kind == kind && x.device == device && x.decays == decays && x.fresh == fresh) {
                Some(at) => at,
                None => {
                    groups.push(Group { kind, device, decays, fresh, params: vec![], grads: vec![], at: vec![] });
                    groups.len() - 1
                }
            };
            let group = &mut groups[at];
            group.params.push(p.shallow_clone());
            group.grads.push(g);
            group.at.push(i);
        }
        for group in groups {
            let fail = |optimizer, message| OptimError { optimizer, params: group.params.len(), kind: group.kind, device: group.device, message };
            match self.config {
                OptimizerConfig::Sgd { momentum, nesterov, weight_decay, .. } => {
                    let wd = if group.decays { weight_decay } else { 0.0 };
                    let mut bufs = vec![];
                    if momentum != 0.0 {
                        for (&i, g) in group.at.iter().zip(&group.grads) {
                            let [key, _] = Self::keys_of(&mut self.keys, false, i, &params[i].0.name);
                            // a fresh buffer's contents are not read: the kernel copies the gradient in
                            bufs.push(state_of(&mut self.state, key, || g.empty_like()));
                        }
                    }
                    crate::fused::sgd(&group.params, &group.grads, &bufs, wd, momentum, lr, nesterov, group.fresh).map_err(|m| fail("SGD", m))?;
                }
                OptimizerConfig::Adam { beta1, beta2, eps, weight_decay, .. } | OptimizerConfig::Adamw { beta1, beta2, eps, weight_decay, .. } => {
                    let decoupled = matches!(self.config, OptimizerConfig::Adamw { .. });
                    let wd = if group.decays { weight_decay } else { 0.0 };
                    let (mut m, mut v) = (vec![], vec![]);
                    for (&i, g) in group.at.iter().zip(&group.grads) {
                        let [mk, vk] = Self::keys_of(&mut self.keys, true, i, &params[i].0.name);
                        m.push(state_of(&mut self.state, mk, || g.zeros_like()));
                        v.push(state_of(&mut self.state, vk, || g.zeros_like()));
                    }
                    // the kernels read the step count from a device tensor (a fill, not a host read)
                    let step = Tensor::scalar_tensor(self.steps as f64, (tch::Kind::Float, group.device));
                    crate::fused::adam(&group.params, &group.grads, &m, &v, &step, lr, (beta1, beta2, eps), wd, decoupled)
                        .map_err(|msg| fail(if decoupled { "AdamW" } else { "Adam" }, msg))?;
                }
            }
        }
        for (i, g) in apart {
            self.update_one(params[i].0, params[i].1, g, lr);
        }
        Ok(())
    }

    /// The reference update, one parameter at a time (what [`Kernel::PerTensor`] runs).
    pub fn step_per_tensor(&mut self, params: &[(&ParamSpec, &Tensor)], lr: f64) {
        let _guard = tch::no_grad_guard();
        self.steps += 1;
        self.adopt_layouts(params);
        for (spec, p) in params {
            let g = p.grad();
            if g.defined() {
                self.update_one(spec, p, g, lr);
            }
        }
    }

    /// State restored from a checkpoint lies on the CPU in contiguous order; each tensor is moved
    /// once, before the first step after the restore, to its parameter's device and memory layout
    /// (channels-last conv weights), which both kernels need: the fused ones walk parameter, gradient
    /// and state by the same flat index.
    fn adopt_layouts(&mut self, params: &[(&ParamSpec, &Tensor)]) {
        if !std::mem::take(&mut self.restored) {
            return;
        }
        let adam = !matches!(self.config, OptimizerConfig::Sgd { .. });
        for (i, (spec, p)) in params.iter().enumerate() {
            for key in Self::keys_of(&mut self.keys, adam, i, &spec.name).clone() {
                if let Some(t) = self.state.get_mut(&key) {
                    if t.device() != p.device() || t.stride() != p.stride() || t.kind() != p.kind() {
                        let mut moved = p.detach().empty_like();
                        moved.copy_(t);
                        *t = moved;
                    }
                }
            }
        }
    }

    /// The reference update of one parameter with gradient `g` at the current step count.
    fn update_one(&mut self, spec: &ParamSpec, p: &Tensor, g: Tensor, lr: f64) {
        let t = self.steps as f64;
        {
            let mut p = p.shallow_clone();
            match self.config {
                OptimizerConfig::Sgd { momentum, nesterov, weight_decay, decay } => {
                    // torch.optim.SGD's rule, written with in-place multiply-adds (`addcmul_` by a 0-d
                    // tensor is an axpy): the gradient tensor itself is the work buffer, which is
                    // safe because gradients are zeroed before the next backward pass.
                    let scalar = |v: f64| Tensor::scalar_tensor(v, (p.kind(), p.device()));
                    let mut d = g;
                    if weight_decay != 0.0 && decay.applies(spec.kind) {
                        let _ = d.addcmul_(&p, &scalar(weight_decay));
                    }
                    if momentum != 0.0 {
                        let key = format!("momentum.{}", spec.name);
                        let buf = match self.state.get(&key) {
                            Some(buf) => {
                                let mut buf = buf.shallow_clone();
                                let _ = buf.g_mul_scalar_(momentum).g_add_(&d);
                                buf
                            }
                            None => {
                                let buf = d.copy();
                                self.state.insert(key, buf.shallow_clone());
                                buf
                            }
                        };
                        if nesterov {
                            let _ = d.addcmul_(&buf, &scalar(momentum));
                        } else {
                            d = buf;
                        }
                    }
                    let _ = p.addcmul_(&d, &scalar(-lr));
                }
                OptimizerConfig::Adam { beta1, beta2, eps, weight_decay, decay } | OptimizerConfig::Adamw { beta1, beta2, eps, weight_decay, decay } => {
                    let decoupled = matches!(self.config, OptimizerConfig::Adamw { .. });
                    let wd = if decay.applies(spec.kind) { weight_decay } else { 0.0 };
                    let g = if !decoupled && wd != 0.0 { &g + &p * wd } else { g };
                    if decoupled && wd != 0.0 {
                        let _ = p.g_mul_scalar_(1.0 - lr * wd);
                    }
                    let (mk, vk) = (format!("exp_avg.{}", spec.name), format!("exp_avg_sq.{}", spec.name));
                    let m = self.state.entry(mk).or_insert_with(|| g.zeros_like());
                    let _ = m.g_mul_scalar_(beta1).g_add_(&(&g * (1.0 - beta1)));
                    let m = m.shallow_clone();
                    let v = self.state.entry(vk).or_insert_with(|| g.zeros_like());
                    let _ = v.g_mul_scalar_(beta2).g_add_(&(g.square() * (1.0 - beta2)));
                    let v = v.shallow_clone();
                    let m_hat = m / (1.0 - beta1.powf(t));
                    let v_hat = v / (1.0 - beta2.powf(t));
                    let _ = p.g_sub_(&(m_hat / (v_hat.sqrt() + eps) * lr));
                }
            }
        }
    }

    /// State tensors under `optim.`-prefixed names, plus the step count, for a checkpoint.
    pub fn to_named(&self) -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> = self.state.iter().map(|(k, t)| (format!("optim.{k}"), t.shallow_clone())).collect();
        v.push(("optim.steps".into(), Tensor::from_slice(&[self.steps])));
        v
    }

    /// Restores what [`to_named`](Self::to_named) wrote (other names are ignored).
    pub fn load_named(&mut self, named: &BTreeMap<String, Tensor>) {
        self.state.clear();
        self.restored = true;
        for (k, t) in named {
            match k.strip_prefix("optim.") {
                Some("steps") => self.steps = t.int64_value(&[0]),
                Some(key) => {
                    self.state.insert(key.to_string(), t.copy());
                }
                None => {}
            }
        }
    }
}

/// The learning rate as a function of the epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    Constant {
        #[serde(default)]
        warmup_epochs: usize,
    },
    /// Multiply by `gamma` every `step_size` epochs.
    Step {
        step_size: usize,
        #[serde(default = "d_gamma")]
        gamma: f64,
        #[serde(default)]
        warmup_epochs: usize,
    },
    /// Multiply by `gamma` at each listed epoch.
    Multistep {
        milestones: Vec<usize>,
        #[serde(default = "d_gamma")]
        gamma: f64,
        #[serde(default)]
        warmup_epochs: usize,
    },
    /// The book's polynomial decay: lr0 * (1 - epoch / max_epochs)^power.
    Poly {
        max_epochs: usize,
        #[serde(default = "d_power")]
        power: f64,
        #[serde(default)]
        warmup_epochs: usize,
    },
    /// Cosine annealing from lr0 to `min_lr` over `max_epochs`.
    Cosine {
        max_epochs: usize,
        #[serde(default)]
        min_lr: f64,
        #[serde(default)]
        warmup_epochs: usize,
    },
}

fn d_gamma() -> f64 {
    0.1
}
fn d_power() -> f64 {
    1.0
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule::Constant { warmup_epochs: 0 }
    }
}

impl Schedule {
    /// The rate for the (0-based) epoch `e` with base rate `lr0`. A linear warm-up, when set, ramps
    /// from lr0 / warmup to lr0 over the first `warmup_epochs` epochs.
    pub fn lr(&self, lr0: f64, e: usize) -> f64 {
        let warmup = match self {
            Schedule::Constant { warmup_epochs }
            | Schedule::Step { warmup_epochs, .. }
            | Schedule::Multistep { warmup_epochs, .. }
            | Schedule::Poly { warmup_epochs, .. }
            | Schedule::Cosine { warmup_epochs, .. } => *warmup_epochs,
        };
        if e < warmup {
            return lr0 * (e + 1) as f64 / warmup as f64;
        }
        match self {
            Schedule::Constant { .. } => lr0,
            Schedule::Step { step_size, gamma, .. } => lr0 * gamma.powi((e / (*step_size).max(1)) as i32),
            Schedule::Multistep { milestones, gamma, .. } => lr0 * gamma.powi(milestones.iter().filter(|&&m| e >= m).count() as i32),
            Schedule::Poly { max_epochs, power, .. } => lr0 * (1.0 - e as f64 / *max_epochs as f64).max(0.0).powf(*power),
            Schedule::Cosine { max_epochs, min_lr, .. } => {
                let progress = (e as f64 / *max_epochs as f64).min(1.0);
                min_lr + (lr0 - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    fn spec(kind: ParamKind) -> ParamSpec {
        ParamSpec { name: "w".into(), shape: vec![3], kind, trainable: true, fan_in: 1, fan_out: 1, node: 1, init: models::graph::ParamInit::Scheme }
    }

    /// Runs `steps` updates of f(p) = sum(p²)/2 (gradient p) from p = [1, -2, 3], with both kernels;
    /// they must agree, and the fused one's result is returned.
    fn run(cfg: OptimizerConfig, kind: ParamKind, steps: usize, lr: f64) -> Vec<f64> {
        let out = [Kernel::Fused, Kernel::PerTensor].map(|kernel| {
            let mut p = Tensor::from_slice(&[1.0f32, -2.0, 3.0]).set_requires_grad(true);
            let s = spec(kind);
            let mut opt = Optimizer::new(cfg.clone()).with_kernel(kernel);
            for _ in 0..steps {
                p.zero_grad();
                (p.square().sum(Kind::Float) / 2.0).backward();
                opt.step(&[(&s, &p)], lr).unwrap();
            }
            Vec::<f64>::try_from(p.to_kind(Kind::Double).detach()).unwrap()
        });
        close(&out[0], &out[1]);
        out[0].clone()
    }

    /// Two networks' worth of parameters (weights, biases, BatchNorm β; several shapes) with the
    /// gradients of a fixed random quadratic, stepped by both kernels side by side.
    #[test]
    fn the_fused_kernels_step_as_the_per_tensor_loop_does() {
        let kinds = [ParamKind::Weight, ParamKind::Bias, ParamKind::BnGamma, ParamKind::BnBeta, ParamKind::Weight];
        let shapes: [&[i64]; 5] = [&[8, 3, 3, 3], &[8], &[8], &[8], &[10, 72]];
        let specs: Vec<ParamSpec> = kinds.iter().enumerate().map(|(i, &k)| ParamSpec { name: format!("p{i}"), ..spec(k) }).collect();
        let configs = [
            OptimizerConfig::Sgd { momentum: 0.9, nesterov: false, weight_decay: 5e-4, decay: DecayRule::Book },
            OptimizerConfig::Sgd { momentum: 0.9, nesterov: true, weight_decay: 1e-3, decay: DecayRule::All },
            OptimizerConfig::Sgd { momentum: 0.0, nesterov: false, weight_decay: 1e-3, decay: DecayRule::Book },
            OptimizerConfig::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 1e-2, decay: DecayRule::Book },
            OptimizerConfig::Adamw { beta1: 0.8, beta2: 0.99, eps: 1e-6, weight_decay: 0.05, decay: DecayRule::Book },
        ];
        for cfg in configs {
            tch::manual_seed(7);
            let start: Vec<Tensor> = shapes.iter().map(|s| Tensor::randn(*s, (Kind::Float, tch::Device::Cpu))).collect();
            let targets: Vec<Tensor> = shapes.iter().map(|s| Tensor::randn(*s, (Kind::Float, tch::Device::Cpu))).collect();
            let sides = [Kernel::Fused, Kernel::PerTensor].map(|kernel| {
                let ps: Vec<Tensor> = start.iter().map(|t| t.copy().set_requires_grad(true)).collect();
                (ps, Optimizer::new(cfg.clone()).with_kernel(kernel))
            });
            let [(pf, mut of), (pr, mut or)] = sides;
            for step in 1..=6 {
                // the learning rate changes mid-run, as a schedule does
                let lr = if step < 4 { 0.05 } else { 0.01 };
                for (ps, opt) in [(&pf, &mut of), (&pr, &mut or)] {
                    for p in ps {
                        let mut g = p.grad();
                        if g.defined() {
                            let _ = g.zero_();
                        }
                    }
                    let loss = ps.iter().zip(&targets).map(|(p, t)| ((p - t).square() * 1.5).sum(Kind::Float)).fold(Tensor::from(0f32), |a, b| a + b);
                    loss.backward();
                    let list: Vec<(&ParamSpec, &Tensor)> = specs.iter().zip(ps.iter()).collect();
                    opt.step(&list, lr).unwrap();
                }
                // the kernels round in their own order (fused multiply-adds, f32 bias corrections):
                // agreement to a few float32 ulps of each tensor's magnitude, compounding over steps
                let differ = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]) / b.abs().max().double_value(&[]).max(1.0);
                for (i, (a, b)) in pf.iter().zip(&pr).enumerate() {
                    let d = differ(a, b);
                    assert!(d < 1e-6, "{cfg:?} step {step}: parameter {i} differs by {d} of its magnitude");
                }
                assert_eq!(of.state.keys().collect::<Vec<_>>(), or.state.keys().collect::<Vec<_>>(), "{cfg:?}: the same state tensors");
                for (k, a) in &of.state {
                    let d = differ(a, &or.state[k]);
                    assert!(d < 1e-6, "{cfg:?} step {step}: state {k} differs by {d} of its magnitude");
                }
            }
            // and the fused kernels really moved every parameter
            for (a, s) in pf.iter().zip(&start) {
                assert!((a - s).abs().max().double_value(&[]) > 1e-3, "{cfg:?}: a parameter did not move");
            }
        }
    }

    #[test]
    fn restored_state_meets_channels_last_parameters_on_both_kernels() {
        // a checkpoint holds contiguous CPU copies of the state (run_files saves `.contiguous()`);
        // the run's conv weights are channels-last: the fused kernels walk both by one flat index
        let cfgs = [
            OptimizerConfig::Sgd { momentum: 0.9, nesterov: true, weight_decay: 1e-3, decay: DecayRule::All },
            OptimizerConfig::Adamw { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01, decay: DecayRule::All },
        ];
        let s = spec(ParamKind::Weight);
        tch::manual_seed(3);
        let start = Tensor::randn([4, 3, 3, 3], (Kind::Float, tch::Device::Cpu));
        let target = Tensor::randn([4, 3, 3, 3], (Kind::Float, tch::Device::Cpu));
        for kernel in [Kernel::Fused, Kernel::PerTensor] {
            for cfg in &cfgs {
                let fresh = || crate::net::to_channels_last(&start.copy()).set_requires_grad(true);
                let step = |p: &Tensor, opt: &mut Optimizer| {
                    let mut g = p.grad();
                    if g.defined() {
                        let _ = g.zero_();
                    }
                    (p - &target).square().sum(Kind::Float).backward();
                    opt.step(&[(&s, p)], 0.05).unwrap();
                };
                let a = fresh();
                assert_ne!(a.stride(), a.contiguous().stride(), "the test needs a channels-last parameter");
                let mut oa = Optimizer::new(cfg.clone()).with_kernel(kernel);
                for _ in 0..5 {
                    step(&a, &mut oa);
                }
                let b = fresh();
                let mut ob = Optimizer::new(cfg.clone()).with_kernel(kernel);
                for _ in 0..2 {
                    step(&b, &mut ob);
                }
                let saved: BTreeMap<String, Tensor> = ob.to_named().into_iter().map(|(k, t)| (k, t.contiguous())).collect();
                let mut oc = Optimizer::new(cfg.clone()).with_kernel(kernel);
                oc.load_named(&saved);
                for _ in 0..3 {
                    step(&b, &mut oc);
                }
                assert!(a.equal(&b), "{kernel:?} {cfg:?}: a resumed run drifted by {}", (&a - &b).abs().max().double_value(&[]));
            }
        }
    }

    #[test]
    fn a_fused_state_restored_mid_run_continues_as_an_uninterrupted_one() {
        let cfg = OptimizerConfig::Adamw { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01, decay: DecayRule::Book };
        let s = spec(ParamKind::Weight);
        let grad_step = |p: &Tensor, opt: &mut Optimizer| {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.zero_();
            }
            (p.square().sum(Kind::Float) * 0.5 + p.sum(Kind::Float)).backward();
            opt.step(&[(&s, p)], 0.1).unwrap();
        };
        let a = Tensor::from_slice(&[1.0f32, -2.0, 3.0]).set_requires_grad(true);
        let mut oa = Optimizer::new(cfg.clone());
        for _ in 0..5 {
            grad_step(&a, &mut oa);
        }
        let b = Tensor::from_slice(&[1.0f32, -2.0, 3.0]).set_requires_grad(true);
        let mut ob = Optimizer::new(cfg.clone());
        for _ in 0..2 {
            grad_step(&b, &mut ob);
        }
        let mut oc = Optimizer::new(cfg);
        oc.load_named(&ob.to_named().into_iter().collect());
        for _ in 0..3 {
            grad_step(&b, &mut oc);
        }
        assert!(a.equal(&b), "{a:?} vs {b:?}");
    }

    fn close(a: &[f64], b: &[f64]) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn sgd_momentum_and_nesterov_follow_torch() {
        // Hand-computed with torch.optim.SGD's rule: buf = m*buf + g; p -= lr*buf (nesterov: g + m*buf).
        // p0 = 1: step 1 g=1 buf=1 p=0.9; step 2 g=0.9 buf=1.8 p=0.72
        let plain = run(OptimizerConfig::Sgd { momentum: 0.9, nesterov: false, weight_decay: 0.0, decay: DecayRule::All }, ParamKind::Weight, 2, 0.1);
        close(&plain, &[0.72, -1.44, 2.16]);
        // nesterov: step 1 d = 1 + 0.9*1 = 1.9, p = 0.81; step 2 g=0.81, buf=0.9+0.81=1.71, d=0.81+1.539=2.349, p=0.5751
        let nesterov = run(OptimizerConfig::Sgd { momentum: 0.9, nesterov: true, weight_decay: 0.0, decay: DecayRule::All }, ParamKind::Weight, 2, 0.1);
        close(&nesterov, &[0.5751, -1.1502, 1.7253]);
    }

    #[test]
    fn the_books_decay_rule_skips_biases_and_bn_beta() {
        let cfg = OptimizerConfig::Sgd { momentum: 0.0, nesterov: false, weight_decay: 0.5, decay: DecayRule::Book };
        // weight: g = p + 0.5 p = 1.5 p, one step lr 0.1: p * 0.85; bias: g = p: p * 0.9
        close(&run(cfg.clone(), ParamKind::Weight, 1, 0.1), &[0.85, -1.7, 2.55]);
        close(&run(cfg.clone(), ParamKind::BnGamma, 1, 0.1), &[0.85, -1.7, 2.55]);
        close(&run(cfg.clone(), ParamKind::Bias, 1, 0.1), &[0.9, -1.8, 2.7]);
        close(&run(cfg, ParamKind::BnBeta, 1, 0.1), &[0.9, -1.8, 2.7]);
    }

    #[test]
    fn adam_and_adamw_follow_torch() {
        // Adam's first step moves every coordinate by lr * sign(g) (m_hat/sqrt(v_hat) = g/|g|).
        let adam = OptimizerConfig::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, decay: DecayRule::All };
        close(&run(adam, ParamKind::Weight, 1, 0.1), &[0.9, -1.9, 2.9]);
        // AdamW first shrinks p by (1 - lr*wd) = 0.95, then the same sign step.
        let adamw = OptimizerConfig::Adamw { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.5, decay: DecayRule::All };
        close(&run(adamw, ParamKind::Weight, 1, 0.1), &[0.85, -1.8, 2.75]);
    }

    #[test]
    fn state_round_trips_through_named_tensors() {
        let p = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
        let s = spec(ParamKind::Weight);
        let mut a = Optimizer::new(OptimizerConfig::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, decay: DecayRule::All });
        p.square().sum(Kind::Float).backward();
        a.step(&[(&s, &p)], 0.01).unwrap();
        let mut b = Optimizer::new(a.config.clone());
        b.load_named(&a.to_named().into_iter().collect());
        assert_eq!(b.steps, 1);
        assert_eq!(b.state.keys().collect::<Vec<_>>(), ["exp_avg.w", "exp_avg_sq.w"]);
        assert!(b.state["exp_avg.w"].equal(&a.state["exp_avg.w"]));
    }

    #[test]
    fn schedules() {
        let step = Schedule::Step { step_size: 10, gamma: 0.1, warmup_epochs: 0 };
        assert_eq!(step.lr(0.1, 9), 0.1);
        assert!((step.lr(0.1, 10) - 0.01).abs() < 1e-12);
        let ms = Schedule::Multistep { milestones: vec![3, 6], gamma: 0.5, warmup_epochs: 0 };
        assert_eq!([ms.lr(1.0, 2), ms.lr(1.0, 3), ms.lr(1.0, 6)], [1.0, 0.5, 0.25]);
        let poly = Schedule::Poly { max_epochs: 10, power: 2.0, warmup_epochs: 0 };
        assert!((poly.lr(1.0, 5) - 0.25).abs() < 1e-12);
        let cos = Schedule::Cosine { max_epochs: 10, min_lr: 0.0, warmup_epochs: 0 };
        assert!((cos.lr(1.0, 5) - 0.5).abs() < 1e-12);
        let warm = Schedule::Constant { warmup_epochs: 4 };
        assert_eq!([warm.lr(1.0, 0), warm.lr(1.0, 3), warm.lr(1.0, 4)], [0.25, 1.0, 1.0]);
    }
}
