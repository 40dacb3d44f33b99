//! Depthwise convolution (groups = input channels, any channel multiplier) whose weight gradient
//! takes a constant number of kernel launches.
//!
//! Burn 0.21's conv weight gradient loops over the groups (`burn-cubecl`
//! `kernel/conv/backward_weight/fallback.rs::conv_weight_grad_groups`, and burn-backend's generic
//! fallback): a slice, a slice, a convolution and a slice-assign per channel, ~4·C launches for
//! every depthwise conv of a training step (issue 11, BENCH.md). Here the weight gradient is ONE
//! grouped convolution over the batch: with the batch folded into the channels,
//! `dW[c·m + j, 0, a, b] = Σ_n Σ_{y,x} dY[n, c·m + j, y, x] · X[n, c, y·s + a·d − p, x·s + b·d − p]`
//! is a convolution of `X` viewed as `[1, C·N, H, W]` with `dY` viewed as `[C·m, N, oh, ow]`,
//! `groups = C`, stride `d` and dilation `s` (Burn's own groups = 1 path uses the same swap of
//! stride and dilation). Forward, input gradient and bias gradient are Burn's.
//!
//! The op is an autodiff node (`Autodiff<I>`), generic over the inner backend `I`; under fusion
//! its inner ops are ordinary fused ops. Autodiff backends opt in at run time
//! ([`super::register_autodiff_ops`]); an unregistered backend gets Burn's `conv2d` (same
//! values, the per-channel loop).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::module::conv2d;
use burn::tensor::ops::{ConvOptions, FloatTensor};
use burn::tensor::Tensor;

use super::{float, primitive};

type DepthwiseFn<B> = fn(Tensor<B, 4>, Tensor<B, 4>, Option<Tensor<B, 1>>, ConvOptions<2>) -> Tensor<B, 4>;

/// A backend's own weight and bias gradient, `(x, dY, weight dims, options) -> [dW, db]`
/// (`super::cube_depthwise`); the node uses it where it is registered.
pub(super) type GradKernel<B> = fn(FloatTensor<B>, FloatTensor<B>, [usize; 4], ConvOptions<2>) -> [FloatTensor<B>; 2];

/// Whether depthwise convs of models on `Autodiff<I>` take their weight and bias gradients from
/// a kernel of `I`'s own once [`super::register_autodiff_ops`] has run.
pub fn has_grad_kernel<I: Backend>() -> bool {
    super::registered_op::<GradKernel<I>>().is_some()
}

#[cfg(feature = "cube")]
fn grad_kernel_supports<I: Backend>(x: &FloatTensor<I>) -> bool {
    use burn::tensor::TensorMetadata;
    super::cube_depthwise::supports(x.dtype())
}

#[cfg(not(feature = "cube"))]
fn grad_kernel_supports<I: Backend>(_: &FloatTensor<I>) -> bool {
    false
}

/// Route the depthwise convs of models on `Autodiff<I>` through the constant-launch weight
/// gradient.
pub(super) fn register<I: Backend>() {
    super::register_op::<DepthwiseFn<Autodiff<I>>>(depthwise_autodiff::<I>);
}

/// A depthwise conv2d (`options.groups` = input channels, weight `[C·m, 1, k, k]`).
pub fn depthwise_conv2d<B: Backend>(
    x: Tensor<B, 4>,
    weight: Tensor<B, 4>,
    bias: Option<Tensor<B, 1>>,
    options: ConvOptions<2>,
) -> Tensor<B, 4> {
    match super::registered_op::<DepthwiseFn<B>>() {
        Some(f) => f(x, weight, bias, options),
        None => conv2d(x, weight, bias, options),
    }
}

/// `dW` of a depthwise conv as one grouped convolution over the batch (module docs).
pub fn depthwise_weight_grad<B: Backend>(
    x: Tensor<B, 4>,
    output_grad: Tensor<B, 4>,
    weight_dims: [usize; 4],
    options: &ConvOptions<2>,
) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    let [c_out, _, kh, kw] = weight_dims;
    let [_, _, oh, ow] = output_grad.dims();
    let folded_x = super::swap_dims(x, 0, 1).reshape([1, c * n, h, w]);
    let folded_grad = super::swap_dims(output_grad, 0, 1); // [C·m, N, oh, ow]: N input channels per group
    let folded = ConvOptions::new(options.dilation, options.padding, options.stride, c);
    let dw = conv2d(folded_x, folded_grad, None, folded); // [1, C·m, k', k'], k' >= k
    let dw = if dw.dims()[2] != kh || dw.dims()[3] != kw { dw.slice([0..1, 0..c_out, 0..kh, 0..kw]) } else { dw };
    debug_assert!(oh > 0 && ow > 0);
    dw.reshape([c_out, 1, kh, kw])
}

/// The backward node: parents `[x, weight]` or `[x, weight, bias]`.
#[derive(Debug)]
struct DepthwiseBackward;

impl<I: Backend, const N: usize> Backward<I, N> for DepthwiseBackward {
    /// x and weight (checkpointed), the conv options.
    type State = (NodeId, NodeId, ConvOptions<2>);

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let grad = grads.consume::<I>(&ops.node);
        let (x_state, weight_state, options) = ops.state;
        let x: FloatTensor<I> = checkpointer.retrieve_node_output(x_state);
        let weight: FloatTensor<I> = checkpointer.retrieve_node_output(weight_state);
        let kernel = super::registered_op::<GradKernel<I>>().filter(|_| grad_kernel_supports::<I>(&x));
        if let (Some(kernel), Some(weight_node)) = (kernel, &ops.parents[1]) {
            let dims = float::<I, 4>(weight.clone()).dims();
            let [dw, db] = kernel(x.clone(), grad.clone(), dims, options.clone());
            grads.register::<I>(weight_node.id, dw);
            if let Some(Some(node)) = ops.parents.get(2) {
                grads.register::<I>(node.id, db);
            }
        } else if let Some(Some(node)) = ops.parents.get(2) {
            // Σ over batch and space, per output channel: two reductions of the [N, C, H·W] view
            // (the gradient arrives contiguous from the norm after the conv).
            let g = float::<I, 4>(grad.clone());
            let [n, c, h, w] = g.dims();
            let g = g.reshape([n, c, h * w]).sum_dim(2).sum_dim(0).reshape([c]);
            grads.register::<I>(node.id, primitive(g));
        }
        if let (None, Some(node)) = (kernel, &ops.parents[1]) {
            let dims = float::<I, 4>(weight.clone()).dims();
            let g = depthwise_weight_grad(float::<I, 4>(x.clone()), float::<I, 4>(grad.clone()), dims, &options);
            grads.register::<I>(node.id, primitive(g));
        }
        if let Some(node) = &ops.parents[0] {
            grads.register::<I>(node.id, I::conv2d_x_backward(x, weight, grad, options));
        }
    }
}

/// Burn's conv2d forward as an autodiff node with [`DepthwiseBackward`] over `$parents`.
macro_rules! tracked {
    ($x:ident, $weight:ident, $bias:expr, [$($parent:expr),+], $options:ident) => {{
        let forward = |b: Option<FloatTensor<I>>| I::conv2d($x.primitive.clone(), $weight.primitive.clone(), b, $options.clone());
        match DepthwiseBackward.prepare::<NoCheckpointing>([$($parent),+]).compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let state = (prep.checkpoint(&$x), prep.checkpoint(&$weight), $options.clone());
                prep.finish(state, forward($bias))
            }
            OpsKind::UnTracked(prep) => prep.finish(forward($bias)),
        }
    }};
}

fn depthwise_autodiff<I: Backend>(
    x: Tensor<Autodiff<I>, 4>,
    weight: Tensor<Autodiff<I>, 4>,
    bias: Option<Tensor<Autodiff<I>, 1>>,
    options: ConvOptions<2>,
) -> Tensor<Autodiff<I>, 4> {
    let x: FloatTensor<Autodiff<I>> = primitive(x);
    let weight: FloatTensor<Autodiff<I>> = primitive(weight);
    let out = match bias.map(primitive) {
        Some(b) => {
            let (bias_node, bias) = (b.node.clone(), b.primitive);
            tracked!(x, weight, Some(bias.clone()), [x.node.clone(), weight.node.clone(), bias_node], options)
        }
        None => tracked!(x, weight, None, [x.node.clone(), weight.node.clone()], options),
    };
    float(out)
}
