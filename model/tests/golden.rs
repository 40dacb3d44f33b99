//! Every golden case (timm-generated) must match: eval outputs, train logits/loss, every gradient
//! and the updated BatchNorm buffers, within the fixture README's tolerances.
//! Cases come from `$MAXXVIT_GOLDEN_DIR` (default `fixtures/golden` in the repository); new cases need no code.

use burn::backend::{Autodiff, Flex};
use model::golden::{case_dirs, golden_dir, GoldenCase};
use model::golden_check::check_case;

#[test]
fn every_golden_case_matches_timm() {
    let root = golden_dir();
    let dirs = case_dirs(&root).unwrap_or_else(|e| panic!("golden dir: {e}"));
    assert!(!dirs.is_empty(), "no golden cases under {}", root.display());
    let mut failures = vec![];
    for dir in &dirs {
        let case = GoldenCase::load(dir).unwrap_or_else(|e| panic!("{e}"));
        let started = std::time::Instant::now();
        let report = check_case::<Autodiff<Flex>>(&case, &Default::default()).unwrap_or_else(|e| panic!("{e}"));
        eprintln!(
            "{}: {} tensors compared in {:.1}s (worst output {:.1e}, grad {:.1e})",
            case.name,
            report.checked,
            started.elapsed().as_secs_f64(),
            report.worst_output,
            report.worst_grad
        );
        failures.extend(report.failures);
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}
