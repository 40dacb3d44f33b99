//! Conv blocks: timm's `MbConvBlock` (spec §3.2), `ConvNeXtBlock` (spec §3.3) and `Stem` (§3.1).

use burn::module::Module;
use burn::tensor::activation::sigmoid;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::config::{ActLayer, ConvBlockType, MaxxVitConvCfg, PaddingMode, PoolType, StrideMode};
use crate::layers::{drop_path, pool2d, Conv2d, ConvMlp, ConvSpec, Downsample2d, InitRole, LayerScale, Norm2d};

/// timm `make_divisible(v, 8)`.
pub fn make_divisible(v: f64, divisor: usize) -> usize {
    let d = divisor as f64;
    let mut new_v = ((v + d / 2.0) as usize / divisor * divisor).max(divisor);
    if (new_v as f64) < 0.9 * v {
        new_v += divisor;
    }
    new_v
}

/// Norm followed by an optional activation (timm's `BatchNormAct2d` / `LayerNormAct2d`).
fn norm_act<B: Backend>(norm: &Norm2d<B>, act: Option<ActLayer>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let x = norm.forward(x);
    match act {
        Some(act) => act.apply(x),
        None => x,
    }
}

/// timm `SEModule`: global mean → 1x1 fc1 → act → 1x1 fc2 → sigmoid gate (spec §2.8).
#[derive(Module, Debug)]
pub struct SqueezeExcite<B: Backend> {
    pub fc1: Conv2d<B>,
    pub fc2: Conv2d<B>,
    pub act: ActLayer,
}

impl<B: Backend> SqueezeExcite<B> {
    fn new(channels: usize, reduced: usize, act: ActLayer, role: InitRole, device: &B::Device) -> Self {
        Self {
            fc1: ConvSpec::new(channels, reduced, 1, role).bias(true).init(device),
            fc2: ConvSpec::new(reduced, channels, 1, role).bias(true).init(device),
            act,
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let s = x.clone().mean_dim(2).mean_dim(3);
        let s = self.fc2.forward(self.act.apply(self.fc1.forward(s)));
        x * sigmoid(s)
    }
}

#[derive(Module, Debug)]
pub struct MbConvBlock<B: Backend> {
    pub shortcut: Option<Downsample2d<B>>,
    pub pre_norm: Norm2d<B>,
    pub conv1_1x1: Conv2d<B>,
    pub norm1: Norm2d<B>,
    pub conv2_kxk: Conv2d<B>,
    pub se_early: Option<SqueezeExcite<B>>,
    pub norm2: Norm2d<B>,
    pub se: Option<SqueezeExcite<B>>,
    pub conv3_1x1: Conv2d<B>,
    /// Main-path pool for stride_mode 'pool' (timm's `down`, a parameter-free Downsample2d).
    pub down: Option<PoolType>,
    pub padding: PaddingMode,
    pub act: ActLayer,
    pub pre_norm_act: bool,
    pub drop_path: f64,
}

impl<B: Backend> MbConvBlock<B> {
    pub fn new(
        in_chs: usize,
        out_chs: usize,
        stride: usize,
        cfg: &MaxxVitConvCfg,
        drop_path: f64,
        role: InitRole,
        device: &B::Device,
    ) -> Self {
        let mid = make_divisible((if cfg.expand_output { out_chs } else { in_chs }) as f64 * cfg.expand_ratio, 8);
        let groups = if cfg.group_size == 0 { 1 } else { mid / cfg.group_size };
        let eps = cfg.eps();
        let norm = |c| Norm2d::new(cfg.norm_layer, c, eps, device);
        let (stride_pool, stride_1, stride_2) = match cfg.stride_mode {
            StrideMode::Pool => (stride, 1, 1),
            StrideMode::Conv1x1 => (1, stride, 1),
            StrideMode::Dw => (1, 1, stride),
        };
        // SE width uses int() truncation, not make_divisible (spec §2.8).
        let rd = (cfg.attn_ratio * (if cfg.expand_output { out_chs } else { mid }) as f64) as usize;
        let se = || SqueezeExcite::new(mid, rd, cfg.attn_act_layer, role, device);
        Self {
            shortcut: (stride == 2)
                .then(|| Downsample2d::new(in_chs, out_chs, cfg.pool_type, cfg.padding, cfg.output_bias, role, device)),
            pre_norm: norm(in_chs),
            conv1_1x1: ConvSpec::new(in_chs, mid, 1, role).stride(stride_1).init(device),
            norm1: norm(mid),
            conv2_kxk: ConvSpec::new(mid, mid, cfg.kernel_size, role)
                .stride(stride_2)
                .groups(groups)
                .padding(cfg.padding)
                .init(device),
            se_early: cfg.attn_early.then(se),
            norm2: norm(mid),
            se: (!cfg.attn_early).then(se),
            conv3_1x1: ConvSpec::new(mid, out_chs, 1, role).bias(cfg.output_bias).init(device),
            down: (stride_pool > 1).then_some(cfg.downsample_pool_type),
            padding: cfg.padding,
            act: cfg.act_layer,
            pre_norm_act: cfg.pre_norm_act,
            drop_path,
        }
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let shortcut = match &self.shortcut {
            Some(down) => down.forward(x.clone()),
            None => x.clone(),
        };
        let x = norm_act(&self.pre_norm, self.pre_norm_act.then_some(self.act), x);
        let x = match self.down {
            Some(pool) => pool2d(x, pool, self.padding),
            None => x,
        };
        let x = norm_act(&self.norm1, Some(self.act), self.conv1_1x1.forward(x));
        let mut x = self.conv2_kxk.forward(x);
        if let Some(se) = &self.se_early {
            x = se.forward(x);
        }
        x = norm_act(&self.norm2, Some(self.act), x);
        if let Some(se) = &self.se {
            x = se.forward(x);
        }
        drop_path(self.conv3_1x1.forward(x), self.drop_path) + shortcut
    }
}

/// ConvNeXt shortcut: pooled + expanded when striding, a plain 1x1 projection otherwise.
#[derive(Module, Debug)]
pub enum ConvNeXtShortcut<B: Backend> {
    Downsample(Downsample2d<B>),
    Project(Conv2d<B>),
}

#[derive(Module, Debug)]
pub struct ConvNeXtBlock<B: Backend> {
    pub shortcut: Option<ConvNeXtShortcut<B>>,
    pub conv_dw: Conv2d<B>,
    pub norm: Norm2d<B>,
    pub mlp: ConvMlp<B>,
    pub ls: Option<LayerScale<B>>,
    pub down: Option<PoolType>,
    pub drop_path: f64,
}

impl<B: Backend> ConvNeXtBlock<B> {
    pub fn new(
        in_chs: usize,
        out_chs: usize,
        stride: usize,
        cfg: &MaxxVitConvCfg,
        drop_path: f64,
        role: InitRole,
        device: &B::Device,
    ) -> Self {
        let shortcut = if stride == 2 {
            // Always avg2 with a biased 1x1 expand, whatever the cfg says (spec §11.2).
            Some(ConvNeXtShortcut::Downsample(Downsample2d::new(
                in_chs,
                out_chs,
                PoolType::Avg2,
                PaddingMode::Symmetric,
                true,
                role,
                device,
            )))
        } else if in_chs != out_chs {
            Some(ConvNeXtShortcut::Project(ConvSpec::new(in_chs, out_chs, 1, role).bias(cfg.output_bias).init(device)))
        } else {
            None
        };
        let (stride_pool, stride_dw) = match cfg.stride_mode {
            StrideMode::Pool => (stride, 1),
            _ => (1, stride),
        };
        Self {
            shortcut,
            // Always 7x7, ignoring conv_cfg.kernel_size (spec §11.2); out may be 2·in with groups=in.
            conv_dw: ConvSpec::new(in_chs, out_chs, 7, role)
                .stride(stride_dw)
                .groups(in_chs)
                .bias(cfg.output_bias)
                .init(device),
            norm: Norm2d::new(cfg.norm_layer, out_chs, cfg.eps(), device),
            mlp: ConvMlp::new(
                out_chs,
                (cfg.expand_ratio * out_chs as f64) as usize,
                cfg.output_bias,
                cfg.act_layer,
                0.0,
                role,
                device,
            ),
            ls: cfg.layer_scale().map(|v| LayerScale::new(out_chs, v, device)),
            down: (stride_pool == 2).then_some(cfg.downsample_pool_type),
            drop_path,
        }
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let shortcut = match &self.shortcut {
            Some(ConvNeXtShortcut::Downsample(down)) => down.forward(x.clone()),
            Some(ConvNeXtShortcut::Project(conv)) => conv.forward(x.clone()),
            None => x.clone(),
        };
        let x = match self.down {
            Some(pool) => pool2d(x, pool, PaddingMode::Symmetric),
            None => x,
        };
        let x = self.mlp.forward_normed(self.conv_dw.forward(x), &self.norm, &self.ls);
        drop_path(x, self.drop_path) + shortcut
    }
}

/// The conv block a cfg selects (`conv_cfg.block_type`).
#[derive(Module, Debug)]
pub enum ConvBlock<B: Backend> {
    MbConv(MbConvBlock<B>),
    ConvNeXt(ConvNeXtBlock<B>),
}

impl<B: Backend> ConvBlock<B> {
    pub fn new(
        in_chs: usize,
        out_chs: usize,
        stride: usize,
        cfg: &MaxxVitConvCfg,
        drop_path: f64,
        role: InitRole,
        device: &B::Device,
    ) -> Self {
        match cfg.block_type {
            ConvBlockType::Mbconv => {
                Self::MbConv(MbConvBlock::new(in_chs, out_chs, stride, cfg, drop_path, role, device))
            }
            ConvBlockType::Convnext => {
                Self::ConvNeXt(ConvNeXtBlock::new(in_chs, out_chs, stride, cfg, drop_path, role, device))
            }
        }
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        match self {
            Self::MbConv(b) => b.forward(x),
            Self::ConvNeXt(b) => b.forward(x),
        }
    }
}

/// timm `Stem`: 3x3 s2 conv → norm+act → 3x3 conv (no norm after conv2).
#[derive(Module, Debug)]
pub struct Stem<B: Backend> {
    pub conv1: Conv2d<B>,
    pub norm1: Norm2d<B>,
    pub conv2: Conv2d<B>,
    pub act: ActLayer,
}

impl<B: Backend> Stem<B> {
    pub fn new(
        in_chans: usize,
        widths: [usize; 2],
        bias: bool,
        cfg: &MaxxVitConvCfg,
        role: InitRole,
        device: &B::Device,
    ) -> Self {
        let conv = |i, o, s| ConvSpec::new(i, o, 3, role).stride(s).bias(bias).padding(cfg.padding).init(device);
        Self {
            conv1: conv(in_chans, widths[0], 2),
            norm1: Norm2d::new(cfg.norm_layer, widths[0], cfg.eps(), device),
            conv2: conv(widths[0], widths[1], 1),
            act: cfg.act_layer,
        }
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = self.act.apply(self.norm1.forward(self.conv1.forward(x)));
        self.conv2.forward(x)
    }
}
