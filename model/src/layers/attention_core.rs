//! `softmax(q·kᵀ·scale + bias)·v` from a qkv projection, as one autodiff node.
//!
//! Taped op by op (Burn 0.21's autodiff always takes `attention_fallback`'s path, issue 11), the
//! three slices that split q, k and v out of the qkv projection each take back a zero tensor and
//! a slice-assign, summed by two adds; the scale, the bias add and the softmax's five ops each
//! take their own backward kernels. Here the backward is the textbook one, with `P` the
//! probabilities and `g` the output's gradient:
//! `dV = Pᵀ·g`, `dS = P ∘ (g·Vᵀ − rowsum(P ∘ g·Vᵀ))`, `dQ = scale · dS·K`, `dK = scale · dSᵀ·Q`,
//! `dbias = Σ_batch dS` (computed as `P∘dP − P·rowsum` with the scale folded in: see the node).
//! The projection's gradient is dQ, dK and dV gathered into its channel layout: one kernel of
//! the backend's own where registered ([`QkvGradKernel`], `super::cube_qkv`), else a `stack`
//! and the inverse of [`stack_qkv`]'s permute (a copy).
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

/// How a qkv projection's channels split into q, k, v and heads (spec §2.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QkvLayout {
    pub heads: usize,
    /// Channel `h·3dh + s·dh + d` (rw and paper); otherwise `s·C + h·dh + d` (tf).
    pub head_first: bool,
}

type AttentionFn<B> = fn(Tensor<B, 3>, QkvLayout, Option<Tensor<B, 3>>) -> Tensor<B, 4>;

/// A backend's own gather of `(dq, dk, dv, head_first)` `[b, heads, n, dh]` into the
/// projection's gradient `[b, n, 3·heads·dh]` (`super::cube_qkv`).
pub(super) type QkvGradKernel<B> = fn(FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, bool) -> FloatTensor<B>;

pub(super) fn register<I: Backend>() {
    super::register_op::<AttentionFn<Autodiff<I>>>(attention_autodiff::<I>);
}

/// The registered node for `B`, if any (the caller falls back to the composition).
pub fn registered<B: Backend>() -> Option<AttentionFn<B>> {
    super::registered_op::<AttentionFn<B>>()
}

/// Whether the node on `Autodiff<I>` gathers the projection's gradient with a kernel of `I`'s
/// own once [`super::register_autodiff_ops`] has run.
pub fn has_qkv_grad_kernel<I: Backend>() -> bool {
    super::registered_op::<QkvGradKernel<I>>().is_some()
}

/// A qkv projection `[b, n, 3·heads·dh]` as q, k, v stacked: `[3, b, heads, n, dh]`, made
/// contiguous by one copy (the reshape through `[3, b·heads, n, dh]`), so that q, k and v are
/// contiguous slices the matmuls read as they are: as views of the projection, k and v were
/// each copied by the matmul and q by its scaling (issue 11).
pub fn stack_qkv<B: Backend>(qkv: Tensor<B, 3>, layout: QkvLayout) -> Tensor<B, 5> {
    let [b, n, c3] = qkv.dims();
    let heads = layout.heads;
    let dh = c3 / 3 / heads;
    let stacked: Tensor<B, 5> = if layout.head_first {
        qkv.reshape([b, n, heads, 3, dh]).permute([3, 0, 2, 1, 4])
    } else {
        qkv.reshape([b, n, 3, heads, dh]).permute([2, 0, 3, 1, 4])
    };
    stacked.reshape([3, b * heads, n, dh]).reshape([3, b, heads, n, dh])
}

/// The inverse of [`stack_qkv`] for the gradients: dQ, dK, dV `[b, heads, n, dh]` to the
/// projection's `[b, n, 3·heads·dh]` (a stack, then a copy through the inverse permute).
fn unstack_qkv_grad<B: Backend>(parts: [Tensor<B, 4>; 3], layout: QkvLayout) -> Tensor<B, 3> {
    let [b, heads, n, dh] = parts[0].dims();
    let stacked = Tensor::stack::<5>(parts.into(), 0);
    let inverse = if layout.head_first { [1, 3, 2, 0, 4] } else { [1, 3, 0, 2, 4] };
    stacked.permute(inverse).reshape([b, n, 3 * heads * dh])
}

/// q, k and v `[b, heads, n, dh]` of a stacked `[3, b, heads, n, dh]` tensor.
pub fn unstack<B: Backend>(stacked: Tensor<B, 5>) -> [Tensor<B, 4>; 3] {
    let [_, b, heads, n, dh] = stacked.dims();
    let part = |s: usize| stacked.clone().narrow(0, s, 1).reshape([b, heads, n, dh]);
    [part(0), part(1), part(2)]
}

/// The forward: q, k, v, the probabilities and the output.
fn forward<B: Backend>(qkv: Tensor<B, 3>, layout: QkvLayout, bias: Option<Tensor<B, 3>>) -> [Tensor<B, 4>; 5] {
    let [q, k, v] = unstack(stack_qkv(qkv, layout));
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

/// Parents `[qkv]` or `[qkv, bias]`.
#[derive(Debug)]
struct AttentionBackward(QkvLayout);

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
            let layout = self.0;
            let d_qkv = match super::registered_op::<QkvGradKernel<I>>() {
                Some(gather) => gather(primitive(d_q), primitive(d_k), primitive(d_v), layout.head_first),
                None => primitive(unstack_qkv_grad([d_q, d_k, d_v], layout)),
            };
            grads.register::<I>(node.id, d_qkv);
        }
    }
}

fn attention_autodiff<I: Backend>(
    qkv: Tensor<Autodiff<I>, 3>,
    layout: QkvLayout,
    bias: Option<Tensor<Autodiff<I>, 3>>,
) -> Tensor<Autodiff<I>, 4> {
    let qkv: FloatTensor<Autodiff<I>> = primitive(qkv);
    let bias: Option<FloatTensor<Autodiff<I>>> = bias.map(primitive);
    let [q, k, v, probs, out] =
        forward::<I>(float(qkv.primitive.clone()), layout, bias.as_ref().map(|b| float(b.primitive.clone())));
    let saved = || Saved { q: primitive(q), k: primitive(k), v: primitive(v), probs: primitive(probs) };
    let out = primitive(out);
    let node = AttentionBackward(layout);
    let out = match bias {
        Some(bias) => {
            match node.prepare::<NoCheckpointing>([qkv.node.clone(), bias.node.clone()]).compute_bound().stateful() {
                OpsKind::Tracked(prep) => prep.finish(saved(), out),
                OpsKind::UnTracked(prep) => prep.finish(out),
            }
        }
        None => match node.prepare::<NoCheckpointing>([qkv.node.clone()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish(saved(), out),
            OpsKind::UnTracked(prep) => prep.finish(out),
        },
    };
    float(out)
}
