//! BatchNorm's training forward (batch statistics) as one autodiff node, whose backward is the
//! textbook batch-norm gradient instead of the chain rule through its decomposition.
//!
//! Taped op by op, the batch statistics are three `mean_dim`s each for the mean and the
//! variance, and their backward takes a broadcast reduction for every op that reads them
//! (issue 11, BENCH.md "Kernel census"). Here the statistics are two reductions each (over
//! `H·W`, then the batch, of the `[N, C, H·W]` view), and with `x̂ = (x − μ)/σ`, `M = N·H·W`:
//! `db = Σ g`, `dw = Σ g·x̂`, `dx = (w/σ)·(g − db/M − x̂·dw/M)`: the two sums and one
//! elementwise pass, with `x̂` recomputed where it is read so each fuses into its own kernel.
//!
//! Opt-in per autodiff backend at run time ([`super::register_autodiff_ops`]); an unregistered
//! backend gets the taped composition (the same values up to rounding).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::norm_node::{track, NormSaved};
use super::{float, primitive};

/// `(y, batch mean [C], biased batch variance [C])`; the statistics carry no gradient.
pub type BatchStats<B> = (Tensor<B, 4>, Tensor<B, 1>, Tensor<B, 1>);

type BatchNormFn<B> = fn(Tensor<B, 4>, Tensor<B, 1>, Tensor<B, 1>, f64) -> BatchStats<B>;

pub(super) fn register<I: Backend>() {
    super::register_op::<BatchNormFn<Autodiff<I>>>(batch_norm_autodiff::<I>);
}

/// BatchNorm over the channels of an NCHW `x` with the statistics of this batch (training).
pub fn batch_norm_train<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 1>,
    bias: Tensor<B, 1>,
    eps: f64,
) -> BatchStats<B> {
    match super::registered_op::<BatchNormFn<B>>() {
        Some(f) => f(x, weight, bias, eps),
        None => decomposed(x, weight, bias, eps),
    }
}

/// The composition, taped op by op on an autodiff backend (what an unregistered backend runs).
pub fn decomposed<B: Backend>(x: Tensor<B, 4>, weight: Tensor<B, 1>, bias: Tensor<B, 1>, eps: f64) -> BatchStats<B> {
    let c = x.dims()[1];
    let (y, mean, var, _) = forward(x, weight, bias, eps);
    (y, mean.detach().reshape([c]), var.detach().reshape([c]))
}

/// `[N, C, H·W]` view of an NCHW tensor.
fn flat<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 3> {
    let [n, c, h, w] = x.dims();
    x.reshape([n, c, h * w])
}

/// Mean over axes 0 and 2 of `[N, C, L]`, as `[1, C, 1]`: two reductions.
fn channel_mean<B: Backend>(t: Tensor<B, 3>) -> Tensor<B, 3> {
    t.mean_dim(2).mean_dim(0)
}

/// Σ over axes 0 and 2 of `[N, C, L]`, as `[1, C, 1]`.
fn channel_sum<B: Backend>(t: Tensor<B, 3>) -> Tensor<B, 3> {
    t.sum_dim(2).sum_dim(0)
}

/// The output, the mean, the biased variance and σ = sqrt(var + eps) (all `[1, C, 1]`).
fn forward<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 1>,
    bias: Tensor<B, 1>,
    eps: f64,
) -> (Tensor<B, 4>, Tensor<B, 3>, Tensor<B, 3>, Tensor<B, 3>) {
    let [n, c, h, w] = x.dims();
    let x = flat(x);
    let mean = channel_mean(x.clone());
    let centered = x - mean.clone();
    let var = channel_mean(centered.clone().square());
    let std = var.clone().add_scalar(eps).sqrt();
    let scale = weight.reshape([1, c, 1]) / std.clone();
    let y = centered * scale + bias.reshape([1, c, 1]);
    (y.reshape([n, c, h, w]), mean, var, std)
}

/// The backward node: parents `[x, weight, bias]`.
#[derive(Debug)]
struct BatchNormBackward;

impl<I: Backend> Backward<I, 3> for BatchNormBackward {
    type State = NormSaved<I>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let grad = float::<I, 4>(grads.consume::<I>(&ops.node));
        let NormSaved { x, weight, mean, std } = ops.state;
        let x = float::<I, 4>(checkpointer.retrieve_node_output(x));
        let [n, c, h, w] = x.dims();
        let count = (n * h * w) as f64;
        let (x, g) = (flat(x), flat(grad));
        let (mean, std) = (float::<I, 3>(mean), float::<I, 3>(std));
        let x_hat = || (x.clone() - mean.clone()) / std.clone();
        let sum_g = channel_sum(g.clone());
        let sum_g_x_hat = channel_sum(g.clone() * x_hat());
        let [x_node, weight_node, bias_node] = ops.parents;
        if let Some(node) = x_node {
            let scale = float::<I, 1>(weight).reshape([1, c, 1]) / std.clone();
            let dx = (g - sum_g.clone().div_scalar(count) - x_hat() * sum_g_x_hat.clone().div_scalar(count)) * scale;
            grads.register::<I>(node.id, primitive(dx.reshape([n, c, h, w])));
        }
        if let Some(node) = weight_node {
            grads.register::<I>(node.id, primitive(sum_g_x_hat.reshape([c])));
        }
        if let Some(node) = bias_node {
            grads.register::<I>(node.id, primitive(sum_g.reshape([c])));
        }
    }
}

fn batch_norm_autodiff<I: Backend>(
    x: Tensor<Autodiff<I>, 4>,
    weight: Tensor<Autodiff<I>, 1>,
    bias: Tensor<Autodiff<I>, 1>,
    eps: f64,
) -> BatchStats<Autodiff<I>> {
    let c = x.dims()[1];
    let inputs = [primitive(x), primitive(weight), primitive(bias)];
    let x_in = float::<I, 4>(inputs[0].primitive.clone());
    let [weight_in, bias_in] = [&inputs[1], &inputs[2]].map(|t| float(t.primitive.clone()));
    let (y, mean, var, std) = forward::<I>(x_in, weight_in, bias_in, eps);
    let batch_mean = Tensor::<Autodiff<I>, 1>::from_inner(mean.clone().reshape([c]));
    let batch_var = Tensor::<Autodiff<I>, 1>::from_inner(var.reshape([c]));
    let weight = inputs[1].primitive.clone();
    let y = track(BatchNormBackward, inputs, weight, primitive(y), primitive(mean), primitive(std));
    (float(y), batch_mean, batch_var)
}
