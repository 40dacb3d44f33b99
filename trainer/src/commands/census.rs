//! `trainer benchmark --census`: the kernels one training step launches on a CubeCL device
//! (wgpu here, CUDA on a GPU), by kind, for two phases: forward + loss + backward (the count
//! comparable with timm's dispatched aten ops, `bench/timm_opcount.py`; also split into forward
//! + loss and backward) and optimizer + EMA.
//!
//! CubeCL logs every launch with its time when its profiling logger is on; the census turns it
//! on (into a file) before the device starts, runs warm-up steps, then one step with the
//! device synchronised and the log read between the phases. Times are the device's own (on
//! lavapipe, a CPU's); names and counts are what a GPU runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use burn::backend::Autodiff;
use burn::cubecl::config::profiling::ProfilingLogLevel;
use burn::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};
use burn::optim::GradientsParams;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Int, Tensor};
use model::MaxxVit;

use crate::config::OptimizerSection;
use crate::ema::Ema;
use crate::model_spec::ModelSpec;
use crate::optim::{gather_grads, Optimizer};

/// Turn CubeCL's per-kernel profiling log on, into `path` (truncated); `detail`: each launch
/// with its full kernel id. Must run before the first CubeCL device is created; fails if
/// CubeCL's configuration was already read.
pub fn enable_kernel_log(path: &Path, detail: bool) -> Result<()> {
    let mut config = CubeClRuntimeConfig::default();
    config.profiling.logger.file = Some(path.to_path_buf());
    config.profiling.logger.append = false;
    config.profiling.logger.level = if detail { ProfilingLogLevel::Full } else { ProfilingLogLevel::Basic };
    std::panic::catch_unwind(|| CubeClRuntimeConfig::set(config))
        .map_err(|_| anyhow::anyhow!("CubeCL's configuration was set before the census could turn its kernel log on"))
}

/// One phase's launches: kind → (count, summed device time).
#[derive(Debug, Default, Clone)]
pub struct Phase {
    pub kinds: BTreeMap<String, (usize, Duration)>,
}

impl Phase {
    pub fn launches(&self) -> usize {
        self.kinds.values().map(|(n, _)| n).sum()
    }

    pub fn time(&self) -> Duration {
        self.kinds.values().map(|(_, t)| *t).sum()
    }
}

/// Parse a Rust `Debug` duration as CubeCL prints it (`1.348771ms`, `58.73µs`, `812ns`, `1.2s`).
fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (number, scale) = [("ns", 1e-9), ("µs", 1e-6), ("ms", 1e-3), ("s", 1.0)]
        .iter()
        .find_map(|(unit, scale)| text.strip_suffix(unit).map(|n| (n, *scale)))?;
    number.parse::<f64>().ok().map(|v| Duration::from_secs_f64(v * scale))
}

/// A kernel's kind, as the basic log names it: the detailed log's `path::to::Kind<Args>: id {`
/// becomes `Kind`.
fn kind_of(logged: &str) -> &str {
    let path = logged.split(['<', ' ']).next().unwrap_or(logged).trim_end_matches(':');
    path.rsplit("::").next().unwrap_or(path)
}

/// The launches in profiling-log text: lines `| <duration> | <kernel> | <runtime>` (or, in the
/// detailed log, `| <duration> | <kernel path>: <id> ...`).
pub fn parse_launches(text: &str) -> Phase {
    let mut phase = Phase::default();
    for line in text.lines() {
        let mut fields = line.split('|').map(str::trim);
        let (Some(""), Some(duration), Some(kind)) = (fields.next(), fields.next(), fields.next()) else { continue };
        let (Some(duration), false) = (parse_duration(duration), kind.is_empty()) else { continue };
        let entry = phase.kinds.entry(kind_of(kind).to_string()).or_default();
        entry.0 += 1;
        entry.1 += duration;
    }
    phase
}

/// Reads what the kernel log gained since the last read. CubeCL writes it from a background
/// task, so after a device sync the reader waits until the file stops growing.
struct LogCursor {
    path: PathBuf,
    offset: u64,
}

impl LogCursor {
    fn settled_len(&self) -> Result<u64> {
        let mut len = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
        let mut stable_since = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(30);
        while stable_since.elapsed() < Duration::from_millis(300) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            let now = std::fs::metadata(&self.path).map(|m| m.len()).unwrap_or(0);
            if now != len {
                (len, stable_since) = (now, Instant::now());
            }
        }
        Ok(len)
    }

    fn mark(&mut self) -> Result<()> {
        self.offset = self.settled_len()?;
        Ok(())
    }

    fn phase(&mut self) -> Result<Phase> {
        let end = self.settled_len()?;
        let bytes = std::fs::read(&self.path).with_context(|| format!("reading {}", self.path.display()))?;
        let text = String::from_utf8_lossy(&bytes[self.offset as usize..end as usize]).into_owned();
        self.offset = end;
        Ok(parse_launches(&text))
    }
}

pub struct CensusArgs {
    pub spec: ModelSpec,
    pub batch_size: usize,
    pub warmup: usize,
    pub log: PathBuf,
}

/// Warm-up steps, then one census step; prints the table and the JSON line.
pub fn run<B: Backend>(device: &B::Device, args: CensusArgs) -> Result<()> {
    if !crate::device::is_cubecl::<B>(device) {
        bail!("--census counts CubeCL kernel launches: use --device wgpu or cuda");
    }
    B::seed(device, 0);
    model::layers::register_autodiff_ops::<B>();
    let mut model = MaxxVit::<Autodiff<B>>::new(&args.spec.cfg, &args.spec.args, device)?;
    let mut opt = Optimizer::<Autodiff<B>>::new(OptimizerSection::default(), args.spec.cfg.embed_dim.len());
    let mut ema = Ema::new(&model, 0.9998, true);
    let [h, w] = args.spec.args.img_size;
    let (b, classes) = (args.batch_size, args.spec.args.num_classes.max(1));
    let x =
        Tensor::<Autodiff<B>, 4>::random([b, args.spec.args.in_chans, h, w], Distribution::Normal(0.0, 1.0), device);
    let target = Tensor::<Autodiff<B>, 1, Int>::random([b], Distribution::Uniform(0.0, classes as f64), device);
    let mut cursor = LogCursor { path: args.log.clone(), offset: 0 };
    let mut phases = vec![];
    for step in 0..=args.warmup {
        let census = step == args.warmup;
        B::sync(device)?;
        if census {
            cursor.mark()?;
        }
        let logits = model.forward(x.clone());
        let loss = log_softmax(logits, 1).gather(1, target.clone().reshape([b, 1])).mean().neg();
        B::sync(device)?;
        if census {
            phases.push(cursor.phase()?);
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        B::sync(device)?;
        if census {
            phases.push(cursor.phase()?);
        }
        // The update as training runs it: the global norm (clipping, NaN guard), AdamW, EMA.
        let flat = opt.flatten(&model, gather_grads(&model, &grads));
        let _norm = flat.global_norm();
        model = opt.step(model, &flat, 1e-3);
        ema.update(&model, &opt, step as u64 + 1);
        B::sync(device)?;
        if census {
            phases.push(cursor.phase()?);
        }
        tracing::info!(step, warmup = !census, "census step");
    }
    let [forward, backward, update] = <[Phase; 3]>::try_from(phases).expect("three phases");
    print(&args, B::name(device), &forward, &backward, &update);
    Ok(())
}

impl Phase {
    fn plus(&self, other: &Phase) -> Phase {
        let mut sum = Phase { kinds: self.kinds.clone() };
        for (kind, (n, t)) in &other.kinds {
            let entry = sum.kinds.entry(kind.clone()).or_default();
            entry.0 += n;
            entry.1 += *t;
        }
        sum
    }
}

fn print(args: &CensusArgs, backend: String, forward: &Phase, backward: &Phase, update: &Phase) {
    let step = &forward.plus(backward);
    println!(
        "{:<44} {:>8} {:>8} {:>8} {:>12}   {:>8} {:>12}",
        "kernel kind", "forward", "backward", "fwd+bwd", "time", "update", "time"
    );
    let mut kinds: Vec<&String> = step.kinds.keys().chain(update.kinds.keys()).collect();
    kinds.sort();
    kinds.dedup();
    kinds.sort_by_key(|k| {
        std::cmp::Reverse(step.kinds.get(*k).map_or(0, |v| v.0) + update.kinds.get(*k).map_or(0, |v| v.0))
    });
    let cell = |p: &Phase, k: &str| p.kinds.get(k).map_or((0, Duration::ZERO), |v| *v);
    for kind in &kinds {
        let ((n1, t1), (n2, t2)) = (cell(step, kind), cell(update, kind));
        let (f, b) = (cell(forward, kind).0, cell(backward, kind).0);
        println!("{kind:<44} {f:>8} {b:>8} {n1:>8} {:>12.3?}   {n2:>8} {:>12.3?}", t1, t2);
    }
    println!(
        "{:<44} {:>8} {:>8} {:>8} {:>12.3?}   {:>8} {:>12.3?}",
        "total",
        forward.launches(),
        backward.launches(),
        step.launches(),
        step.time(),
        update.launches(),
        update.time()
    );
    let by_kind = |p: &Phase| -> serde_json::Value {
        p.kinds
            .iter()
            .map(|(k, (n, t))| (k.clone(), serde_json::json!({"count": n, "time_s": t.as_secs_f64()})))
            .collect()
    };
    println!(
        "{}",
        serde_json::json!({
            "census": "kernels", "model": args.spec.name, "backend": backend, "batch": args.batch_size,
            "img_size": args.spec.args.img_size, "kernels_per_step": step.launches(),
            "kernels_forward": forward.launches(), "kernels_backward": backward.launches(),
            "kernels_optimizer": update.launches(), "time_per_step_s": step.time().as_secs_f64(),
            "time_optimizer_s": update.time().as_secs_f64(),
            "by_kind": {"forward_backward": by_kind(step), "optimizer_ema": by_kind(update)},
        })
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cubecl_profile_lines() {
        let log = "[START_KERNEL_COMPILATION]\nname: x\n| 1.348771ms | CopyKernel | WgpuRuntime\n| 58.73µs    | CopyKernel | WgpuRuntime\n| 812ns | MatmulEntry | CudaRuntime\nnot a launch | here\n";
        let phase = parse_launches(log);
        assert_eq!(phase.launches(), 3);
        assert_eq!(phase.kinds["CopyKernel"].0, 2);
        assert_eq!(
            phase.kinds["CopyKernel"].1,
            Duration::from_secs_f64(1.348771e-3) + Duration::from_secs_f64(58.73e-6)
        );
        assert_eq!(phase.kinds["MatmulEntry"].1, Duration::from_nanos(812));
    }

    #[test]
    fn parses_detailed_profile_lines_into_the_same_kinds() {
        let log = "| 423.665µs  | burn_cubecl::kernel::binary::kernel_binop::KernelBinop<burn_cubecl::kernel::binary::MulOp, cubecl_wgpu::runtime::WgpuRuntime>: KernelBinopInfo {\n    n: 4,\n} CubeCount (6, 1, 1)\n| 1ms | cubecl_std::tensor::contiguous::base::copy_kernel::CopyKernel<cubecl_wgpu::runtime::WgpuRuntime>: CopyKernelInfo {\n| 2ms | plain::Kernel: KernelInfo {\n";
        let phase = parse_launches(log);
        assert_eq!(phase.launches(), 3);
        assert_eq!(phase.kinds.keys().collect::<Vec<_>>(), ["CopyKernel", "Kernel", "KernelBinop"]);
    }
}
