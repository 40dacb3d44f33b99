//! `trainer validate`: top-1 / top-5 / loss of a checkpoint on the config's validation set.

use std::path::Path;

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use model::{load_safetensors, LoadMode, MaxxVit};

use crate::config::RunConfig;
use crate::metrics::validate;
use crate::setup;

pub fn run<B: Backend>(device: &B::Device, cfg: &RunConfig, checkpoint: &Path, ema: bool) -> Result<()> {
    let spec = setup::model_spec(cfg)?;
    let file = if checkpoint.is_dir() {
        checkpoint.join(if ema { "ema.safetensors" } else { "model.safetensors" })
    } else {
        checkpoint.to_path_buf()
    };
    if !file.is_file() {
        bail!("{} not found", file.display());
    }
    let model = load_safetensors(MaxxVit::<B>::new(&spec.cfg, &spec.args, device)?, &file, LoadMode::Strict)?.0;
    let output = crate::input::output_for::<B>(device, cfg.data.normalize_on_device);
    let loaders = setup::loaders(cfg, &spec, 0, 1, output)?;
    let val = loaders.val.context("the config has no validation split")?;
    // As the run validated itself (timm's validate.py runs under --amp the same way).
    let _autocast = model::autocast::autocast(cfg.training.precision.autocast_dtype());
    let m = validate(&model, &val, device)?;
    println!("{}: top-1 {:.3} %, top-5 {:.3} %, loss {:.4}", file.display(), m.top1, m.top5, m.loss);
    Ok(())
}
