//! The model configuration, field for field timm's `MaxxVitCfg`, `MaxxVitConvCfg` and
//! `MaxxVitTransformerCfg` (spec §1), so a timm cfg serialised as JSON reads as is.
//!
//! String-valued timm options are enums here: a typo is rejected when the config is read,
//! not discovered deep inside model construction.

use serde::{Deserialize, Serialize};

use crate::ModelError;

/// Activation names accepted by timm's `get_act_layer` that this family uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActLayer {
    Gelu,
    GeluTanh,
    Silu,
    Swish,
    Relu,
    Tanh,
    Sigmoid,
}

/// Norm layer names accepted by timm's `get_norm_layer`. `""` means "derive in post-init".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum NormLayer {
    #[serde(rename = "batchnorm2d")]
    BatchNorm2d,
    #[serde(rename = "layernorm2d")]
    LayerNorm2d,
    #[serde(rename = "layernorm")]
    LayerNorm,
    #[default]
    #[serde(rename = "")]
    Unset,
}

/// `Downsample2d` pool types (spec §2.2). `""` for `downsample_pool_type` means "use `pool_type`".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PoolType {
    #[serde(rename = "avg2")]
    Avg2,
    #[serde(rename = "max2")]
    Max2,
    #[serde(rename = "avg")]
    Avg,
    #[serde(rename = "max")]
    Max,
    #[serde(rename = "")]
    Unset,
}

/// Conv padding mode: `''` is PyTorch symmetric, `'same'` is TF SAME (spec §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum PaddingMode {
    #[default]
    #[serde(rename = "")]
    Symmetric,
    #[serde(rename = "same")]
    Same,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConvBlockType {
    Mbconv,
    Convnext,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StrideMode {
    #[serde(rename = "dw")]
    Dw,
    #[serde(rename = "pool")]
    Pool,
    #[serde(rename = "1x1")]
    Conv1x1,
}

/// Relative position scheme (spec §2.10). timm treats any other string as "no rel-pos".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RelPosType {
    #[serde(rename = "bias")]
    Bias,
    #[serde(rename = "mlp")]
    Mlp,
    #[serde(rename = "bias_tf")]
    BiasTf,
    #[serde(rename = "none")]
    #[serde(other)]
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightInit {
    #[serde(rename = "")]
    TorchDefault,
    Normal,
    TruncNormal,
    XavierNormal,
    VitEff,
}

/// Block letters of `MaxxVitCfg.block_type` (spec §1.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlockKind {
    /// Conv block (MBConv or ConvNeXt).
    C,
    /// CoAtNet transformer block over the full feature map.
    T,
    /// MaxViT block: conv, window attention, grid attention.
    M,
    /// Parallel MaxViT block: two convs, window and grid attention side by side.
    PM,
}

/// One stage's `block_type` entry: a letter or a list extended by its last element.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StageBlockTypes {
    One(BlockKind),
    Many(Vec<BlockKind>),
}

impl StageBlockTypes {
    /// timm's `extend_tuple`: repeat the last entry until `depth` entries exist.
    pub fn extend(&self, depth: usize) -> Vec<BlockKind> {
        let given: Vec<BlockKind> = match self {
            Self::One(kind) => vec![*kind],
            Self::Many(kinds) => kinds.clone(),
        };
        let last = *given.last().unwrap_or(&BlockKind::C);
        (0..depth).map(|i| *given.get(i).unwrap_or(&last)).collect()
    }
}

/// A size timm accepts as an int or a 2-tuple (`to_2tuple`): `stem_width`, window and grid sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Size2 {
    One(usize),
    Two([usize; 2]),
}

impl Size2 {
    pub fn pair(self) -> [usize; 2] {
        match self {
            Self::One(s) => [s, s],
            Self::Two(p) => p,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaxxVitTransformerCfg {
    pub dim_head: usize,
    pub head_first: bool,
    pub expand_ratio: f64,
    pub expand_first: bool,
    pub shortcut_bias: bool,
    pub attn_bias: bool,
    pub attn_drop: f64,
    pub proj_drop: f64,
    pub pool_type: PoolType,
    pub rel_pos_type: RelPosType,
    pub rel_pos_dim: usize,
    pub partition_ratio: usize,
    pub window_size: Option<Size2>,
    pub grid_size: Option<Size2>,
    pub no_block_attn: bool,
    pub use_nchw_attn: bool,
    pub init_values: Option<f64>,
    pub act_layer: ActLayer,
    pub norm_layer: NormLayer,
    pub norm_layer_cl: NormLayer,
    pub norm_eps: f64,
}

impl Default for MaxxVitTransformerCfg {
    fn default() -> Self {
        Self {
            dim_head: 32,
            head_first: true,
            expand_ratio: 4.0,
            expand_first: true,
            shortcut_bias: true,
            attn_bias: true,
            attn_drop: 0.0,
            proj_drop: 0.0,
            pool_type: PoolType::Avg2,
            rel_pos_type: RelPosType::Bias,
            rel_pos_dim: 512,
            partition_ratio: 32,
            window_size: None,
            grid_size: None,
            no_block_attn: false,
            use_nchw_attn: false,
            init_values: None,
            act_layer: ActLayer::Gelu,
            norm_layer: NormLayer::LayerNorm2d,
            norm_layer_cl: NormLayer::LayerNorm,
            norm_eps: 1e-6,
        }
    }
}

impl MaxxVitTransformerCfg {
    /// timm `__post_init__`: a window size without a grid size uses it for both.
    pub fn post_init(mut self) -> Self {
        if let (Some(window), None) = (self.window_size, self.grid_size) {
            self.grid_size = Some(window);
        }
        self
    }

    /// timm `cfg_window_size`: without a window size, window = grid = img // partition_ratio.
    pub fn with_img_size(&self, img_size: [usize; 2]) -> Self {
        let mut cfg = self.clone().post_init();
        if cfg.window_size.is_none() {
            let p = [img_size[0] / cfg.partition_ratio, img_size[1] / cfg.partition_ratio];
            cfg.window_size = Some(Size2::Two(p));
            cfg.grid_size = Some(Size2::Two(p));
        }
        cfg
    }

    pub fn window(&self) -> [usize; 2] {
        self.window_size.map(Size2::pair).unwrap_or([0, 0])
    }

    pub fn grid(&self) -> [usize; 2] {
        self.grid_size.or(self.window_size).map(Size2::pair).unwrap_or([0, 0])
    }

    /// LayerScale exists only for a truthy `init_values` (spec §2.6).
    pub fn layer_scale(&self) -> Option<f64> {
        self.init_values.filter(|v| *v != 0.0)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaxxVitConvCfg {
    pub block_type: ConvBlockType,
    pub expand_ratio: f64,
    pub expand_output: bool,
    pub kernel_size: usize,
    pub group_size: usize,
    pub pre_norm_act: bool,
    pub output_bias: bool,
    pub stride_mode: StrideMode,
    pub pool_type: PoolType,
    pub downsample_pool_type: PoolType,
    pub padding: PaddingMode,
    pub attn_early: bool,
    pub attn_layer: String,
    pub attn_act_layer: ActLayer,
    pub attn_ratio: f64,
    pub init_values: Option<f64>,
    pub act_layer: ActLayer,
    pub norm_layer: NormLayer,
    pub norm_layer_cl: NormLayer,
    pub norm_eps: Option<f64>,
}

impl Default for MaxxVitConvCfg {
    fn default() -> Self {
        Self {
            block_type: ConvBlockType::Mbconv,
            expand_ratio: 4.0,
            expand_output: true,
            kernel_size: 3,
            group_size: 1,
            pre_norm_act: false,
            output_bias: true,
            stride_mode: StrideMode::Dw,
            pool_type: PoolType::Avg2,
            downsample_pool_type: PoolType::Avg2,
            padding: PaddingMode::Symmetric,
            attn_early: false,
            attn_layer: "se".into(),
            attn_act_layer: ActLayer::Silu,
            attn_ratio: 0.25,
            init_values: Some(1e-6),
            act_layer: ActLayer::Gelu,
            norm_layer: NormLayer::Unset,
            norm_layer_cl: NormLayer::Unset,
            norm_eps: None,
        }
    }
}

impl MaxxVitConvCfg {
    /// timm `__post_init__`: MBConv and ConvNeXt get different norm defaults.
    pub fn post_init(mut self) -> Self {
        let mbconv = self.block_type == ConvBlockType::Mbconv;
        if self.norm_layer == NormLayer::Unset {
            self.norm_layer = if mbconv { NormLayer::BatchNorm2d } else { NormLayer::LayerNorm2d };
        }
        if self.norm_layer_cl == NormLayer::Unset && !mbconv {
            self.norm_layer_cl = NormLayer::LayerNorm;
        }
        if self.norm_eps.is_none() {
            self.norm_eps = Some(if mbconv { 1e-5 } else { 1e-6 });
        }
        if self.downsample_pool_type == PoolType::Unset {
            self.downsample_pool_type = self.pool_type;
        }
        self
    }

    pub fn eps(&self) -> f64 {
        self.norm_eps.unwrap_or(if self.block_type == ConvBlockType::Mbconv { 1e-5 } else { 1e-6 })
    }

    pub fn layer_scale(&self) -> Option<f64> {
        self.init_values.filter(|v| *v != 0.0)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaxxVitConfig {
    pub embed_dim: Vec<usize>,
    pub depths: Vec<usize>,
    pub block_type: Vec<StageBlockTypes>,
    pub stem_width: Size2,
    pub stem_bias: bool,
    pub conv_cfg: MaxxVitConvCfg,
    pub transformer_cfg: MaxxVitTransformerCfg,
    pub head_hidden_size: Option<usize>,
    pub weight_init: WeightInit,
}

impl Default for MaxxVitConfig {
    fn default() -> Self {
        Self {
            embed_dim: vec![96, 192, 384, 768],
            depths: vec![2, 3, 5, 2],
            block_type: ["C", "C", "T", "T"].iter().map(|b| StageBlockTypes::One(letter(b))).collect(),
            stem_width: Size2::One(64),
            stem_bias: false,
            conv_cfg: MaxxVitConvCfg::default(),
            transformer_cfg: MaxxVitTransformerCfg::default(),
            head_hidden_size: None,
            weight_init: WeightInit::VitEff,
        }
    }
}

fn letter(s: &str) -> BlockKind {
    match s {
        "C" => BlockKind::C,
        "T" => BlockKind::T,
        "M" => BlockKind::M,
        _ => BlockKind::PM,
    }
}

impl MaxxVitConfig {
    /// Apply both sub-configs' `__post_init__` (what timm's dataclasses do on construction).
    pub fn post_init(mut self) -> Self {
        self.conv_cfg = self.conv_cfg.post_init();
        self.transformer_cfg = self.transformer_cfg.post_init();
        self
    }

    /// Per-stage block kinds, extended to each stage's depth.
    pub fn stage_blocks(&self) -> Vec<Vec<BlockKind>> {
        self.depths.iter().zip(&self.block_type).map(|(depth, kinds)| kinds.extend(*depth)).collect()
    }

    pub fn num_features(&self) -> usize {
        *self.embed_dim.last().unwrap_or(&0)
    }

    /// Reject configurations timm would assert on, with a message naming the field.
    pub fn validate(&self, img_size: [usize; 2]) -> Result<(), ModelError> {
        let bad = |msg: String| Err(ModelError::Config(msg));
        let n = self.embed_dim.len();
        if n == 0 || self.depths.len() != n || self.block_type.len() != n {
            return bad(format!(
                "embed_dim ({}), depths ({}) and block_type ({}) must have one entry per stage",
                n,
                self.depths.len(),
                self.block_type.len()
            ));
        }
        if self.conv_cfg.attn_layer != "se" {
            return bad(format!("conv_cfg.attn_layer '{}' is not supported (only 'se')", self.conv_cfg.attn_layer));
        }
        if self.transformer_cfg.use_nchw_attn {
            return bad("transformer_cfg.use_nchw_attn=true is not supported (no registered model uses it)".into());
        }
        if self.conv_cfg.block_type == ConvBlockType::Convnext && self.conv_cfg.stride_mode == StrideMode::Conv1x1 {
            return bad("conv_cfg.stride_mode '1x1' is not valid for convnext blocks".into());
        }
        if img_size[0] == 0 || img_size[1] == 0 {
            return bad(format!("img_size {img_size:?} must be positive"));
        }
        let t = self.transformer_cfg.with_img_size(img_size);
        let uses_partition = self.stage_blocks().iter().flatten().any(|b| matches!(b, BlockKind::M | BlockKind::PM));
        if uses_partition {
            let (w, g) = (t.window(), t.grid());
            if w.contains(&0) || g.contains(&0) {
                return bad(format!(
                    "partition size {w:?}/{g:?} is zero for img_size {img_size:?} (partition_ratio {})",
                    t.partition_ratio
                ));
            }
            let pm = self.stage_blocks().iter().flatten().any(|b| *b == BlockKind::PM);
            if pm && w != g {
                return bad(format!("PM blocks need window_size == grid_size, got {w:?} vs {g:?}"));
            }
        }
        for (i, dim) in self.embed_dim.iter().enumerate() {
            let kinds = &self.stage_blocks()[i];
            let attn = kinds.iter().any(|k| *k != BlockKind::C);
            if attn && dim % self.transformer_cfg.dim_head != 0 {
                return bad(format!(
                    "embed_dim[{i}] = {dim} is not divisible by transformer_cfg.dim_head = {}",
                    self.transformer_cfg.dim_head
                ));
            }
        }
        match self.head_hidden_size {
            Some(0) => bad("head_hidden_size must be positive when set".into()),
            _ => Ok(()),
        }
    }
}

/// Constructor arguments of timm's `MaxxVit(cfg, img_size, in_chans, num_classes, global_pool,
/// drop_rate, drop_path_rate)`, plus the one train-time knob timm hard-codes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelArgs {
    pub img_size: [usize; 2],
    pub in_chans: usize,
    pub num_classes: usize,
    pub global_pool: String,
    pub drop_rate: f64,
    pub drop_path_rate: f64,
    /// timm hard-codes `Dropout(0.125)` inside `RelPosMlp` (spec §7); the golden fixtures were
    /// made with it off, so it is a knob here.
    pub rel_pos_mlp_drop: f64,
    /// timm `features_only=True`: no final norm or head, keys `stages_N.*` (spec §3.12).
    pub features_only: bool,
}

impl Default for ModelArgs {
    fn default() -> Self {
        Self {
            img_size: [224, 224],
            in_chans: 3,
            num_classes: 1000,
            global_pool: "avg".into(),
            drop_rate: 0.0,
            drop_path_rate: 0.0,
            rel_pos_mlp_drop: 0.125,
            features_only: false,
        }
    }
}
