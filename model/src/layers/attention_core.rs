//! `softmax(q·kᵀ·scale + bias)·v` from a stacked q/k/v tensor, as one autodiff node.
//!
//! Taped op by op (Burn 0.21's autodiff always takes `attention_fallback`'s path, issue 11), the
//! three slices that split q, k and v out of the qkv projection each take back a zero tensor and
//! a slice-assign, summed by two adds; the scale, the bias add and the softmax's five ops each
//! take their own backward kernels. Here the backward is the textbook one, with `P` the
//! probabilities and `g` the output's gradient:
//! `dV = Pᵀ·g`, `dS = P ∘ (g·Vᵀ − rowsum(P ∘ g·Vᵀ))`, `dQ = scale · dS·K`, `dK = scale · dSᵀ·Q`,
//! `dbias = Σ_batch dS` (computed as `P∘dP − P·rowsum` with the scale folded in: see the node), and the gradient of the stacked input is one `stack` of dQ, dK, dV.
//! The forward is the composition's own ops (same values).
//!
//! Opt-in per autodiff backend ([`super::register_autodiff_ops`]); f32 only (under autocast,
//! or with attention dropout, the composition runs).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::Tensor;

use super::{float, primitive, swap_dims};

type AttentionFn<B> = fn(Tensor<B, 5>, Option<Tensor<B, 3>>) -> Tensor<B, 4>;

pub(super) fn register<I: Backend>() {
    super::register_op::<AttentionFn<Autodiff<I>>>(attention_autodiff::<I>);
}

/// The registered node for `B`, if any (the caller falls back to the composition).
pub fn registered<B: Backend>() -> Option<AttentionFn<B>> {
    super::registered_op::<AttentionFn<B>>()
}

/// q, k and v `[b, heads, n, dh]` of a stacked `[3, b, heads, n, dh]` tensor.
pub fn unstack<B: Backend>(stacked: Tensor<B, 5>) -> [Tensor<B, 4>; 3] {
    let [_, b, heads, n, dh] = stacked.dims();
    let part = |s: usize| stacked.clone().narrow(0, s, 1).reshape([b, heads, n, dh]);
    [part(0), part(1), part(2)]
}

/// The forward: q, k, v, the probabilities and the output.
fn forward<B: Backend>(stacked: Tensor<B, 5>, bias: Option<Tensor<B, 3>>) -> [Tensor<B, 4>; 5] {
    let [q, k, v] = unstack(stacked);
    // The scale on the scores rather than on q: fusion folds it into the matmul's output with
    // the bias add, where scaling q was a kernel of its own.
    let scores = q.clone().matmul(swap_dims(k.clone(), 2, 3)).mul_scalar(scale(v.dims()[3]));
    let scores = match bias {
        Some(bias) => scores + bias.unsqueeze::<4>(),
        None => scores,
    };
    let probs = softmax_last_axis(scores);
    let out = probs.clone().matmul(v.clone());
    [q, k, v, probs, out]
}

/// Softmax over the last axis as `exp(s − max − log Σ exp(s − max))`: CubeCL's fusion runs it
/// as a max and one broadcasted reduction (2 launches) where Burn's `exp(s − max) / Σ` takes 4
/// (issue 11, BENCH.md "Fusion-friendly forms"). Equal to Burn's within f32 round-off.
fn softmax_last_axis<B: Backend>(scores: Tensor<B, 4>) -> Tensor<B, 4> {
    let shifted = scores.clone() - scores.max_dim(3);
    let log_sum = shifted.clone().exp().sum_dim(3).log();
    (shifted - log_sum).exp()
}

fn scale(dim_head: usize) -> f64 {
    (dim_head as f64).powf(-0.5)
}

/// Parents `[stacked]` or `[stacked, bias]`.
#[derive(Debug)]
struct AttentionBackward;

/// q, k, v and the probabilities.
#[derive(Debug, Clone)]
struct Saved<I: Backend> {
    q: FloatTensor<I>,
    k: FloatTensor<I>,
    v: FloatTensor<I>,
    probs: FloatTensor<I>,
}

impl<I: Backend, const N: usize> Backward<I, N> for AttentionBackward {
    type State = Saved<I>;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = float::<I, 4>(grads.consume::<I>(&ops.node));
        let (q, k, v, probs) = (
            float::<I, 4>(ops.state.q),
            float::<I, 4>(ops.state.k),
            float::<I, 4>(ops.state.v),
            float(ops.state.probs),
        );
        // dS·scale = P∘dP·scale − P∘rowsum(P∘dP)·scale, with P∘dP fused into dP's matmul and the
        // scale into the same elementwise pass, so dQ and dK need no scaling kernel and dP is
        // never written out (issue 11, BENCH.md "Fusion-friendly forms"); dbias divides the
        // scale back out on the reduction's write. Equal to the textbook form within round-off.
        let scale = scale(q.dims()[3]);
        let p_d_probs = g.clone().matmul(swap_dims(v, 2, 3)) * probs.clone();
        let row = p_d_probs.clone().sum_dim(3);
        let d_scores_scaled: Tensor<I, 4> = (p_d_probs - probs.clone() * row).mul_scalar(scale);
        let d_v = swap_dims(probs, 2, 3).matmul(g);
        if let Some(Some(node)) = ops.parents.get(1) {
            let [_, heads, n, m] = d_scores_scaled.dims();
            let d_bias = d_scores_scaled.clone().sum_dim(0).div_scalar(scale);
            grads.register::<I>(node.id, primitive(d_bias.reshape([heads, n, m])));
        }
        if let Some(node) = &ops.parents[0] {
            let d_q = d_scores_scaled.clone().matmul(k);
            let d_k = swap_dims(d_scores_scaled, 2, 3).matmul(q);
            grads.register::<I>(node.id, primitive(Tensor::stack::<5>(vec![d_q, d_k, d_v], 0)));
        }
    }
}

fn attention_autodiff<I: Backend>(
    stacked: Tensor<Autodiff<I>, 5>,
    bias: Option<Tensor<Autodiff<I>, 3>>,
) -> Tensor<Autodiff<I>, 4> {
    let stacked: FloatTensor<Autodiff<I>> = primitive(stacked);
    let bias: Option<FloatTensor<Autodiff<I>>> = bias.map(primitive);
    let [q, k, v, probs, out] =
        forward::<I>(float(stacked.primitive.clone()), bias.as_ref().map(|b| float(b.primitive.clone())));
    let saved = || Saved { q: primitive(q), k: primitive(k), v: primitive(v), probs: primitive(probs) };
    let out = primitive(out);
    let out = match bias {
        Some(bias) => match AttentionBackward
            .prepare::<NoCheckpointing>([stacked.node.clone(), bias.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(saved(), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        },
        None => match AttentionBackward.prepare::<NoCheckpointing>([stacked.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(saved(), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        },
    };
    float(out)
}
