//! The training loop (`trainer train` / `finetune`): one process, one device; the
//! data-parallel layer is issue 5.
//!
//! Exact resume: everything random is a pure function of `(seed, epoch, sample)` or
//! `(seed, step)` — the data order and augmentation (see `data`), mixup, and the backend RNG
//! (dropout, drop path), reseeded before every micro-step — and checkpoints hold the weights,
//! the EMA, the optimizer moments and the loader position. So N steps, a kill and a resume
//! give the weights of an uninterrupted run, bit for bit on the CPU backend.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::backend::Autodiff;
use burn::module::{AutodiffModule, Module};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Tensor, TensorData};
use data::mixup::{mix_batch, smoothed_targets, MixupConfig};
use data::rng::{splitmix64, Rng};
use indicatif::{ProgressBar, ProgressStyle};
use model::state_dict::EntryKind;
use model::{load_safetensors, LoadMode, MaxxVit};

use crate::checkpoint::{self, Metrics, TrainState};
use crate::config::RunConfig;
use crate::dist::ddp::{all_reduce_grads, broadcast_state};
use crate::dist::{Collective, Single};
use crate::ema::Ema;
use crate::metrics::{append_summary, finish, soft_cross_entropy, validate_sums};
use crate::optim::{gather_grads, CosineSchedule, Optimizer};
use crate::setup;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// The newest checkpoint of the run that verifies (none: start fresh).
    Auto,
    Path(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub global_step: u64,
    pub metrics: Option<Metrics>,
    pub last_checkpoint: Option<PathBuf>,
}

fn describe_changes(old: &str, new: &str) -> String {
    let (a, b): (toml::Table, toml::Table) =
        (toml::from_str(old).unwrap_or_default(), toml::from_str(new).unwrap_or_default());
    let mut changed = vec![];
    for (section, v) in &b {
        match (a.get(section), v) {
            (Some(toml::Value::Table(ta)), toml::Value::Table(tb)) => {
                for (k, vb) in tb {
                    if ta.get(k) != Some(vb) {
                        changed.push(format!("{section}.{k}"));
                    }
                }
            }
            (old, new) if old != Some(new) => changed.push(section.clone()),
            _ => {}
        }
    }
    changed.join(", ")
}

/// Train in this process alone.
pub fn run<B: Backend>(device: &B::Device, cfg: RunConfig, resume: Option<Resume>) -> Result<Outcome> {
    run_with::<B>(device, cfg, resume, &mut Single)
}

/// Train as one rank of a data-parallel job: every rank takes its share of each global batch,
/// gradients are averaged over ranks before clipping, BatchNorm buffers and the initial weights
/// come from rank 0 (as PyTorch DDP), metrics are summed over ranks, and only rank 0 writes.
pub fn run_with<B: Backend>(
    device: &B::Device,
    cfg: RunConfig,
    resume: Option<Resume>,
    coll: &mut dyn Collective,
) -> Result<Outcome> {
    type Ad<B> = Autodiff<B>;
    let (rank, world, main) = (coll.rank(), coll.world(), coll.is_main());
    let run_dir = cfg.run_dir();
    let ckpt_dir = run_dir.join("checkpoints");
    let spec = setup::model_spec(&cfg)?;
    let loaders = setup::loaders(&cfg, &spec, rank, world)?;
    let global_batch = cfg.per_rank_batch(world)? * world;
    // Train and validation forwards on this thread run under the configured precision, as
    // timm's train and validate both run inside `amp_autocast`.
    let _autocast = model::autocast::autocast(cfg.training.precision.autocast_dtype());

    // Where to start: a checkpoint of this run, or fresh (optionally from init weights).
    let start = match &resume {
        Some(Resume::Auto) => checkpoint::newest_good(&ckpt_dir),
        Some(Resume::Path(p)) => Some((p.clone(), checkpoint::verify(p)?)),
        None => None,
    };
    let config_path = run_dir.join("config.toml");
    if let Some((ckpt, state)) = &start {
        if state.config_hash != cfg.hash() {
            let old = std::fs::read_to_string(&config_path).unwrap_or_default();
            bail!(
                "{} was written with another config (changed: {}); resume with the run's own config, or start a new run",
                ckpt.display(),
                describe_changes(&old, &cfg.to_toml())
            );
        }
        if state.global_batch != 0 && state.global_batch != global_batch {
            bail!(
                "{} was trained with a global batch of {} ({} ranks), this job has {global_batch} ({world} ranks): set training.global_batch_size to resume on another number of ranks",
                ckpt.display(),
                state.global_batch,
                state.world
            );
        }
    }
    if main {
        std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
        model::state_dict::write_atomic(&config_path, cfg.to_toml().as_bytes())?;
    }

    let seed = cfg.training.seed;
    <Ad<B> as Backend>::seed(device, splitmix64(seed ^ 0x1417));
    let mut model = MaxxVit::<Ad<B>>::new(&spec.cfg, &spec.args, device)?;
    let _ = model.num_params(); // materialise the lazy init now, from the init seed
    let mut opt = Optimizer::<Ad<B>>::new(cfg.optimizer.clone(), spec.cfg.embed_dim.len());
    let (mut epoch, mut batch_in_epoch, mut global_step) = (0u64, 0usize, 0u64);
    if let Some((ckpt, state)) = &start {
        model = load_safetensors(model, &ckpt.join("model.safetensors"), LoadMode::Strict)?.0;
        checkpoint::load_optimizer(ckpt, &mut opt, device)?;
        (epoch, batch_in_epoch, global_step) = (state.epoch, state.batches_in_epoch, state.global_step);
        tracing::info!(checkpoint = %ckpt.display(), global_step, epoch, "resumed");
    } else if let Some(init) = &cfg.model.init {
        model = setup::load_init(model, init)?;
    }
    model = broadcast_state(model, coll, false)?;
    ensure_same_start(coll, [global_step, epoch, batch_in_epoch as u64])?;
    let params: Vec<(String, usize)> = model
        .state_dict_keys()
        .into_iter()
        .filter(|k| k.kind == EntryKind::Parameter)
        .map(|k| (k.key, k.shape.iter().product()))
        .collect();
    let sync_buffers = world > 1 && model.has_batch_norm();
    let mut ema = cfg.training.ema.then(|| Ema::new(&model, cfg.training.ema_decay, cfg.training.ema_warmup));
    if let (Some(ema), Some((ckpt, _))) = (&mut ema, &start) {
        let file = ckpt.join("ema.safetensors");
        if file.is_file() {
            ema.model = load_safetensors(ema.model.clone(), &file, LoadMode::Strict)?.0;
        }
    }

    let micro_per_epoch = loaders.train.steps_per_epoch().context("training data has no known length")?;
    if micro_per_epoch == 0 {
        bail!("the training set is smaller than one global batch ({global_batch} samples)");
    }
    let accum = cfg.training.grad_accum_steps;
    let updates_per_epoch = micro_per_epoch.div_ceil(accum) as u64;
    let total_epochs = (cfg.schedule.epochs + cfg.schedule.cooldown_epochs) as u64;
    let sched = CosineSchedule::new(cfg.optimizer.lr, &cfg.schedule, updates_per_epoch);
    let max_steps = if cfg.training.max_steps > 0 { cfg.training.max_steps as u64 } else { u64::MAX };
    let a = &cfg.augmentation;
    let mixup = MixupConfig {
        mixup_alpha: a.mixup,
        cutmix_alpha: a.cutmix,
        cutmix_minmax: None,
        prob: a.mixup_prob,
        switch_prob: a.mixup_switch_prob,
        label_smoothing: a.label_smoothing,
    };
    let num_classes = loaders.num_classes;
    let summary = run_dir.join("summary.csv");
    let mut outcome = Outcome { global_step, metrics: None, last_checkpoint: None };
    let save =
        |model: &MaxxVit<Ad<B>>, ema: &Option<Ema<Ad<B>>>, opt: &Optimizer<Ad<B>>, st: TrainState| -> Result<PathBuf> {
            let name = ckpt_dir.join(format!("step-{:09}", st.global_step));
            if !main {
                return Ok(name);
            }
            let dir = checkpoint::save(&ckpt_dir, model, ema.as_ref().map(|e| &e.model), opt, st)?;
            checkpoint::prune(&ckpt_dir, cfg.checkpoint.keep_last, cfg.checkpoint.keep_best);
            Ok(dir)
        };
    let state_at = |global_step, epoch, batches_in_epoch, lr, train_loss, metrics| TrainState {
        global_step,
        epoch,
        batches_in_epoch,
        config_hash: cfg.hash(),
        global_batch,
        world,
        model_name: spec.name.clone(),
        num_classes,
        metrics,
        lr,
        train_loss,
        files: Default::default(),
    };

    while epoch < total_epochs && global_step < max_steps {
        let bar = progress_bar(&cfg, main, micro_per_epoch as u64, epoch, total_epochs);
        bar.set_position(batch_in_epoch as u64);
        let (mut loss_sum, mut loss_n) = (0.0f64, 0usize);
        let mut acc = GradientsAccumulator::<MaxxVit<Ad<B>>>::new();
        let mut in_group = 0usize;
        let started = Instant::now();
        let mut images_seen = 0usize;
        let mut accumulated = false;
        for batch in loaders.train.epoch(epoch, batch_in_epoch) {
            let mut batch = batch?;
            let b = batch.labels.len();
            // Micro-batches of the last update of an epoch may be fewer than `accum`.
            let group_size = accum.min(micro_per_epoch - (batch_in_epoch / accum) * accum);
            if b > 0 {
                let micro_index = epoch * micro_per_epoch as u64 + batch_in_epoch as u64;
                // Each rank draws its own dropout / drop-path masks (timm seeds seed + rank).
                <Ad<B> as Backend>::seed(
                    device,
                    splitmix64(seed ^ splitmix64(micro_index) ^ (rank as u64).wrapping_mul(0x9E37_79B9)),
                );
                let targets = if mixup.enabled() {
                    let mut rng = Rng::for_sample(seed, epoch, batch.step as u64, 2);
                    mix_batch(&mixup, &mut batch.f32, batch.shape, &batch.labels, num_classes, &mut rng)
                } else {
                    smoothed_targets(&batch.labels, num_classes, mixup.label_smoothing)
                };
                let x = Tensor::<Ad<B>, 4>::from_data(TensorData::new(batch.f32, batch.shape), device);
                let y = Tensor::<Ad<B>, 2>::from_data(TensorData::new(targets, [b, num_classes]), device);
                let loss = soft_cross_entropy(model.forward(x), y);
                let loss_value: f64 = loss.clone().into_scalar().elem();
                if !loss_value.is_finite() {
                    bail!(
                        "loss is {loss_value} at epoch {epoch}, update {global_step}: stopping before anything is saved (last good checkpoint: {})",
                        checkpoint::list(&ckpt_dir).first().map_or("none".into(), |p| p.display().to_string())
                    );
                }
                let grads = GradientsParams::from_grads(loss.div_scalar(group_size as f64).backward(), &model);
                acc.accumulate(&model, grads);
                accumulated = true;
                loss_sum += loss_value * b as f64;
                loss_n += b;
                images_seen += b;
            }
            if sync_buffers {
                model = broadcast_state(model, coll, true)?;
            }
            batch_in_epoch += 1;
            in_group += 1;
            bar.inc(1);
            if in_group < group_size {
                continue;
            }
            in_group = 0;

            // One optimizer update.
            let contributed = std::mem::take(&mut accumulated);
            let mut keyed = gather_grads(&model, &acc.grads());
            if all_reduce_grads(&mut keyed, &params, contributed, device, coll)? == 0 {
                continue; // every sample of this group was unreadable, on every rank
            }
            if cfg.optimizer.clip_grad > 0.0 {
                let norm = keyed.global_norm();
                if !norm.is_finite() {
                    bail!("gradient norm is {norm} at epoch {epoch}, update {global_step}: stopping before anything is saved");
                }
                let coef = cfg.optimizer.clip_grad / (norm + 1e-6);
                if coef < 1.0 {
                    keyed.scale(coef);
                }
            }
            let lr = sched.lr(global_step);
            model = opt.step(model, &keyed, lr);
            global_step += 1;
            if let Some(ema) = &mut ema {
                ema.update(&model, global_step);
            }
            let rate = images_seen as f64 / started.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("loss {:.4} lr {lr:.2e} {rate:.1} img/s", loss_sum / loss_n.max(1) as f64));
            if cfg.logging.log_interval > 0 && global_step % cfg.logging.log_interval as u64 == 0 {
                tracing::info!(
                    epoch,
                    step = global_step,
                    loss = loss_sum / loss_n.max(1) as f64,
                    lr,
                    img_per_s = rate,
                    "train"
                );
            }
            let end_of_epoch = batch_in_epoch >= micro_per_epoch;
            if global_step >= max_steps
                || (!end_of_epoch
                    && cfg.checkpoint.every_steps > 0
                    && global_step % cfg.checkpoint.every_steps as u64 == 0)
            {
                let st = state_at(global_step, epoch, batch_in_epoch, lr, loss_sum / loss_n.max(1) as f64, None);
                outcome.last_checkpoint = Some(save(&model, &ema, &opt, st)?);
            }
            if global_step >= max_steps {
                break;
            }
        }
        bar.finish_and_clear();
        let epoch_done = batch_in_epoch >= micro_per_epoch;
        let mut l = [loss_sum, loss_n as f64];
        coll.all_reduce_sum_f64(&mut l, "epoch loss")?;
        let train_loss = l[0] / l[1].max(1.0);
        let lr = sched.lr(global_step.saturating_sub(1));
        let validate_now = epoch_done
            && (cfg.training.val_interval > 0 && (epoch + 1) % cfg.training.val_interval as u64 == 0
                || epoch + 1 == total_epochs);
        let mut metrics = None;
        if let (true, Some(val)) = (validate_now || global_step >= max_steps, &loaders.val) {
            let mut sums = match &ema {
                Some(ema) => validate_sums(&ema.model, val, device)?,
                None => validate_sums(&model.valid(), val, device)?,
            };
            coll.all_reduce_sum_f64(&mut sums, "validation")?;
            let m = finish(sums);
            tracing::info!(epoch, top1 = m.top1, top5 = m.top5, loss = m.loss, ema = ema.is_some(), "validation");
            metrics = Some(m);
            outcome.metrics = Some(m);
        }
        if epoch_done {
            if main {
                append_summary(&summary, epoch, train_loss, metrics, lr)?;
                if let Err(e) = crate::plots::write(&summary, &run_dir.join("plots")) {
                    tracing::warn!("could not draw the curves: {e:#}");
                }
            }
            let st = state_at(global_step, epoch + 1, 0, lr, train_loss, metrics);
            outcome.last_checkpoint = Some(save(&model, &ema, &opt, st)?);
            epoch += 1;
            batch_in_epoch = 0;
        } else if metrics.is_some() {
            // Stopped mid-epoch at max_steps: refresh the last checkpoint's metrics.
            let st = state_at(global_step, epoch, batch_in_epoch, lr, train_loss, metrics);
            outcome.last_checkpoint = Some(save(&model, &ema, &opt, st)?);
        }
    }
    if let Some(n) = loaders.val.as_ref().map(|l| l.corrupt().count()).filter(|n| *n > 0) {
        tracing::warn!(skipped = n, "unreadable validation samples");
    }
    if loaders.train.corrupt().count() > 0 {
        tracing::warn!(skipped = loaders.train.corrupt().count(), "unreadable training samples");
    }
    outcome.global_step = global_step;
    Ok(outcome)
}

/// Every rank must resume where rank 0 does: one that found another checkpoint (a node without
/// the shared run directory, a copy that failed to verify) would otherwise train out of step.
fn ensure_same_start(coll: &mut dyn Collective, mine: [u64; 3]) -> Result<()> {
    if coll.world() == 1 {
        return Ok(());
    }
    let mut theirs = mine.map(|v| v as f64);
    let mut rank0 = [0f32; 6];
    // u64 → two exact f32 halves of 24 bits each covers any step count a run reaches.
    for (i, v) in mine.iter().enumerate() {
        rank0[2 * i] = (v >> 24) as f32;
        rank0[2 * i + 1] = (v & 0xFF_FFFF) as f32;
    }
    coll.broadcast(&mut rank0, "start position")?;
    for (i, t) in theirs.iter_mut().enumerate() {
        *t = (rank0[2 * i] as u64 * (1 << 24) + rank0[2 * i + 1] as u64) as f64;
    }
    let differs = theirs.iter().zip(mine).any(|(t, m)| *t as u64 != m);
    let mut count = [f64::from(u8::from(differs))];
    coll.all_reduce_sum_f64(&mut count, "start position check")?;
    if count[0] > 0.0 {
        bail!(
            "{} rank(s) would start elsewhere than rank 0 (rank 0: step {}, epoch {}, batch {}; rank {}: step {}, epoch {}, batch {}): every rank must see the same run directory",
            count[0],
            theirs[0],
            theirs[1],
            theirs[2],
            coll.rank(),
            mine[0],
            mine[1],
            mine[2]
        );
    }
    Ok(())
}

fn progress_bar(cfg: &RunConfig, main: bool, len: u64, epoch: u64, total: u64) -> ProgressBar {
    if !cfg.logging.progress || !main {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("epoch {}/{}", epoch + 1, total));
    bar
}
