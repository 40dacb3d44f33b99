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
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::FloatTensor;
use burn::tensor::Tensor;

use super::norm_node::{track, NormSaved};
use super::{float, primitive};

type LayerNormFn<B, const D: usize> = fn(Tensor<B, D>, Tensor<B, 1>, Tensor<B, 1>, usize, f64) -> Tensor<B, D>;

/// A backend's own layer-norm forward, `(x, weight, bias, dim, eps) -> [y, μ, σ]`
/// (`super::cube_norm`); the node uses it where it is registered.
pub(super) type ForwardKernel<B> =
    fn(FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, usize, f64) -> [FloatTensor<B>; 3];
/// Its backward, `(grad, x, weight, μ, σ, addend, dim) -> [dx + addend, dw, db]`.
pub(super) type BackwardKernel<B> = fn(
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    FloatTensor<B>,
    Option<FloatTensor<B>>,
    usize,
) -> [FloatTensor<B>; 3];

/// Route the layer norms of models on `Autodiff<I>` through [`LayerNormBackward`].
pub(super) fn register<I: Backend>() {
    super::register_op::<LayerNormFn<Autodiff<I>, 2>>(layer_norm_autodiff::<I, 2>);
    super::register_op::<LayerNormFn<Autodiff<I>, 3>>(layer_norm_autodiff::<I, 3>);
    super::register_op::<LayerNormFn<Autodiff<I>, 4>>(layer_norm_autodiff::<I, 4>);
}

/// Which kernels of `I`'s own (`super::cube_norm`) the layer norms of models on `Autodiff<I>`
/// run once [`super::register_autodiff_ops`] has run: `(forward, backward)`.
pub fn kernels<I: Backend>() -> (bool, bool) {
    (super::registered_op::<ForwardKernel<I>>().is_some(), super::registered_op::<BackwardKernel<I>>().is_some())
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
    /// The backend's own backward kernel runs the backward ([`BackwardKernel`]; the saved weight
    /// is `[C]`).
    kernel: bool,
}

impl<I: Backend, const D: usize> Backward<I, 3> for LayerNormBackward<D> {
    type State = NormSaved<I>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<I>(&ops.node);
        let (NormSaved { x, weight, mean, std }, dim) = (ops.state, self.dim);
        let x: FloatTensor<I> = checkpointer.retrieve_node_output(x);
        let [x_node, weight_node, bias_node] = ops.parents;
        if self.kernel {
            let backward = super::registered_op::<BackwardKernel<I>>().expect("seen by the forward");
            // The gradient x already has from its other readers (the residual add after a
            // pre-norm block's input, processed first) goes into the kernel's dx write, instead
            // of the add `register` would launch (issue 11).
            let addend = x_node.as_ref().and_then(|node| {
                // Gradients::remove finds a gradient by the tensor's node alone.
                let mut tensor = <Autodiff<I> as AutodiffBackend>::from_inner(x.clone());
                tensor.node = node.clone();
                grads.remove::<I>(&tensor)
            });
            let [dx, dw, db] = backward(grad, x, weight, mean, std, addend, dim);
            for (node, g) in [x_node, weight_node, bias_node].into_iter().zip([dx, dw, db]) {
                if let Some(node) = node {
                    grads.register::<I>(node.id, g);
                }
            }
            return;
        }
        let (grad, x) = (float::<I, D>(grad), float::<I, D>(x));
        let (mean, std) = (float::<I, D>(mean), float::<I, D>(std));
        // x̂ is recomputed where it is read, g·w computed once, and the weight kept broadcast
        // by the forward: the form CubeCL's fusion makes one broadcasted reduction of (issue 11,
        // BENCH.md "Fusion-friendly forms"; a reshape queued first, or g·w recomputed, splits it).
        let x_hat = || (x.clone() - mean.clone()) / std.clone();
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
    let supported = cube_kernel_supports(&x, dim);
    let forward_kernel = super::registered_op::<ForwardKernel<I>>().filter(|_| supported);
    let backward_kernel = supported && super::registered_op::<BackwardKernel<I>>().is_some();
    let inputs = [primitive(x), primitive(weight), primitive(bias)];
    let [x_in, weight_in, bias_in] = [&inputs[0], &inputs[1], &inputs[2]].map(|t| t.primitive.clone());
    let node = LayerNormBackward::<D> { dim, kernel: backward_kernel };
    if backward_kernel {
        // The backward kernel with either forward: ours, or (fused backends by default,
        // docs/burn_faults.md §8) the composition, whose μ and σ it reads the same way.
        let [y, mean, std] = match forward_kernel {
            Some(kernel) => kernel(x_in, weight_in.clone(), bias_in, dim, eps),
            None => {
                let (y, mean, std, _) =
                    forward::<I, D>(float(x_in), float(weight_in.clone()), float(bias_in), dim, eps);
                [primitive(y), primitive(mean), primitive(std)]
            }
        };
        return float(track(node, inputs, weight_in, y, mean, std));
    }
    let (y, mean, std, weight) = forward::<I, D>(float(x_in), float(weight_in), float(bias_in), dim, eps);
    float(track(node, inputs, primitive(weight), primitive(y), primitive(mean), primitive(std)))
}

/// Whether this build's CubeCL layer-norm kernels take `x` over `dim` (`super::cube_norm`).
#[cfg(feature = "cube")]
fn cube_kernel_supports<B: Backend, const D: usize>(x: &Tensor<B, D>, dim: usize) -> bool {
    super::cube_norm::supports(x.dims()[dim], x.dtype())
}

#[cfg(not(feature = "cube"))]
fn cube_kernel_supports<B: Backend, const D: usize>(_: &Tensor<B, D>, _: usize) -> bool {
    false
}
