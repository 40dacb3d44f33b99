//! Turning a [`RunConfig`] into the model and the data loaders.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use data::folder::{read_class_list, ImageFolder};
use data::loader::{Loader, LoaderConfig, Output, Pipeline, Source};
use data::transform::{EvalTransform, Interpolation, TrainTransformConfig};
use data::wds::{parse_shard_spec, LabelSource};
use model::{load_safetensors, LoadMode, MaxxVit};

use crate::config::{DataFormat, RunConfig};
use crate::model_spec::{ModelSpec, Preprocess};

/// The model the config describes (without weights).
pub fn model_spec(cfg: &RunConfig) -> Result<ModelSpec> {
    let m = &cfg.model;
    let mut spec = match (&m.config_file, m.name.is_empty()) {
        (Some(file), _) => ModelSpec::from_file(file)?,
        (None, false) => ModelSpec::from_name(&m.name)?,
        (None, true) => bail!("model.name or model.config_file must be set"),
    };
    spec.args.num_classes = m.num_classes;
    spec.args.drop_rate = m.drop_rate;
    spec.args.drop_path_rate = m.drop_path_rate;
    if let Some(s) = m.img_size {
        spec.args.img_size = [s, s];
    }
    Ok(spec)
}

/// Fine-tuning start: weights from a checkpoint directory (EMA preferred, as timm's
/// `--initial-checkpoint`) or a timm safetensors file; a classifier of another shape is replaced.
pub fn load_init<B: Backend>(model: MaxxVit<B>, init: &Path) -> Result<MaxxVit<B>> {
    // A run directory stands for its best checkpoint.
    let resolved;
    let init = if init.join("checkpoints").is_dir() {
        resolved = crate::release::resolve_checkpoint(init)?.0;
        resolved.as_path()
    } else {
        init
    };
    let file = if init.is_dir() {
        let ema = init.join("ema.safetensors");
        if ema.is_file() {
            ema
        } else {
            init.join("model.safetensors")
        }
    } else {
        init.to_path_buf()
    };
    if !file.is_file() {
        bail!("init weights {} not found", file.display());
    }
    let (model, report) = load_safetensors(model, &file, LoadMode::FineTune)?;
    tracing::info!(file = %file.display(), loaded = report.loaded, "initial weights loaded");
    for skipped in &report.skipped {
        tracing::info!("not loaded: {skipped}");
    }
    for extra in &report.unexpected {
        tracing::info!("ignored (not in the model): {extra}");
    }
    Ok(model)
}

pub struct Loaders {
    pub train: Loader,
    pub val: Option<Loader>,
    pub num_classes: usize,
    /// The training ImageFolder's class names (label i = name i); none for WebDataset.
    pub class_names: Option<Vec<String>>,
}

pub fn eval_transform(cfg: &RunConfig, spec: &ModelSpec) -> EvalTransform {
    let d = &cfg.data;
    let p = Preprocess::eval_transform(spec.preprocess.as_ref(), spec.args.img_size);
    EvalTransform {
        img_size: p.img_size,
        crop_pct: d.crop_pct.unwrap_or(p.crop_pct),
        crop_mode: d.crop_mode.clone().unwrap_or(p.crop_mode),
        mean: d.mean.unwrap_or(p.mean),
        std: d.std.unwrap_or(p.std),
        interpolation: d.interpolation.clone().unwrap_or(p.interpolation),
    }
}

fn train_transform(cfg: &RunConfig, eval: &EvalTransform) -> Result<TrainTransformConfig> {
    let a = &cfg.augmentation;
    Ok(TrainTransformConfig {
        img_size: eval.img_size,
        scale: a.scale,
        ratio: a.ratio,
        hflip: a.hflip,
        vflip: 0.0,
        interpolation: Interpolation::parse(&a.interpolation).map_err(anyhow::Error::msg)?,
        auto_augment: a.auto_augment.clone(),
        color_jitter: a.color_jitter,
        re_prob: a.re_prob,
        re_mode: a.re_mode.clone(),
        re_count: a.re_count,
        mean: eval.mean,
        std: eval.std,
    })
}

fn source(cfg: &RunConfig, split: &str, shards: &Option<String>) -> Result<Option<Source>> {
    let d = &cfg.data;
    match d.format {
        DataFormat::Folder => {
            let dir = d.root.join(split);
            if !dir.is_dir() {
                return Ok(None);
            }
            let classes = d.class_list.as_deref().map(read_class_list).transpose()?;
            let folder = ImageFolder::open(&dir, classes.as_deref())?;
            if folder.is_empty() {
                bail!("data directory {} holds no images", dir.display());
            }
            Ok(Some(Source::Folder(Arc::new(folder))))
        }
        DataFormat::Wds => {
            let (paths, count): (Vec<PathBuf>, Option<usize>) = match shards {
                Some(spec) => parse_shard_spec(spec, Some(&d.root))?,
                None => {
                    let info = ["_info.json", "info.json"].iter().map(|f| d.root.join(f)).find(|p| p.is_file());
                    let Some(info) = info else { return Ok(None) };
                    let (paths, n) = data::fashion_mnist::read_info(&info, split)?;
                    (paths, Some(n))
                }
            };
            if let Some(missing) = paths.iter().find(|p| !p.is_file()) {
                bail!("shard {} not found", missing.display());
            }
            let num_samples = count.with_context(|| format!("{split} shards: give the sample count as 'pattern|N'"))?;
            Ok(Some(Source::Shards { shards: paths, num_samples, labels: LabelSource::Cls }))
        }
    }
}

/// The paths a run needs, checked before any device or directory is touched.
pub fn check_paths(cfg: &RunConfig) -> Result<()> {
    if !cfg.data.root.exists() {
        bail!("data directory {} not found (data.root)", cfg.data.root.display());
    }
    if let Some(init) = &cfg.model.init {
        if !init.exists() {
            bail!("initial weights {} not found (model.init)", init.display());
        }
    }
    Ok(())
}

/// Train and (if present) validation loaders for this rank.
/// `output`: the batches' pixel format ([`crate::input::output_for`]).
pub fn loaders(cfg: &RunConfig, spec: &ModelSpec, rank: usize, world: usize, output: Output) -> Result<Loaders> {
    let batch_size = cfg.per_rank_batch(world)?;
    let d = &cfg.data;
    if !d.root.exists() {
        bail!("data directory {} not found (data.root)", d.root.display());
    }
    let train_src = source(cfg, &d.train_split, &d.train_shards)?
        .with_context(|| format!("no training split '{}' under {}", d.train_split, d.root.display()))?;
    let class_names = match &train_src {
        Source::Folder(folder) => Some(folder.classes.clone()),
        _ => None,
    };
    let eval = eval_transform(cfg, spec);
    let base = LoaderConfig {
        batch_size,
        workers: d.workers.max(1),
        prefetch: d.prefetch.max(1),
        seed: cfg.training.seed,
        rank,
        world,
        train: true,
        shuffle_buffer: (d.shuffle_buffer, (d.shuffle_buffer / 4).max(1)),
        output,
    };
    let train = Loader::new(train_src, Pipeline::Train(train_transform(cfg, &eval)?), base.clone())?;
    let val = match source(cfg, &d.val_split, &d.val_shards)? {
        Some(src) => Some(Loader::new(src, Pipeline::Eval(eval), LoaderConfig { train: false, ..base })?),
        None => None,
    };
    Ok(Loaders { train, val, num_classes: cfg.model.num_classes, class_names })
}
