//! Weight initialisation exactly as timm does it (spec §6): PyTorch's per-layer defaults at
//! construction, then `_init_conv` / `_init_transformer` by `cfg.weight_init`.
//!
//! Parameters are lazy (`Param::uninitialized`): building a 200M-parameter model to list its
//! keys, or to load a checkpoint into it, allocates nothing for the random init.

use burn::module::{Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Shape, Tensor};

use crate::config::WeightInit;

/// A distribution for one tensor, with fans already resolved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    Constant(f64),
    Uniform(f64),
    Normal(f64),
    /// timm `trunc_normal_tf_`: N(0,1) cut at ±2, then scaled by `std`.
    TruncNormalTf(f64),
}

/// Which of timm's init passes owns a layer (spec §6, "Phase 2").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitRole {
    /// Keeps PyTorch's construction-time default (heads, final norm, stand-alone ConvNeXt blocks,
    /// and every layer when `weight_init` is '').
    TorchDefault,
    /// `_init_conv(scheme)`: Conv2d layers of stems, MBConv and conv parts of M/PM blocks.
    Conv(WeightInit),
    /// `_init_transformer(scheme)`: Conv2d and Linear layers of transformer (sub-)blocks.
    Transformer(WeightInit),
}

impl InitRole {
    pub fn conv(scheme: WeightInit) -> Self {
        if scheme == WeightInit::TorchDefault {
            Self::TorchDefault
        } else {
            Self::Conv(scheme)
        }
    }

    pub fn transformer(scheme: WeightInit) -> Self {
        if scheme == WeightInit::TorchDefault {
            Self::TorchDefault
        } else {
            Self::Transformer(scheme)
        }
    }
}

/// Fans as PyTorch computes them for a weight `[out, in/groups, k...]`.
#[derive(Debug, Clone, Copy)]
pub struct Fans {
    pub fan_in: usize,
    pub fan_out: usize,
    /// timm's EfficientNet-style `fan_out // groups` for `_init_conv` 'vit_eff'.
    pub fan_out_grouped: usize,
}

impl Fans {
    pub fn conv(out_ch: usize, in_per_group: usize, kernel: [usize; 2], groups: usize) -> Self {
        let receptive = kernel[0] * kernel[1];
        Self {
            fan_in: in_per_group * receptive,
            fan_out: out_ch * receptive,
            fan_out_grouped: out_ch * receptive / groups.max(1),
        }
    }

    pub fn linear(out_features: usize, in_features: usize) -> Self {
        Self { fan_in: in_features, fan_out: out_features, fan_out_grouped: out_features }
    }
}

/// Weight and bias distributions of a Conv2d/Linear under `role`.
/// `in_mlp` is timm's `'mlp' in name` test, relative to the block being initialised.
pub fn weight_and_bias(role: InitRole, fans: Fans, is_conv: bool, in_mlp: bool) -> (Init, Init) {
    let torch_default = 1.0 / (fans.fan_in as f64).sqrt();
    let xavier = |gain_sq: f64| (gain_sq / (fans.fan_in + fans.fan_out) as f64).sqrt();
    let scheme = match role {
        InitRole::TorchDefault => None,
        // `_init_conv` only touches nn.Conv2d.
        InitRole::Conv(_) if !is_conv => None,
        InitRole::Conv(s) | InitRole::Transformer(s) => Some(s),
    };
    let Some(scheme) = scheme else {
        return (Init::Uniform(torch_default), Init::Uniform(torch_default));
    };
    let weight = match scheme {
        WeightInit::TorchDefault => Init::Uniform(torch_default),
        WeightInit::Normal => Init::Normal(0.02),
        WeightInit::TruncNormal => Init::TruncNormalTf(0.02),
        WeightInit::XavierNormal => Init::Normal(xavier(2.0)),
        WeightInit::VitEff => match role {
            InitRole::Conv(_) => Init::Normal((2.0 / fans.fan_out_grouped as f64).sqrt()),
            _ => Init::Uniform(xavier(6.0)),
        },
    };
    let bias = match (role, scheme) {
        (InitRole::Transformer(_), WeightInit::VitEff) if in_mlp => Init::Normal(1e-6),
        _ => Init::Constant(0.0),
    };
    (weight, bias)
}

/// A lazily initialised trainable parameter.
pub fn param<B: Backend, const D: usize>(shape: [usize; D], init: Init, device: &B::Device) -> Param<Tensor<B, D>> {
    Param::uninitialized(
        ParamId::new(),
        move |device, require_grad| sample::<B, D>(shape, init, device).set_require_grad(require_grad),
        device.clone(),
        true,
        Shape::new(shape),
    )
}

/// Draw a tensor from `init` on the backend's seeded RNG.
pub fn sample<B: Backend, const D: usize>(shape: [usize; D], init: Init, device: &B::Device) -> Tensor<B, D> {
    match init {
        Init::Constant(v) => Tensor::full(shape, v, device),
        Init::Uniform(bound) => Tensor::random(shape, Distribution::Uniform(-bound, bound), device),
        Init::Normal(std) => Tensor::random(shape, Distribution::Normal(0.0, std), device),
        Init::TruncNormalTf(std) => {
            // Redraw the out-of-range draws; after 8 rounds the chance that one survives is
            // 0.0455^8 ≈ 2e-11 per element, and the final clamp keeps the bound regardless.
            let mut x = Tensor::<B, D>::random(shape, Distribution::Normal(0.0, 1.0), device);
            for _ in 0..8 {
                let outside = x.clone().abs().greater_elem(2.0);
                let redraw = Tensor::<B, D>::random(shape, Distribution::Normal(0.0, 1.0), device);
                x = x.mask_where(outside, redraw);
            }
            x.clamp(-2.0, 2.0).mul_scalar(std)
        }
    }
}
