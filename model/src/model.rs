//! The top-level model: timm's `MaxxVit` (spec §3.10–§3.12).

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::blocks::conv_blocks::Stem;
use crate::blocks::transformer::AttnCtx;
use crate::blocks::{MaxxVitStage, StageSpec};
use crate::config::{MaxxVitConfig, ModelArgs, NormLayer};
use crate::head::{new_fc, ClassifierHead, GlobalPool, Head, NormMlpClassifierHead, PreLogits};
use crate::layers::{InitRole, Linear, Norm2d};
use crate::ModelError;

/// One entry of timm's `feature_info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureInfo {
    pub num_chs: usize,
    pub reduction: usize,
    pub module: String,
}

/// Stem and per-stage outputs, like timm's `forward_intermediates(norm=False)`.
#[derive(Debug, Clone)]
pub struct Intermediates<B: Backend> {
    pub stem: Tensor<B, 4>,
    pub stages: Vec<Tensor<B, 4>>,
}

#[derive(Module, Debug)]
pub struct MaxxVit<B: Backend> {
    pub stem: Stem<B>,
    pub stages: Vec<MaxxVitStage<B>>,
    pub norm: Option<Norm2d<B>>,
    pub head: Option<Head<B>>,
    /// The cfg after post-init, with the partition size filled in from `img_size`.
    pub cfg: MaxxVitConfig,
    pub args: ModelArgs,
}

/// timm's drop-path schedule: one linear ramp over all blocks, split per stage (spec §2.7).
pub fn drop_path_rates(rate: f64, depths: &[usize]) -> Vec<Vec<f64>> {
    let total: usize = depths.iter().sum();
    let step = if total > 1 { rate / (total - 1) as f64 } else { 0.0 };
    let mut next = 0usize;
    depths
        .iter()
        .map(|d| {
            (0..*d)
                .map(|_| {
                    next += 1;
                    (next - 1) as f64 * step
                })
                .collect()
        })
        .collect()
}

/// Spatial size after the stem and after each stage, as timm computes it for rel-pos tables.
pub fn feature_sizes(img_size: [usize; 2], stages: usize) -> Vec<[usize; 2]> {
    let mut size = [img_size[0] / 2, img_size[1] / 2];
    let mut sizes = vec![size];
    for _ in 0..stages {
        size = [size[0].div_ceil(2), size[1].div_ceil(2)];
        sizes.push(size);
    }
    sizes
}

impl<B: Backend> MaxxVit<B> {
    /// Build timm's `MaxxVit(cfg, img_size, in_chans, num_classes, global_pool, drop_rate,
    /// drop_path_rate)`. Parameters are lazy: nothing is sampled until first use or save.
    pub fn new(cfg: &MaxxVitConfig, args: &ModelArgs, device: &B::Device) -> Result<Self, ModelError> {
        let mut cfg = cfg.clone().post_init();
        cfg.validate(args.img_size)?;
        cfg.transformer_cfg = cfg.transformer_cfg.with_img_size(args.img_size);
        let pool = GlobalPool::parse(&args.global_pool)?;
        if cfg.head_hidden_size.is_some() && pool == GlobalPool::CatAvgMax {
            return Err(ModelError::Config("NormMlpClassifierHead does not accept global_pool 'catavgmax'".into()));
        }

        let conv_role = InitRole::conv(cfg.weight_init);
        let stem_width = cfg.stem_width.pair();
        let stem = Stem::new(args.in_chans, stem_width, cfg.stem_bias, &cfg.conv_cfg, conv_role, device);
        let sizes = feature_sizes(args.img_size, cfg.embed_dim.len());
        let dpr = drop_path_rates(args.drop_path_rate, &cfg.depths);
        let attn = AttnCtx {
            cfg: &cfg.transformer_cfg,
            role: InitRole::transformer(cfg.weight_init),
            rel_pos_mlp_drop: args.rel_pos_mlp_drop,
        };
        let kinds = cfg.stage_blocks();
        let mut in_chs = stem_width[1];
        let mut stages = Vec::with_capacity(cfg.embed_dim.len());
        for (i, out_chs) in cfg.embed_dim.iter().enumerate() {
            stages.push(MaxxVitStage::new(
                StageSpec {
                    in_chs,
                    out_chs: *out_chs,
                    kinds: &kinds[i],
                    feat_size: sizes[i + 1],
                    conv_cfg: &cfg.conv_cfg,
                    attn,
                    drop_path: &dpr[i],
                    conv_role,
                },
                device,
            ));
            in_chs = *out_chs;
        }

        let t = &cfg.transformer_cfg;
        let final_norm = |c| Norm2d::new(t.norm_layer, c, t.norm_eps, device);
        let num_features = cfg.num_features();
        let (norm, head) = if args.features_only {
            (None, None)
        } else if let Some(hidden) = cfg.head_hidden_size {
            let head = Head::NormMlp(NormMlpClassifierHead {
                norm: final_norm(num_features),
                pre_logits: PreLogits {
                    fc: Linear::new(num_features, hidden, true, InitRole::TorchDefault, false, device),
                },
                fc: new_fc(hidden, args.num_classes, device),
                pool,
                drop_rate: args.drop_rate,
            });
            (None, Some(head))
        } else {
            let fc_in = num_features * pool.feature_multiplier();
            let head = Head::Classifier(ClassifierHead {
                fc: new_fc(fc_in, args.num_classes, device),
                pool,
                drop_rate: args.drop_rate,
            });
            (Some(final_norm(num_features)), Some(head))
        };
        Ok(Self { stem, stages, norm, head, cfg, args: args.clone() })
    }

    pub fn forward_intermediates(&self, x: Tensor<B, 4>) -> Intermediates<B> {
        let stem = self.stem.forward(x);
        let mut stages = Vec::with_capacity(self.stages.len());
        let mut x = stem.clone();
        for stage in &self.stages {
            x = stage.forward(x);
            stages.push(x.clone());
        }
        Intermediates { stem, stages }
    }

    /// stem → stages → final norm (Identity for NormMlp-head models).
    pub fn forward_features(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = self.stages.iter().fold(self.stem.forward(x), |x, stage| stage.forward(x));
        match &self.norm {
            Some(norm) => norm.forward(x),
            None => x,
        }
    }

    /// Pooled `pre_logits` or logits from `forward_features` output.
    /// In features-only mode there is no head and the pooled features are returned.
    pub fn forward_head(&self, features: Tensor<B, 4>, pre_logits: bool) -> Tensor<B, 2> {
        match &self.head {
            Some(head) => head.forward(features, pre_logits),
            None => {
                let pooled = features.mean_dim(2).mean_dim(3);
                let [b, c, _, _] = pooled.dims();
                pooled.reshape([b, c])
            }
        }
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward_head(self.forward_features(x), false)
    }

    pub fn num_features(&self) -> usize {
        self.cfg.num_features()
    }

    pub fn num_classes(&self) -> usize {
        self.args.num_classes
    }

    /// timm `feature_info`: stem at reduction 2, then each stage.
    pub fn feature_info(&self) -> Vec<FeatureInfo> {
        let mut info =
            vec![FeatureInfo { num_chs: self.cfg.stem_width.pair()[1], reduction: 2, module: "stem".into() }];
        for (i, dim) in self.cfg.embed_dim.iter().enumerate() {
            info.push(FeatureInfo { num_chs: *dim, reduction: 4 << i, module: format!("stages.{i}") });
        }
        info
    }

    /// timm `reset_classifier(num_classes)`: a fresh `head.fc` (PyTorch Linear init) for a new
    /// label set, e.g. 11,821 → 1,000 classes when fine-tuning an ImageNet-12k checkpoint.
    pub fn reset_classifier(mut self, num_classes: usize, device: &B::Device) -> Self {
        let num_features = self.num_features();
        if let Some(head) = &mut self.head {
            let fc_in = head.pre_logits_dim(num_features);
            *head.fc_mut() = new_fc(fc_in, num_classes, device);
        }
        self.args.num_classes = num_classes;
        self
    }

    /// True when some norm runs on batch statistics in training (MBConv stems/blocks, BN T-blocks).
    pub fn has_batch_norm(&self) -> bool {
        self.cfg.conv_cfg.norm_layer == NormLayer::BatchNorm2d
            || self.cfg.transformer_cfg.norm_layer == NormLayer::BatchNorm2d
    }
}
