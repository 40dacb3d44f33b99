//! The trainer: model selection, commands and the training loop, split by concern. `main.rs`
//! only parses the command line and calls [`cli::run`].

pub mod checkpoint;
pub mod cli;
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
