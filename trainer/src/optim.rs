//! AdamW and LAMB with PyTorch / timm semantics, timm's parameter groups (no weight decay on
//! 1-D params, biases and relative-position tables; layer-wise LR decay), the cosine schedule
//! stepped per update, and global-norm clipping. State is keyed by timm parameter name, so it
//! saves as a plain safetensors file and resumes bit-exactly.

use std::collections::HashMap;

use burn::module::{ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor};
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

/// One parameter's AdamW/LAMB moments, flattened to 1-D.
pub struct Moments<B: Backend> {
    pub exp_avg: Tensor<B, 1>,
    pub exp_avg_sq: Tensor<B, 1>,
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

pub fn gather_grads<B: AutodiffBackend>(model: &MaxxVit<B>, grads: &GradientsParams) -> KeyedGrads<B::InnerBackend> {
    let mut g = GradGatherer::<B> { path: KeyPath::new(false), grads, out: HashMap::new() };
    burn::module::Module::visit(model, &mut g);
    KeyedGrads { grads: g.out }
}

/// Elements a parameter's segment of a flat group is padded to, so every segment starts at a
/// multiple of 512 bytes (CUDA's buffer alignment; wgpu's is smaller). burn-cubecl's `slice`
/// (`kernel/index/slice.rs`) returns a view only when both ends are aligned: a parameter whose
/// length is a multiple of the alignment is handed to the model without a kernel, others with
/// one copy.
const SEGMENT_ALIGN: usize = 128;

/// Where one parameter lives in its group's flat tensors.
#[derive(Debug, Clone, PartialEq)]
struct Segment {
    key: String,
    offset: usize,
    len: usize,
}

/// Parameters that share a learning-rate scale and a weight decay (timm's parameter groups),
/// their values and both moments each one padded 1-D tensor: AdamW updates a group in a few
/// fused kernels, not a few per parameter, and the model's parameters are views into `params`.
pub struct Group<B: Backend> {
    pub lr_scale: f64,
    pub weight_decay: f64,
    segments: Vec<Segment>,
    len: usize,
    pub(crate) params: Tensor<B, 1>,
    moments: Moments<B>,
}

impl<B: Backend> Group<B> {
    /// One flat tensor from per-parameter 1-D tensors (zeros where a part is missing, and in
    /// the padding): a fill and one slice-assign per part.
    pub(crate) fn pack(&self, mut part: impl FnMut(&str) -> Option<Tensor<B, 1>>, device: &B::Device) -> Tensor<B, 1> {
        let mut flat = Tensor::zeros([self.len], device);
        for s in &self.segments {
            if let Some(t) = part(&s.key) {
                flat = flat.slice_assign(s.offset..s.offset + s.len, t);
            }
        }
        flat
    }

    fn segment(flat: &Tensor<B, 1>, s: &Segment) -> Tensor<B, 1> {
        flat.clone().slice(s.offset..s.offset + s.len)
    }

    /// Each parameter's view of `flat` (a tensor in this group's layout), by key.
    pub(crate) fn views<'a>(&'a self, flat: &'a Tensor<B, 1>) -> impl Iterator<Item = (String, Tensor<B, 1>)> + 'a {
        self.segments.iter().map(move |s| (s.key.clone(), Self::segment(flat, s)))
    }
}

/// The gradients of one update laid out as the optimizer's groups.
pub struct FlatGrads<B: Backend> {
    groups: Vec<Tensor<B, 1>>,
}

impl<B: Backend> FlatGrads<B> {
    /// `sqrt(Σ g²)` over every gradient: one reduction per group, one host read.
    pub fn global_norm(&self) -> f64 {
        let total = self.groups.iter().map(|g| g.clone().square().sum()).reduce(|a, b| a + b);
        total.map_or(0.0, |t| t.into_scalar().elem::<f64>().sqrt())
    }

    pub fn scale(&mut self, factor: f64) {
        for g in &mut self.groups {
            *g = g.clone().mul_scalar(factor);
        }
    }
}

pub struct Optimizer<B: AutodiffBackend> {
    pub cfg: OptimizerSection,
    pub num_stages: usize,
    /// Optimizer steps taken (PyTorch's per-param `step`, the same for every parameter here).
    pub step: u64,
    /// The parameters with gradients, values and moments, flat by group. Between updates the
    /// parameters' values are the optimizer's: the model holds views of `Group::params`.
    groups: Vec<Group<B::InnerBackend>>,
    /// Moments by key not laid out yet (restored from a checkpoint, before the first update).
    pending: HashMap<String, Moments<B::InnerBackend>>,
    /// Counts layouts, so the EMA knows when its flat copy no longer matches.
    generation: u64,
}

impl<B: AutodiffBackend> Optimizer<B> {
    pub fn new(cfg: OptimizerSection, num_stages: usize) -> Self {
        Self { cfg, num_stages, step: 0, groups: vec![], pending: HashMap::new(), generation: 0 }
    }

    /// The groups and the layout generation (for the EMA's flat copy).
    pub fn groups(&self) -> (&[Group<B::InnerBackend>], u64) {
        (&self.groups, self.generation)
    }

    /// Every parameter's moments by key (slices of the flat groups), for a checkpoint.
    pub fn moments(&self) -> Vec<(String, Moments<B::InnerBackend>)> {
        let mut out: Vec<_> = self
            .pending
            .iter()
            .map(|(k, m)| (k.clone(), Moments { exp_avg: m.exp_avg.clone(), exp_avg_sq: m.exp_avg_sq.clone() }))
            .collect();
        for g in &self.groups {
            for s in &g.segments {
                let (m, v) = (&g.moments.exp_avg, &g.moments.exp_avg_sq);
                out.push((s.key.clone(), Moments { exp_avg: Group::segment(m, s), exp_avg_sq: Group::segment(v, s) }));
            }
        }
        out
    }

    /// Resume from a checkpoint's step and moments; laid out at the next update, with the
    /// model's parameters as they are then.
    pub fn restore(&mut self, step: u64, moments: HashMap<String, Moments<B::InnerBackend>>) {
        (self.step, self.pending, self.groups) = (step, moments, vec![]);
    }

    /// The gradients in the groups' layout. The first call (and one whose set of gradients
    /// differs from the layout's) lays the groups out from `model`'s parameters.
    pub fn flatten(&mut self, model: &MaxxVit<B>, grads: KeyedGrads<B::InnerBackend>) -> FlatGrads<B::InnerBackend> {
        let laid_out = self.groups.iter().map(|g| g.segments.len()).sum::<usize>();
        let same = laid_out == grads.grads.len()
            && self.groups.iter().all(|g| g.segments.iter().all(|s| grads.grads.contains_key(&s.key)));
        if !same {
            self.lay_out(model, &grads);
        }
        let mut grads = grads.grads;
        let groups = self.groups.iter().map(|g| g.pack(|k| grads.remove(k), &g.params.device())).collect();
        FlatGrads { groups }
    }

    /// timm's groups over the parameters that have gradients (model order within a group),
    /// values from `model`, moments carried over by key (zeros for a new parameter).
    fn lay_out(&mut self, model: &MaxxVit<B>, grads: &KeyedGrads<B::InnerBackend>) {
        let mut moments: HashMap<String, Moments<B::InnerBackend>> = self.moments().into_iter().collect();
        let mut values: Vec<(String, Tensor<B::InnerBackend, 1>)> = model
            .flat_tensors(false)
            .into_iter()
            .filter(|(k, _)| grads.grads.contains_key(k))
            .map(|(k, t)| (k, t.inner()))
            .collect();
        let ndims: HashMap<String, usize> =
            model.state_dict_keys().into_iter().map(|k| (k.key, k.shape.len())).collect();
        // (lr scale, weight decay, segments, padded length) per group, in order of first use.
        let mut plan: Vec<(f64, f64, Vec<Segment>, usize)> = vec![];
        for (key, t) in &values {
            let lr_scale = lr_scale(key, self.num_stages, self.cfg.layer_decay);
            let wd = if decays(key, ndims[key]) { self.cfg.weight_decay } else { 0.0 };
            let i = plan.iter().position(|g| g.0 == lr_scale && g.1 == wd).unwrap_or_else(|| {
                plan.push((lr_scale, wd, vec![], 0));
                plan.len() - 1
            });
            let (_, _, segments, len) = &mut plan[i];
            let n = t.dims()[0];
            segments.push(Segment { key: key.clone(), offset: *len, len: n });
            *len += n.div_ceil(SEGMENT_ALIGN) * SEGMENT_ALIGN;
        }
        let Some(device) = values.first().map(|(_, t)| t.device()) else {
            (self.pending, self.groups) = (moments, vec![]);
            self.generation += 1;
            return;
        };
        let mut values: HashMap<String, Tensor<B::InnerBackend, 1>> = values.drain(..).collect();
        let zeros = || Tensor::<B::InnerBackend, 1>::zeros([SEGMENT_ALIGN], &device);
        let mut groups = vec![];
        for (lr_scale, weight_decay, segments, len) in plan {
            let moments_stub = Moments { exp_avg: zeros(), exp_avg_sq: zeros() };
            let mut g = Group { lr_scale, weight_decay, segments, len, params: zeros(), moments: moments_stub };
            g.params = g.pack(|k| values.remove(k), &device);
            let mut second = HashMap::new();
            g.moments.exp_avg = g.pack(
                |k| {
                    let m = moments.remove(k)?;
                    second.insert(k.to_string(), m.exp_avg_sq);
                    Some(m.exp_avg)
                },
                &device,
            );
            g.moments.exp_avg_sq = g.pack(|k| second.remove(k), &device);
            groups.push(g);
        }
        self.pending = moments;
        self.groups = groups;
        self.generation += 1;
    }

    /// One update of every laid-out parameter at base learning rate `lr`; the returned model's
    /// parameters are views of the updated groups. The groups, not the model, hold the values
    /// between updates: weights written into the model after the first update (none are in
    /// training: loading and the initial broadcast come before it) need a fresh optimizer or
    /// [`Optimizer::restore`], which lays out from the model again.
    pub fn step(&mut self, model: MaxxVit<B>, grads: &FlatGrads<B::InnerBackend>, lr: f64) -> MaxxVit<B> {
        self.step += 1;
        // timm Lamb divides all gradients by max(1, global norm / max_grad_norm = 1.0).
        let lamb_scale = match self.cfg.kind {
            OptimizerKind::Lamb => Some(grads.global_norm()).filter(|n| *n > 1.0).map(|n| 1.0 / n),
            OptimizerKind::Adamw => None,
        };
        let (cfg, step) = (self.cfg.clone(), self.step);
        let mut views = HashMap::new();
        for (g, grad) in self.groups.iter_mut().zip(&grads.groups) {
            let grad = match lamb_scale {
                Some(f) => grad.clone().mul_scalar(f),
                None => grad.clone(),
            };
            let lr = lr * g.lr_scale;
            match cfg.kind {
                // Elementwise: the whole group at once, padding included (zeros stay zeros).
                OptimizerKind::Adamw => {
                    g.params = update(&cfg, step, g.params.clone(), grad, &mut g.moments, lr, g.weight_decay)
                }
                // The trust ratio is per parameter.
                OptimizerKind::Lamb => {
                    let mut parts = HashMap::new();
                    for s in &g.segments {
                        let mut m = Moments {
                            exp_avg: Group::segment(&g.moments.exp_avg, s),
                            exp_avg_sq: Group::segment(&g.moments.exp_avg_sq, s),
                        };
                        let p = update(
                            &cfg,
                            step,
                            Group::segment(&g.params, s),
                            Group::segment(&grad, s),
                            &mut m,
                            lr,
                            g.weight_decay,
                        );
                        parts.insert(s.key.clone(), (p, m));
                    }
                    let device = g.params.device();
                    g.moments.exp_avg = g.pack(|k| Some(parts[k].1.exp_avg.clone()), &device);
                    g.moments.exp_avg_sq = g.pack(|k| Some(parts[k].1.exp_avg_sq.clone()), &device);
                    g.params = g.pack(|k| parts.remove(k).map(|(p, _)| p), &device);
                }
            }
            views.extend(g.views(&g.params).map(|(k, v)| (k, Tensor::from_inner(v))));
        }
        model.set_flat_tensors(views)
    }
}

/// One AdamW (torch.optim.AdamW) or LAMB (timm Lamb) step of a 1-D parameter `p` with gradient
/// `g` and moments `m`, update number `step` (1-based); returns the new parameter.
pub fn update<B: Backend>(
    cfg: &OptimizerSection,
    step: u64,
    p: Tensor<B, 1>,
    g: Tensor<B, 1>,
    m: &mut Moments<B>,
    lr: f64,
    wd: f64,
) -> Tensor<B, 1> {
    let [b1, b2] = cfg.betas;
    let eps = cfg.eps;
    let t = step as i32;
    let bc1 = 1.0 - b1.powi(t);
    let bc2 = 1.0 - b2.powi(t);
    match cfg.kind {
        OptimizerKind::Adamw => {
            // torch.optim.AdamW: decoupled decay first, then the bias-corrected Adam step.
            m.exp_avg = m.exp_avg.clone() + (g.clone() - m.exp_avg.clone()).mul_scalar(1.0 - b1);
            m.exp_avg_sq = m.exp_avg_sq.clone().mul_scalar(b2) + g.clone().square().mul_scalar(1.0 - b2);
            let p = if wd != 0.0 { p.mul_scalar(1.0 - lr * wd) } else { p };
            let denom = m.exp_avg_sq.clone().sqrt().div_scalar(bc2.sqrt()).add_scalar(eps);
            p - m.exp_avg.clone().div(denom).mul_scalar(lr / bc1)
        }
        OptimizerKind::Lamb => {
            // timm Lamb (grad averaging, bias correction, trust ratio ‖w‖/‖u‖ when decaying).
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
                let ratio = ones.clone().mask_where(w_norm.greater_elem(0.0).bool_and(u_norm.greater_elem(0.0)), ratio);
                update = update * ratio;
            }
            p - update.mul_scalar(lr)
        }
    }
}
