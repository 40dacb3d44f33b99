//! The run configuration: TOML file → `MAXXVIT_` environment (`__` nests) → `--set k=v`, read
//! with figment. Every section rejects unknown keys, and errors name the key path and file.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use data::mixup::MixupConfig;
use data::transform::TrainTransformConfig;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Run name: outputs go to `<output_dir>/<name>/`.
    pub name: String,
    pub output_dir: PathBuf,
    pub model: ModelSection,
    pub data: DataSection,
    pub augmentation: AugmentationSection,
    pub optimizer: OptimizerSection,
    pub schedule: ScheduleSection,
    pub training: TrainingSection,
    pub checkpoint: CheckpointSection,
    pub distributed: DistributedSection,
    pub logging: LoggingSection,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// A registered timm name (`maxxvitv2_rmlp_base_rw_224`), or empty with `config_file`.
    pub name: String,
    /// A model config file (JSON/TOML `MaxxVitCfg`, golden `model.json`, timm `config.json`).
    pub config_file: Option<PathBuf>,
    pub num_classes: usize,
    pub img_size: Option<usize>,
    pub drop_rate: f64,
    pub drop_path_rate: f64,
    /// Fine-tuning: weights to start from (a checkpoint directory or a timm safetensors file).
    pub init: Option<PathBuf>,
}

impl Default for ModelSection {
    fn default() -> Self {
        Self {
            name: "maxxvitv2_rmlp_base_rw_224".into(),
            config_file: None,
            num_classes: 1000,
            img_size: None,
            drop_rate: 0.0,
            drop_path_rate: 0.0,
            init: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    Folder,
    Wds,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    pub format: DataFormat,
    /// ImageFolder: the directory holding `train/` and `val/`. WebDataset: the directory with
    /// `_info.json` (or use `train_shards` / `val_shards`).
    pub root: PathBuf,
    pub train_split: String,
    pub val_split: String,
    /// WebDataset shard patterns (`train-{0000..1023}.tar|12129687`), overriding `_info.json`.
    pub train_shards: Option<String>,
    pub val_shards: Option<String>,
    /// A class-list file (one class per line), e.g. timm's `imagenet12k_synsets.txt`.
    pub class_list: Option<PathBuf>,
    pub workers: usize,
    pub prefetch: usize,
    pub shuffle_buffer: usize,
    /// Eval preprocessing; default from the model's pretrained cfg.
    pub crop_pct: Option<f64>,
    pub crop_mode: Option<String>,
    pub interpolation: Option<String>,
    pub mean: Option<[f64; 3]>,
    pub std: Option<[f64; 3]>,
    /// Images travel as `u8` and are normalised, erased and mixed on the device (timm's
    /// prefetcher); default: on for GPU backends, off on the CPU backend.
    pub normalize_on_device: Option<bool>,
}

impl Default for DataSection {
    fn default() -> Self {
        Self {
            format: DataFormat::Folder,
            root: PathBuf::from("data/imagenet"),
            train_split: "train".into(),
            val_split: "val".into(),
            train_shards: None,
            val_shards: None,
            class_list: None,
            workers: 4,
            prefetch: 2,
            shuffle_buffer: 8192,
            crop_pct: None,
            crop_mode: None,
            interpolation: None,
            mean: None,
            std: None,
            normalize_on_device: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentationSection {
    pub scale: [f64; 2],
    pub ratio: [f64; 2],
    pub hflip: f64,
    pub interpolation: String,
    pub auto_augment: String,
    pub color_jitter: f64,
    pub re_prob: f64,
    pub re_mode: String,
    pub re_count: usize,
    pub mixup: f64,
    pub cutmix: f64,
    pub mixup_prob: f64,
    pub mixup_switch_prob: f64,
    pub label_smoothing: f64,
}

impl Default for AugmentationSection {
    fn default() -> Self {
        let t = TrainTransformConfig::default();
        let m = MixupConfig::default();
        Self {
            scale: t.scale,
            ratio: t.ratio,
            hflip: t.hflip,
            interpolation: "random".into(),
            auto_augment: t.auto_augment,
            color_jitter: t.color_jitter,
            re_prob: t.re_prob,
            re_mode: t.re_mode,
            re_count: t.re_count,
            mixup: 0.0,
            cutmix: 0.0,
            mixup_prob: m.prob,
            mixup_switch_prob: m.switch_prob,
            label_smoothing: m.label_smoothing,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Adamw,
    Lamb,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerSection {
    pub kind: OptimizerKind,
    pub lr: f64,
    pub weight_decay: f64,
    pub betas: [f64; 2],
    pub eps: f64,
    /// Global-norm gradient clipping (timm `--clip-grad`); 0 disables.
    pub clip_grad: f64,
    /// Layer-wise LR decay (timm `--layer-decay`) over stem, stages, head; 0 disables.
    pub layer_decay: f64,
}

impl Default for OptimizerSection {
    fn default() -> Self {
        Self {
            kind: OptimizerKind::Adamw,
            lr: 1e-3,
            weight_decay: 0.05,
            betas: [0.9, 0.999],
            eps: 1e-8,
            clip_grad: 0.0,
            layer_decay: 0.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleSection {
    pub epochs: usize,
    pub warmup_epochs: f64,
    pub warmup_lr: f64,
    pub min_lr: f64,
    pub cooldown_epochs: usize,
}

impl Default for ScheduleSection {
    fn default() -> Self {
        Self { epochs: 300, warmup_epochs: 5.0, warmup_lr: 1e-5, min_lr: 0.0, cooldown_epochs: 0 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingSection {
    /// Per-rank batch size (per micro-step), used when `global_batch_size` is 0.
    pub batch_size: usize,
    /// Samples per micro-step over all ranks (each rank takes `global / world`). Set it to
    /// resume a run on another number of ranks with the same data order.
    pub global_batch_size: usize,
    pub grad_accum_steps: usize,
    pub seed: u64,
    pub ema: bool,
    pub ema_decay: f64,
    pub ema_warmup: bool,
    /// Validate every this many epochs (0: only at the end).
    pub val_interval: usize,
    /// Stop after this many optimizer steps (0: run the schedule to the end).
    pub max_steps: usize,
    pub device: String,
    /// `bf16`: matmuls and convolutions in bfloat16 from f32 master weights, like timm's
    /// `--amp --amp-dtype bfloat16` (model::autocast); `f32`: full precision. Left out of the
    /// written config when f32, so the config hash of runs from before this setting is unchanged.
    #[serde(skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
}

impl Precision {
    pub fn is_f32(&self) -> bool {
        *self == Self::F32
    }

    /// The dtype `model::autocast` computes matmuls and convolutions in.
    pub fn autocast_dtype(self) -> Option<burn::tensor::FloatDType> {
        match self {
            Self::F32 => None,
            Self::Bf16 => Some(burn::tensor::FloatDType::BF16),
        }
    }
}

impl Default for TrainingSection {
    fn default() -> Self {
        Self {
            batch_size: 128,
            global_batch_size: 0,
            grad_accum_steps: 1,
            seed: 42,
            ema: false,
            ema_decay: 0.9998,
            ema_warmup: false,
            val_interval: 1,
            max_steps: 0,
            device: "cpu".into(),
            precision: Precision::F32,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointSection {
    /// Save every this many optimizer steps (0: at epoch ends only).
    pub every_steps: usize,
    pub keep_last: usize,
    pub keep_best: usize,
}

impl Default for CheckpointSection {
    fn default() -> Self {
        Self { every_steps: 1000, keep_last: 3, keep_best: 3 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistributedSection {
    /// Seconds a collective may take before the job aborts.
    pub timeout_s: u64,
    /// `auto` (NCCL on CUDA, TCP on CPU), `nccl` or `tcp`.
    pub backend: String,
}

impl Default for DistributedSection {
    fn default() -> Self {
        Self { timeout_s: 600, backend: "auto".into() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingSection {
    pub log_interval: usize,
    pub progress: bool,
}

impl Default for LoggingSection {
    fn default() -> Self {
        Self { log_interval: 50, progress: true }
    }
}

impl RunConfig {
    /// File, then `MAXXVIT_*` environment, then `--set section.key=value` overrides.
    pub fn load(file: &Path, sets: &[String]) -> Result<Self> {
        if !file.is_file() {
            bail!("config file {} not found", file.display());
        }
        let mut figment = Figment::from(Serialized::defaults(RunConfig::default()))
            .merge(Toml::file(file))
            // `MAXXVIT_SECTION__KEY` is config (a misspelt section is an error); other `MAXXVIT_*`
            // variables without `__` (MAXXVIT_GOLDEN_DIR, …) belong to tools and tests.
            .merge(
                Env::prefixed("MAXXVIT_")
                    .filter(|k| k.as_str().contains("__") || ["name", "output_dir"].contains(&k.as_str()))
                    .split("__"),
            );
        for set in sets {
            let (key, value) =
                set.split_once('=').with_context(|| format!("--set {set}: expected section.key=value"))?;
            let value: toml::Value = toml::from_str(&format!("v = {value}"))
                .map(|t: toml::Table| t["v"].clone())
                .unwrap_or_else(|_| toml::Value::String(value.to_string()));
            figment = figment.merge(Serialized::global(key.trim(), value));
        }
        let mut cfg: RunConfig = figment.extract().map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        if cfg.name.is_empty() {
            cfg.name = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "run".into());
        }
        if cfg.output_dir.as_os_str().is_empty() {
            cfg.output_dir = PathBuf::from("runs");
        }
        cfg.validate().map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        let t = &self.training;
        if t.batch_size == 0 || t.grad_accum_steps == 0 {
            bail!("training.batch_size and training.grad_accum_steps must be positive");
        }
        if self.schedule.epochs == 0 {
            bail!("schedule.epochs must be positive");
        }
        if self.optimizer.lr <= 0.0 {
            bail!("optimizer.lr must be positive");
        }
        if (self.augmentation.mixup > 0.0 || self.augmentation.cutmix > 0.0) && t.batch_size % 2 == 1 {
            bail!("training.batch_size must be even with mixup/cutmix (samples pair with the reversed batch)");
        }
        if !["auto", "tcp", "nccl"].contains(&self.distributed.backend.as_str()) {
            bail!("distributed.backend = {:?}: use auto, tcp or nccl", self.distributed.backend);
        }
        if self.distributed.timeout_s == 0 {
            bail!("distributed.timeout_s must be positive");
        }
        Ok(())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }

    /// sha256 of what determines the run's result, recorded in every checkpoint. Settings that
    /// only say when to stop, save or log (and where the run directory lives) are left out, so
    /// a run can be resumed with a later `max_steps` or another checkpoint cadence.
    pub fn hash(&self) -> String {
        let mut identity = self.clone();
        identity.output_dir = PathBuf::new();
        identity.training.max_steps = 0;
        identity.checkpoint = CheckpointSection::default();
        identity.logging = LoggingSection::default();
        identity.distributed = DistributedSection::default();
        let digest = Sha256::digest(identity.to_toml().as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// This rank's batch size in a world of `world` ranks.
    pub fn per_rank_batch(&self, world: usize) -> Result<usize> {
        let g = self.training.global_batch_size;
        if g == 0 {
            return Ok(self.training.batch_size);
        }
        if g % world != 0 {
            bail!("training.global_batch_size {g} is not divisible by the {world} ranks");
        }
        let per_rank = g / world;
        if (self.augmentation.mixup > 0.0 || self.augmentation.cutmix > 0.0) && per_rank % 2 == 1 {
            bail!("training.global_batch_size {g} over {world} ranks gives {per_rank} per rank, which must be even with mixup/cutmix");
        }
        Ok(per_rank)
    }

    pub fn run_dir(&self) -> PathBuf {
        self.output_dir.join(&self.name)
    }
}
