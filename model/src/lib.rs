//! timm's MaxxViT family (CoAtNet, MaxViT, CoAtNeXt, MaxxViT, MaxxViT-V2) as Burn modules.
//!
//! One [`MaxxVitConfig`] (timm's `MaxxVitCfg`) drives one generic [`MaxxVit`]; the 58 registered
//! names are configs in [`registry`]. Outputs, parameter names and shapes equal timm's; weights
//! load from and save to safetensors in timm's `state_dict()` layout ([`state_dict`]).
//! The spec these modules follow is the project's reference note `timm_maxxvit_spec.md`
//! (kept beside the repository, in `shared/reference/`); `§` references in comments point
//! into it.

pub mod autocast;
pub mod blocks;
pub mod config;
pub mod flops;
pub mod golden;
pub mod golden_check;
pub mod head;
pub mod layers;
pub mod model;
pub mod registry;
pub mod state_dict;

use std::path::PathBuf;

pub use config::{MaxxVitConfig, MaxxVitConvCfg, MaxxVitTransformerCfg, ModelArgs};
pub use model::{FeatureInfo, Intermediates, MaxxVit};
pub use registry::{ModelEntry, PretrainedCfg};
pub use state_dict::{load_safetensors, save_safetensors, LoadMode, LoadReport, SaveDtype};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("invalid model config: {0}")]
    Config(String),
    #[error("unknown model '{0}' (`trainer models` lists the 58 names)")]
    UnknownModel(String),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: not a valid safetensors file ({reason})", path.display())]
    Format { path: PathBuf, reason: String },
    #[error("{0}")]
    Mismatch(Box<state_dict::LoadMismatch>),
}
