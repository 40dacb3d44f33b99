//! `trainer benchmark`: images/s of inference or forward+backward on random data, for ratios
//! against timm on the same machine (BENCH.md). Not a test.

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

pub struct BenchArgs {
    pub spec: ModelSpec,
    pub batch_size: usize,
    pub mode: Mode,
    pub warmup: usize,
    pub steps: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn run<B: Backend>(device: &B::Device, args: BenchArgs) -> Result<()> {
    if args.steps == 0 || args.batch_size == 0 {
        bail!("--steps and --batch-size must be positive");
    }
    B::seed(device, 0);
    let model = MaxxVit::<Autodiff<B>>::new(&args.spec.cfg, &args.spec.args, device)?;
    let [h, w] = args.spec.args.img_size;
    let (b, classes) = (args.batch_size, args.spec.args.num_classes.max(1));
    let x =
        Tensor::<Autodiff<B>, 4>::random([b, args.spec.args.in_chans, h, w], Distribution::Normal(0.0, 1.0), device);
    let target = Tensor::<Autodiff<B>, 1, Int>::random([b], Distribution::Uniform(0.0, classes as f64), device);
    let eval = (args.mode == Mode::Infer).then(|| model.valid());
    let mut times = Vec::with_capacity(args.steps);
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
                let grads = loss.backward();
                drop(grads);
            }
        }
        B::sync(device)?;
        let secs = start.elapsed().as_secs_f64();
        if step >= args.warmup {
            times.push(secs);
        }
        tracing::info!(step, secs, warmup = step < args.warmup, "step");
    }
    let med = median(times.clone());
    println!(
        "{{\"model\": \"{}\", \"backend\": \"{}\", \"mode\": \"{:?}\", \"batch\": {b}, \"img_size\": [{h}, {w}], \"steps\": {}, \"median_step_s\": {med:.4}, \"img_per_s\": {:.2}}}",
        args.spec.name,
        B::name(device),
        args.mode,
        times.len(),
        b as f64 / med
    );
    Ok(())
}
