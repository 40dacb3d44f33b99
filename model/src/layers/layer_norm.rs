//! Layer norm as one autodiff node, whose backward is torch's `native_layer_norm_backward`
//! formula instead of the chain rule through its decomposition.
//!
//! Burn 0.21 has no layer-norm op: the decomposition (mean, subtract, square, mean, sqrt,
//! divide, scale, shift) is taped op by op, and its backward takes a reduction per broadcast
//! axis of every one of those ops — eight to ten reductions per norm plus the elementwise
//! kernels the reductions keep apart (issue 11, BENCH.md). Here the forward is the same
//! decomposition (same values, bit for bit), and the backward is, with `x̂ = (x − μ)/σ`:
//! `dx = (g·w − mean(g·w) − x̂·mean(g·w·x̂)) / σ`, `dw = Σ g·x̂`, `db = Σ g` (sums over every axis
//! but the normalised one): two reductions over the normalised axis and one or two for each of
//! `dw` and `db`.
//!
//! Opt-in per autodiff backend at run time, like the depthwise conv ([`super::register_autodiff_ops`]);
//! an unregistered backend gets the taped decomposition (the same forward values).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::norm_node::{track, NormSaved};
use super::{float, primitive};

type LayerNormFn<B, const D: usize> = fn(Tensor<B, D>, Tensor<B, 1>, Tensor<B, 1>, usize, f64) -> Tensor<B, D>;

/// Route the layer norms of models on `Autodiff<I>` through [`LayerNormBackward`].
pub(super) fn register<I: Backend>() {
    super::register_op::<LayerNormFn<Autodiff<I>, 2>>(layer_norm_autodiff::<I, 2>);
    super::register_op::<LayerNormFn<Autodiff<I>, 3>>(layer_norm_autodiff::<I, 3>);
    super::register_op::<LayerNormFn<Autodiff<I>, 4>>(layer_norm_autodiff::<I, 4>);
}

/// LayerNorm over axis `dim` of `x` with a per-channel `weight` and `bias` (length `x.dims()[dim]`).
pub fn layer_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 1>,
    bias: Tensor<B, 1>,
    dim: usize,
    eps: f64,
) -> Tensor<B, D> {
    match super::registered_op::<LayerNormFn<B, D>>() {
        Some(f) => f(x, weight, bias, dim, eps),
        None => decomposed(x, weight, bias, dim, eps),
    }
}

/// The decomposition, taped op by op on an autodiff backend (what an unregistered backend runs).
pub fn decomposed<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 1>,
    bias: Tensor<B, 1>,
    dim: usize,
    eps: f64,
) -> Tensor<B, D> {
    forward(x, weight, bias, dim, eps).0
}

/// `[1, .., C, .., 1]`: a per-channel vector broadcast along `dim`.
fn channel_shape<const D: usize>(dim: usize, channels: usize) -> [usize; D] {
    let mut shape = [1usize; D];
    shape[dim] = channels;
    shape
}

/// The decomposition: the output, the mean and `σ = sqrt(var + eps)` (both size 1 along `dim`),
/// and the weight as broadcast against `x` (`[1, .., C, .., 1]`).
fn forward<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 1>,
    bias: Tensor<B, 1>,
    dim: usize,
    eps: f64,
) -> (Tensor<B, D>, Tensor<B, D>, Tensor<B, D>, Tensor<B, D>) {
    let shape = channel_shape::<D>(dim, x.dims()[dim]);
    let mean = x.clone().mean_dim(dim);
    // `x − μ` twice rather than once and shared: read by two fused blocks, it splits CubeCL's
    // fusion into four launches; recomputed, the variance and the output are one broadcasted
    // reduction (issue 11, BENCH.md "Fusion-friendly forms"). Same values.
    let std = (x.clone() - mean.clone()).square().mean_dim(dim).add_scalar(eps).sqrt();
    let weight = weight.reshape(shape);
    let y = (x - mean.clone()) / std.clone() * weight.clone() + bias.reshape(shape);
    (y, mean, std, weight)
}

/// `Σ t` over every axis but `dim`, as a `[C]` vector: the axes before `dim` and after it are
/// each folded into one, so it is one reduction per side that has more than one element.
fn sum_except<B: Backend, const D: usize>(t: Tensor<B, D>, dim: usize) -> Tensor<B, 1> {
    let dims = t.dims();
    let (before, after) = (dims[..dim].iter().product::<usize>(), dims[dim + 1..].iter().product::<usize>());
    let mut t = t.reshape([before, dims[dim], after]);
    if after > 1 {
        t = t.sum_dim(2);
    }
    if before > 1 {
        t = t.sum_dim(0);
    }
    t.reshape([dims[dim]])
}

/// The backward node over axis `dim`: parents `[x, weight, bias]`.
#[derive(Debug)]
struct LayerNormBackward<const D: usize> {
    dim: usize,
}

impl<I: Backend, const D: usize> Backward<I, 3> for LayerNormBackward<D> {
    type State = NormSaved<I>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let grad = float::<I, D>(grads.consume::<I>(&ops.node));
        let (NormSaved { x, weight, mean, std }, dim) = (ops.state, self.dim);
        let x = float::<I, D>(checkpointer.retrieve_node_output(x));
        let (mean, std) = (float::<I, D>(mean), float::<I, D>(std));
        // x̂ is recomputed where it is read, g·w computed once, and the weight kept broadcast
        // by the forward: the form CubeCL's fusion makes one broadcasted reduction of (issue 11,
        // BENCH.md "Fusion-friendly forms"; a reshape queued first, or g·w recomputed, splits it).
        let x_hat = || (x.clone() - mean.clone()) / std.clone();
        let [x_node, weight_node, bias_node] = ops.parents;
        if let Some(node) = x_node {
            let g_w = grad.clone() * float::<I, D>(weight);
            let mean_g_w = g_w.clone().mean_dim(dim);
            let mean_g_w_x_hat = (g_w.clone() * x_hat()).mean_dim(dim);
            let dx = (g_w - mean_g_w - x_hat() * mean_g_w_x_hat) / std.clone();
            grads.register::<I>(node.id, primitive(dx));
        }
        if let Some(node) = weight_node {
            grads.register::<I>(node.id, primitive(sum_except(grad.clone() * x_hat(), dim)));
        }
        if let Some(node) = bias_node {
            grads.register::<I>(node.id, primitive(sum_except(grad, dim)));
        }
    }
}

fn layer_norm_autodiff<I: Backend, const D: usize>(
    x: Tensor<Autodiff<I>, D>,
    weight: Tensor<Autodiff<I>, 1>,
    bias: Tensor<Autodiff<I>, 1>,
    dim: usize,
    eps: f64,
) -> Tensor<Autodiff<I>, D> {
    let inputs = [primitive(x), primitive(weight), primitive(bias)];
    let x_in = float::<I, D>(inputs[0].primitive.clone());
    let [weight_in, bias_in] = [&inputs[1], &inputs[2]].map(|t| float(t.primitive.clone()));
    let (y, mean, std, weight) = forward::<I, D>(x_in, weight_in, bias_in, dim, eps);
    let node = LayerNormBackward::<D> { dim };
    float(track(node, inputs, primitive(weight), primitive(y), primitive(mean), primitive(std)))
}
