//! `trainer golden-check`: every timm golden case on the chosen backend (the CUDA parity check of
//! the GPU machine, where there is no `cargo test`), within the fixture README's tolerances.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use model::golden::{case_dirs, GoldenCase};
use model::golden_check::check_case;

pub fn run<B: Backend>(device: &B::Device, dir: &Path) -> Result<()> {
    let dirs = case_dirs(dir).with_context(|| format!("reading golden cases under {}", dir.display()))?;
    if dirs.is_empty() {
        bail!("no golden cases under {}", dir.display());
    }
    let mut failures = vec![];
    let (mut worst_output, mut worst_grad, mut checked) = (0f64, 0f64, 0usize);
    for case_dir in &dirs {
        let case = GoldenCase::load(case_dir)?;
        let started = Instant::now();
        let report = check_case::<Autodiff<B>>(&case, device)?;
        println!(
            "{:<28} {:>4} tensors  worst output {:.1e}  worst grad {:.1e}  {:>6.2}s  {}",
            case.name,
            report.checked,
            report.worst_output,
            report.worst_grad,
            started.elapsed().as_secs_f64(),
            if report.failures.is_empty() { "ok" } else { "FAILED" }
        );
        worst_output = worst_output.max(report.worst_output);
        worst_grad = worst_grad.max(report.worst_grad);
        checked += report.checked;
        failures.extend(report.failures);
    }
    println!(
        "{}",
        serde_json::json!({
            "check": "golden", "cases": dirs.len(), "tensors": checked, "failures": failures.len(),
            "worst_output_rel_l2": worst_output, "worst_grad_rel_l2": worst_grad,
        })
    );
    if !failures.is_empty() {
        bail!("{} of {checked} golden tensors outside tolerance:\n{}", failures.len(), failures.join("\n"));
    }
    Ok(())
}
