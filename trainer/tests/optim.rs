//! Optimizer, parameter groups and schedule against timm / PyTorch formulas.

use trainer::config::{OptimizerKind, OptimizerSection, ScheduleSection};
use trainer::optim::{decays, layer_id, lr_scale, CosineSchedule};

#[test]
fn weight_decay_groups_follow_maxxvits_no_weight_decay() {
    assert!(decays("stages.0.blocks.0.conv.conv_dw.weight", 4));
    assert!(decays("head.fc.weight", 2));
    assert!(!decays("head.fc.bias", 1));
    assert!(!decays("stem.norm1.weight", 1));
    assert!(!decays("stages.1.blocks.0.attn_grid.attn.rel_pos.relative_position_bias_table", 2));
    assert!(!decays("stages.1.blocks.0.attn_grid.attn.rel_pos.mlp.fc1.weight", 2));
}

#[test]
fn layer_decay_matches_timms_six_groups() {
    let keys = [
        "stem.conv1.weight",
        "stages.0.blocks.0.x",
        "stages.1.x",
        "stages.2.x",
        "stages.3.x",
        "norm.weight",
        "head.fc.weight",
    ];
    let ids: Vec<usize> = keys.iter().map(|k| layer_id(k, 4)).collect();
    assert_eq!(ids, vec![0, 1, 2, 3, 4, 4, 5]);
    // ld = 0.8 → 0.328, 0.410, 0.512, 0.64, 0.8, 1.0 (timm_train_anchor.md §a.6).
    let scales: Vec<f64> = keys.iter().map(|k| (lr_scale(k, 4, 0.8) * 1000.0).round() / 1000.0).collect();
    assert_eq!(scales, vec![0.328, 0.41, 0.512, 0.64, 0.8, 0.8, 1.0]);
    assert_eq!(lr_scale("stem.conv1.weight", 4, 0.0), 1.0);
}

#[test]
fn cosine_schedule_is_timms_per_update_schedule() {
    let s = ScheduleSection { epochs: 10, warmup_epochs: 1.0, warmup_lr: 1e-5, min_lr: 1e-6, cooldown_epochs: 2 };
    let sched = CosineSchedule::new(1e-3, &s, 100);
    assert_eq!(sched.lr(0), 1e-5);
    assert!((sched.lr(50) - (1e-5 + 50.0 * (1e-3 - 1e-5) / 100.0)).abs() < 1e-15);
    // After warmup, t counts from 0 (warmup included): lr(t) = min + ½(base−min)(1+cos(πt/T)).
    let t = 400.0;
    let want = 1e-6 + 0.5 * (1e-3 - 1e-6) * (1.0 + (std::f64::consts::PI * t / 1000.0).cos());
    assert!((sched.lr(400) - want).abs() < 1e-15);
    assert_eq!(sched.lr(1000), 1e-6);
    assert_eq!(sched.lr(1150), 1e-6, "cooldown holds min_lr");
}

#[test]
fn adamw_and_lamb_steps_match_the_reference_update() {
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{Tensor, TensorData};
    type B = Autodiff<Flex>;
    let device = Default::default();
    let p0 = [0.5f64, -1.0, 2.0];
    let g = [0.1f64, -0.2, 0.3];
    let (lr, wd, b1, b2, eps) = (0.01, 0.05, 0.9, 0.999, 1e-8);
    for kind in [OptimizerKind::Adamw, OptimizerKind::Lamb] {
        let cfg =
            OptimizerSection { kind, lr, weight_decay: wd, betas: [b1, b2], eps, clip_grad: 0.0, layer_decay: 0.0 };
        let mut opt = trainer::optim::Optimizer::<B>::new(cfg, 4);
        let p = Tensor::<Flex, 1>::from_data(TensorData::new(p0.map(|v| v as f32).to_vec(), [3]), &device);
        let gt = Tensor::<Flex, 1>::from_data(TensorData::new(g.map(|v| v as f32).to_vec(), [3]), &device);
        let mut out = p;
        for step in 1..=2 {
            opt.step = step;
            out = opt.update_param("w.weight", out, gt.clone(), lr, wd);
        }
        let got = out.into_data().to_vec::<f32>().unwrap();
        // Reference in f64: two steps with the same gradient.
        let mut p = p0.to_vec();
        let (mut m, mut v) = (vec![0.0; 3], vec![0.0; 3]);
        for t in 1..=2 {
            let (bc1, bc2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
            for i in 0..3 {
                m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
            }
            match kind {
                OptimizerKind::Adamw => {
                    for i in 0..3 {
                        p[i] *= 1.0 - lr * wd;
                        p[i] -= lr / bc1 * m[i] / ((v[i] / bc2).sqrt() + eps);
                    }
                }
                OptimizerKind::Lamb => {
                    let u: Vec<f64> = (0..3).map(|i| (m[i] / bc1) / ((v[i] / bc2).sqrt() + eps) + wd * p[i]).collect();
                    let wn = p.iter().map(|x| x * x).sum::<f64>().sqrt();
                    let un = u.iter().map(|x| x * x).sum::<f64>().sqrt();
                    let trust = if wn > 0.0 && un > 0.0 { wn / un } else { 1.0 };
                    for i in 0..3 {
                        p[i] -= lr * trust * u[i];
                    }
                }
            }
        }
        for (a, b) in got.iter().zip(&p) {
            assert!((*a as f64 - b).abs() < 1e-6, "{kind:?}: {got:?} vs {p:?}");
        }
    }
}
