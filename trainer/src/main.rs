//! `trainer`: the command-line entry point for MaxxViT-family models.

use trainer::{commands, device, model_spec, with_backend};

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};

use device::DeviceChoice;
use model_spec::ModelSpec;

#[derive(Parser)]
#[command(name = "trainer", version, about = "Train, evaluate and release timm MaxxViT-family models")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `--model NAME[.tag]` or `--model-config FILE`.
#[derive(Args)]
struct ModelSelect {
    /// A registered timm name, optionally with a pretrained tag (`maxvit_tiny_tf_224.in1k`).
    #[arg(long, conflicts_with = "model_config")]
    model: Option<String>,
    /// A model config file (JSON or TOML): a golden `model.json`, a bare `MaxxVitCfg`, or a
    /// timm `config.json`.
    #[arg(long)]
    model_config: Option<PathBuf>,
    /// Override the number of classes.
    #[arg(long)]
    num_classes: Option<usize>,
    /// Override the input size (square).
    #[arg(long)]
    img_size: Option<usize>,
}

impl ModelSelect {
    fn resolve(&self) -> Result<ModelSpec> {
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

#[derive(Subcommand)]
enum Command {
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
    /// Top-5 classes per input; `--save` writes logits, pre_logits and features.
    Predict {
        #[command(flatten)]
        select: ModelSelect,
        /// Weights in timm safetensors layout (loaded strictly).
        #[arg(long)]
        weights: PathBuf,
        /// An already preprocessed float tensor `input` [B, 3, H, W].
        #[arg(long, conflicts_with = "images")]
        tensor_input: Option<PathBuf>,
        /// Write `logits`, `pre_logits` and `features` to this safetensors file.
        #[arg(long)]
        save: Option<PathBuf>,
        /// Class names, one per line (line i = class i).
        #[arg(long)]
        labels: Option<PathBuf>,
        #[arg(long, default_value_t = 16)]
        batch_size: usize,
        /// cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: DeviceChoice,
        /// Image files (JPEG, PNG, WebP), preprocessed with the model's eval transform.
        images: Vec<PathBuf>,
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
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        #[arg(long, default_value_t = 5)]
        steps: usize,
        /// cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: DeviceChoice,
    },
}

#[derive(Subcommand)]
enum DataCommand {
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

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    if let Err(err) = run(Cli::parse()) {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Models { filter } => commands::models::run(filter.as_deref()),
        Command::Inspect { name, select } => {
            let spec = match name {
                Some(name) => ModelSelect { model: Some(name), ..select }.resolve()?,
                None => select.resolve()?,
            };
            commands::inspect::run(&spec)
        }
        Command::Predict { select, weights, tensor_input, save, labels, batch_size, device, images } => {
            let args = commands::predict::PredictArgs {
                spec: select.resolve()?,
                weights,
                images,
                tensor_input,
                save,
                labels,
                batch_size,
            };
            with_backend!(device, |B, dev| commands::predict::run::<B>(&dev, args))
        }
        Command::Data(DataCommand::Prepare { out, source, samples_per_shard, limit }) => {
            let source = source.unwrap_or_else(data::fashion_mnist::default_dir);
            commands::data::prepare(&source, &out, samples_per_shard, limit)
        }
        Command::Data(DataCommand::Bench { images, img_size, aa, eval, rounds }) => {
            commands::data::bench(commands::data::BenchArgs { images, img_size, auto_augment: aa, eval, rounds })
        }
        Command::Benchmark { select, batch_size, mode, warmup, steps, device } => {
            let args = commands::benchmark::BenchArgs { spec: select.resolve()?, batch_size, mode, warmup, steps };
            with_backend!(device, |B, dev| commands::benchmark::run::<B>(&dev, args))
        }
    }
}
