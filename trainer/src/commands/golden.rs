//! `trainer golden-check`: every timm golden case on the chosen backend (the CUDA parity check of
//! the GPU machine, where there is no `cargo test`), within the fixture README's tolerances.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use model::golden::{case_dirs, GoldenCase};
use model::golden_check::{autocast_deviation, check_case, CaseReport, BF16_GRADS_TOL, BF16_LOGITS_TOL};

/// Which of the sorted cases one process checks: `index % count == part` (`--shard part/count`),
/// so that several processes share the cases of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub part: usize,
    pub count: usize,
}

impl Shard {
    pub const ALL: Shard = Shard { part: 0, count: 1 };

    fn select(self, dirs: Vec<PathBuf>) -> Vec<PathBuf> {
        dirs.into_iter().enumerate().filter(|(i, _)| i % self.count == self.part).map(|(_, d)| d).collect()
    }
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let parse = || -> Option<Shard> {
            let (part, count) = s.split_once('/')?;
            let (part, count) = (part.trim().parse().ok()?, count.trim().parse().ok()?);
            (count > 0 && part < count).then_some(Shard { part, count })
        };
        parse().ok_or_else(|| format!("'{s}': expected PART/COUNT with PART < COUNT (e.g. 0/2)"))
    }
}

/// One way of running a case: a label ("" for the only one) and the check.
pub type Pass<'a> = (&'a str, &'a dyn Fn(&GoldenCase) -> Result<CaseReport>);

/// Every case of `dir` (of `shard`) through each of `passes` in turn, case by case, so that
/// passes on one device share its compiled kernels (on lavapipe, pipeline builds are nearly all
/// of a check's time).
pub fn run_passes(dir: &Path, shard: Shard, passes: &[Pass]) -> Result<()> {
    let dirs = case_dirs(dir).with_context(|| format!("reading golden cases under {}", dir.display()))?;
    if dirs.is_empty() {
        bail!("no golden cases under {}", dir.display());
    }
    let dirs = shard.select(dirs);
    let mut failures = vec![];
    let (mut worst_output, mut worst_grad, mut checked) = (0f64, 0f64, 0usize);
    for case_dir in &dirs {
        let case = GoldenCase::load(case_dir)?;
        for (label, check) in passes {
            let started = Instant::now();
            let report = check(&case)?;
            println!(
                "{:<28} {:<8} {:>4} tensors  worst output {:.1e}  worst grad {:.1e}  {:>6.2}s  {}",
                case.name,
                label,
                report.checked,
                report.worst_output,
                report.worst_grad,
                started.elapsed().as_secs_f64(),
                if report.failures.is_empty() { "ok" } else { "FAILED" }
            );
            worst_output = worst_output.max(report.worst_output);
            worst_grad = worst_grad.max(report.worst_grad);
            checked += report.checked;
            let tag = |f: String| if label.is_empty() { f } else { format!("[{label}] {f}") };
            failures.extend(report.failures.into_iter().map(tag));
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "check": "golden", "cases": dirs.len(), "passes": passes.len(), "tensors": checked,
            "failures": failures.len(), "worst_output_rel_l2": worst_output, "worst_grad_rel_l2": worst_grad,
        })
    );
    if !failures.is_empty() {
        bail!("{} of {checked} golden tensors outside tolerance:\n{}", failures.len(), failures.join("\n"));
    }
    Ok(())
}

/// Every case on `B`.
pub fn run<B: Backend>(device: &B::Device, dir: &Path, shard: Shard) -> Result<()> {
    run_passes(dir, shard, &[("", &|case: &GoldenCase| Ok(check_case::<Autodiff<B>>(case, device)?))])
}

/// Every case on the fused backend `F`, then on its unfused twin `U` (the same device).
pub fn run_fused_and_unfused<F: Backend, U: Backend>(
    fused: &F::Device,
    unfused: &U::Device,
    dir: &Path,
    shard: Shard,
) -> Result<()> {
    run_passes(
        dir,
        shard,
        &[
            ("fused", &|case: &GoldenCase| Ok(check_case::<Autodiff<F>>(case, fused)?)),
            ("unfused", &|case: &GoldenCase| Ok(check_case::<Autodiff<U>>(case, unfused)?)),
        ],
    )
}

/// Every golden case's train step under bf16 autocast against timm's f32 step, bounded by the
/// spread of timm's own bf16 autocast (the CPU test `model/tests/autocast.rs` does the same).
pub fn run_bf16<B: Backend>(device: &B::Device, dir: &Path) -> Result<()> {
    let dirs = case_dirs(dir).with_context(|| format!("reading golden cases under {}", dir.display()))?;
    if dirs.is_empty() {
        bail!("no golden cases under {}", dir.display());
    }
    let mut failures = vec![];
    let (mut worst_logits, mut worst_grads) = (0f64, 0f64);
    for case_dir in &dirs {
        let case = GoldenCase::load(case_dir)?;
        let started = Instant::now();
        let d = autocast_deviation::<Autodiff<B>>(&case, device, burn::tensor::FloatDType::BF16)?;
        let ok = d.within_bf16_spread();
        println!(
            "{:<28} bf16 autocast vs timm f32: logits {:.1e}  grads {:.1e}  {:>6.2}s  {}",
            case.name,
            d.logits,
            d.grads,
            started.elapsed().as_secs_f64(),
            if ok { "ok" } else { "FAILED" }
        );
        if !ok {
            failures.push(format!("{}: logits {:.2e}, gradients {:.2e}", case.name, d.logits, d.grads));
        }
        worst_logits = worst_logits.max(d.logits);
        worst_grads = worst_grads.max(d.grads);
    }
    println!(
        "{}",
        serde_json::json!({
            "check": "golden-bf16-autocast", "cases": dirs.len(), "failures": failures.len(),
            "worst_logits_rel_l2": worst_logits, "worst_grads_rel_l2": worst_grads,
            "bounds": [BF16_LOGITS_TOL, BF16_GRADS_TOL],
        })
    );
    if !failures.is_empty() {
        bail!(
            "{} cases outside bf16 autocast bounds (logits < {BF16_LOGITS_TOL}, gradients < {BF16_GRADS_TOL}, both > 0):\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
    Ok(())
}
