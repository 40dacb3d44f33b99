//! Multiply-accumulate count of one forward pass, counted the way torch's `FlopCounterMode`
//! does (convolutions, linear layers and the two attention matmuls; element-wise ops are free),
//! so figures compare with timm's published GMACs (= FLOPs / 2).

use burn::tensor::backend::Backend;

use crate::blocks::attention::{Attention2d, AttentionCl};
use crate::blocks::conv_blocks::{ConvBlock, ConvNeXtShortcut};
use crate::blocks::rel_pos::RelPos;
use crate::blocks::transformer::{PartitionAttentionCl, TransformerBlock2d, TransformerNorm1};
use crate::blocks::Block;
use crate::head::Head;
use crate::layers::{Conv2d, Downsample2d, Linear, Mlp};
use crate::model::MaxxVit;

fn conv_out(size: usize, stride: usize) -> usize {
    size.div_ceil(stride)
}

/// MACs of a conv on an `hw` input, and its output size (timm's padding keeps `ceil(n/s)`).
fn conv<B: Backend>(c: &Conv2d<B>, hw: [usize; 2]) -> (u64, [usize; 2]) {
    let [out, in_per_group, kh, kw] = c.weight.lazy_shape().dims::<4>();
    let o = [conv_out(hw[0], c.stride), conv_out(hw[1], c.stride)];
    ((o[0] * o[1] * out * in_per_group * kh * kw) as u64, o)
}

fn linear<B: Backend>(l: &Linear<B>, tokens: usize) -> u64 {
    let [out, inp] = l.weight.lazy_shape().dims::<2>();
    (tokens * out * inp) as u64
}

fn mlp<B: Backend>(m: &Mlp<B>, tokens: usize) -> u64 {
    linear(&m.fc1, tokens) + linear(&m.fc2, tokens)
}

fn half(hw: [usize; 2]) -> [usize; 2] {
    [hw[0] / 2, hw[1] / 2]
}

fn downsample<B: Backend>(d: &Downsample2d<B>, hw: [usize; 2]) -> u64 {
    d.expand.as_ref().map_or(0, |e| conv(e, half(hw)).0)
}

fn rel_pos<B: Backend>(r: &Option<RelPos<B>>) -> u64 {
    match r {
        Some(RelPos::Mlp(m)) => mlp(&m.mlp, (2 * m.window[0] - 1) * (2 * m.window[1] - 1)),
        _ => 0,
    }
}

/// q·kᵀ and attn·v over `windows` groups of `tokens`, for `width` attention channels.
fn attn_matmuls(windows: usize, tokens: usize, width: usize) -> u64 {
    (2 * windows * tokens * tokens * width) as u64
}

fn attention_cl<B: Backend>(a: &AttentionCl<B>, batch_windows: usize, tokens: usize) -> u64 {
    let width = a.qkv.weight.lazy_shape().dims::<2>()[0] / 3;
    linear(&a.qkv, batch_windows * tokens)
        + linear(&a.proj, batch_windows * tokens)
        + attn_matmuls(batch_windows, tokens, width)
        + rel_pos(&a.rel_pos)
}

fn attention_2d<B: Backend>(a: &Attention2d<B>, hw: [usize; 2]) -> u64 {
    let width = a.qkv.weight.lazy_shape().dims::<4>()[0] / 3;
    conv(&a.qkv, hw).0 + conv(&a.proj, hw).0 + attn_matmuls(1, hw[0] * hw[1], width) + rel_pos(&a.rel_pos)
}

fn conv_block<B: Backend>(b: &ConvBlock<B>, hw: [usize; 2]) -> (u64, [usize; 2]) {
    match b {
        ConvBlock::MbConv(m) => {
            let mut macs = m.shortcut.as_ref().map_or(0, |s| downsample(s, hw));
            let x = if m.down.is_some() { half(hw) } else { hw };
            let (c1, x) = conv(&m.conv1_1x1, x);
            let (c2, x) = conv(&m.conv2_kxk, x);
            for se in m.se_early.iter().chain(m.se.iter()) {
                macs += conv(&se.fc1, [1, 1]).0 + conv(&se.fc2, [1, 1]).0;
            }
            let (c3, x) = conv(&m.conv3_1x1, x);
            (macs + c1 + c2 + c3, x)
        }
        ConvBlock::ConvNeXt(c) => {
            let mut macs = match &c.shortcut {
                Some(ConvNeXtShortcut::Downsample(d)) => downsample(d, hw),
                Some(ConvNeXtShortcut::Project(p)) => conv(p, hw).0,
                None => 0,
            };
            let x = if c.down.is_some() { half(hw) } else { hw };
            let (dw, x) = conv(&c.conv_dw, x);
            macs += dw + conv(&c.mlp.fc1, x).0 + conv(&c.mlp.fc2, x).0;
            (macs, x)
        }
    }
}

fn partition<B: Backend>(p: &PartitionAttentionCl<B>, hw: [usize; 2]) -> u64 {
    let tokens = p.partition_size[0] * p.partition_size[1];
    let n = hw[0] * hw[1];
    attention_cl(&p.attn, n / tokens, tokens) + mlp(&p.mlp, n)
}

fn transformer<B: Backend>(t: &TransformerBlock2d<B>, hw: [usize; 2]) -> (u64, [usize; 2]) {
    let out = match t.norm1 {
        TransformerNorm1::WithDown(_) => half(hw),
        TransformerNorm1::Plain(_) => hw,
    };
    let shortcut = t.shortcut.as_ref().map_or(0, |s| downsample(s, hw));
    let mlp = conv(&t.mlp.fc1, out).0 + conv(&t.mlp.fc2, out).0;
    (shortcut + attention_2d(&t.attn, out) + mlp, out)
}

impl<B: Backend> MaxxVit<B> {
    /// MACs of one image at `img_size` (the model's own size by default).
    pub fn macs(&self, img_size: [usize; 2]) -> u64 {
        let (c1, hw) = conv(&self.stem.conv1, img_size);
        let (c2, mut hw) = conv(&self.stem.conv2, hw);
        let mut total = c1 + c2;
        for stage in &self.stages {
            for block in &stage.blocks {
                let (macs, out) = match block {
                    Block::Conv(c) => conv_block(c, hw),
                    Block::Transformer(t) => transformer(t, hw),
                    Block::MaxxVit(m) => {
                        let (c, out) = conv_block(&m.conv, hw);
                        let attn = m
                            .attn_block
                            .iter()
                            .chain(std::iter::once(&m.attn_grid))
                            .map(|p| partition(p, out))
                            .sum::<u64>();
                        (c + attn, out)
                    }
                    Block::Parallel(p) => {
                        let (c0, x) = conv_block(&p.conv[0], hw);
                        let (c1, out) = conv_block(&p.conv[1], x);
                        let tokens = p.attn.partition_size[0] * p.attn.partition_size[1];
                        let n = out[0] * out[1];
                        let attn = attention_cl(&p.attn.attn_block, n / tokens, tokens)
                            + attention_cl(&p.attn.attn_grid, n / tokens, tokens)
                            + mlp(&p.attn.mlp, n);
                        (c0 + c1 + attn, out)
                    }
                };
                total += macs;
                hw = out;
            }
        }
        total
            + match &self.head {
                Some(Head::Classifier(h)) => h.fc.as_ref().map_or(0, |fc| linear(fc, 1)),
                Some(Head::NormMlp(h)) => linear(&h.pre_logits.fc, 1) + h.fc.as_ref().map_or(0, |fc| linear(fc, 1)),
                None => 0,
            }
    }
}
