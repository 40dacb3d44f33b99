//! The trainer: model selection, commands and (later) the training loop, split by concern.
//! `main.rs` is only the command-line parser over these modules.

pub mod checkpoint;
pub mod commands;
pub mod config;
pub mod device;
pub mod dist;
pub mod ema;
pub mod input;
pub mod metrics;
pub mod model_spec;
pub mod optim;
pub mod plots;
pub mod pretrained;
pub mod release;
pub mod setup;
pub mod train;
