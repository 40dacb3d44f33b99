//! Conv2d, Linear and pooling with timm's padding rules (spec §2.1, §2.2).

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::module::{avg_pool2d, conv2d, linear, max_pool2d};
use burn::tensor::ops::{ConvOptions, PadMode};
use burn::tensor::Tensor;

use super::depthwise::depthwise_conv2d;
use super::init::{param, weight_and_bias, Fans, InitRole};
use crate::autocast::Cast;
use crate::config::{PaddingMode, PoolType};

/// TF SAME total padding for one spatial dim: `max((ceil(n/s) - 1)·s + (k - 1)·d + 1 - n, 0)`.
pub fn same_pad_total(size: usize, kernel: usize, stride: usize, dilation: usize) -> usize {
    let out = size.div_ceil(stride);
    ((out.saturating_sub(1)) * stride + (kernel - 1) * dilation + 1).saturating_sub(size)
}

/// Pad `x` TF-style: `total / 2` before, the rest after (so k3 s2 on even sizes pads 0 / 1).
pub fn pad_same<B: Backend>(x: Tensor<B, 4>, kernel: usize, stride: usize, value: f32) -> Tensor<B, 4> {
    let [_, _, h, w] = x.dims();
    let (ph, pw) = (same_pad_total(h, kernel, stride, 1), same_pad_total(w, kernel, stride, 1));
    if ph == 0 && pw == 0 {
        return x;
    }
    x.pad((pw / 2, pw - pw / 2, ph / 2, ph - ph / 2), PadMode::Constant(value))
}

/// `nn.Conv2d` / timm `create_conv2d` (which defaults to `bias=False`).
#[derive(Module, Debug)]
pub struct Conv2d<B: Backend> {
    pub weight: Param<Tensor<B, 4>>,
    pub bias: Option<Param<Tensor<B, 1>>>,
    pub stride: usize,
    pub groups: usize,
    pub padding: PaddingMode,
}

/// Everything that decides a conv's shape and init.
#[derive(Debug, Clone, Copy)]
pub struct ConvSpec {
    pub in_ch: usize,
    pub out_ch: usize,
    pub kernel: usize,
    pub stride: usize,
    pub groups: usize,
    pub bias: bool,
    pub padding: PaddingMode,
    pub role: InitRole,
    pub in_mlp: bool,
}

impl ConvSpec {
    pub fn new(in_ch: usize, out_ch: usize, kernel: usize, role: InitRole) -> Self {
        Self {
            in_ch,
            out_ch,
            kernel,
            stride: 1,
            groups: 1,
            bias: false,
            padding: PaddingMode::Symmetric,
            role,
            in_mlp: false,
        }
    }

    pub fn stride(mut self, stride: usize) -> Self {
        self.stride = stride;
        self
    }

    pub fn groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    pub fn bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }

    pub fn padding(mut self, padding: PaddingMode) -> Self {
        self.padding = padding;
        self
    }

    pub fn in_mlp(mut self, in_mlp: bool) -> Self {
        self.in_mlp = in_mlp;
        self
    }

    pub fn init<B: Backend>(self, device: &B::Device) -> Conv2d<B> {
        let in_per_group = self.in_ch / self.groups;
        let fans = Fans::conv(self.out_ch, in_per_group, [self.kernel, self.kernel], self.groups);
        let (w_init, b_init) = weight_and_bias(self.role, fans, true, self.in_mlp);
        Conv2d {
            weight: param([self.out_ch, in_per_group, self.kernel, self.kernel], w_init, device),
            bias: self.bias.then(|| param([self.out_ch], b_init, device)),
            stride: self.stride,
            groups: self.groups,
            padding: self.padding,
        }
    }
}

impl<B: Backend> Conv2d<B> {
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let kernel = self.weight.lazy_shape().dims::<4>()[2];
        let bias = self.bias.as_ref().map(|b| b.val());
        // Static padding unless TF SAME needs a stride/size-dependent asymmetric pad (spec §2.1).
        let dynamic = self.padding == PaddingMode::Same && !(self.stride == 1 && (kernel - 1) % 2 == 0);
        let (x, pad) = if dynamic {
            (pad_same(x, kernel, self.stride, 0.0), 0)
        } else {
            (x, ((self.stride - 1) + (kernel - 1)) / 2)
        };
        let options = ConvOptions::new([self.stride; 2], [pad; 2], [1, 1], self.groups);
        // Depthwise (one input channel per group): our op, whose weight gradient is not a loop
        // over channels (layers/depthwise.rs).
        let conv =
            if self.groups > 1 && self.weight.lazy_shape().dims::<4>()[1] == 1 { depthwise_conv2d } else { conv2d };
        match Cast::for_input(&x) {
            Some(cast) => {
                let bias = bias.map(|b| cast.down(b));
                cast.up(conv(cast.down(x), cast.down(self.weight.val()), bias, options))
            }
            None => conv(x, self.weight.val(), bias, options),
        }
    }
}

impl<B: Backend> Conv2d<B> {
    /// Whether this conv, applied to an NCHW map of `dims`, can run as [`Self::forward_tokens`]
    /// exactly: 1x1, stride 1, ungrouped, and every contraction of its matmuls (input and
    /// output widths, the token count) a multiple of 16 (docs/burn_faults.md §6).
    pub fn tokens_are_exact(&self, [n, _, h, w]: [usize; 4]) -> bool {
        let [out_ch, in_ch, kh, kw] = self.weight.lazy_shape().dims::<4>();
        kh == 1
            && kw == 1
            && self.stride == 1
            && self.groups == 1
            && super::matmuls_are_exact(&[n * h * w, in_ch, out_ch])
    }

    /// A 1x1, stride-1, ungrouped conv applied to channels-last tokens `[rows, in]`: the same
    /// values as [`Conv2d::forward`] on the NCHW map, as one matmul. Burn's 1x1 conv lowers to
    /// its own im2col copy, matmul and bias kernel, and its backward to a col2im, copies and a
    /// direct conv (issue 11: ~9 launches per 1x1 conv backward against a linear's 3).
    pub fn forward_tokens(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let [out_ch, in_ch, kh, kw] = self.weight.lazy_shape().dims::<4>();
        assert!(kh == 1 && kw == 1 && self.stride == 1 && self.groups == 1, "forward_tokens is for 1x1 convs");
        let weight = self.weight.val().reshape([out_ch, in_ch]);
        let bias = self.bias.as_ref().map(|b| b.val());
        match Cast::for_input(&x) {
            Some(cast) => cast.up(linear(cast.down(x), cast.down(weight).transpose(), bias.map(|b| cast.down(b)))),
            None => linear(x, weight.transpose(), bias),
        }
    }
}

/// `nn.Linear`, weight stored as PyTorch does: `[out, in]`.
#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    pub weight: Param<Tensor<B, 2>>,
    pub bias: Option<Param<Tensor<B, 1>>>,
}

impl<B: Backend> Linear<B> {
    pub fn new(in_f: usize, out_f: usize, bias: bool, role: InitRole, in_mlp: bool, device: &B::Device) -> Self {
        let (w_init, b_init) = weight_and_bias(role, Fans::linear(out_f, in_f), false, in_mlp);
        Self { weight: param([out_f, in_f], w_init, device), bias: bias.then(|| param([out_f], b_init, device)) }
    }

    /// Leading dims are flattened into one, so the matmul is 2-D: a batched `linear` (weight
    /// broadcast over unit dims) with a bias and an activation after it computes wrong values
    /// under fusion in training (Burn 0.21, `model/tests/wgpu_ops.rs`, docs/burn_faults.md).
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        over_tokens(x, |tokens| self.forward_2d(tokens))
    }

    /// Over `[rows, in]` tokens.
    pub fn forward_2d(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let bias = self.bias.as_ref().map(|b| b.val());
        match Cast::for_input(&x) {
            Some(cast) => {
                let bias = bias.map(|b| cast.down(b));
                cast.up(linear(cast.down(x), cast.down(self.weight.val()).transpose(), bias))
            }
            None => linear(x, self.weight.val().transpose(), bias),
        }
    }
}

/// `f` over `x`'s `[.., C]` channels-last values viewed as `[rows, C]` tokens, its `[rows, C']`
/// result viewed back with the leading dims of `x`.
pub fn over_tokens<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    f: impl FnOnce(Tensor<B, 2>) -> Tensor<B, 2>,
) -> Tensor<B, D> {
    let mut dims = x.dims();
    let rows = dims[..D - 1].iter().product::<usize>();
    let y = f(x.reshape([rows, dims[D - 1]]));
    dims[D - 1] = y.dims()[1];
    y.reshape(dims)
}

/// An NCHW map as channels-last `[N·H·W, C]` tokens (one copy: the reshape of the permute).
pub fn map_to_tokens<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 2> {
    let [n, c, h, w] = x.dims();
    x.permute([0, 2, 3, 1]).reshape([n * h * w, c])
}

/// `[N·H·W, C]` tokens back to an NCHW map (a view).
pub fn tokens_to_map<B: Backend>(tokens: Tensor<B, 2>, [n, h, w]: [usize; 3]) -> Tensor<B, 4> {
    let c = tokens.dims()[1];
    tokens.reshape([n, h, w, c]).permute([0, 3, 1, 2])
}

/// The pooling of timm's `Downsample2d` / `create_pool2d` for one `pool_type`.
pub fn pool2d<B: Backend>(x: Tensor<B, 4>, pool: PoolType, padding: PaddingMode) -> Tensor<B, 4> {
    let same = padding == PaddingMode::Same;
    match pool {
        PoolType::Avg2 | PoolType::Unset => {
            let x = if same { pad_same(x, 2, 2, 0.0) } else { x };
            avg_pool2d(x, [2, 2], [2, 2], [0, 0], true, false)
        }
        PoolType::Max2 => {
            let x = if same { pad_same(x, 2, 2, f32::NEG_INFINITY) } else { x };
            max_pool2d(x, [2, 2], [2, 2], [0, 0], [1, 1], false)
        }
        // AvgPool2dSame pads zeros itself, so they count; the symmetric variant excludes them.
        PoolType::Avg if same => avg_pool2d(pad_same(x, 3, 2, 0.0), [3, 3], [2, 2], [0, 0], true, false),
        PoolType::Avg => avg_pool2d(x, [3, 3], [2, 2], [1, 1], false, false),
        PoolType::Max if same => {
            max_pool2d(pad_same(x, 3, 2, f32::NEG_INFINITY), [3, 3], [2, 2], [0, 0], [1, 1], false)
        }
        PoolType::Max => max_pool2d(x, [3, 3], [2, 2], [1, 1], [1, 1], false),
    }
}

/// timm `Downsample2d`: pool, then a 1x1 `expand` conv when the width changes.
#[derive(Module, Debug)]
pub struct Downsample2d<B: Backend> {
    pub expand: Option<Conv2d<B>>,
    pub pool: PoolType,
    pub padding: PaddingMode,
}

impl<B: Backend> Downsample2d<B> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dim: usize,
        dim_out: usize,
        pool: PoolType,
        padding: PaddingMode,
        bias: bool,
        role: InitRole,
        device: &B::Device,
    ) -> Self {
        let expand = (dim != dim_out).then(|| ConvSpec::new(dim, dim_out, 1, role).bias(bias).init(device));
        Self { expand, pool, padding }
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = pool2d(x, self.pool, self.padding);
        match &self.expand {
            Some(conv) if conv.tokens_are_exact(x.dims()) => {
                // The 1x1 expand as one matmul over channels-last tokens (issue 11: Burn's 1x1
                // conv backward is a col2im, packing copies and a direct conv).
                let [n, _, h, w] = x.dims();
                tokens_to_map(conv.forward_tokens(map_to_tokens(x)), [n, h, w])
            }
            Some(conv) => conv.forward(x),
            None => x,
        }
    }
}
