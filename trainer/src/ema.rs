//! Model EMA as timm's `ModelEmaV3`: after every optimizer update,
//! `ema = lerp(ema, model, 1 − d)` over all float state (BatchNorm stats included), integer
//! buffers copied; `d = 0` on the first update, then `decay` (or, with warmup,
//! `min(decay, 1 − (1 + s)^(−2/3))`, `s = step − 1`).

use std::collections::{HashMap, HashSet};

use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor};
use model::MaxxVit;

use crate::optim::{KeyPath, Optimizer};

pub struct Ema<B: AutodiffBackend> {
    model: MaxxVit<B::InnerBackend>,
    pub decay: f64,
    pub warmup: bool,
    /// The EMA of the optimizer's flat groups (same layout, tagged with its generation); the
    /// EMA model's parameters are views of these.
    flat: Option<(u64, Vec<Tensor<B::InnerBackend, 1>>)>,
}

struct Snapshot<'a, B: Backend> {
    path: KeyPath,
    /// Float keys left out (the optimizer's groups, blended flat).
    skip: &'a HashSet<&'a str>,
    floats: HashMap<String, Tensor<B, 1>>,
    ints: HashMap<String, Tensor<B, 1, Int>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Snapshot<'_, B::InnerBackend> {
    fn enter_module(&mut self, name: &str, container: &str) {
        self.path.enter(name, container);
    }

    fn exit_module(&mut self, _name: &str, container: &str) {
        self.path.exit(container);
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let key = self.path.key();
        if self.skip.contains(key.as_str()) {
            return;
        }
        let t = param.val().inner();
        let n = t.shape().num_elements();
        self.floats.insert(key, t.reshape([n]));
    }

    fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<B, D, Int>>) {
        let t = param.val().inner();
        let n = t.shape().num_elements();
        self.ints.insert(self.path.key(), t.reshape([n]));
    }
}

struct Blend<'a, B: Backend> {
    path: KeyPath,
    snap: Snapshot<'a, B>,
    keep: f64,
}

impl<B: Backend> ModuleMapper<B> for Blend<'_, B> {
    fn enter_module(&mut self, name: &str, container: &str) {
        self.path.enter(name, container);
    }

    fn exit_module(&mut self, _name: &str, container: &str) {
        self.path.exit(container);
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let Some(cur) = self.snap.floats.remove(&self.path.key()) else { return param };
        let keep = self.keep;
        param.map(|ema| {
            let shape = ema.shape();
            (ema.mul_scalar(keep) + cur.reshape(shape).mul_scalar(1.0 - keep)).detach()
        })
    }

    fn map_int<const D: usize>(&mut self, param: Param<Tensor<B, D, Int>>) -> Param<Tensor<B, D, Int>> {
        let Some(cur) = self.snap.ints.remove(&self.path.key()) else { return param };
        param.map(|ema| cur.reshape(ema.shape()))
    }
}

impl<B: AutodiffBackend> Ema<B> {
    pub fn new(model: &MaxxVit<B>, decay: f64, warmup: bool) -> Self {
        Self { model: model.valid(), decay, warmup, flat: None }
    }

    pub fn model(&self) -> &MaxxVit<B::InnerBackend> {
        &self.model
    }

    /// Replace the EMA weights (a resumed checkpoint's).
    pub fn set_model(&mut self, model: MaxxVit<B::InnerBackend>) {
        (self.model, self.flat) = (model, None);
    }

    pub fn decay_at(&self, step: u64) -> f64 {
        if step <= 1 {
            return 0.0;
        }
        if self.warmup {
            let s = (step - 1) as f64;
            self.decay.min(1.0 - (1.0 + s).powf(-2.0 / 3.0))
        } else {
            self.decay
        }
    }

    /// Blend the current model in after optimizer update number `step` (1-based): one lerp per
    /// group of `opt`'s flat parameters, the rest one tensor at a time.
    pub fn update(&mut self, model: &MaxxVit<B>, opt: &Optimizer<B>, step: u64) {
        let keep = self.decay_at(step);
        let (groups, generation) = opt.groups();
        if self.flat.as_ref().map(|(g, _)| *g) != Some(generation) {
            let mut mine: HashMap<String, Tensor<B::InnerBackend, 1>> =
                self.model.flat_tensors(false).into_iter().collect();
            let flat = groups.iter().map(|g| g.pack(|k| mine.remove(k), &g.params.device())).collect();
            self.flat = Some((generation, flat));
        }
        let (_, flat) = self.flat.as_mut().expect("laid out above");
        let mut views = HashMap::new();
        for (e, g) in flat.iter_mut().zip(groups) {
            *e = e.clone().mul_scalar(keep) + g.params.clone().mul_scalar(1.0 - keep);
            views.extend(g.views(e));
        }
        // The rest (BatchNorm statistics, parameters without gradients, integer buffers): one
        // tensor at a time.
        let grouped: HashSet<&str> = views.keys().map(String::as_str).collect();
        let mut snap =
            Snapshot { path: KeyPath::new(false), skip: &grouped, floats: HashMap::new(), ints: HashMap::new() };
        model.visit(&mut snap);
        let mut blend = Blend { path: KeyPath::new(false), snap, keep };
        self.model = self.model.clone().map(&mut blend).set_flat_tensors(views);
    }
}
