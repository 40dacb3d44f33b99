//! Input pipeline for the trainer. Host-side only: it hands out `f32` / `u8` buffers and labels
//! and knows nothing of Burn modules.
//!
//! - [`folder`] (ImageFolder) and [`wds`] (WebDataset tar shards) read encoded samples;
//! - [`decode`] turns bytes into RGB8 (JPEG, PNG, WebP; grey and CMYK to RGB);
//! - [`transform`] is timm's train and eval transforms with Pillow's pixel semantics;
//! - [`sampler`] decides which samples each rank sees, from `(seed, epoch)`;
//! - [`rng`] derives each sample's augmentation randomness from `(seed, epoch, sample)`.

pub mod decode;
pub mod fashion_mnist;
pub mod folder;
pub mod loader;
pub mod mixup;
pub mod rng;
pub mod sampler;
pub mod transform;
pub mod wds;

/// Kept for the `predict` command's import path.
pub use transform::eval;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: cannot decode image ({reason})", path.display())]
    Decode { path: PathBuf, reason: String },
    #[error("{}: damaged shard ({reason})", path.display())]
    Shard { path: PathBuf, reason: String },
    #[error("invalid data setting: {0}")]
    Config(String),
}
