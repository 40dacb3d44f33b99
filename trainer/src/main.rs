//! `trainer`: the command-line entry point for MaxxViT-family models.

use trainer::{commands, device, with_backend};

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Parser;

use device::DeviceChoice;

mod cli;

use cli::{Cli, Command, DataCommand, ModelSelect};

/// A log file opened (with its directory) at the first line written, so a run that fails
/// before it starts leaves no run directory behind.
struct LazyLogFile {
    path: PathBuf,
    file: std::sync::Mutex<Option<std::fs::File>>,
}

impl std::io::Write for &LazyLogFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut file = self.file.lock().unwrap();
        if file.is_none() {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            *file = Some(std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?);
        }
        file.as_mut().unwrap().write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.lock().unwrap().as_mut().map_or(Ok(()), |f| f.flush())
    }
}

/// Console logging, plus `<run>/train.log` for training runs.
fn init_logging(log_file: Option<PathBuf>) {
    use tracing_subscriber::prelude::*;
    let filter = || tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let console = tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(std::io::stderr).with_filter(filter());
    let file = log_file.map(|path| {
        let sink: &'static LazyLogFile = Box::leak(Box::new(LazyLogFile { path, file: std::sync::Mutex::new(None) }));
        tracing_subscriber::fmt::layer().with_ansi(false).with_writer(move || sink).with_filter(filter())
    });
    tracing_subscriber::registry().with(console).with(file).init();
}

fn main() {
    keep_freed_memory_mapped();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Train { .. } | Command::Finetune { .. }) {
        init_logging(None);
    }
    if let Err(err) = run(cli) {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

/// glibc hands every freed block over 128 KiB (a decoded image, an activation) back to the OS
/// and page-faults it in again on the next allocation: ~5 % of the input pipeline's time and
/// more of a CPU train step (BENCH.md). Keep blocks up to 32 MiB in the heap, unless the user set
/// glibc's own environment knobs.
fn keep_freed_memory_mapped() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() && std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_none() {
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        }
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
        Command::Predict { source, tensor_input, save, labels, batch_size, device, images } => {
            let p = source.resolve()?;
            let args = commands::predict::PredictArgs {
                spec: p.spec,
                weights: p.weights,
                images,
                tensor_input,
                save,
                labels,
                label_names: p.label_names,
                batch_size,
            };
            with_backend!(device, |B, dev| commands::predict::run::<B>(&dev, args))
        }
        Command::Plot { run_dir } => {
            trainer::plots::write(&run_dir)?;
            println!("wrote {}", run_dir.join("plots").display());
            Ok(())
        }
        Command::Features { source, save, batch_size, device, images } => {
            let p = source.resolve()?;
            let args = commands::features::FeaturesArgs { spec: p.spec, weights: p.weights, images, save, batch_size };
            with_backend!(device, |B, dev| commands::features::run::<B>(&dev, args).map(|_| ()))
        }
        Command::Embed { source, out, batch_size, device, folder } => {
            let p = source.resolve()?;
            let args = commands::embed::EmbedArgs { spec: p.spec, weights: p.weights, folder, out, batch_size };
            with_backend!(device, |B, dev| commands::embed::run::<B>(&dev, args).map(|_| ()))
        }
        Command::Train { run, resume } => train(run.load("configs/in12k_pretrain.toml")?, resume),
        Command::Finetune { run, init, resume } => {
            let mut cfg = run.load("configs/in1k_finetune.toml")?;
            if init.is_some() {
                cfg.model.init = init;
            }
            if cfg.model.init.is_none() {
                bail!("fine-tuning needs initial weights: --init CHECKPOINT_OR_SAFETENSORS or model.init");
            }
            train(cfg, resume)
        }
        Command::Config { run, run_dir } => {
            let cfg = run.load("configs/in12k_pretrain.toml")?;
            if run_dir {
                println!("{}", cfg.run_dir().display());
                return Ok(());
            }
            println!("{}# config hash: {}", cfg.to_toml(), cfg.hash());
            Ok(())
        }
        Command::Validate { run, checkpoint, ema } => {
            let cfg = run.load("configs/in1k_finetune.toml")?;
            let device: DeviceChoice = cfg.training.device.parse()?;
            with_backend!(device, |B, dev| commands::validate::run::<B>(&dev, &cfg, &checkpoint, ema))
        }
        Command::Release { source, out, ema, dtype, labels } => {
            let dtype = match dtype.as_str() {
                "f32" => model::SaveDtype::F32,
                "bf16" => model::SaveDtype::BF16,
                "f16" => model::SaveDtype::F16,
                other => bail!("--dtype {other}: use f32, bf16 or f16"),
            };
            let args = trainer::release::ReleaseArgs { source, out, ema, dtype, labels };
            trainer::release::run::<burn::backend::Flex>(&Default::default(), args)
        }
        Command::Data(DataCommand::Prepare { out, source, samples_per_shard, limit }) => {
            let source = source.unwrap_or_else(data::fashion_mnist::default_dir);
            commands::data::prepare(&source, &out, samples_per_shard, limit)
        }
        Command::Data(DataCommand::Bench { images, img_size, aa, eval, rounds }) => {
            commands::data::bench(commands::data::BenchArgs { images, img_size, auto_augment: aa, eval, rounds })
        }
        Command::Benchmark { census: true, select, batch_size, warmup, device, census_log, .. } => {
            let log = census_log
                .unwrap_or_else(|| std::env::temp_dir().join(format!("maxxvit-census-{}.log", std::process::id())));
            commands::census::enable_kernel_log(&log)?;
            let args = commands::census::CensusArgs { spec: select.resolve()?, batch_size, warmup, log };
            with_backend!(device, |B, dev| commands::census::run::<B>(&dev, args))
        }
        Command::Benchmark { select, batch_size, mode, amp, warmup, steps, device, .. } => {
            use commands::benchmark::{run, BenchArgs, Precision};
            let args = BenchArgs { spec: select.resolve()?, batch_size, mode, precision: amp, warmup, steps };
            match (amp, device) {
                (Precision::F32 | Precision::Bf16, _) => with_backend!(device, |B, dev| run::<B>(&dev, args)),
                #[cfg(feature = "cuda")]
                (Precision::Bf16Pure, DeviceChoice::Cuda(i)) => {
                    device::check_cuda(i)?;
                    run::<burn::backend::Cuda<burn::tensor::bf16>>(&burn::backend::cuda::CudaDevice::new(i), args)
                }
                (Precision::Bf16Pure, _) => {
                    bail!("--amp bf16-pure needs --device cuda (and a binary built with --features cuda)")
                }
            }
        }
        Command::GoldenCheck { dir, device, amp, no_fusion, and_unfused, shard } => {
            let dir = dir.unwrap_or_else(model::golden::golden_dir);
            if amp != trainer::config::Precision::F32 && shard != commands::golden::Shard::ALL {
                bail!("--shard splits the f32 check; --amp bf16 runs every case");
            }
            if no_fusion || and_unfused {
                return golden_check_unfused(device, amp, &dir, shard, and_unfused);
            }
            match amp {
                trainer::config::Precision::F32 => {
                    with_backend!(device, |B, dev| commands::golden::run::<B>(&dev, &dir, shard))
                }
                trainer::config::Precision::Bf16 => {
                    with_backend!(device, |B, dev| commands::golden::run_bf16::<B>(&dev, &dir))
                }
            }
        }
        Command::CollectiveCheck { device, elems, rounds, timeout_s } => {
            let device = commands::collective::rank_device(device)?;
            let args = commands::collective::CheckArgs { device, elems, rounds, timeout_s };
            with_backend!(device, |B, dev| commands::collective::run::<B>(&dev, args))
        }
    }
}

/// `golden-check --no-fusion`: the same check on the bare CubeCL backend; `--and-unfused`: on
/// the fused backend, then the bare one, case by case.
fn golden_check_unfused(
    device: DeviceChoice,
    amp: trainer::config::Precision,
    dir: &std::path::Path,
    shard: commands::golden::Shard,
    and_fused: bool,
) -> Result<()> {
    use trainer::config::Precision;
    fn check<F: burn::tensor::backend::Backend, U: burn::tensor::backend::Backend>(
        fused: &F::Device,
        unfused: &U::Device,
        amp: Precision,
        dir: &std::path::Path,
        shard: commands::golden::Shard,
        and_fused: bool,
    ) -> Result<()> {
        match (amp, and_fused) {
            (Precision::F32, false) => commands::golden::run::<U>(unfused, dir, shard),
            (Precision::F32, true) => commands::golden::run_fused_and_unfused::<F, U>(fused, unfused, dir, shard),
            (Precision::Bf16, false) => commands::golden::run_bf16::<U>(unfused, dir),
            (Precision::Bf16, true) => bail!("--and-unfused checks f32; run --amp bf16 once per backend"),
        }
    }
    match device {
        DeviceChoice::Cpu => {
            bail!("--no-fusion / --and-unfused: the cpu backend has no fusion compiler; use --device wgpu or cuda")
        }
        #[cfg(feature = "wgpu")]
        DeviceChoice::Wgpu => {
            device::check_wgpu()?;
            let dev = burn::backend::wgpu::WgpuDevice::DefaultDevice;
            check::<burn::backend::Wgpu, device::WgpuUnfused>(&dev, &dev, amp, dir, shard, and_fused)
        }
        #[cfg(feature = "cuda")]
        DeviceChoice::Cuda(i) => {
            device::check_cuda(i)?;
            let dev = burn::backend::cuda::CudaDevice::new(i);
            check::<burn::backend::Cuda, device::CudaUnfused>(&dev, &dev, amp, dir, shard, and_fused)
        }
        #[allow(unreachable_patterns)]
        other => bail!("--device {other:?}: this binary was built without that backend"),
    }
}

fn train(cfg: trainer::config::RunConfig, resume: Option<trainer::train::Resume>) -> Result<()> {
    use trainer::dist::{self, Rendezvous};
    trainer::setup::check_paths(&cfg)?;
    let rv = Rendezvous::from_env(|k| std::env::var(k).ok())?;
    // Rank 0 writes train.log; the launcher keeps every rank's console output.
    init_logging((rv.rank == 0).then(|| cfg.run_dir().join("train.log")));
    let _rank_span = (rv.world > 1).then(|| tracing::info_span!("rank", r = rv.rank).entered());
    let mut device: DeviceChoice = cfg.training.device.parse()?;
    // A bare `cuda` means this process's GPU: cuda:LOCAL_RANK (torchrun), or cuda:0 when the
    // scheduler already narrowed CUDA_VISIBLE_DEVICES to one GPU (SLURM --gpus-per-task=1).
    if cfg.training.device == "cuda" {
        let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
        let one_visible = visible.is_some_and(|v| !v.trim().is_empty() && !v.contains(','));
        device = DeviceChoice::Cuda(if one_visible { 0 } else { rv.local_rank });
    }
    let ordinal = device.cuda_ordinal();
    if let Some(index) = ordinal {
        device::check_cuda(index)?;
    }
    let mut coll = dist::connect(&rv, &cfg, ordinal)?;
    if rv.world > 1 {
        tracing::info!(rank = rv.rank, world = rv.world, local_rank = rv.local_rank, device = ?device, "joined the job");
    }
    let outcome = with_backend!(device, |B, dev| trainer::train::run_with::<B>(&dev, cfg, resume, coll.as_mut()))?;
    if rv.rank != 0 {
        return Ok(());
    }
    match outcome.metrics {
        Some(m) => println!(
            "done: {} steps, val top-1 {:.2} %, top-5 {:.2} %, loss {:.4}",
            outcome.global_step, m.top1, m.top5, m.loss
        ),
        None => println!("done: {} steps", outcome.global_step),
    }
    if let Some(ckpt) = outcome.last_checkpoint {
        println!("last checkpoint: {}", ckpt.display());
    }
    Ok(())
}
