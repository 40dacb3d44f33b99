//! Multi-head attention cores (spec §2.9) and window / grid partitions (spec §3.5).

use burn::module::Module;
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::rel_pos::RelPos;
use crate::autocast::Cast;
use crate::layers::attention_core::QkvLayout;
use crate::layers::{attention_core, dropout, swap_dims, Conv2d, ConvSpec, InitRole, Linear};

/// `softmax(q·kᵀ·scale + bias)·v` over `[batch, heads, tokens, dim_head]`.
pub fn scaled_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    bias: Option<Tensor<B, 3>>,
    attn_drop: f64,
) -> Tensor<B, 4> {
    let dim_head = q.dims()[3];
    let q = q.mul_scalar((dim_head as f64).powf(-0.5));
    // Under autocast both matmuls run in the low dtype; the bias add and softmax stay f32.
    let cast = Cast::for_input(&q);
    let matmul = |a: Tensor<B, 4>, b: Tensor<B, 4>| match &cast {
        Some(cast) => cast.up(cast.down(a).matmul(cast.down(b))),
        None => a.matmul(b),
    };
    let scores = matmul(q, swap_dims(k, 2, 3));
    let scores = match bias {
        Some(bias) => scores + bias.unsqueeze::<4>(),
        None => scores,
    };
    matmul(dropout(softmax(scores, 3), attn_drop), v)
}

/// Attention over a qkv projection `[b, n, 3·heads·dh]`: our autodiff node where the backend
/// registered it (f32, no attention dropout; `layers::attention_core`), else the composition.
fn attend<B: Backend>(
    qkv: Tensor<B, 3>,
    layout: QkvLayout,
    bias: Option<Tensor<B, 3>>,
    attn_drop: f64,
) -> Tensor<B, 4> {
    if attn_drop <= 0.0 && Cast::for_input(&qkv).is_none() {
        if let Some(node) = attention_core::registered::<B>() {
            return node(qkv, layout, bias);
        }
    }
    let [q, k, v] = attention_core::unstack(attention_core::stack_qkv(qkv, layout));
    scaled_attention(q, k, v, bias, attn_drop)
}

/// timm `AttentionCl`: channels-last attention over `[b, n, C]` tokens (the M / PM blocks).
#[derive(Module, Debug)]
pub struct AttentionCl<B: Backend> {
    pub qkv: Linear<B>,
    pub rel_pos: Option<RelPos<B>>,
    pub proj: Linear<B>,
    pub num_heads: usize,
    pub head_first: bool,
    pub attn_drop: f64,
    pub proj_drop: f64,
}

impl<B: Backend> AttentionCl<B> {
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, n, _] = x.dims();
        let layout = QkvLayout { heads: self.num_heads, head_first: self.head_first };
        let bias = self.rel_pos.as_ref().map(RelPos::bias);
        let out = attend(self.qkv.forward(x), layout, bias, self.attn_drop);
        let dh = out.dims()[3];
        let out = swap_dims(out, 1, 2).reshape([b, n, self.num_heads * dh]);
        dropout(self.proj.forward(out), self.proj_drop)
    }
}

/// Everything that fixes an attention layer's shapes.
#[derive(Debug, Clone, Copy)]
pub struct AttentionSpec {
    pub dim: usize,
    pub dim_out: usize,
    pub dim_attn: usize,
    pub dim_head: usize,
    pub bias: bool,
    pub head_first: bool,
    pub attn_drop: f64,
    pub proj_drop: f64,
    pub role: InitRole,
}

impl AttentionSpec {
    pub fn heads(&self) -> usize {
        self.dim_attn / self.dim_head
    }

    pub fn init_cl<B: Backend>(self, rel_pos: Option<RelPos<B>>, device: &B::Device) -> AttentionCl<B> {
        AttentionCl {
            qkv: Linear::new(self.dim, 3 * self.dim_attn, self.bias, self.role, false, device),
            rel_pos,
            proj: Linear::new(self.dim_attn, self.dim_out, self.bias, self.role, false, device),
            num_heads: self.heads(),
            head_first: self.head_first,
            attn_drop: self.attn_drop,
            proj_drop: self.proj_drop,
        }
    }

    pub fn init_2d<B: Backend>(self, rel_pos: Option<RelPos<B>>, device: &B::Device) -> Attention2d<B> {
        Attention2d {
            qkv: ConvSpec::new(self.dim, 3 * self.dim_attn, 1, self.role).bias(self.bias).init(device),
            rel_pos,
            proj: ConvSpec::new(self.dim_attn, self.dim_out, 1, self.role).bias(self.bias).init(device),
            num_heads: self.heads(),
            attn_drop: self.attn_drop,
            proj_drop: self.proj_drop,
        }
    }
}

/// timm `Attention2d`: NCHW attention over the whole map with 1x1-conv qkv/proj (the T block).
/// The T block never passes `head_first`, so it is always head-interleaved (spec §2.9).
#[derive(Module, Debug)]
pub struct Attention2d<B: Backend> {
    pub qkv: Conv2d<B>,
    pub rel_pos: Option<RelPos<B>>,
    pub proj: Conv2d<B>,
    pub num_heads: usize,
    pub attn_drop: f64,
    pub proj_drop: f64,
}

impl<B: Backend> Attention2d<B> {
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, _, h, w] = x.dims();
        let qkv = self.qkv.forward(x);
        let c3 = qkv.dims()[1];
        let tokens = swap_dims(qkv.reshape([b, c3, h * w]), 1, 2);
        let layout = QkvLayout { heads: self.num_heads, head_first: true };
        let bias = self.rel_pos.as_ref().map(RelPos::bias);
        let out = attend(tokens, layout, bias, self.attn_drop);
        let dh = out.dims()[3];
        // [b, heads, n, dh] -> [b, heads·dh, h, w], channel = head·dh + d as in timm's view.
        let out = swap_dims(out, 2, 3).reshape([b, self.num_heads * dh, h, w]);
        dropout(self.proj.forward(out), self.proj_drop)
    }
}

/// Window or grid partition of a channels-last map (spec §3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partition {
    /// Contiguous `p0×p1` windows.
    Window,
    /// A `p0×p1` grid of tokens with stride `(H/p0, W/p1)`.
    Grid,
}

impl Partition {
    /// `[B, H, W, C]` → `[B·windows, p0·p1, C]`.
    pub fn split<B: Backend>(self, x: Tensor<B, 4>, [p0, p1]: [usize; 2]) -> Tensor<B, 3> {
        let [b, h, w, c] = x.dims();
        assert!(h % p0 == 0 && w % p1 == 0, "feature map {h}x{w} is not divisible by partition {p0}x{p1}");
        let (nh, nw) = (h / p0, w / p1);
        let parts: Tensor<B, 6> = match self {
            Self::Window => x.reshape([b, nh, p0, nw, p1, c]).permute([0, 1, 3, 2, 4, 5]),
            Self::Grid => x.reshape([b, p0, nh, p1, nw, c]).permute([0, 2, 4, 1, 3, 5]),
        };
        parts.reshape([b * nh * nw, p0 * p1, c])
    }

    /// Inverse of [`Partition::split`]: `[B·windows, p0·p1, C]` → `[B, H, W, C]`.
    pub fn merge<B: Backend>(self, x: Tensor<B, 3>, [p0, p1]: [usize; 2], [h, w]: [usize; 2]) -> Tensor<B, 4> {
        let c = x.dims()[2];
        let (nh, nw) = (h / p0, w / p1);
        let b = x.dims()[0] / (nh * nw);
        let parts: Tensor<B, 6> = x.reshape([b, nh, nw, p0, p1, c]);
        let map = match self {
            Self::Window => parts.permute([0, 1, 3, 2, 4, 5]),
            Self::Grid => parts.permute([0, 3, 1, 4, 2, 5]),
        };
        map.reshape([b, h, w, c])
    }
}
