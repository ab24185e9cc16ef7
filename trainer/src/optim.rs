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

/// An optimizer and its state.
pub struct Optimizer {
    pub config: OptimizerConfig,
    /// Steps taken so far (Adam's bias correction needs it).
    pub steps: i64,
    /// Named state tensors, e.g. `momentum.block1.conv1.weight`.
    pub state: BTreeMap<String, Tensor>,
}

impl Optimizer {
    pub fn new(config: OptimizerConfig) -> Self {
        Self { config, steps: 0, state: BTreeMap::new() }
    }

    /// One update of every parameter that has a gradient, at learning rate `lr`.
    pub fn step(&mut self, params: &[(&ParamSpec, &Tensor)], lr: f64) {
        let _guard = tch::no_grad_guard();
        self.steps += 1;
        let t = self.steps as f64;
        for (spec, p) in params {
            let g = p.grad();
            if !g.defined() {
                continue;
            }
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

    /// Runs `steps` updates of f(p) = sum(p²)/2 (gradient p) from p = [1, -2, 3].
    fn run(cfg: OptimizerConfig, kind: ParamKind, steps: usize, lr: f64) -> Vec<f64> {
        let mut p = Tensor::from_slice(&[1.0f32, -2.0, 3.0]).set_requires_grad(true);
        let s = spec(kind);
        let mut opt = Optimizer::new(cfg);
        for _ in 0..steps {
            p.zero_grad();
            (p.square().sum(Kind::Float) / 2.0).backward();
            opt.step(&[(&s, &p)], lr);
        }
        Vec::<f64>::try_from(p.to_kind(Kind::Double).detach()).unwrap()
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
        a.step(&[(&s, &p)], 0.01);
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
