//! `trainer benchmark`: images/s of inference or forward+backward on random data, for ratios
//! against timm on the same machine (BENCH.md). Not a test.
//!
//! Prints a table and one JSON line: median step time and img/s after warm-up, achieved GFLOP/s
//! (2·MACs per image forward, 3× that for forward+backward, timm's convention in its benchmark
//! script), and on CUDA the device memory in use after the steps (`cuMemGetInfo`: what CubeCL's
//! pool holds, which is what decides an out-of-memory).

use std::time::Instant;

use anyhow::{bail, Result};
use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Int, Tensor};
use model::MaxxVit;

use crate::model_spec::ModelSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Forward + backward (loss.backward()), no optimizer step.
    Train,
    /// Eval-mode forward.
    Infer,
}

/// Floating-point format of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Precision {
    F32,
    /// f32 weights, matmuls and convolutions in bf16 (model::autocast): timm's `--amp
    /// --amp-dtype bfloat16`, what training uses with `training.precision = "bf16"`.
    Bf16,
    /// The whole model in bf16, weights included (timm's `--model-dtype bfloat16`); CUDA only.
    Bf16Pure,
}

pub struct BenchArgs {
    pub spec: ModelSpec,
    pub batch_size: usize,
    pub mode: Mode,
    pub precision: Precision,
    pub warmup: usize,
    pub steps: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Device memory in use (bytes) where the backend can tell.
fn device_memory_used<B: Backend>(_device: &B::Device) -> Option<u64> {
    #[cfg(feature = "cuda")]
    if B::name(_device).to_lowercase().contains("cuda") {
        return cudarc::driver::result::mem_get_info().ok().map(|(free, total)| (total - free) as u64);
    }
    None
}

pub fn run<B: Backend>(device: &B::Device, args: BenchArgs) -> Result<()> {
    if args.steps == 0 || args.batch_size == 0 {
        bail!("--steps and --batch-size must be positive");
    }
    B::seed(device, 0);
    model::layers::register_autodiff_ops::<B>();
    let _autocast =
        model::autocast::autocast((args.precision == Precision::Bf16).then_some(burn::tensor::FloatDType::BF16));
    let model = MaxxVit::<Autodiff<B>>::new(&args.spec.cfg, &args.spec.args, device)?;
    let [h, w] = args.spec.args.img_size;
    let (b, classes) = (args.batch_size, args.spec.args.num_classes.max(1));
    let x =
        Tensor::<Autodiff<B>, 4>::random([b, args.spec.args.in_chans, h, w], Distribution::Normal(0.0, 1.0), device);
    let target = Tensor::<Autodiff<B>, 1, Int>::random([b], Distribution::Uniform(0.0, classes as f64), device);
    let eval = (args.mode == Mode::Infer).then(|| model.valid());
    let (mut times, mut forward, mut backward) = (vec![], vec![], vec![]);
    let mut memory: Option<u64> = None;
    for step in 0..args.warmup + args.steps {
        B::sync(device)?;
        let start = Instant::now();
        match &eval {
            Some(eval) => {
                let logits = eval.forward(x.clone().inner());
                let _ = logits.into_data();
            }
            None => {
                let logits = model.forward(x.clone());
                let loss = log_softmax(logits, 1).gather(1, target.clone().reshape([b, 1])).mean().neg();
                B::sync(device)?;
                let forward_s = start.elapsed().as_secs_f64();
                let grads = loss.backward();
                B::sync(device)?;
                memory = memory.max(device_memory_used::<B>(device));
                drop(grads);
                if step >= args.warmup {
                    forward.push(forward_s);
                    backward.push(start.elapsed().as_secs_f64() - forward_s);
                }
            }
        }
        B::sync(device)?;
        let secs = start.elapsed().as_secs_f64();
        if step >= args.warmup {
            times.push(secs);
        }
        memory = memory.max(device_memory_used::<B>(device));
        tracing::info!(step, secs, warmup = step < args.warmup, "step");
    }
    let med = median(times.clone());
    let img_per_s = b as f64 / med;
    let fwd_flops = 2.0 * model.macs([h, w]) as f64;
    let flops_per_img = if args.mode == Mode::Train { 3.0 * fwd_flops } else { fwd_flops };
    let gflop_s = flops_per_img * img_per_s / 1e9;
    let mem_gib = memory.map(|m| m as f64 / (1u64 << 30) as f64);
    println!(
        "{:<32} {:<6} {:<5} batch {:>4}  {:>9.2} img/s  {:>8.4} s/step  {:>9.1} GFLOP/s  memory {}",
        args.spec.name,
        format!("{:?}", args.mode).to_lowercase(),
        format!("{:?}", args.precision).to_lowercase(),
        b,
        img_per_s,
        med,
        gflop_s,
        mem_gib.map_or("n/a".into(), |g| format!("{g:.2} GiB"))
    );
    println!(
        "{}",
        serde_json::json!({
            "impl": "maxxvit-rs", "model": args.spec.name, "backend": B::name(device),
            "mode": format!("{:?}", args.mode).to_lowercase(),
            "precision": format!("{:?}", args.precision).to_lowercase(),
            "batch": b, "img_size": [h, w], "steps": times.len(), "median_step_s": med,
            "img_per_s": img_per_s, "gflop_per_img": flops_per_img / 1e9, "gflop_s": gflop_s,
            "device_memory_gib": mem_gib,
            "forward_s": (!forward.is_empty()).then(|| median(forward.clone())),
            "backward_s": (!backward.is_empty()).then(|| median(backward.clone())),
        })
    );
    Ok(())
}
