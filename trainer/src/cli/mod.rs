//! The command line: clap's definitions of `trainer`'s subcommands and their arguments, and their
//! dispatch (`run`).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};

use crate::commands;
use crate::device::DeviceChoice;
use crate::model_spec::ModelSpec;
use crate::pretrained::Pretrained;

mod dispatch;
mod logging;

pub use dispatch::run;

#[derive(Parser)]
#[command(name = "trainer", version, about = "Train, evaluate and release timm MaxxViT-family models")]
pub struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// `--model NAME[.tag]` or `--model-config FILE`.
#[derive(Args)]
pub(crate) struct ModelSelect {
    /// A registered timm name, optionally with a pretrained tag (`maxvit_tiny_tf_224.in1k`).
    #[arg(long, conflicts_with = "model_config")]
    pub(crate) model: Option<String>,
    /// A model config file (JSON or TOML): a golden `model.json`, a bare `MaxxVitCfg`, or a
    /// timm `config.json`.
    #[arg(long)]
    pub(crate) model_config: Option<PathBuf>,
    /// Override the number of classes.
    #[arg(long)]
    pub(crate) num_classes: Option<usize>,
    /// Override the input size (square).
    #[arg(long)]
    pub(crate) img_size: Option<usize>,
}

impl ModelSelect {
    pub(crate) fn resolve(&self) -> Result<ModelSpec> {
        let mut spec = match (&self.model, &self.model_config) {
            (Some(name), None) => ModelSpec::from_name(name)?,
            (None, Some(path)) => ModelSpec::from_file(path)?,
            _ => bail!("give exactly one of --model NAME or --model-config FILE"),
        };
        if let Some(n) = self.num_classes {
            spec.args.num_classes = n;
        }
        if let Some(s) = self.img_size {
            spec.args.img_size = [s, s];
        }
        Ok(spec)
    }
}

/// The model and its weights: `--pretrained SOURCE`, or a model (`--model` / `--model-config`)
/// with `--weights FILE`.
#[derive(Args)]
pub(crate) struct WeightsSelect {
    /// Model and weights together, offline: `hf-hub:ORG/NAME` (the local Hugging Face cache), a
    /// hub snapshot directory (config.json + model.safetensors), or one of our releases.
    #[arg(long, conflicts_with_all = ["model", "model_config", "weights"])]
    pub(crate) pretrained: Option<String>,
    #[command(flatten)]
    pub(crate) select: ModelSelect,
    /// Weights in timm safetensors layout (loaded strictly).
    #[arg(long)]
    pub(crate) weights: Option<PathBuf>,
}

impl WeightsSelect {
    pub(crate) fn resolve(&self) -> Result<Pretrained> {
        let mut p = match (&self.pretrained, &self.weights) {
            (Some(source), _) => crate::pretrained::resolve(source)?,
            (None, Some(weights)) => {
                Pretrained { spec: self.select.resolve()?, weights: weights.clone(), label_names: None }
            }
            (None, None) => bail!("give --pretrained SOURCE, or --model/--model-config with --weights FILE"),
        };
        if let Some(s) = self.select.img_size {
            p.spec.args.img_size = [s, s];
        }
        Ok(p)
    }
}

/// `--config F [--set k=v]…`.
#[derive(Args)]
pub(crate) struct RunSelect {
    /// Run config (TOML).
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// Override a config key: `--set training.batch_size=64` (repeatable).
    #[arg(long = "set")]
    pub(crate) sets: Vec<String>,
}

impl RunSelect {
    pub(crate) fn load(&self, default: &str) -> Result<crate::config::RunConfig> {
        let path = self.config.clone().unwrap_or_else(|| PathBuf::from(default));
        crate::config::RunConfig::load(&path, &self.sets)
    }
}

fn parse_resume(s: &str) -> Result<crate::train::Resume, String> {
    Ok(if s == "auto" { crate::train::Resume::Auto } else { crate::train::Resume::Path(PathBuf::from(s)) })
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Pretrain (default config: configs/in12k_pretrain.toml).
    Train {
        #[command(flatten)]
        run: RunSelect,
        /// `auto` (newest good checkpoint of the run) or a checkpoint directory.
        #[arg(long, value_parser = parse_resume)]
        resume: Option<crate::train::Resume>,
    },
    /// Fine-tune from a checkpoint or released weights (default config: configs/in1k_finetune.toml).
    Finetune {
        #[command(flatten)]
        run: RunSelect,
        /// Weights to start from (overrides model.init): a checkpoint directory or safetensors file.
        #[arg(long)]
        init: Option<PathBuf>,
        #[arg(long, value_parser = parse_resume)]
        resume: Option<crate::train::Resume>,
    },
    /// Print the resolved run config (file + environment + --set) and its hash.
    Config {
        #[command(flatten)]
        run: RunSelect,
        /// Print only the run directory (for launch/train.sh).
        #[arg(long)]
        run_dir: bool,
    },
    /// Top-1 / top-5 / loss of a checkpoint on the config's validation set.
    Validate {
        #[command(flatten)]
        run: RunSelect,
        /// A checkpoint directory or a safetensors file.
        #[arg(long)]
        checkpoint: PathBuf,
        /// Use the checkpoint's EMA weights.
        #[arg(long)]
        ema: bool,
    },
    /// Write timm-loadable weights, config.json and a model card from a run or checkpoint.
    Release {
        /// A run directory (best checkpoint) or a checkpoint directory.
        source: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Release the EMA weights.
        #[arg(long)]
        ema: bool,
        /// f32 (default) or bf16.
        #[arg(long, default_value = "f32")]
        dtype: String,
        /// Class names, one per line, stored as label_names.
        #[arg(long)]
        labels: Option<PathBuf>,
    },
    /// Redraw a run's curves (`plots/*.png`, `*.svg`) from its summary.csv and metrics.csv.
    Plot {
        /// The run directory.
        run_dir: PathBuf,
    },
    /// List the registered models with parameters and GMACs at their default size.
    Models {
        /// Only names containing this string.
        filter: Option<String>,
    },
    /// Print a model's timm state-dict keys, shapes and dtypes.
    Inspect {
        /// Registered name (`name` or `name.tag`).
        name: Option<String>,
        #[command(flatten)]
        select: ModelSelect,
    },
    /// Top-5 classes per input (with class names); `--save` writes logits, pre_logits and features.
    Predict {
        #[command(flatten)]
        source: WeightsSelect,
        /// An already preprocessed float tensor `input` [B, 3, H, W].
        #[arg(long, conflicts_with = "images")]
        tensor_input: Option<PathBuf>,
        /// Write `logits`, `pre_logits` and `features` to this safetensors file.
        #[arg(long)]
        save: Option<PathBuf>,
        /// Class names, one per line (line i = class i); default: the config's, or ImageNet-1k's
        /// for a 1,000-class head.
        #[arg(long)]
        labels: Option<PathBuf>,
        #[arg(long, default_value_t = 16)]
        batch_size: usize,
        /// cpu, wgpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: DeviceChoice,
        /// Image files (JPEG, PNG, WebP), preprocessed with the model's eval transform.
        images: Vec<PathBuf>,
    },
    /// Feature maps of the stem and every stage (shapes printed; `--save` writes them).
    Features {
        #[command(flatten)]
        source: WeightsSelect,
        /// Write `stem`, `stages.0`, … [N, C, H, W] to this safetensors file.
        #[arg(long)]
        save: Option<PathBuf>,
        #[arg(long, default_value_t = 16)]
        batch_size: usize,
        #[arg(long, default_value = "cpu")]
        device: DeviceChoice,
        /// Image files (JPEG, PNG, WebP).
        images: Vec<PathBuf>,
    },
    /// Embeddings (pre-logits) of every image under a folder, to one safetensors file.
    Embed {
        #[command(flatten)]
        source: WeightsSelect,
        /// `embeddings` [N, D]; metadata `files` lists the images in row order.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 16)]
        batch_size: usize,
        #[arg(long, default_value = "cpu")]
        device: DeviceChoice,
        /// A folder of images (searched recursively; rows sorted by path).
        folder: PathBuf,
    },
    /// Data sets and input-pipeline throughput.
    #[command(subcommand)]
    Data(DataCommand),
    /// Images/s of forward+backward (train) or inference on random data.
    Benchmark {
        #[command(flatten)]
        select: ModelSelect,
        #[arg(long, default_value_t = 8)]
        batch_size: usize,
        #[arg(long, value_enum, default_value = "train")]
        mode: commands::benchmark::Mode,
        /// f32; bf16 (autocast: f32 weights, bf16 matmuls/convolutions, like timm --amp);
        /// bf16-pure (the whole model in bf16, CUDA only).
        #[arg(long, value_enum, default_value = "f32")]
        amp: commands::benchmark::Precision,
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        #[arg(long, default_value_t = 5)]
        steps: usize,
        /// cpu, wgpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: DeviceChoice,
        /// Instead of timing: the kernels one training step launches, by kind, for forward +
        /// loss + backward and for optimizer + EMA (wgpu or cuda; CubeCL's kernel log).
        #[arg(long)]
        census: bool,
        /// Where the census keeps CubeCL's kernel log (default: a file in the temp dir).
        #[arg(long, requires = "census")]
        census_log: Option<PathBuf>,
        /// Log every launch with its full kernel id (the ops a fused kernel holds, a binary op's
        /// operator, the launch grid) in the census log, to see which op a launch belongs to.
        #[arg(long, requires = "census")]
        census_detail: bool,
    },
    /// Every timm golden case (default: $MAXXVIT_GOLDEN_DIR or the repository's fixtures/golden) on a backend:
    /// eval outputs, train outputs, gradients and BatchNorm buffers within tolerance.
    GoldenCheck {
        #[arg(long)]
        dir: Option<PathBuf>,
        /// cpu, wgpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: DeviceChoice,
        /// f32: every tensor within the fixture tolerances; bf16: the train step under bf16
        /// autocast within timm's own bf16 spread of its f32 step.
        #[arg(long, value_enum, default_value = "f32")]
        amp: crate::config::Precision,
        /// The CubeCL backend without its fusion compiler (wgpu or cuda), to tell fusion
        /// faults from kernel faults.
        #[arg(long, conflicts_with = "and_unfused")]
        no_fusion: bool,
        /// Each case with fusion, then without it, in this one process (f32; wgpu or cuda): the
        /// two share the device's compiled kernels, which on lavapipe is most of the time.
        #[arg(long)]
        and_unfused: bool,
        /// Check only the cases PART, PART+COUNT, ... of the sorted case list, so COUNT
        /// processes share one check.
        #[arg(long, value_name = "PART/COUNT", default_value = "0/1")]
        shard: commands::golden::Shard,
    },
    /// Check and time this job's collective (NCCL on cuda, TCP on cpu), at any world size
    /// (RANK/WORLD_SIZE/MASTER_* as for training; 1 process if unset).
    CollectiveCheck {
        /// cpu (TCP) or cuda (NCCL; cuda means cuda:LOCAL_RANK).
        #[arg(long, default_value = "cpu")]
        device: DeviceChoice,
        /// f32 elements per timed all-reduce, repeatable (default: a 25 MB gradient bucket;
        /// 116000000 is maxxvitv2_rmlp_base_rw_224's 464 MB of gradients).
        #[arg(long, default_values_t = [25 * 1024 * 1024 / 4])]
        elems: Vec<usize>,
        #[arg(long, default_value_t = 20)]
        rounds: usize,
        #[arg(long, default_value_t = 120)]
        timeout_s: u64,
    },
}

#[derive(Subcommand)]
pub(crate) enum DataCommand {
    /// Write Fashion-MNIST as an ImageFolder of JPEGs and as WebDataset shards.
    Prepare {
        /// Output directory (gets imagefolder/, wds/ and classes.txt).
        #[arg(long)]
        out: PathBuf,
        /// The IDX files (Debian's dataset-fashion-mnist by default).
        #[arg(long)]
        source: Option<PathBuf>,
        #[arg(long, default_value_t = 2500)]
        samples_per_shard: usize,
        /// At most this many images per split.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Decode + transform throughput on one core, images/s (compare bench/timm_data_bench.py).
    Bench {
        /// A directory of JPEGs (e.g. from bench/make_bench_images.py).
        #[arg(long)]
        images: PathBuf,
        #[arg(long, default_value_t = 224)]
        img_size: usize,
        /// RandAugment spec; empty for none.
        #[arg(long, default_value = "rand-m9-mstd0.5-inc1")]
        aa: String,
        /// The eval transform instead of the train transform.
        #[arg(long)]
        eval: bool,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
}
