//! Norms, activations, LayerScale and dropout with timm's semantics (spec §2.3–§2.7).
//!
//! Train vs eval follows Burn's convention: a module on an autodiff backend is training
//! (batch statistics, dropout on); `model.valid()` gives the eval model.

use burn::module::{Module, Param};
use burn::tensor::activation::{gelu, gelu_approximate, relu, sigmoid, silu, tanh};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Int, Tensor};

use super::batch_norm::batch_norm_train;
use super::buffer::Buffer;
use super::init::{param, Init};
use super::layer_norm::layer_norm;
use crate::config::{ActLayer, NormLayer};

pub fn is_training<B: Backend>(device: &B::Device) -> bool {
    B::ad_enabled(device)
}

/// Exact GELU, `x/2 · (1 + erf(x/√2))`. In training it is built from `erf`, whose autodiff
/// derivative is exact: Burn 0.21's default `gelu_backward` (used by every CubeCL backend, CUDA
/// and wgpu) is the derivative of the *tanh approximation*, ~1e-3 off timm's gradients
/// (`model/tests/wgpu_ops.rs`, docs/burn_faults.md). Eval keeps Burn's one-kernel `gelu`.
pub fn gelu_exact<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    if !is_training::<B>(&x.device()) {
        return gelu(x);
    }
    let cdf = x.clone().mul_scalar(std::f64::consts::FRAC_1_SQRT_2).erf().add_scalar(1.0);
    (x * cdf).mul_scalar(0.5)
}

impl ActLayer {
    pub fn apply<B: Backend, const D: usize>(self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            ActLayer::Gelu => gelu_exact(x),
            ActLayer::GeluTanh => gelu_approximate(x),
            ActLayer::Silu | ActLayer::Swish => silu(x),
            ActLayer::Relu => relu(x),
            ActLayer::Tanh => tanh(x),
            ActLayer::Sigmoid => sigmoid(x),
        }
    }
}

/// A norm's affine `weight` (ones) and `bias` (zeros).
fn affine<B: Backend>(channels: usize, device: &B::Device) -> (Param<Tensor<B, 1>>, Param<Tensor<B, 1>>) {
    (param([channels], Init::Constant(1.0), device), param([channels], Init::Constant(0.0), device))
}

/// `nn.BatchNorm2d(momentum=0.1)`: running stats updated with the *unbiased* batch variance.
#[derive(Module, Debug)]
pub struct BatchNorm2d<B: Backend> {
    pub weight: Param<Tensor<B, 1>>,
    pub bias: Param<Tensor<B, 1>>,
    pub running_mean: Buffer<Tensor<B, 1>>,
    pub running_var: Buffer<Tensor<B, 1>>,
    pub num_batches_tracked: Buffer<Tensor<B, 1, Int>>,
    pub eps: f64,
    pub momentum: f64,
}

impl<B: Backend> BatchNorm2d<B> {
    pub fn new(channels: usize, eps: f64, device: &B::Device) -> Self {
        let (weight, bias) = affine(channels, device);
        Self {
            weight,
            bias,
            running_mean: Buffer::new(Tensor::zeros([channels], device)),
            running_var: Buffer::new(Tensor::ones([channels], device)),
            num_batches_tracked: Buffer::new(Tensor::zeros([1], device)),
            eps,
            momentum: 0.1,
        }
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [n, c, h, w] = x.dims();
        if !is_training::<B>(&x.device()) {
            let (mean, var) =
                (self.running_mean.get().reshape([1, c, 1, 1]), self.running_var.get().reshape([1, c, 1, 1]));
            let scale = self.weight.val().reshape([1, c, 1, 1]) / var.add_scalar(self.eps).sqrt();
            return (x - mean) * scale + self.bias.val().reshape([1, c, 1, 1]);
        }
        let (y, mean, var) = batch_norm_train(x, self.weight.val(), self.bias.val(), self.eps);
        let count = (n * h * w) as f64;
        let unbiased = var.mul_scalar(count / (count - 1.0).max(1.0));
        let m = self.momentum;
        self.running_mean.set(self.running_mean.get().mul_scalar(1.0 - m) + mean.mul_scalar(m));
        self.running_var.set(self.running_var.get().mul_scalar(1.0 - m) + unbiased.mul_scalar(m));
        self.num_batches_tracked.set(self.num_batches_tracked.get().add_scalar(1));
        y
    }
}

/// timm `LayerNorm2d`: LayerNorm over the channel dim of an NCHW tensor.
#[derive(Module, Debug)]
pub struct LayerNorm2d<B: Backend> {
    pub weight: Param<Tensor<B, 1>>,
    pub bias: Param<Tensor<B, 1>>,
    pub eps: f64,
}

impl<B: Backend> LayerNorm2d<B> {
    pub fn new(channels: usize, eps: f64, device: &B::Device) -> Self {
        let (weight, bias) = affine(channels, device);
        Self { weight, bias, eps }
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        layer_norm(x, self.weight.val(), self.bias.val(), 1, self.eps)
    }
}

/// timm `LayerNorm` on a channels-last tensor (normalises the last dim).
#[derive(Module, Debug)]
pub struct LayerNorm<B: Backend> {
    pub weight: Param<Tensor<B, 1>>,
    pub bias: Param<Tensor<B, 1>>,
    pub eps: f64,
}

impl<B: Backend> LayerNorm<B> {
    pub fn new(channels: usize, eps: f64, device: &B::Device) -> Self {
        let (weight, bias) = affine(channels, device);
        Self { weight, bias, eps }
    }

    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        layer_norm(x, self.weight.val(), self.bias.val(), D - 1, self.eps)
    }
}

/// A norm over the channels of an NCHW tensor, as `get_norm_layer` picks it.
#[derive(Module, Debug)]
pub enum Norm2d<B: Backend> {
    Batch(BatchNorm2d<B>),
    Layer(LayerNorm2d<B>),
}

impl<B: Backend> Norm2d<B> {
    pub fn new(kind: NormLayer, channels: usize, eps: f64, device: &B::Device) -> Self {
        match kind {
            NormLayer::BatchNorm2d => Self::Batch(BatchNorm2d::new(channels, eps, device)),
            // 'layernorm' on NCHW only arises from hand-made configs; timm would fail there too,
            // so treat any layer norm as the channel-dim LayerNorm2d.
            _ => Self::Layer(LayerNorm2d::new(channels, eps, device)),
        }
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        match self {
            Self::Batch(bn) => bn.forward(x),
            Self::Layer(ln) => ln.forward(x),
        }
    }
}

/// timm `LayerScale` (channels-last) / `LayerScale2d` (NCHW): `x * gamma` per channel.
#[derive(Module, Debug)]
pub struct LayerScale<B: Backend> {
    pub gamma: Param<Tensor<B, 1>>,
}

impl<B: Backend> LayerScale<B> {
    pub fn new(channels: usize, init_values: f64, device: &B::Device) -> Self {
        Self { gamma: param([channels], Init::Constant(init_values), device) }
    }

    /// `x` (channels-last, contiguous where the blocks call it) is viewed as `[rows, C]` so that
    /// gamma's gradient is one reduction: Burn's broadcast backward reduces each broadcast axis
    /// separately (issue 11).
    pub fn forward_cl<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dims = x.dims();
        let c = dims[D - 1];
        let gamma = self.gamma.val().reshape([1, c]);
        (x.reshape([dims.iter().product::<usize>() / c, c]) * gamma).reshape(dims)
    }

    /// NCHW `x` may be a permuted view (a token MLP's output), which a reshape would copy, so
    /// gamma broadcasts over three axes here.
    pub fn forward_2d(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let c = self.gamma.lazy_shape().dims::<1>()[0];
        x * self.gamma.val().reshape([1, c, 1, 1])
    }
}

/// [`LayerScale::forward_cl`] over `[rows, C]` tokens, without the reshapes: on 2-D tokens
/// CubeCL's fusion puts the multiply on the write of the matmul before it (issue 11, BENCH.md
/// "Fusion-friendly forms").
pub fn layer_scale_tokens<B: Backend>(ls: &Option<LayerScale<B>>, x: Tensor<B, 2>) -> Tensor<B, 2> {
    match ls {
        Some(ls) => {
            let c = x.dims()[1];
            x * ls.gamma.val().reshape([1, c])
        }
        None => x,
    }
}

pub fn layer_scale_cl<B: Backend, const D: usize>(ls: &Option<LayerScale<B>>, x: Tensor<B, D>) -> Tensor<B, D> {
    match ls {
        Some(ls) => ls.forward_cl(x),
        None => x,
    }
}

pub fn layer_scale_2d<B: Backend>(ls: &Option<LayerScale<B>>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    match ls {
        Some(ls) => ls.forward_2d(x),
        None => x,
    }
}

/// `nn.Dropout(p)`: active only while training.
pub fn dropout<B: Backend, const D: usize>(x: Tensor<B, D>, p: f64) -> Tensor<B, D> {
    if p <= 0.0 || !is_training::<B>(&x.device()) {
        return x;
    }
    let keep = Tensor::<B, D>::random(x.shape(), Distribution::Bernoulli(1.0 - p), &x.device());
    x * keep.div_scalar(1.0 - p)
}

/// timm `DropPath(p)` (stochastic depth): drops whole samples while training, rescales the rest.
pub fn drop_path<B: Backend, const D: usize>(x: Tensor<B, D>, p: f64) -> Tensor<B, D> {
    if p <= 0.0 || !is_training::<B>(&x.device()) {
        return x;
    }
    let mut shape = [1usize; D];
    shape[0] = x.dims()[0];
    let keep = Tensor::<B, D>::random(shape, Distribution::Bernoulli(1.0 - p), &x.device());
    x * keep.div_scalar(1.0 - p)
}
