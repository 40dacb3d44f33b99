//! The 58 registered model names of timm's `maxxvit.py`: each is a [`MaxxVitConfig`] from
//! `model_cfgs` plus its pretrained cfgs (spec §1.4, §5). Variants are just data.

mod pretrained;

use crate::config::{
    ActLayer, BlockKind, ConvBlockType, MaxxVitConfig, MaxxVitConvCfg, MaxxVitTransformerCfg, ModelArgs, NormLayer,
    PaddingMode, PoolType, RelPosType, Size2, StageBlockTypes, StrideMode, WeightInit,
};
use crate::ModelError;

/// One entry of timm's `default_cfgs` (the fields a data pipeline and a release need).
#[derive(Debug, Clone, PartialEq)]
pub struct PretrainedCfg {
    pub model: &'static str,
    pub tag: &'static str,
    pub num_classes: usize,
    pub input_size: [usize; 3],
    pub crop_pct: f64,
    pub crop_mode: &'static str,
    pub mean: [f64; 3],
    pub std: [f64; 3],
    pub interpolation: &'static str,
    pub pool_size: [usize; 2],
    /// Published on the Hugging Face Hub as `timm/<model>.<tag>`.
    pub hub: bool,
    /// Legacy GitHub-release URL, or "".
    pub url: &'static str,
}

impl PretrainedCfg {
    pub const FIRST_CONV: &'static str = "stem.conv1";
    pub const CLASSIFIER: &'static str = "head.fc";

    pub fn hf_hub_id(&self) -> Option<String> {
        self.hub.then(|| format!("timm/{}.{}", self.model, self.tag))
    }
}

/// A registered model: its name, `model_cfgs` key and pretrained tags (default first).
#[derive(Debug, Clone)]
pub struct ModelEntry {
    pub name: &'static str,
    pub cfg_name: String,
    pub tags: Vec<&'static PretrainedCfg>,
}

impl ModelEntry {
    pub fn default_tag(&self) -> &'static PretrainedCfg {
        self.tags[0]
    }

    pub fn tag(&self, tag: &str) -> Option<&'static PretrainedCfg> {
        self.tags.iter().copied().find(|t| t.tag == tag)
    }

    pub fn config(&self) -> MaxxVitConfig {
        model_cfg(&self.cfg_name).expect("every registered name has a cfg")
    }

    /// The constructor arguments `timm.create_model(name)` uses: img_size and num_classes from
    /// the default pretrained cfg (`fixed_input_size`, spec §1.5).
    pub fn default_args(&self) -> ModelArgs {
        let t = self.default_tag();
        ModelArgs { img_size: [t.input_size[1], t.input_size[2]], num_classes: t.num_classes, ..ModelArgs::default() }
    }
}

/// All registered names, in timm's sorted order.
pub fn model_names() -> Vec<&'static str> {
    let mut names: Vec<&str> = pretrained::PRETRAINED.iter().map(|p| p.model).collect();
    names.dedup();
    names
}

/// Look up a registered name, optionally with a `.tag` suffix selecting a pretrained cfg.
pub fn lookup(name: &str) -> Result<(ModelEntry, &'static PretrainedCfg), ModelError> {
    let (base, tag) = match name.split_once('.') {
        Some((b, t)) => (b, Some(t)),
        None => (name, None),
    };
    let tags: Vec<&'static PretrainedCfg> = pretrained::PRETRAINED.iter().filter(|p| p.model == base).collect();
    let Some(first) = tags.first() else {
        return Err(ModelError::UnknownModel(name.to_string()));
    };
    // timm `_create_maxxvit`: the cfg key is the name, or the name without its `_224`-like suffix.
    let cfg_name =
        if model_cfg(base).is_some() { base.to_string() } else { base.rsplit_once('_').unwrap().0.to_string() };
    let entry = ModelEntry { name: first.model, cfg_name, tags };
    let selected = match tag {
        None => entry.default_tag(),
        Some(t) => entry.tag(t).ok_or_else(|| ModelError::UnknownModel(name.to_string()))?,
    };
    Ok((entry, selected))
}

fn blocks(letters: &[&[BlockKind]]) -> Vec<StageBlockTypes> {
    letters
        .iter()
        .map(|l| if l.len() == 1 { StageBlockTypes::One(l[0]) } else { StageBlockTypes::Many(l.to_vec()) })
        .collect()
}

use BlockKind::{C, M, PM, T};

fn base(embed_dim: [usize; 4], depths: [usize; 4], stem_width: Size2, kinds: &[&[BlockKind]]) -> MaxxVitConfig {
    MaxxVitConfig {
        embed_dim: embed_dim.to_vec(),
        depths: depths.to_vec(),
        block_type: blocks(kinds),
        stem_width,
        ..MaxxVitConfig::default()
    }
}

const COAT: &[&[BlockKind]] = &[&[C], &[C], &[T], &[T]];
const MAX: &[&[BlockKind]] = &[&[M], &[M], &[M], &[M]];

/// timm `_rw_coat_cfg` overrides.
#[derive(Clone, Copy)]
struct RwCoat {
    stride_mode: StrideMode,
    pool_type: PoolType,
    conv_output_bias: bool,
    conv_attn_early: bool,
    conv_attn_act_layer: ActLayer,
    transformer_shortcut_bias: bool,
    transformer_norm_layer: NormLayer,
    init_values: Option<f64>,
    rel_pos_type: RelPosType,
    rel_pos_dim: usize,
}

impl Default for RwCoat {
    fn default() -> Self {
        Self {
            stride_mode: StrideMode::Pool,
            pool_type: PoolType::Avg2,
            conv_output_bias: false,
            conv_attn_early: false,
            conv_attn_act_layer: ActLayer::Relu,
            transformer_shortcut_bias: true,
            transformer_norm_layer: NormLayer::LayerNorm2d,
            init_values: None,
            rel_pos_type: RelPosType::Bias,
            rel_pos_dim: 512,
        }
    }
}

impl RwCoat {
    fn apply(self, mut cfg: MaxxVitConfig) -> MaxxVitConfig {
        cfg.conv_cfg = MaxxVitConvCfg {
            stride_mode: self.stride_mode,
            pool_type: self.pool_type,
            pre_norm_act: true,
            expand_output: false,
            output_bias: self.conv_output_bias,
            attn_early: self.conv_attn_early,
            attn_act_layer: self.conv_attn_act_layer,
            act_layer: ActLayer::Silu,
            ..MaxxVitConvCfg::default()
        };
        cfg.transformer_cfg = MaxxVitTransformerCfg {
            expand_first: false,
            shortcut_bias: self.transformer_shortcut_bias,
            pool_type: self.pool_type,
            init_values: self.init_values,
            norm_layer: self.transformer_norm_layer,
            rel_pos_type: self.rel_pos_type,
            rel_pos_dim: self.rel_pos_dim,
            ..MaxxVitTransformerCfg::default()
        };
        cfg
    }
}

/// timm `_rw_max_cfg` overrides.
#[derive(Clone, Copy)]
struct RwMax {
    stride_mode: StrideMode,
    conv_output_bias: bool,
    conv_attn_ratio: f64,
    init_values: Option<f64>,
    rel_pos_type: RelPosType,
    rel_pos_dim: usize,
}

impl Default for RwMax {
    fn default() -> Self {
        Self {
            stride_mode: StrideMode::Dw,
            conv_output_bias: false,
            conv_attn_ratio: 1.0 / 16.0,
            init_values: None,
            rel_pos_type: RelPosType::Bias,
            rel_pos_dim: 512,
        }
    }
}

impl RwMax {
    fn apply(self, mut cfg: MaxxVitConfig) -> MaxxVitConfig {
        cfg.conv_cfg = MaxxVitConvCfg {
            stride_mode: self.stride_mode,
            expand_output: false,
            output_bias: self.conv_output_bias,
            attn_ratio: self.conv_attn_ratio,
            act_layer: ActLayer::Silu,
            ..MaxxVitConvCfg::default()
        };
        cfg.transformer_cfg = MaxxVitTransformerCfg {
            expand_first: false,
            init_values: self.init_values,
            rel_pos_type: self.rel_pos_type,
            rel_pos_dim: self.rel_pos_dim,
            ..MaxxVitTransformerCfg::default()
        };
        cfg
    }
}

/// timm `_next_cfg` (ConvNeXt conv blocks): `init_values` is (conv, transformer).
fn next_cfg(
    mut cfg: MaxxVitConfig,
    no_block_attn: bool,
    init_values: (Option<f64>, Option<f64>),
    rel_pos_type: RelPosType,
) -> MaxxVitConfig {
    cfg.conv_cfg = MaxxVitConvCfg {
        block_type: ConvBlockType::Convnext,
        expand_output: false,
        init_values: init_values.0,
        norm_layer: NormLayer::LayerNorm2d,
        norm_layer_cl: NormLayer::LayerNorm,
        ..MaxxVitConvCfg::default()
    };
    cfg.transformer_cfg = MaxxVitTransformerCfg {
        expand_first: false,
        no_block_attn,
        init_values: init_values.1,
        rel_pos_type,
        ..MaxxVitTransformerCfg::default()
    };
    cfg
}

/// timm `_tf_cfg` (the official TF MaxViT port): SAME padding, gelu_tanh, BN eps 1e-3.
fn tf_cfg(mut cfg: MaxxVitConfig, head_hidden: usize) -> MaxxVitConfig {
    cfg.stem_bias = true;
    cfg.head_hidden_size = Some(head_hidden);
    cfg.conv_cfg = MaxxVitConvCfg {
        norm_eps: Some(1e-3),
        act_layer: ActLayer::GeluTanh,
        padding: PaddingMode::Same,
        ..MaxxVitConvCfg::default()
    };
    cfg.transformer_cfg = MaxxVitTransformerCfg {
        norm_eps: 1e-5,
        act_layer: ActLayer::GeluTanh,
        head_first: false,
        rel_pos_type: RelPosType::BiasTf,
        ..MaxxVitTransformerCfg::default()
    };
    cfg
}

fn paper_coatnet(embed_dim: [usize; 4], depths: [usize; 4], stem: usize, head_hidden: usize) -> MaxxVitConfig {
    MaxxVitConfig { head_hidden_size: Some(head_hidden), ..base(embed_dim, depths, Size2::One(stem), COAT) }
}

/// timm `model_cfgs[name]` (after the dataclasses' `__post_init__`).
pub fn model_cfg(name: &str) -> Option<MaxxVitConfig> {
    use Size2::{One, Two};
    let w = |a, b| Two([a, b]);
    let (d96, d64, d128, d192, d32) =
        ([96, 192, 384, 768], [64, 128, 256, 512], [128, 256, 512, 1024], [192, 384, 768, 1536], [32, 64, 128, 256]);
    let dw = StrideMode::Dw;
    let mlp = RelPosType::Mlp;
    let coat = |e, d, s, o: RwCoat| o.apply(base(e, d, s, COAT));
    let max = |e, d, s, o: RwMax| o.apply(base(e, d, s, MAX));
    let cfg = match name {
        "coatnet_pico_rw" => RwMax { conv_output_bias: true, conv_attn_ratio: 0.25, ..Default::default() }.apply(base(
            d64,
            [2, 3, 5, 2],
            w(32, 64),
            COAT,
        )),
        "coatnet_nano_rw" => {
            RwMax { stride_mode: StrideMode::Pool, conv_output_bias: true, conv_attn_ratio: 0.25, ..Default::default() }
                .apply(base(d64, [3, 4, 6, 3], w(32, 64), COAT))
        }
        "coatnet_0_rw" => coat(
            d96,
            [2, 3, 7, 2],
            w(32, 64),
            RwCoat { conv_attn_early: true, transformer_shortcut_bias: false, ..Default::default() },
        ),
        "coatnet_1_rw" => coat(
            d96,
            [2, 6, 14, 2],
            w(32, 64),
            RwCoat { stride_mode: dw, conv_attn_early: true, transformer_shortcut_bias: false, ..Default::default() },
        ),
        "coatnet_2_rw" => coat(
            d128,
            [2, 6, 14, 2],
            w(64, 128),
            RwCoat { stride_mode: dw, conv_attn_act_layer: ActLayer::Silu, ..Default::default() },
        ),
        "coatnet_3_rw" => coat(
            d192,
            [2, 6, 14, 2],
            w(96, 192),
            RwCoat {
                stride_mode: dw,
                conv_attn_act_layer: ActLayer::Silu,
                init_values: Some(1e-6),
                ..Default::default()
            },
        ),
        "coatnet_bn_0_rw" => coat(
            d96,
            [2, 3, 7, 2],
            w(32, 64),
            RwCoat {
                stride_mode: dw,
                conv_attn_early: true,
                transformer_shortcut_bias: false,
                transformer_norm_layer: NormLayer::BatchNorm2d,
                ..Default::default()
            },
        ),
        "coatnet_rmlp_nano_rw" => RwMax {
            conv_output_bias: true,
            conv_attn_ratio: 0.25,
            rel_pos_type: mlp,
            rel_pos_dim: 384,
            ..Default::default()
        }
        .apply(base(d64, [3, 4, 6, 3], w(32, 64), COAT)),
        "coatnet_rmlp_0_rw" => {
            coat(d96, [2, 3, 7, 2], w(32, 64), RwCoat { stride_mode: dw, rel_pos_type: mlp, ..Default::default() })
        }
        "coatnet_rmlp_1_rw" => coat(
            d96,
            [2, 6, 14, 2],
            w(32, 64),
            RwCoat {
                pool_type: PoolType::Max,
                conv_attn_early: true,
                transformer_shortcut_bias: false,
                rel_pos_type: mlp,
                rel_pos_dim: 384,
                ..Default::default()
            },
        ),
        "coatnet_rmlp_1_rw2" => {
            coat(d96, [2, 6, 14, 2], w(32, 64), RwCoat { stride_mode: dw, rel_pos_type: mlp, ..Default::default() })
        }
        "coatnet_rmlp_2_rw" => coat(
            d128,
            [2, 6, 14, 2],
            w(64, 128),
            RwCoat {
                stride_mode: dw,
                conv_attn_act_layer: ActLayer::Silu,
                init_values: Some(1e-6),
                rel_pos_type: mlp,
                ..Default::default()
            },
        ),
        "coatnet_rmlp_3_rw" => coat(
            d192,
            [2, 6, 14, 2],
            w(96, 192),
            RwCoat {
                stride_mode: dw,
                conv_attn_act_layer: ActLayer::Silu,
                init_values: Some(1e-6),
                rel_pos_type: mlp,
                ..Default::default()
            },
        ),
        "coatnet_nano_cc" => {
            RwCoat::default().apply(base(d64, [3, 4, 6, 3], w(32, 64), &[&[C], &[C], &[C, T], &[C, T]]))
        }
        "coatnext_nano_rw" => MaxxVitConfig {
            weight_init: WeightInit::Normal,
            ..next_cfg(base(d64, [3, 4, 6, 3], w(32, 64), COAT), false, (Some(1e-5), None), RelPosType::Bias)
        },
        "coatnet_0" => paper_coatnet(d96, [2, 3, 5, 2], 64, 768),
        "coatnet_1" => paper_coatnet(d96, [2, 6, 14, 2], 64, 768),
        "coatnet_2" => paper_coatnet(d128, [2, 6, 14, 2], 128, 1024),
        "coatnet_3" => paper_coatnet(d192, [2, 6, 14, 2], 192, 1536),
        "coatnet_4" => paper_coatnet(d192, [2, 12, 28, 2], 192, 1536),
        "coatnet_5" => paper_coatnet([256, 512, 1280, 2048], [2, 12, 28, 2], 192, 2048),
        "maxvit_pico_rw" => max(d32, [2, 2, 5, 2], w(24, 32), RwMax::default()),
        "maxvit_nano_rw" => max(d64, [1, 2, 3, 1], w(32, 64), RwMax::default()),
        "maxvit_tiny_rw" => max(d64, [2, 2, 5, 2], w(32, 64), RwMax::default()),
        "maxvit_tiny_pm" => RwMax::default().apply(base(d64, [2, 2, 5, 2], w(32, 64), &[&[PM], &[PM], &[PM], &[PM]])),
        "maxvit_rmlp_pico_rw" => max(d32, [2, 2, 5, 2], w(24, 32), RwMax { rel_pos_type: mlp, ..Default::default() }),
        "maxvit_rmlp_nano_rw" => max(d64, [1, 2, 3, 1], w(32, 64), RwMax { rel_pos_type: mlp, ..Default::default() }),
        "maxvit_rmlp_tiny_rw" => max(d64, [2, 2, 5, 2], w(32, 64), RwMax { rel_pos_type: mlp, ..Default::default() }),
        "maxvit_rmlp_small_rw" => max(
            d96,
            [2, 2, 5, 2],
            w(32, 64),
            RwMax { rel_pos_type: mlp, init_values: Some(1e-6), ..Default::default() },
        ),
        "maxvit_rmlp_base_rw" => MaxxVitConfig {
            head_hidden_size: Some(768),
            ..max(d96, [2, 6, 14, 2], w(32, 64), RwMax { rel_pos_type: mlp, ..Default::default() })
        },
        "maxxvit_rmlp_nano_rw" => MaxxVitConfig {
            weight_init: WeightInit::Normal,
            ..next_cfg(base(d64, [1, 2, 3, 1], w(32, 64), MAX), false, (Some(1e-6), Some(1e-6)), mlp)
        },
        "maxxvit_rmlp_tiny_rw" => {
            next_cfg(base(d64, [2, 2, 5, 2], w(32, 64), MAX), false, (Some(1e-6), Some(1e-6)), mlp)
        }
        "maxxvit_rmlp_small_rw" => {
            next_cfg(base(d96, [2, 2, 5, 2], w(48, 96), MAX), false, (Some(1e-6), Some(1e-6)), mlp)
        }
        "maxxvitv2_nano_rw" => MaxxVitConfig {
            weight_init: WeightInit::Normal,
            ..next_cfg(base(d96, [1, 2, 3, 1], w(48, 96), MAX), true, (Some(1e-6), Some(1e-6)), RelPosType::Bias)
        },
        "maxxvitv2_rmlp_base_rw" => {
            next_cfg(base(d128, [2, 6, 12, 2], w(64, 128), MAX), true, (Some(1e-6), Some(1e-6)), mlp)
        }
        "maxxvitv2_rmlp_large_rw" => MaxxVitConfig {
            head_hidden_size: Some(1280),
            ..next_cfg(base([160, 320, 640, 1280], [2, 6, 16, 2], w(80, 160), MAX), true, (Some(1e-6), Some(1e-6)), mlp)
        },
        "maxvit_tiny_tf" => tf_cfg(base(d64, [2, 2, 5, 2], One(64), MAX), 512),
        "maxvit_small_tf" => tf_cfg(base(d96, [2, 2, 5, 2], One(64), MAX), 768),
        "maxvit_base_tf" => tf_cfg(base(d96, [2, 6, 14, 2], One(64), MAX), 768),
        "maxvit_large_tf" => tf_cfg(base(d128, [2, 6, 14, 2], One(128), MAX), 1024),
        "maxvit_xlarge_tf" => tf_cfg(base(d192, [2, 6, 14, 2], One(192), MAX), 1536),
        // The two tiny test models of timm 1.0.31.
        "test_coatnet" => {
            RwMax { stride_mode: StrideMode::Pool, conv_output_bias: true, conv_attn_ratio: 0.25, ..Default::default() }
                .apply(base([32, 64, 96, 128], [1, 1, 2, 1], w(16, 32), COAT))
        }
        "test_maxvit" => max([32, 64, 96, 128], [1, 1, 1, 1], w(16, 32), RwMax::default()),
        _ => return None,
    };
    Some(cfg.post_init())
}
