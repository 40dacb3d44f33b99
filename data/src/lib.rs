//! Input pipeline for the trainer. Host-side only: it hands out `f32` / `u8` buffers and labels
//! and knows nothing of Burn modules.
//!
//! Present so far: timm's eval transform for single images ([`eval`]). Readers (ImageFolder,
//! WebDataset shards), train augmentations, mixup/cutmix, sharded sampling and the threaded
//! loader are issue 3.

pub mod eval;

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: cannot decode image ({reason})", path.display())]
    Decode { path: PathBuf, reason: String },
    #[error("invalid transform setting: {0}")]
    Config(String),
}
