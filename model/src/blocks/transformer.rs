//! Transformer blocks: CoAtNet's `TransformerBlock2d` ('T', spec §3.4), the window / grid
//! `PartitionAttentionCl` (spec §3.6) and the parallel `ParallelPartitionAttention` (spec §3.8).

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::attention::{Attention2d, AttentionCl, AttentionSpec, Partition};
use super::rel_pos::RelPos;
use crate::config::{MaxxVitTransformerCfg, PaddingMode};
use crate::layers::norm::{layer_scale_2d, layer_scale_cl};
use crate::layers::{drop_path, ConvMlp, Downsample2d, InitRole, LayerNorm, LayerScale, Mlp, Norm2d};

/// Construction context shared by every attention layer of one model.
#[derive(Debug, Clone, Copy)]
pub struct AttnCtx<'a> {
    pub cfg: &'a MaxxVitTransformerCfg,
    pub role: InitRole,
    pub rel_pos_mlp_drop: f64,
}

impl AttnCtx<'_> {
    fn rel_pos<B: Backend>(&self, window: [usize; 2], heads: usize, device: &B::Device) -> Option<RelPos<B>> {
        RelPos::new(
            self.cfg.rel_pos_type,
            window,
            heads,
            self.cfg.rel_pos_dim,
            self.rel_pos_mlp_drop,
            self.role,
            device,
        )
    }

    fn spec(&self, dim: usize, dim_out: usize, dim_attn: usize, head_first: bool) -> AttentionSpec {
        AttentionSpec {
            dim,
            dim_out,
            dim_attn,
            dim_head: self.cfg.dim_head,
            bias: self.cfg.attn_bias,
            head_first,
            attn_drop: self.cfg.attn_drop,
            proj_drop: self.cfg.proj_drop,
            role: self.role,
        }
    }

    fn hidden(&self, dim: usize) -> usize {
        (dim as f64 * self.cfg.expand_ratio) as usize
    }

    fn layer_scale<B: Backend>(&self, dim: usize, device: &B::Device) -> Option<LayerScale<B>> {
        self.cfg.layer_scale().map(|v| LayerScale::new(dim, v, device))
    }
}

/// `norm1` of a T block: a bare norm, or `Sequential(norm, down)` in a stage's first block, which
/// is why its keys are `norm1.*` or `norm1.norm.*`.
#[derive(Module, Debug)]
pub enum TransformerNorm1<B: Backend> {
    Plain(Norm2d<B>),
    WithDown(NormThenDown<B>),
}

#[derive(Module, Debug)]
pub struct NormThenDown<B: Backend> {
    pub norm: Norm2d<B>,
    pub down: Downsample2d<B>,
}

#[derive(Module, Debug)]
pub struct TransformerBlock2d<B: Backend> {
    pub shortcut: Option<Downsample2d<B>>,
    pub norm1: TransformerNorm1<B>,
    pub attn: Attention2d<B>,
    pub ls1: Option<LayerScale<B>>,
    pub norm2: Norm2d<B>,
    pub mlp: ConvMlp<B>,
    pub ls2: Option<LayerScale<B>>,
    pub drop_path: f64,
}

impl<B: Backend> TransformerBlock2d<B> {
    /// `feat_size` is this stage's output map: T blocks attend over all of it (spec §11.5).
    pub fn new(
        dim: usize,
        dim_out: usize,
        stride: usize,
        feat_size: [usize; 2],
        ctx: AttnCtx,
        drop_path: f64,
        device: &B::Device,
    ) -> Self {
        let cfg = ctx.cfg;
        let norm = |c| Norm2d::new(cfg.norm_layer, c, cfg.norm_eps, device);
        let (shortcut, norm1) = if stride == 2 {
            let pool = |d_out, bias| {
                Downsample2d::new(dim, d_out, cfg.pool_type, PaddingMode::Symmetric, bias, ctx.role, device)
            };
            let down = pool(dim, true);
            (Some(pool(dim_out, cfg.shortcut_bias)), TransformerNorm1::WithDown(NormThenDown { norm: norm(dim), down }))
        } else {
            assert_eq!(dim, dim_out, "a stride-1 T block cannot change width");
            (None, TransformerNorm1::Plain(norm(dim)))
        };
        let dim_attn = if cfg.expand_first { dim_out } else { dim };
        let spec = ctx.spec(dim, dim_out, dim_attn, true);
        Self {
            shortcut,
            norm1,
            attn: spec.init_2d(ctx.rel_pos(feat_size, spec.heads(), device), device),
            ls1: ctx.layer_scale(dim_out, device),
            norm2: norm(dim_out),
            mlp: ConvMlp::new(dim_out, ctx.hidden(dim_out), true, cfg.act_layer, cfg.proj_drop, ctx.role, device),
            ls2: ctx.layer_scale(dim_out, device),
            drop_path,
        }
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let (shortcut, y) = match (&self.shortcut, &self.norm1) {
            (Some(sc), TransformerNorm1::WithDown(nd)) => (sc.forward(x.clone()), nd.down.forward(nd.norm.forward(x))),
            (_, TransformerNorm1::WithDown(nd)) => (x.clone(), nd.down.forward(nd.norm.forward(x))),
            (Some(sc), TransformerNorm1::Plain(n)) => (sc.forward(x.clone()), n.forward(x)),
            (None, TransformerNorm1::Plain(n)) => (x.clone(), n.forward(x)),
        };
        let x = shortcut + drop_path(layer_scale_2d(&self.ls1, self.attn.forward(y)), self.drop_path);
        let y = self.mlp.forward_normed(x.clone(), &self.norm2, &self.ls2);
        x.clone() + drop_path(y, self.drop_path)
    }
}

/// Pre-norm residual MLP shared by the channels-last attention blocks. Over `[B·H·W, C]` tokens
/// fusion would put fc2's bias, the layer scale and the residual add on fc2's matmul write (one
/// launch instead of three), but that form computes wrong values on wgpu with fusion
/// (docs/burn_faults.md §7), so the map stays 4-D here.
fn mlp_residual<B: Backend>(
    x: Tensor<B, 4>,
    norm: &LayerNorm<B>,
    mlp: &Mlp<B>,
    ls: &Option<LayerScale<B>>,
    p: f64,
) -> Tensor<B, 4> {
    let y = mlp.forward(norm.forward(x.clone()));
    x + drop_path(layer_scale_cl(ls, y), p)
}

/// Window ('block') or grid attention + MLP over a channels-last `[B, H, W, C]` map.
#[derive(Module, Debug)]
pub struct PartitionAttentionCl<B: Backend> {
    pub norm1: LayerNorm<B>,
    pub attn: AttentionCl<B>,
    pub ls1: Option<LayerScale<B>>,
    pub norm2: LayerNorm<B>,
    pub mlp: Mlp<B>,
    pub ls2: Option<LayerScale<B>>,
    pub partition_grid: bool,
    pub partition_size: [usize; 2],
    pub drop_path: f64,
}

impl<B: Backend> PartitionAttentionCl<B> {
    pub fn new(dim: usize, partition: Partition, ctx: AttnCtx, drop_path: f64, device: &B::Device) -> Self {
        let cfg = ctx.cfg;
        let size = match partition {
            Partition::Window => cfg.window(),
            Partition::Grid => cfg.grid(),
        };
        let spec = ctx.spec(dim, dim, dim, cfg.head_first);
        Self {
            norm1: LayerNorm::new(dim, cfg.norm_eps, device),
            attn: spec.init_cl(ctx.rel_pos(size, spec.heads(), device), device),
            ls1: ctx.layer_scale(dim, device),
            norm2: LayerNorm::new(dim, cfg.norm_eps, device),
            mlp: Mlp::new(dim, ctx.hidden(dim), dim, cfg.act_layer, (cfg.proj_drop, cfg.proj_drop), ctx.role, device),
            ls2: ctx.layer_scale(dim, device),
            partition_grid: partition == Partition::Grid,
            partition_size: size,
            drop_path,
        }
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [_, h, w, _] = x.dims();
        let partition = if self.partition_grid { Partition::Grid } else { Partition::Window };
        let tokens = partition.split(self.norm1.forward(x.clone()), self.partition_size);
        let y = partition.merge(self.attn.forward(tokens), self.partition_size, [h, w]);
        let x = x + drop_path(layer_scale_cl(&self.ls1, y), self.drop_path);
        mlp_residual(x, &self.norm2, &self.mlp, &self.ls2, self.drop_path)
    }
}

/// Window and grid attention side by side, each producing C/2 channels, then one MLP.
#[derive(Module, Debug)]
pub struct ParallelPartitionAttention<B: Backend> {
    pub norm1: LayerNorm<B>,
    pub attn_block: AttentionCl<B>,
    pub attn_grid: AttentionCl<B>,
    pub ls1: Option<LayerScale<B>>,
    pub norm2: LayerNorm<B>,
    pub mlp: Mlp<B>,
    pub ls2: Option<LayerScale<B>>,
    pub partition_size: [usize; 2],
    pub drop_path: f64,
}

impl<B: Backend> ParallelPartitionAttention<B> {
    pub fn new(dim: usize, ctx: AttnCtx, drop_path: f64, device: &B::Device) -> Self {
        let cfg = ctx.cfg;
        let size = cfg.window();
        // dim_out = dim/2 < dim, so timm's AttentionCl keeps dim_attn = dim.
        let spec = ctx.spec(dim, dim / 2, dim, cfg.head_first);
        let attn = || spec.init_cl(ctx.rel_pos(size, spec.heads(), device), device);
        Self {
            norm1: LayerNorm::new(dim, cfg.norm_eps, device),
            attn_block: attn(),
            attn_grid: attn(),
            ls1: ctx.layer_scale(dim, device),
            norm2: LayerNorm::new(dim, cfg.norm_eps, device),
            mlp: Mlp::new(dim, ctx.hidden(dim), dim, cfg.act_layer, (cfg.proj_drop, cfg.proj_drop), ctx.role, device),
            ls2: ctx.layer_scale(dim, device),
            partition_size: size,
            drop_path,
        }
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [_, h, w, _] = x.dims();
        let y = self.norm1.forward(x.clone());
        let size = self.partition_size;
        let run = |partition: Partition, attn: &AttentionCl<B>| {
            partition.merge(attn.forward(partition.split(y.clone(), size)), size, [h, w])
        };
        // Window half first, then grid half (spec §3.8).
        let y = Tensor::cat(vec![run(Partition::Window, &self.attn_block), run(Partition::Grid, &self.attn_grid)], 3);
        let x = x + drop_path(layer_scale_cl(&self.ls1, y), self.drop_path);
        mlp_residual(x, &self.norm2, &self.mlp, &self.ls2, self.drop_path)
    }
}
