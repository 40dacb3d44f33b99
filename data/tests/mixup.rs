//! timm Mixup / CutMix in batch mode.

use data::mixup::{mix_batch, smoothed_targets, MixupConfig};
use data::rng::Rng;

fn batch() -> (Vec<f32>, [usize; 4], Vec<usize>) {
    // Four 1×8×8 images, each constant at its own index.
    let shape = [4, 1, 8, 8];
    let images = (0..4).flat_map(|i| vec![i as f32; 64]).collect();
    (images, shape, vec![0, 1, 2, 3])
}

#[test]
fn label_smoothing_matches_timm() {
    let t = smoothed_targets(&[2], 5, 0.1);
    let (off, on) = ((0.1f64 / 5.0) as f32, (1.0f64 - 0.1 + 0.1 / 5.0) as f32);
    assert_eq!(t, vec![off, off, on, off, off]);
}

#[test]
fn mixup_blends_each_sample_with_the_reversed_batch() {
    let cfg = MixupConfig { mixup_alpha: 0.8, label_smoothing: 0.0, ..Default::default() };
    let (mut x, shape, y) = batch();
    let targets = mix_batch(&cfg, &mut x, shape, &y, 4, &mut Rng::new(1));
    // Sample 0 mixes with sample 3: x = 3(1 - λ); its target is λ on class 0, 1 - λ on class 3.
    let lam = targets[0];
    assert!(lam > 0.0 && lam < 1.0);
    assert!((x[0] - 3.0 * (1.0 - lam)).abs() < 1e-5);
    assert!((targets[3] - (1.0 - lam)).abs() < 1e-6);
    for row in targets.chunks(4) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }
}

#[test]
fn cutmix_pastes_a_box_and_corrects_lambda_to_its_area() {
    let cfg = MixupConfig { cutmix_alpha: 1.0, label_smoothing: 0.0, ..Default::default() };
    for seed in 0..20 {
        let (mut x, shape, y) = batch();
        let targets = mix_batch(&cfg, &mut x, shape, &y, 4, &mut Rng::new(seed));
        let pasted = x[..64].iter().filter(|v| **v == 3.0).count();
        let lam = 1.0 - pasted as f32 / 64.0;
        assert!((targets[0] - lam).abs() < 1e-6, "seed {seed}: λ {} vs area {lam}", targets[0]);
        assert!(x[..64].iter().all(|v| *v == 0.0 || *v == 3.0));
    }
}

#[test]
fn disabled_mixup_gives_smoothed_one_hot_targets() {
    let (mut x, shape, y) = batch();
    let before = x.clone();
    let targets = mix_batch(&MixupConfig::default(), &mut x, shape, &y, 4, &mut Rng::new(0));
    assert_eq!(x, before);
    assert_eq!(targets, smoothed_targets(&y, 4, 0.1));
}
