//! Classifier heads (spec §3.10): timm's `ClassifierHead` and `NormMlpClassifierHead`.

use burn::module::Module;
use burn::tensor::activation::tanh;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::layers::{dropout, InitRole, Linear, Norm2d};
use crate::ModelError;

/// timm `SelectAdaptivePool2d` types that keep a 1x1 output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobalPool {
    Avg,
    Max,
    AvgMax,
    CatAvgMax,
}

impl GlobalPool {
    pub fn parse(name: &str) -> Result<Self, ModelError> {
        match name {
            "avg" => Ok(Self::Avg),
            "max" => Ok(Self::Max),
            "avgmax" => Ok(Self::AvgMax),
            "catavgmax" => Ok(Self::CatAvgMax),
            other => Err(ModelError::Config(format!(
                "global_pool '{other}' is not supported (use avg, max, avgmax or catavgmax)"
            ))),
        }
    }

    pub fn feature_multiplier(self) -> usize {
        if self == Self::CatAvgMax {
            2
        } else {
            1
        }
    }

    /// `[B, C, H, W]` → `[B, C·m, 1, 1]`.
    pub fn apply<B: Backend>(self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let avg = || x.clone().mean_dim(2).mean_dim(3);
        let max = || x.clone().max_dim(2).max_dim(3);
        match self {
            Self::Avg => avg(),
            Self::Max => max(),
            Self::AvgMax => (avg() + max()).mul_scalar(0.5),
            Self::CatAvgMax => Tensor::cat(vec![avg(), max()], 1),
        }
    }
}

/// Global pool → dropout → `fc` (keys `head.fc.*`).
#[derive(Module, Debug)]
pub struct ClassifierHead<B: Backend> {
    pub fc: Option<Linear<B>>,
    pub pool: GlobalPool,
    pub drop_rate: f64,
}

/// `fc` of NormMlpClassifierHead's `pre_logits = Sequential(fc, Tanh)`.
#[derive(Module, Debug)]
pub struct PreLogits<B: Backend> {
    pub fc: Linear<B>,
}

/// Global pool → norm → flatten → Linear + tanh → dropout → `fc`.
#[derive(Module, Debug)]
pub struct NormMlpClassifierHead<B: Backend> {
    pub norm: Norm2d<B>,
    pub pre_logits: PreLogits<B>,
    pub fc: Option<Linear<B>>,
    pub pool: GlobalPool,
    pub drop_rate: f64,
}

#[derive(Module, Debug)]
pub enum Head<B: Backend> {
    Classifier(ClassifierHead<B>),
    NormMlp(NormMlpClassifierHead<B>),
}

/// A fresh classifier as `nn.Linear` initialises it; `None` for `num_classes == 0`.
pub fn new_fc<B: Backend>(in_f: usize, num_classes: usize, device: &B::Device) -> Option<Linear<B>> {
    (num_classes > 0).then(|| Linear::new(in_f, num_classes, true, InitRole::TorchDefault, false, device))
}

impl<B: Backend> Head<B> {
    /// `features` is the (already normed, for ClassifierHead) final map `[B, C, H, W]`.
    pub fn forward(&self, features: Tensor<B, 4>, pre_logits: bool) -> Tensor<B, 2> {
        let (x, fc) = match self {
            Self::Classifier(h) => {
                let x = h.pool.apply(features);
                let [b, c, _, _] = x.dims();
                (dropout(x.reshape([b, c]), h.drop_rate), &h.fc)
            }
            Self::NormMlp(h) => {
                let x = h.norm.forward(h.pool.apply(features));
                let [b, c, _, _] = x.dims();
                let x = tanh(h.pre_logits.fc.forward(x.reshape([b, c])));
                (dropout(x, h.drop_rate), &h.fc)
            }
        };
        match (pre_logits, fc) {
            (false, Some(fc)) => fc.forward(x),
            _ => x,
        }
    }

    /// Width of `pre_logits` (the classifier's input).
    pub fn pre_logits_dim(&self, num_features: usize) -> usize {
        match self {
            Self::Classifier(h) => num_features * h.pool.feature_multiplier(),
            Self::NormMlp(h) => h.pre_logits.fc.weight.lazy_shape().dims::<2>()[0],
        }
    }

    pub fn fc_mut(&mut self) -> &mut Option<Linear<B>> {
        match self {
            Self::Classifier(h) => &mut h.fc,
            Self::NormMlp(h) => &mut h.fc,
        }
    }
}
