//! The dispatch of a parsed command line to the commands. It lives in the library, not in
//! `main.rs`: the commands' backends (flex, wgpu fused and unfused, CUDA) are instantiated here,
//! once, and the tests that train call the same non-generic `train::run` instead of compiling a
//! second copy of the whole training step (a cold build's two largest units, BENCH.md "CI build").

use std::path::Path;

use anyhow::{bail, Result};

use super::{Cli, Command, DataCommand, ModelSelect};
use crate::config::{Precision, RunConfig};
use crate::device::{self, DeviceChoice};
use crate::{commands, with_backend};

/// Run a parsed command line; training commands set up their own logging (rank 0's `train.log`).
pub fn run(cli: Cli) -> Result<()> {
    if !matches!(cli.command, Command::Train { .. } | Command::Finetune { .. }) {
        super::logging::init_logging(None);
    }
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
            crate::plots::write(&run_dir)?;
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
            let args = crate::release::ReleaseArgs { source, out, ema, dtype, labels };
            crate::release::run(args)
        }
        Command::Data(DataCommand::Prepare { out, source, samples_per_shard, limit }) => {
            let source = source.unwrap_or_else(data::fashion_mnist::default_dir);
            commands::data::prepare(&source, &out, samples_per_shard, limit)
        }
        Command::Data(DataCommand::Bench { images, img_size, aa, eval, rounds }) => {
            commands::data::bench(commands::data::BenchArgs { images, img_size, auto_augment: aa, eval, rounds })
        }
        Command::Benchmark { census: true, select, batch_size, warmup, device, census_log, census_detail, .. } => {
            let log = census_log
                .unwrap_or_else(|| std::env::temp_dir().join(format!("maxxvit-census-{}.log", std::process::id())));
            commands::census::enable_kernel_log(&log, census_detail)?;
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
            if amp != Precision::F32 && shard != commands::golden::Shard::ALL {
                bail!("--shard splits the f32 check; --amp bf16 runs every case");
            }
            if no_fusion || and_unfused {
                return golden_check_unfused(device, amp, &dir, shard, and_unfused);
            }
            match amp {
                Precision::F32 => {
                    with_backend!(device, |B, dev| commands::golden::run::<B>(&dev, &dir, shard))
                }
                Precision::Bf16 => {
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
    amp: Precision,
    dir: &Path,
    shard: commands::golden::Shard,
    and_fused: bool,
) -> Result<()> {
    fn check<F: burn::tensor::backend::Backend, U: burn::tensor::backend::Backend>(
        fused: &F::Device,
        unfused: &U::Device,
        amp: Precision,
        dir: &Path,
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

fn train(cfg: RunConfig, resume: Option<crate::train::Resume>) -> Result<()> {
    use crate::dist::{self, Rendezvous};
    crate::setup::check_paths(&cfg)?;
    let rv = Rendezvous::from_env(|k| std::env::var(k).ok())?;
    // Rank 0 writes train.log; the launcher keeps every rank's console output.
    super::logging::init_logging((rv.rank == 0).then(|| cfg.run_dir().join("train.log")));
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
    let outcome = crate::train::run_on(device, cfg, resume, coll.as_mut())?;
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
