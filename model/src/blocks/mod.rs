//! The four block letters of a stage (spec §1.6) and the stage that chains them.

pub mod attention;
pub mod conv_blocks;
pub mod rel_pos;
pub mod transformer;

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use attention::Partition;
use conv_blocks::ConvBlock;
use transformer::{AttnCtx, ParallelPartitionAttention, PartitionAttentionCl, TransformerBlock2d};

use crate::config::{BlockKind, MaxxVitConvCfg};
use crate::layers::InitRole;

/// 'M': conv block, then window attention (absent in MaxxViT-V2), then grid attention.
#[derive(Module, Debug)]
pub struct MaxxVitBlock<B: Backend> {
    pub conv: ConvBlock<B>,
    pub attn_block: Option<PartitionAttentionCl<B>>,
    pub attn_grid: PartitionAttentionCl<B>,
}

impl<B: Backend> MaxxVitBlock<B> {
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut x = self.conv.forward(x).permute([0, 2, 3, 1]);
        if let Some(block) = &self.attn_block {
            x = block.forward(x);
        }
        self.attn_grid.forward(x).permute([0, 3, 1, 2])
    }
}

/// 'PM': two conv blocks (`conv.0`, `conv.1`), then parallel window + grid attention.
#[derive(Module, Debug)]
pub struct ParallelMaxxVitBlock<B: Backend> {
    pub conv: Vec<ConvBlock<B>>,
    pub attn: ParallelPartitionAttention<B>,
}

impl<B: Backend> ParallelMaxxVitBlock<B> {
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = self.conv.iter().fold(x, |x, conv| conv.forward(x));
        self.attn.forward(x.permute([0, 2, 3, 1])).permute([0, 3, 1, 2])
    }
}

#[derive(Module, Debug)]
pub enum Block<B: Backend> {
    Conv(ConvBlock<B>),
    Transformer(TransformerBlock2d<B>),
    MaxxVit(MaxxVitBlock<B>),
    Parallel(ParallelMaxxVitBlock<B>),
}

impl<B: Backend> Block<B> {
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        match self {
            Self::Conv(b) => b.forward(x),
            Self::Transformer(b) => b.forward(x),
            Self::MaxxVit(b) => b.forward(x),
            Self::Parallel(b) => b.forward(x),
        }
    }
}

/// What a stage needs to build its blocks.
pub struct StageSpec<'a> {
    pub in_chs: usize,
    pub out_chs: usize,
    pub kinds: &'a [BlockKind],
    pub feat_size: [usize; 2],
    pub conv_cfg: &'a MaxxVitConvCfg,
    pub attn: AttnCtx<'a>,
    pub drop_path: &'a [f64],
    /// `cfg.weight_init` scheme, resolved into the init pass each block kind gets (spec §6).
    pub conv_role: InitRole,
}

#[derive(Module, Debug)]
pub struct MaxxVitStage<B: Backend> {
    pub blocks: Vec<Block<B>>,
}

impl<B: Backend> MaxxVitStage<B> {
    pub fn new(spec: StageSpec, device: &B::Device) -> Self {
        let mut in_chs = spec.in_chs;
        let mut blocks = Vec::with_capacity(spec.kinds.len());
        for (j, kind) in spec.kinds.iter().enumerate() {
            let (stride, dpr, out) = (if j == 0 { 2 } else { 1 }, spec.drop_path[j], spec.out_chs);
            let conv = |i, o, s| ConvBlock::new(i, o, s, spec.conv_cfg, dpr, spec.conv_role, device);
            blocks.push(match kind {
                // Stand-alone conv blocks: MBConv has init_weights (conv pass), ConvNeXt does not.
                BlockKind::C => Block::Conv(match spec.conv_cfg.block_type {
                    crate::config::ConvBlockType::Mbconv => conv(in_chs, out, stride),
                    crate::config::ConvBlockType::Convnext => {
                        ConvBlock::new(in_chs, out, stride, spec.conv_cfg, dpr, InitRole::TorchDefault, device)
                    }
                }),
                BlockKind::T => Block::Transformer(TransformerBlock2d::new(
                    in_chs,
                    out,
                    stride,
                    spec.feat_size,
                    spec.attn,
                    dpr,
                    device,
                )),
                BlockKind::M => Block::MaxxVit(MaxxVitBlock {
                    conv: conv(in_chs, out, stride),
                    attn_block: (!spec.attn.cfg.no_block_attn)
                        .then(|| PartitionAttentionCl::new(out, Partition::Window, spec.attn, dpr, device)),
                    attn_grid: PartitionAttentionCl::new(out, Partition::Grid, spec.attn, dpr, device),
                }),
                BlockKind::PM => Block::Parallel(ParallelMaxxVitBlock {
                    conv: vec![conv(in_chs, out, stride), conv(out, out, 1)],
                    attn: ParallelPartitionAttention::new(out, spec.attn, dpr, device),
                }),
            });
            in_chs = out;
        }
        Self { blocks }
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.blocks.iter().fold(x, |x, block| block.forward(x))
    }
}
