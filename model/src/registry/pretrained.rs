//! Pretrained cfgs (timm `default_cfgs`) of the 58 registered models, spec §5.2.
//! Data transcribed from `shared/timm_keys/maxxvit_family.json.gz`; `tests/registry.rs`
//! checks every row against that file.

use super::PretrainedCfg;

const HALF: [f64; 3] = [0.5, 0.5, 0.5];
const IMAGENET_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f64; 3] = [0.229, 0.224, 0.225];

#[allow(clippy::too_many_arguments)]
const fn tag(model: &'static str, tag: &'static str, num_classes: usize, size: usize, crop_pct: f64, squash: bool, imagenet_norm: bool, pool: usize, hub: bool, url: &'static str) -> PretrainedCfg {
    PretrainedCfg { model, tag, num_classes, input_size: [3, size, size], crop_pct, crop_mode: if squash { "squash" } else { "center" }, mean: if imagenet_norm { IMAGENET_MEAN } else { HALF }, std: if imagenet_norm { IMAGENET_STD } else { HALF }, interpolation: "bicubic", pool_size: [pool, pool], hub, url }
}

/// Every tag of every model, the default tag of each model first.
pub(super) const PRETRAINED: &[PretrainedCfg] = &[
    tag("coatnet_0_224", "untrained", 1000, 224, 0.95, false, false, 7, false, ""),
    tag("coatnet_0_rw_224", "sw_in1k", 1000, 224, 0.95, false, false, 7, true, "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights-maxx/coatnet_0_rw_224_sw-a6439706.pth"),
    tag("coatnet_1_224", "untrained", 1000, 224, 0.95, false, false, 7, false, ""),
    tag("coatnet_1_rw_224", "sw_in1k", 1000, 224, 0.95, false, false, 7, true, "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights-maxx/coatnet_1_rw_224_sw-5cae1ea8.pth"),
    tag("coatnet_2_224", "untrained", 1000, 224, 0.95, false, false, 7, false, ""),
    tag("coatnet_2_rw_224", "sw_in12k_ft_in1k", 1000, 224, 0.95, false, false, 7, true, ""),
    tag("coatnet_2_rw_224", "sw_in12k", 11821, 224, 0.95, false, false, 7, true, ""),
    tag("coatnet_3_224", "untrained", 1000, 224, 0.95, false, false, 7, false, ""),
    tag("coatnet_3_rw_224", "sw_in12k", 11821, 224, 0.95, false, false, 7, true, ""),
    tag("coatnet_4_224", "untrained", 1000, 224, 0.95, false, false, 7, false, ""),
    tag("coatnet_5_224", "untrained", 1000, 224, 0.95, false, false, 7, false, ""),
    tag("coatnet_bn_0_rw_224", "sw_in1k", 1000, 224, 0.95, false, true, 7, true, "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights-maxx/coatnet_bn_0_rw_224_sw-c228e218.pth"),
    tag("coatnet_nano_cc_224", "untrained", 1000, 224, 0.95, false, false, 7, false, ""),
    tag("coatnet_nano_rw_224", "sw_in1k", 1000, 224, 0.9, false, false, 7, true, "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights-maxx/coatnet_nano_rw_224_sw-f53093b4.pth"),
    tag("coatnet_pico_rw_224", "untrained", 1000, 224, 0.95, false, false, 7, false, ""),
    tag("coatnet_rmlp_0_rw_224", "untrained", 1000, 224, 0.95, false, false, 7, false, ""),
    tag("coatnet_rmlp_1_rw2_224", "sw_in12k_ft_in1k", 1000, 224, 0.95, false, false, 7, true, ""),
    tag("coatnet_rmlp_1_rw2_224", "sw_in12k", 11821, 224, 0.95, false, false, 7, true, ""),
    tag("coatnet_rmlp_1_rw_224", "sw_in1k", 1000, 224, 0.95, false, false, 7, true, "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights-maxx/coatnet_rmlp_1_rw_224_sw-9051e6c3.pth"),
    tag("coatnet_rmlp_2_rw_224", "sw_in12k_ft_in1k", 1000, 224, 0.95, false, false, 7, true, ""),
    tag("coatnet_rmlp_2_rw_224", "sw_in1k", 1000, 224, 0.95, false, false, 7, true, "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights-maxx/coatnet_rmlp_2_rw_224_sw-5ccfac55.pth"),
    tag("coatnet_rmlp_2_rw_224", "sw_in12k", 11821, 224, 0.95, false, false, 7, true, ""),
    tag("coatnet_rmlp_2_rw_384", "sw_in12k_ft_in1k", 1000, 384, 1.0, true, false, 12, true, ""),
    tag("coatnet_rmlp_3_rw_224", "untrained", 1000, 224, 0.95, false, false, 7, false, ""),
    tag("coatnet_rmlp_nano_rw_224", "sw_in1k", 1000, 224, 0.9, false, false, 7, true, "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights-maxx/coatnet_rmlp_nano_rw_224_sw-bd1d51b3.pth"),
    tag("coatnext_nano_rw_224", "sw_in1k", 1000, 224, 0.9, false, false, 7, true, "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights-maxx/coatnext_nano_rw_224_ad-22cb71c2.pth"),
    tag("maxvit_base_tf_224", "in1k", 1000, 224, 0.95, false, true, 7, true, ""),
    tag("maxvit_base_tf_224", "in21k", 21843, 224, 0.95, false, false, 7, true, ""),
    tag("maxvit_base_tf_384", "in1k", 1000, 384, 1.0, true, false, 12, true, ""),
    tag("maxvit_base_tf_384", "in21k_ft_in1k", 1000, 384, 1.0, true, false, 12, true, ""),
    tag("maxvit_base_tf_512", "in1k", 1000, 512, 1.0, true, false, 16, true, ""),
    tag("maxvit_base_tf_512", "in21k_ft_in1k", 1000, 512, 1.0, true, false, 16, true, ""),
    tag("maxvit_large_tf_224", "in1k", 1000, 224, 0.95, false, true, 7, true, ""),
    tag("maxvit_large_tf_224", "in21k", 21843, 224, 0.95, false, false, 7, true, ""),
    tag("maxvit_large_tf_384", "in1k", 1000, 384, 1.0, true, false, 12, true, ""),
    tag("maxvit_large_tf_384", "in21k_ft_in1k", 1000, 384, 1.0, true, false, 12, true, ""),
    tag("maxvit_large_tf_512", "in1k", 1000, 512, 1.0, true, false, 16, true, ""),
    tag("maxvit_large_tf_512", "in21k_ft_in1k", 1000, 512, 1.0, true, false, 7, true, ""),
    tag("maxvit_nano_rw_256", "sw_in1k", 1000, 256, 0.95, false, false, 8, true, "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights-maxx/maxvit_nano_rw_256_sw-fb127241.pth"),
    tag("maxvit_pico_rw_256", "untrained", 1000, 256, 0.95, false, false, 8, false, ""),
    tag("maxvit_rmlp_base_rw_224", "sw_in12k_ft_in1k", 1000, 224, 0.95, false, false, 7, true, ""),
    tag("maxvit_rmlp_base_rw_224", "sw_in12k", 11821, 224, 0.95, false, false, 7, true, ""),
    tag("maxvit_rmlp_base_rw_384", "sw_in12k_ft_in1k", 1000, 384, 1.0, true, false, 12, true, ""),
    tag("maxvit_rmlp_nano_rw_256", "sw_in1k", 1000, 256, 0.95, false, false, 8, true, "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights-maxx/maxvit_rmlp_nano_rw_256_sw-c17bb0d6.pth"),
    tag("maxvit_rmlp_pico_rw_256", "sw_in1k", 1000, 256, 0.95, false, false, 8, true, "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights-maxx/maxvit_rmlp_pico_rw_256_sw-8d82f2c6.pth"),
    tag("maxvit_rmlp_small_rw_224", "sw_in1k", 1000, 224, 0.9, false, false, 7, true, "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights-maxx/maxvit_rmlp_small_rw_224_sw-6ef0ae4f.pth"),
    tag("maxvit_rmlp_small_rw_256", "untrained", 1000, 256, 0.95, false, false, 8, false, ""),
    tag("maxvit_rmlp_tiny_rw_256", "sw_in1k", 1000, 256, 0.95, false, false, 8, true, "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights-maxx/maxvit_rmlp_tiny_rw_256_sw-bbef0ff5.pth"),
    tag("maxvit_small_tf_224", "in1k", 1000, 224, 0.95, false, true, 7, true, ""),
    tag("maxvit_small_tf_384", "in1k", 1000, 384, 1.0, true, false, 12, true, ""),
    tag("maxvit_small_tf_512", "in1k", 1000, 512, 1.0, true, false, 16, true, ""),
    tag("maxvit_tiny_pm_256", "untrained", 1000, 256, 0.95, false, false, 8, false, ""),
    tag("maxvit_tiny_rw_224", "sw_in1k", 1000, 224, 0.95, false, false, 7, true, "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights-maxx/maxvit_tiny_rw_224_sw-7d0dffeb.pth"),
    tag("maxvit_tiny_rw_256", "untrained", 1000, 256, 0.95, false, false, 8, false, ""),
    tag("maxvit_tiny_tf_224", "in1k", 1000, 224, 0.95, false, true, 7, true, ""),
    tag("maxvit_tiny_tf_384", "in1k", 1000, 384, 1.0, true, false, 12, true, ""),
    tag("maxvit_tiny_tf_512", "in1k", 1000, 512, 1.0, true, false, 16, true, ""),
    tag("maxvit_xlarge_tf_224", "in21k", 21843, 224, 0.95, false, false, 7, true, ""),
    tag("maxvit_xlarge_tf_384", "in21k_ft_in1k", 1000, 384, 1.0, true, false, 12, true, ""),
    tag("maxvit_xlarge_tf_512", "in21k_ft_in1k", 1000, 512, 1.0, true, false, 16, true, ""),
    tag("maxxvit_rmlp_nano_rw_256", "sw_in1k", 1000, 256, 0.95, false, false, 8, true, "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights-maxx/maxxvit_rmlp_nano_rw_256_sw-0325d459.pth"),
    tag("maxxvit_rmlp_small_rw_256", "sw_in1k", 1000, 256, 0.95, false, false, 8, true, "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights-maxx/maxxvit_rmlp_small_rw_256_sw-37e217ff.pth"),
    tag("maxxvit_rmlp_tiny_rw_256", "untrained", 1000, 256, 0.95, false, false, 8, false, ""),
    tag("maxxvitv2_nano_rw_256", "sw_in1k", 1000, 256, 0.95, false, false, 8, true, ""),
    tag("maxxvitv2_rmlp_base_rw_224", "sw_in12k_ft_in1k", 1000, 224, 0.95, false, false, 7, true, ""),
    tag("maxxvitv2_rmlp_base_rw_224", "sw_in12k", 11821, 224, 0.95, false, false, 7, true, ""),
    tag("maxxvitv2_rmlp_base_rw_384", "sw_in12k_ft_in1k", 1000, 384, 1.0, true, false, 12, true, ""),
    tag("maxxvitv2_rmlp_large_rw_224", "untrained", 1000, 224, 0.95, false, false, 7, false, ""),
    tag("test_coatnet", "untrained", 1000, 160, 0.95, false, false, 5, false, ""),
    tag("test_maxvit", "untrained", 1000, 160, 0.95, false, false, 5, false, ""),
];
