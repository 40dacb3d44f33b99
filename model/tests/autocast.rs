//! bf16 autocast (timm's `--amp --amp-dtype bfloat16`) on every golden case: one train step with
//! matmuls and convolutions in bf16 lands within the spread of timm's own bf16 autocast from
//! timm's f32 step, actually differs from it (the casts happen), and returns f32 logits
//! (`model::golden_check::autocast_deviation`, also run on CUDA by `trainer golden-check --amp
//! bf16`). Runs on the CPU backend, which computes bf16 ops by rounding through f32.

use burn::backend::{Autodiff, Flex};
use burn::tensor::FloatDType;
use model::autocast::{autocast, current};
use model::golden::{case_dirs, golden_dir, GoldenCase};
use model::golden_check::autocast_deviation;

#[test]
fn bf16_autocast_stays_within_timms_own_bf16_spread_on_every_golden_case() {
    let dirs = case_dirs(&golden_dir()).unwrap();
    assert!(!dirs.is_empty(), "no golden cases");
    let mut failures = vec![];
    for dir in &dirs {
        let case = GoldenCase::load(dir).unwrap();
        let d = autocast_deviation::<Autodiff<Flex>>(&case, &Default::default(), FloatDType::BF16).unwrap();
        eprintln!("{}: bf16 vs timm f32 logits rel-L2 {:.1e}, all gradients {:.1e}", case.name, d.logits, d.grads);
        if !d.within_bf16_spread() {
            failures.push(format!("{}: logits {:.2e}, gradients {:.2e}", case.name, d.logits, d.grads));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn autocast_guards_nest_and_restore() {
    assert_eq!(current(), None);
    {
        let _outer = autocast(Some(FloatDType::BF16));
        assert_eq!(current(), Some(FloatDType::BF16));
        {
            let _inner = autocast(None);
            assert_eq!(current(), None);
        }
        assert_eq!(current(), Some(FloatDType::BF16));
    }
    assert_eq!(current(), None);
}
