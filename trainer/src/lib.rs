//! The trainer: model selection, commands and (later) the training loop, split by concern.
//! `main.rs` is only the command-line parser over these modules.

pub mod commands;
pub mod device;
pub mod model_spec;
