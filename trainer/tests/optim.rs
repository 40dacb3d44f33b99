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
    use burn::backend::Flex;
    use burn::tensor::{Tensor, TensorData};
    let device = Default::default();
    let p0 = [0.5f64, -1.0, 2.0];
    let g = [0.1f64, -0.2, 0.3];
    let (lr, wd, b1, b2, eps) = (0.01, 0.05, 0.9, 0.999, 1e-8);
    for kind in [OptimizerKind::Adamw, OptimizerKind::Lamb] {
        let cfg =
            OptimizerSection { kind, lr, weight_decay: wd, betas: [b1, b2], eps, clip_grad: 0.0, layer_decay: 0.0 };
        let p = Tensor::<Flex, 1>::from_data(TensorData::new(p0.map(|v| v as f32).to_vec(), [3]), &device);
        let gt = Tensor::<Flex, 1>::from_data(TensorData::new(g.map(|v| v as f32).to_vec(), [3]), &device);
        let mut moments = trainer::optim::Moments { exp_avg: p.zeros_like(), exp_avg_sq: p.zeros_like() };
        let mut out = p;
        for step in 1..=2 {
            out = trainer::optim::update(&cfg, step, out, gt.clone(), &mut moments, lr, wd);
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

/// The optimizer keeps parameters and moments flat by group and hands the model views; every
/// parameter, moment and EMA value must still be what the per-parameter formulas give, bit for
/// bit, over several updates (gradients flowing through the views), and a restore from the
/// moments by key must continue exactly.
#[test]
fn flat_groups_update_every_parameter_as_the_per_parameter_step_does() {
    use std::collections::HashMap;

    use burn::backend::{Autodiff, Flex};
    use burn::module::AutodiffModule;
    use burn::optim::GradientsParams;
    use burn::tensor::backend::Backend;
    use burn::tensor::{Distribution, Tensor};
    use model::MaxxVit;
    use trainer::ema::Ema;
    use trainer::optim::{gather_grads, update, Moments, Optimizer};
    type B = Autodiff<Flex>;

    let device = Default::default();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/models/smoke_coatnet.toml");
    let mut spec = trainer::model_spec::ModelSpec::from_file(&path).unwrap();
    (spec.args.num_classes, spec.args.img_size) = (10, [32, 32]);
    let stages = spec.cfg.embed_dim.len();
    let values = |t: &Tensor<Flex, 1>| t.clone().into_data().to_vec::<f32>().unwrap();
    let by_key = |m: &MaxxVit<Flex>| -> HashMap<String, Vec<f32>> {
        m.flat_tensors(false).iter().map(|(k, t)| (k.clone(), values(t))).collect()
    };
    for kind in [OptimizerKind::Adamw, OptimizerKind::Lamb] {
        let cfg = OptimizerSection { kind, weight_decay: 0.05, layer_decay: 0.75, ..Default::default() };
        <B as Backend>::seed(&device, 7);
        let mut model = MaxxVit::<B>::new(&spec.cfg, &spec.args, &device).unwrap();
        let mut opt = Optimizer::<B>::new(cfg.clone(), stages);
        let mut ema = Ema::new(&model, 0.9, false);
        // The reference: per-parameter tensors updated one at a time.
        let ndim: HashMap<String, usize> =
            model.state_dict_keys().into_iter().map(|k| (k.key, k.shape.len())).collect();
        let mut p_ref: HashMap<String, Tensor<Flex, 1>> =
            model.flat_tensors(false).into_iter().map(|(k, t)| (k, t.inner())).collect();
        let mut m_ref: HashMap<String, Moments<Flex>> = HashMap::new();
        let mut ema_ref = p_ref.clone();
        let mut resumed = None;
        for step in 1..=3u64 {
            let x = Tensor::<B, 4>::random([2, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
            let loss = model.forward(x).square().mean();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            let keyed = gather_grads(&model, &grads);
            let params = ndim.keys().filter(|k| !k.ends_with("running_mean") && !k.ends_with("running_var"));
            assert_eq!(keyed.grads.len(), params.filter(|k| !k.ends_with("num_batches_tracked")).count());
            let lr = 1e-2 / step as f64;
            let flat_norm = {
                let mut o = Optimizer::<B>::new(cfg.clone(), stages);
                o.flatten(&model, gather_grads(&model, &grads)).global_norm()
            };
            let lamb_scale = match kind {
                OptimizerKind::Lamb if flat_norm > 1.0 => 1.0 / flat_norm,
                _ => 1.0,
            };
            for (key, g) in &keyed.grads {
                let m = m_ref
                    .entry(key.clone())
                    .or_insert_with(|| Moments { exp_avg: g.zeros_like(), exp_avg_sq: g.zeros_like() });
                let g = if lamb_scale != 1.0 { g.clone().mul_scalar(lamb_scale) } else { g.clone() };
                let wd = if decays(key, ndim[key]) { cfg.weight_decay } else { 0.0 };
                let lr = lr * lr_scale(key, stages, cfg.layer_decay);
                p_ref.insert(key.clone(), update(&cfg, step, p_ref[key].clone(), g, m, lr, wd));
            }
            if step == 3 {
                // A second optimizer restored from the first one's step and moments by key.
                let mut o = Optimizer::<B>::new(cfg.clone(), stages);
                o.restore(opt.step, opt.moments().into_iter().collect());
                let flat = o.flatten(&model, gather_grads(&model, &grads));
                resumed = Some(o.step(model.clone(), &flat, lr));
            }
            let flat = opt.flatten(&model, keyed);
            model = opt.step(model, &flat, lr);
            ema.update(&model, &opt, step);
            let keep = ema.decay_at(step);
            let now: HashMap<String, Tensor<Flex, 1>> =
                model.flat_tensors(false).into_iter().map(|(k, t)| (k, t.inner())).collect();
            for (key, e) in ema_ref.iter_mut() {
                *e = if key.ends_with("num_batches_tracked") {
                    now[key].clone()
                } else {
                    e.clone().mul_scalar(keep) + now[key].clone().mul_scalar(1.0 - keep)
                };
            }
            let got = by_key(&model.valid());
            for (key, p) in &p_ref {
                if m_ref.contains_key(key) {
                    assert_eq!(got[key], values(p), "{kind:?} step {step}: parameter {key}");
                }
            }
            let moments: HashMap<_, _> = opt.moments().into_iter().collect();
            for (key, m) in &m_ref {
                assert_eq!(values(&moments[key].exp_avg), values(&m.exp_avg), "{kind:?} step {step}: exp_avg {key}");
                assert_eq!(
                    values(&moments[key].exp_avg_sq),
                    values(&m.exp_avg_sq),
                    "{kind:?} step {step}: exp_avg_sq {key}"
                );
            }
            let got = by_key(ema.model());
            for (key, e) in &ema_ref {
                assert_eq!(got[key], values(e), "{kind:?} step {step}: EMA {key}");
            }
        }
        assert_eq!(by_key(&resumed.unwrap().valid()), by_key(&model.valid()), "{kind:?}: restored optimizer");
    }
}
