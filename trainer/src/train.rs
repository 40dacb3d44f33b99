//! The training loop (`trainer train` / `finetune`), split as torchtitan splits its trainer:
//! setup ([`Trainer::setup`]), the micro-step ([`Trainer::micro_step`]), the optimizer update
//! ([`Trainer::update`]), logging, validation and checkpoints. One process drives one device;
//! other ranks are reached only through the [`Collective`].
//!
//! Exact resume: everything random is a pure function of `(seed, epoch, sample)` or
//! `(seed, step)` — the data order and augmentation (see `data`), mixup, and the backend RNG
//! (dropout, drop path), reseeded before every micro-step — and checkpoints hold the weights,
//! the EMA, the optimizer moments and the loader position. So N steps, a kill and a resume
//! give the weights of an uninterrupted run, bit for bit on the CPU backend.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::backend::Autodiff;
use burn::module::{AutodiffModule, Module};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Tensor, TensorData};
use data::mixup::{plan_mix, smoothed_targets, Mix, MixupConfig};
use data::rng::{splitmix64, Rng};
use indicatif::{ProgressBar, ProgressStyle};
use model::state_dict::EntryKind;
use model::{load_safetensors, LoadMode, MaxxVit};

use crate::checkpoint::{self, Metrics, TrainState};
use crate::config::RunConfig;
use crate::device::DeviceChoice;
use crate::dist::ddp::{all_reduce_grads, broadcast_state};
use crate::dist::{Collective, Single};
use crate::ema::Ema;
use crate::metrics::{append_summary, finish, soft_cross_entropy, validate_sums};
use crate::model_spec::ModelSpec;
use crate::optim::{gather_grads, CosineSchedule, KeyedGrads, Optimizer};
use crate::setup::{self, Loaders};

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

/// Train in this process alone, on the chosen device's backend.
pub fn run(device: DeviceChoice, cfg: RunConfig, resume: Option<Resume>) -> Result<Outcome> {
    run_on(device, cfg, resume, &mut Single)
}

/// [`run_with`] on the chosen device's backend. The binary and the tests both train through
/// this, so the training step is compiled once per backend, here in the library (a cold build
/// compiled it in the binary and again in the training tests: BENCH.md "CI build").
pub fn run_on(
    device: DeviceChoice,
    cfg: RunConfig,
    resume: Option<Resume>,
    coll: &mut dyn Collective,
) -> Result<Outcome> {
    crate::with_backend!(device, |B, dev| run_with::<B>(&dev, cfg, resume, coll))
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
    // Train and validation forwards on this thread run under the configured precision, as
    // timm's train and validate both run inside `amp_autocast`.
    let _autocast = model::autocast::autocast(cfg.training.precision.autocast_dtype());
    model::layers::register_autodiff_ops::<B>();
    let mut t = Trainer::<B>::setup(device, cfg, resume, coll)?;
    while t.epoch < t.total_epochs && t.global_step < t.max_steps {
        t.train_epoch(coll)?;
    }
    t.finish()
}

type Ad<B> = Autodiff<B>;

/// Everything one rank's run holds: setup fills it, the epoch loop advances it.
struct Trainer<'d, B: Backend> {
    device: &'d B::Device,
    cfg: RunConfig,
    spec: ModelSpec,
    loaders: Loaders,
    model: MaxxVit<Ad<B>>,
    opt: Optimizer<Ad<B>>,
    ema: Option<Ema<Ad<B>>>,
    sched: CosineSchedule,
    mixup: MixupConfig,
    /// Trainable parameters (key, element count) in model order, for the gradient buckets.
    params: Vec<(String, usize)>,
    sync_buffers: bool,
    rank: usize,
    world: usize,
    main: bool,
    global_batch: usize,
    micro_per_epoch: usize,
    total_epochs: u64,
    max_steps: u64,
    epoch: u64,
    batch_in_epoch: usize,
    global_step: u64,
    losses: LossWindow<B>,
    outcome: Outcome,
}

/// Training loss summed on the device (loss·samples), read at the log interval and at the end
/// of an epoch: the micro-step never waits for the device.
struct LossWindow<B: Backend> {
    window: Option<Tensor<B, 1>>,
    window_samples: usize,
    epoch_sum: f64,
    epoch_samples: usize,
    images_since_log: usize,
    since: Instant,
}

impl<B: Backend> LossWindow<B> {
    fn new() -> Self {
        Self {
            window: None,
            window_samples: 0,
            epoch_sum: 0.0,
            epoch_samples: 0,
            images_since_log: 0,
            since: Instant::now(),
        }
    }

    fn add(&mut self, loss: Tensor<B, 1>, samples: usize) {
        let weighted = loss.mul_scalar(samples as f64);
        self.window = Some(match self.window.take() {
            Some(sum) => sum + weighted,
            None => weighted,
        });
        self.window_samples += samples;
        self.images_since_log += samples;
    }

    /// Mean loss of the window (one device read), folded into the epoch's sum.
    fn flush(&mut self) -> Option<f64> {
        let sum: f64 = self.window.take()?.into_scalar().elem();
        let n = std::mem::take(&mut self.window_samples);
        self.epoch_sum += sum;
        self.epoch_samples += n;
        Some(sum / n.max(1) as f64)
    }

    /// Images per second since the last call.
    fn rate(&mut self) -> f64 {
        let rate = self.images_since_log as f64 / self.since.elapsed().as_secs_f64().max(1e-9);
        (self.images_since_log, self.since) = (0, Instant::now());
        rate
    }

    /// Mean loss of the epoch so far (a device read; for mid-epoch checkpoints).
    fn epoch_mean_so_far(&mut self) -> f64 {
        self.flush();
        self.epoch_sum / self.epoch_samples.max(1) as f64
    }

    /// `[loss sum, samples]` of the epoch so far, for the all-reduce; resets the epoch.
    fn take_epoch(&mut self) -> [f64; 2] {
        self.flush();
        let out = [self.epoch_sum, self.epoch_samples as f64];
        (self.epoch_sum, self.epoch_samples) = (0.0, 0);
        out
    }
}

/// The training classes in label order, one per line, in the run directory.
pub const CLASSES_FILE: &str = "classes.txt";

impl<'d, B: Backend> Trainer<'d, B> {
    /// Model, optimizer, EMA and loaders; resumed from a checkpoint or initial weights; rank 0's
    /// state on every rank.
    fn setup(device: &'d B::Device, cfg: RunConfig, resume: Option<Resume>, coll: &mut dyn Collective) -> Result<Self> {
        let (rank, world, main) = (coll.rank(), coll.world(), coll.is_main());
        let run_dir = cfg.run_dir();
        let ckpt_dir = run_dir.join("checkpoints");
        let spec = setup::model_spec(&cfg)?;
        let output = crate::input::output_for::<B>(device, cfg.data.normalize_on_device);
        let loaders = setup::loaders(&cfg, &spec, rank, world, output)?;
        let global_batch = cfg.per_rank_batch(world)? * world;
        let start = resume_point(&cfg, &resume, &ckpt_dir, global_batch, world)?;
        if main {
            std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
            model::state_dict::write_atomic(&run_dir.join("config.toml"), cfg.to_toml().as_bytes())?;
            // The class names `release` stores as label_names, so predictions print names.
            if let Some(names) = &loaders.class_names {
                model::state_dict::write_atomic(&run_dir.join(CLASSES_FILE), (names.join("\n") + "\n").as_bytes())?;
            }
        }

        <Ad<B> as Backend>::seed(device, splitmix64(cfg.training.seed ^ 0x1417));
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
        let params = model
            .state_dict_keys()
            .into_iter()
            .filter(|k| k.kind == EntryKind::Parameter)
            .map(|k| (k.key, k.shape.iter().product()))
            .collect();
        let mut ema = cfg.training.ema.then(|| Ema::new(&model, cfg.training.ema_decay, cfg.training.ema_warmup));
        if let (Some(ema), Some((ckpt, _))) = (&mut ema, &start) {
            let file = ckpt.join("ema.safetensors");
            if file.is_file() {
                ema.set_model(load_safetensors(ema.model().clone(), &file, LoadMode::Strict)?.0);
            }
        }
        if main {
            crate::metrics::truncate_steps(&run_dir.join(crate::metrics::STEP_FILE), global_step)?;
        }

        let micro_per_epoch = loaders.train.steps_per_epoch().context("training data has no known length")?;
        if micro_per_epoch == 0 {
            bail!("the training set is smaller than one global batch ({global_batch} samples)");
        }
        let updates_per_epoch = micro_per_epoch.div_ceil(cfg.training.grad_accum_steps) as u64;
        let a = &cfg.augmentation;
        let mixup = MixupConfig {
            mixup_alpha: a.mixup,
            cutmix_alpha: a.cutmix,
            cutmix_minmax: None,
            prob: a.mixup_prob,
            switch_prob: a.mixup_switch_prob,
            label_smoothing: a.label_smoothing,
        };
        Ok(Self {
            device,
            sched: CosineSchedule::new(cfg.optimizer.lr, &cfg.schedule, updates_per_epoch),
            total_epochs: (cfg.schedule.epochs + cfg.schedule.cooldown_epochs) as u64,
            max_steps: if cfg.training.max_steps > 0 { cfg.training.max_steps as u64 } else { u64::MAX },
            sync_buffers: world > 1 && model.has_batch_norm(),
            outcome: Outcome { global_step, metrics: None, last_checkpoint: None },
            losses: LossWindow::new(),
            cfg,
            spec,
            loaders,
            model,
            opt,
            ema,
            mixup,
            params,
            rank,
            world,
            main,
            global_batch,
            micro_per_epoch,
            epoch,
            batch_in_epoch,
            global_step,
        })
    }

    /// One pass over the rest of the current epoch (or up to `max_steps`), then validation,
    /// `summary.csv` and the epoch's checkpoint.
    fn train_epoch(&mut self, coll: &mut dyn Collective) -> Result<()> {
        let bar = progress_bar(&self.cfg, self.main, self.micro_per_epoch as u64, self.epoch, self.total_epochs);
        bar.set_position(self.batch_in_epoch as u64);
        let accum = self.cfg.training.grad_accum_steps;
        let mut acc = GradientsAccumulator::<MaxxVit<Ad<B>>>::new();
        let (mut in_group, mut contributed) = (0usize, false);
        for batch in self.loaders.train.epoch(self.epoch, self.batch_in_epoch) {
            let batch = batch?;
            // Micro-batches of the last update of an epoch may be fewer than `accum`.
            let group_size = accum.min(self.micro_per_epoch - (self.batch_in_epoch / accum) * accum);
            if !batch.labels.is_empty() {
                let grads = self.micro_step(batch, group_size);
                acc.accumulate(&self.model, grads);
                contributed = true;
            }
            if self.sync_buffers {
                self.model = broadcast_state(self.model.clone(), coll, true)?;
            }
            self.batch_in_epoch += 1;
            in_group += 1;
            bar.inc(1);
            if in_group < group_size {
                continue;
            }
            in_group = 0;
            let grads = gather_grads(&self.model, &acc.grads());
            let Some(lr) = self.update(grads, std::mem::take(&mut contributed), coll)? else { continue };
            self.log_step(lr, &bar)?;
            let end_of_epoch = self.batch_in_epoch >= self.micro_per_epoch;
            let every = self.cfg.checkpoint.every_steps as u64;
            if self.global_step >= self.max_steps || (!end_of_epoch && every > 0 && self.global_step % every == 0) {
                let train_loss = self.losses.epoch_mean_so_far();
                self.checkpoint(lr, train_loss, None)?;
            }
            if self.global_step >= self.max_steps {
                break;
            }
        }
        bar.finish_and_clear();
        self.end_epoch(coll)
    }

    /// Forward, loss and backward of one micro-batch; the loss stays on the device.
    fn micro_step(&mut self, batch: data::loader::Batch, group_size: usize) -> GradientsParams {
        let (device, b, seed) = (self.device, batch.labels.len(), self.cfg.training.seed);
        let micro_index = self.epoch * self.micro_per_epoch as u64 + self.batch_in_epoch as u64;
        // Each rank draws its own dropout / drop-path masks (timm seeds seed + rank).
        let rank_salt = (self.rank as u64).wrapping_mul(0x9E37_79B9);
        <Ad<B> as Backend>::seed(device, splitmix64(seed ^ splitmix64(micro_index) ^ rank_salt));
        let num_classes = self.loaders.num_classes;
        let (mix, targets) = if self.mixup.enabled() {
            let mut rng = Rng::for_sample(seed, self.epoch, batch.step as u64, 2);
            let [_, _, h, w] = batch.shape;
            plan_mix(&self.mixup, &batch.labels, num_classes, [h, w], &mut rng)
        } else {
            (Mix::None, smoothed_targets(&batch.labels, num_classes, self.mixup.label_smoothing))
        };
        let normalization = self.loaders.train.pipeline().normalization();
        let x = crate::input::images::<Ad<B>>(batch, normalization, mix, device);
        let y = Tensor::<Ad<B>, 2>::from_data(TensorData::new(targets, [b, num_classes]), device);
        let loss = soft_cross_entropy(self.model.forward(x), y);
        self.losses.add(loss.clone().detach().inner(), b);
        GradientsParams::from_grads(loss.div_scalar(group_size as f64).backward(), &self.model)
    }

    /// One optimizer update: the gradient mean over ranks, the NaN guard and clipping on the
    /// global norm (the one device read of an update), AdamW/LAMB, EMA. `None`: no rank had a
    /// readable sample in this group, nothing was updated.
    fn update(
        &mut self,
        mut keyed: KeyedGrads<B>,
        contributed: bool,
        coll: &mut dyn Collective,
    ) -> Result<Option<f64>> {
        if all_reduce_grads(&mut keyed, &self.params, contributed, self.device, coll)? == 0 {
            return Ok(None);
        }
        let mut grads = self.opt.flatten(&self.model, keyed);
        let norm = grads.global_norm();
        if !norm.is_finite() {
            bail!(
                "gradient norm is {norm} at epoch {}, update {}: the loss or the weights are no longer finite; stopping before anything is saved (last good checkpoint: {})",
                self.epoch,
                self.global_step,
                checkpoint::list(&self.cfg.run_dir().join("checkpoints"))
                    .first()
                    .map_or("none".into(), |p| p.display().to_string())
            );
        }
        let clip = self.cfg.optimizer.clip_grad;
        if clip > 0.0 && clip / (norm + 1e-6) < 1.0 {
            grads.scale(clip / (norm + 1e-6));
        }
        let lr = self.sched.lr(self.global_step);
        self.model = self.opt.step(self.model.clone(), &grads, lr);
        self.global_step += 1;
        if let Some(ema) = &mut self.ema {
            ema.update(&self.model, &self.opt, self.global_step);
        }
        Ok(Some(lr))
    }

    /// At the log interval: the loss read from the device, `metrics.csv`, train.log, the bar.
    fn log_step(&mut self, lr: f64, bar: &ProgressBar) -> Result<()> {
        let every = self.cfg.logging.log_interval as u64;
        if every == 0 || self.global_step % every != 0 {
            return Ok(());
        }
        let Some(loss) = self.losses.flush() else { return Ok(()) };
        if !loss.is_finite() {
            bail!(
                "loss is {loss} at epoch {}, update {}: stopping before anything is saved",
                self.epoch,
                self.global_step
            );
        }
        let rate = self.losses.rate() * self.world as f64;
        bar.set_message(format!("loss {loss:.4} lr {lr:.2e} {rate:.1} img/s"));
        tracing::info!(epoch = self.epoch, step = self.global_step, loss, lr, img_per_s = rate, "train");
        if self.main {
            let row = crate::metrics::StepRow { step: self.global_step, epoch: self.epoch, loss, lr, img_per_s: rate };
            crate::metrics::append_step(&self.cfg.run_dir().join(crate::metrics::STEP_FILE), &row)?;
        }
        Ok(())
    }

    /// Validation at the configured epochs (and when stopping at `max_steps`), then
    /// `summary.csv`, the curves and the epoch's checkpoint.
    fn end_epoch(&mut self, coll: &mut dyn Collective) -> Result<()> {
        let epoch_done = self.batch_in_epoch >= self.micro_per_epoch;
        let mut l = self.losses.take_epoch();
        coll.all_reduce_sum_f64(&mut l, "epoch loss")?;
        let train_loss = l[0] / l[1].max(1.0);
        let lr = self.sched.lr(self.global_step.saturating_sub(1));
        let interval = self.cfg.training.val_interval as u64;
        let validate_now =
            epoch_done && (interval > 0 && (self.epoch + 1) % interval == 0 || self.epoch + 1 == self.total_epochs);
        let metrics = if validate_now || self.global_step >= self.max_steps { self.validate(coll)? } else { None };
        let run_dir = self.cfg.run_dir();
        if epoch_done {
            if self.main {
                append_summary(&run_dir.join("summary.csv"), self.epoch, train_loss, metrics, lr)?;
                if let Err(e) = crate::plots::write(&run_dir) {
                    tracing::warn!("could not draw the curves: {e:#}");
                }
            }
            self.epoch += 1;
            self.batch_in_epoch = 0;
            self.checkpoint(lr, train_loss, metrics)?;
        } else if metrics.is_some() {
            // Stopped mid-epoch at max_steps: refresh the last checkpoint's metrics.
            self.checkpoint(lr, train_loss, metrics)?;
        }
        Ok(())
    }

    /// top-1 / top-5 / loss of the EMA (else the model) over this rank's validation shard,
    /// summed over ranks.
    fn validate(&mut self, coll: &mut dyn Collective) -> Result<Option<Metrics>> {
        let Some(val) = &self.loaders.val else { return Ok(None) };
        let mut sums = match &self.ema {
            Some(ema) => validate_sums(ema.model(), val, self.device)?,
            None => validate_sums(&self.model.valid(), val, self.device)?,
        };
        coll.all_reduce_sum_f64(&mut sums, "validation")?;
        let m = finish(sums);
        tracing::info!(
            epoch = self.epoch,
            top1 = m.top1,
            top5 = m.top5,
            loss = m.loss,
            ema = self.ema.is_some(),
            "validation"
        );
        self.outcome.metrics = Some(m);
        Ok(Some(m))
    }

    /// A checkpoint at the current position (rank 0 writes; every rank records the name).
    fn checkpoint(&mut self, lr: f64, train_loss: f64, metrics: Option<Metrics>) -> Result<()> {
        let ckpt_dir = self.cfg.run_dir().join("checkpoints");
        let st = TrainState {
            global_step: self.global_step,
            epoch: self.epoch,
            batches_in_epoch: self.batch_in_epoch,
            config_hash: self.cfg.hash(),
            global_batch: self.global_batch,
            world: self.world,
            model_name: self.spec.name.clone(),
            num_classes: self.loaders.num_classes,
            metrics,
            lr,
            train_loss,
            files: Default::default(),
        };
        let name = ckpt_dir.join(format!("step-{:09}", st.global_step));
        self.outcome.last_checkpoint = Some(if self.main {
            let dir = checkpoint::save(&ckpt_dir, &self.model, self.ema.as_ref().map(|e| e.model()), &self.opt, st)?;
            checkpoint::prune(&ckpt_dir, self.cfg.checkpoint.keep_last, self.cfg.checkpoint.keep_best);
            dir
        } else {
            name
        });
        Ok(())
    }

    fn finish(mut self) -> Result<Outcome> {
        if let Some(n) = self.loaders.val.as_ref().map(|l| l.corrupt().count()).filter(|n| *n > 0) {
            tracing::warn!(skipped = n, "unreadable validation samples");
        }
        if self.loaders.train.corrupt().count() > 0 {
            tracing::warn!(skipped = self.loaders.train.corrupt().count(), "unreadable training samples");
        }
        self.outcome.global_step = self.global_step;
        Ok(self.outcome)
    }
}

/// The checkpoint to resume from (if any), refused when it was written with another config or
/// another global batch.
fn resume_point(
    cfg: &RunConfig,
    resume: &Option<Resume>,
    ckpt_dir: &Path,
    global_batch: usize,
    world: usize,
) -> Result<Option<(PathBuf, TrainState)>> {
    let start = match resume {
        Some(Resume::Auto) => checkpoint::newest_good(ckpt_dir),
        Some(Resume::Path(p)) => Some((p.clone(), checkpoint::verify(p)?)),
        None => None,
    };
    if let Some((ckpt, state)) = &start {
        if state.config_hash != cfg.hash() {
            let old = std::fs::read_to_string(cfg.run_dir().join("config.toml")).unwrap_or_default();
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
    Ok(start)
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
