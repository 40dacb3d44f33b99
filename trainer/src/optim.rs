//! AdamW and LAMB with PyTorch / timm semantics, timm's parameter groups (no weight decay on
//! 1-D params, biases and relative-position tables; layer-wise LR decay), the cosine schedule
//! stepped per update, and global-norm clipping. State is keyed by timm parameter name, so it
//! saves as a plain safetensors file and resumes bit-exactly.

use std::collections::HashMap;

use burn::module::{ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor};
use model::MaxxVit;

use crate::config::{OptimizerKind, OptimizerSection, ScheduleSection};

pub use model::state_dict::KeyPath;

fn is_buffer(key: &str) -> bool {
    key.ends_with(".running_mean") || key.ends_with(".running_var")
}

/// timm `param_groups_weight_decay` for MaxxVit: no decay on 1-D params, biases and what
/// `MaxxVit.no_weight_decay()` lists (relative-position tables and the rel-pos MLP).
pub fn decays(key: &str, ndim: usize) -> bool {
    !(ndim <= 1
        || key.ends_with(".bias")
        || key.contains("relative_position_bias_table")
        || key.contains("rel_pos.mlp"))
}

/// timm `group_matcher` layer id: stem 0, `stages.i` i+1, final `norm` with the last stage,
/// everything else (the head) last.
pub fn layer_id(key: &str, num_stages: usize) -> usize {
    if key.starts_with("stem.") {
        0
    } else if let Some(rest) = key.strip_prefix("stages.") {
        rest.split('.').next().and_then(|i| i.parse::<usize>().ok()).map_or(num_stages + 1, |i| i + 1)
    } else if key.starts_with("norm.") {
        num_stages
    } else {
        num_stages + 1
    }
}

/// LR multiplier of a parameter under layer decay `ld` (timm: `ld^(num_layers − 1 − id)`).
pub fn lr_scale(key: &str, num_stages: usize, ld: f64) -> f64 {
    if ld <= 0.0 {
        return 1.0;
    }
    let num_layers = num_stages + 2;
    ld.powi((num_layers - 1 - layer_id(key, num_stages)) as i32)
}

/// timm `CosineLRScheduler` with `t_in_epochs=False`: linear warmup from `warmup_lr`, cosine
/// from `lr` to `min_lr` over `epochs` (t counted from 0 including warmup), then `min_lr`.
#[derive(Debug, Clone)]
pub struct CosineSchedule {
    pub base: f64,
    pub warmup_lr: f64,
    pub min_lr: f64,
    pub warmup_t: u64,
    pub t_initial: u64,
}

impl CosineSchedule {
    pub fn new(lr: f64, s: &ScheduleSection, updates_per_epoch: u64) -> Self {
        Self {
            base: lr,
            warmup_lr: s.warmup_lr,
            min_lr: s.min_lr,
            warmup_t: (s.warmup_epochs * updates_per_epoch as f64).round() as u64,
            t_initial: (s.epochs as u64 * updates_per_epoch).max(1),
        }
    }

    pub fn lr(&self, t: u64) -> f64 {
        if t < self.warmup_t {
            return self.warmup_lr + t as f64 * (self.base - self.warmup_lr) / self.warmup_t as f64;
        }
        if t >= self.t_initial {
            return self.min_lr;
        }
        self.min_lr
            + 0.5 * (self.base - self.min_lr) * (1.0 + (std::f64::consts::PI * t as f64 / self.t_initial as f64).cos())
    }
}

/// Per-parameter state, flattened to 1-D.
pub struct Moments<B: Backend> {
    pub exp_avg: Tensor<B, 1>,
    pub exp_avg_sq: Tensor<B, 1>,
}

pub struct Optimizer<B: AutodiffBackend> {
    pub cfg: OptimizerSection,
    pub num_stages: usize,
    /// Optimizer steps taken (PyTorch's per-param `step`, the same for every parameter here).
    pub step: u64,
    pub state: HashMap<String, Moments<B::InnerBackend>>,
}

/// Gradients of the trainable parameters by key, flattened, on the device.
pub struct KeyedGrads<B: Backend> {
    pub grads: HashMap<String, Tensor<B, 1>>,
}

struct GradGatherer<'a, B: AutodiffBackend> {
    path: KeyPath,
    grads: &'a GradientsParams,
    out: HashMap<String, Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradGatherer<'_, B> {
    fn enter_module(&mut self, name: &str, container: &str) {
        self.path.enter(name, container);
    }

    fn exit_module(&mut self, _name: &str, container: &str) {
        self.path.exit(container);
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let key = self.path.key();
        if is_buffer(&key) {
            return;
        }
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let n = g.shape().num_elements();
            self.out.insert(key, g.reshape([n]));
        }
    }
}

impl<B: Backend> KeyedGrads<B> {
    /// `sqrt(Σ g²)` over every gradient (one host read).
    pub fn global_norm(&self) -> f64 {
        let mut total: Option<Tensor<B, 1>> = None;
        for g in self.grads.values() {
            let s = g.clone().square().sum();
            total = Some(match total {
                Some(t) => t + s,
                None => s,
            });
        }
        total.map_or(0.0, |t| t.into_scalar().elem::<f64>().sqrt())
    }

    pub fn scale(&mut self, factor: f64) {
        for g in self.grads.values_mut() {
            *g = g.clone().mul_scalar(factor);
        }
    }

    pub fn all_finite(&self) -> bool {
        self.grads.values().all(|g| {
            !g.clone().is_nan().any().into_scalar().elem::<bool>()
                && !g.clone().is_inf().any().into_scalar().elem::<bool>()
        })
    }
}

use burn::tensor::ElementConversion;

pub fn gather_grads<B: AutodiffBackend>(model: &MaxxVit<B>, grads: &GradientsParams) -> KeyedGrads<B::InnerBackend> {
    let mut g = GradGatherer::<B> { path: KeyPath::new(false), grads, out: HashMap::new() };
    burn::module::Module::visit(model, &mut g);
    KeyedGrads { grads: g.out }
}

struct Stepper<'a, B: AutodiffBackend> {
    path: KeyPath,
    opt: &'a mut Optimizer<B>,
    grads: &'a KeyedGrads<B::InnerBackend>,
    lr: f64,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Stepper<'_, B> {
    fn enter_module(&mut self, name: &str, container: &str) {
        self.path.enter(name, container);
    }

    fn exit_module(&mut self, _name: &str, container: &str) {
        self.path.exit(container);
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let key = self.path.key();
        let Some(grad) = self.grads.grads.get(&key) else { return param };
        let lr = self.lr * lr_scale(&key, self.opt.num_stages, self.opt.cfg.layer_decay);
        let (id, tensor, mapper) = param.consume();
        let shape = tensor.shape();
        let n = shape.num_elements();
        let p = tensor.inner().reshape([n]);
        let wd = if decays(&key, D) { self.opt.cfg.weight_decay } else { 0.0 };
        let updated = self.opt.update_param(&key, p, grad.clone(), lr, wd);
        let tensor = Tensor::from_inner(updated.reshape(shape)).require_grad();
        Param::from_mapped_value(id, tensor, mapper)
    }

    fn map_int<const D: usize>(&mut self, param: Param<Tensor<B, D, Int>>) -> Param<Tensor<B, D, Int>> {
        param
    }
}

impl<B: AutodiffBackend> Optimizer<B> {
    pub fn new(cfg: OptimizerSection, num_stages: usize) -> Self {
        Self { cfg, num_stages, step: 0, state: HashMap::new() }
    }

    /// One update of every parameter that has a gradient, at base learning rate `lr`.
    pub fn step(&mut self, model: MaxxVit<B>, grads: &KeyedGrads<B::InnerBackend>, lr: f64) -> MaxxVit<B> {
        self.step += 1;
        if self.cfg.kind == OptimizerKind::Lamb {
            // timm Lamb divides all gradients by max(1, global norm / max_grad_norm = 1.0).
            let norm = grads.global_norm();
            if norm > 1.0 {
                let mut clipped = KeyedGrads { grads: grads.grads.clone() };
                clipped.scale(1.0 / norm);
                let mut stepper = Stepper { path: KeyPath::new(false), opt: self, grads: &clipped, lr };
                return burn::module::Module::map(model, &mut stepper);
            }
        }
        let mut stepper = Stepper { path: KeyPath::new(false), opt: self, grads, lr };
        burn::module::Module::map(model, &mut stepper)
    }

    /// Update one flattened parameter `p` with gradient `g` (moments kept under `key`), at the
    /// optimizer's current `step`.
    pub fn update_param(
        &mut self,
        key: &str,
        p: Tensor<B::InnerBackend, 1>,
        g: Tensor<B::InnerBackend, 1>,
        lr: f64,
        wd: f64,
    ) -> Tensor<B::InnerBackend, 1> {
        let [b1, b2] = self.cfg.betas;
        let eps = self.cfg.eps;
        let t = self.step as i32;
        let m = self
            .state
            .entry(key.to_string())
            .or_insert_with(|| Moments { exp_avg: p.zeros_like(), exp_avg_sq: p.zeros_like() });
        let bc1 = 1.0 - b1.powi(t);
        let bc2 = 1.0 - b2.powi(t);
        match self.cfg.kind {
            OptimizerKind::Adamw => {
                // torch.optim.AdamW: decoupled decay first, then the bias-corrected Adam step.
                m.exp_avg = m.exp_avg.clone() + (g.clone() - m.exp_avg.clone()).mul_scalar(1.0 - b1);
                m.exp_avg_sq = m.exp_avg_sq.clone().mul_scalar(b2) + g.clone().square().mul_scalar(1.0 - b2);
                let p = if wd != 0.0 { p.mul_scalar(1.0 - lr * wd) } else { p };
                let denom = m.exp_avg_sq.clone().sqrt().div_scalar(bc2.sqrt()).add_scalar(eps);
                p - m.exp_avg.clone().div(denom).mul_scalar(lr / bc1)
            }
            OptimizerKind::Lamb => {
                // timm Lamb (grad averaging, bias correction, trust ratio w‖/‖u‖ when decaying).
                m.exp_avg = m.exp_avg.clone().mul_scalar(b1) + g.clone().mul_scalar(1.0 - b1);
                m.exp_avg_sq = m.exp_avg_sq.clone().mul_scalar(b2) + g.clone().square().mul_scalar(1.0 - b2);
                let denom = m.exp_avg_sq.clone().sqrt().div_scalar(bc2.sqrt()).add_scalar(eps);
                let mut update = m.exp_avg.clone().div_scalar(bc1).div(denom);
                if wd != 0.0 {
                    update = update + p.clone().mul_scalar(wd);
                    let w_norm = p.clone().square().sum().sqrt();
                    let u_norm = update.clone().square().sum().sqrt();
                    let ones = w_norm.ones_like();
                    let ratio = w_norm.clone().div(u_norm.clone());
                    let ratio =
                        ones.clone().mask_where(w_norm.greater_elem(0.0).bool_and(u_norm.greater_elem(0.0)), ratio);
                    update = update * ratio;
                }
                p - update.mul_scalar(lr)
            }
        }
    }
}
