//! timm's `Mixup` in batch mode (`mixup.py`): one λ per batch, each sample mixed with the batch
//! reversed, targets one-hot with label smoothing and mixed the same way.

use serde::{Deserialize, Serialize};

use crate::rng::Rng;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MixupConfig {
    /// Beta(α, α) for mixup; 0 disables it.
    pub mixup_alpha: f64,
    /// Beta(α, α) for cutmix; 0 disables it.
    pub cutmix_alpha: f64,
    /// Cutmix box side ratios `[min, max]` instead of a λ-sized box.
    pub cutmix_minmax: Option<[f64; 2]>,
    /// Probability of mixing a batch at all.
    pub prob: f64,
    /// Probability of cutmix rather than mixup when both are on.
    pub switch_prob: f64,
    pub label_smoothing: f64,
}

impl Default for MixupConfig {
    fn default() -> Self {
        Self {
            mixup_alpha: 0.0,
            cutmix_alpha: 0.0,
            cutmix_minmax: None,
            prob: 1.0,
            switch_prob: 0.5,
            label_smoothing: 0.1,
        }
    }
}

impl MixupConfig {
    pub fn enabled(&self) -> bool {
        self.mixup_alpha > 0.0 || self.cutmix_alpha > 0.0 || self.cutmix_minmax.is_some()
    }
}

/// timm `mixup_target` for a non-mixed batch: smoothed one-hot rows.
pub fn smoothed_targets(labels: &[usize], num_classes: usize, smoothing: f64) -> Vec<f32> {
    let off = smoothing / num_classes as f64;
    let on = 1.0 - smoothing + off;
    let mut out = vec![off as f32; labels.len() * num_classes];
    for (i, l) in labels.iter().enumerate() {
        out[i * num_classes + l] = on as f32;
    }
    out
}

/// One batch's mixing, drawn on the host; applied to the host batch ([`Mix::apply`]) or, the
/// same arithmetic, on the device after normalisation (timm mixes after its prefetcher).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mix {
    None,
    /// Sample `i` ← `lam`·sample `i` + `rest`·sample `B−1−i` (timm `mixup`, batch mode).
    Blend {
        lam: f32,
        rest: f32,
    },
    /// Rows `y0..y1`, columns `x0..x1` of sample `i` ← those of sample `B−1−i` (timm `cutmix`).
    Cut {
        rows: (usize, usize),
        cols: (usize, usize),
    },
}

impl Mix {
    /// Mix a normalised `[B, C, H, W]` batch in place.
    pub fn apply(&self, images: &mut [f32], [b, c, h, w]: [usize; 4]) {
        let (plane, sample) = (h * w, c * h * w);
        let original = match self {
            Mix::None => return,
            _ => images[..b * sample].to_vec(),
        };
        match *self {
            Mix::None => {}
            Mix::Cut { rows: (yl, yh), cols: (xl, xh) } => {
                for i in 0..b {
                    let j = b - 1 - i;
                    for ch in 0..c {
                        for y in yl..yh {
                            let (dst, src) = (i * sample + ch * plane + y * w, j * sample + ch * plane + y * w);
                            images[dst + xl..dst + xh].copy_from_slice(&original[src + xl..src + xh]);
                        }
                    }
                }
            }
            Mix::Blend { lam, rest } => {
                for i in 0..b {
                    let j = b - 1 - i;
                    for k in 0..sample {
                        images[i * sample + k] = original[i * sample + k] * lam + original[j * sample + k] * rest;
                    }
                }
            }
        }
    }
}

/// timm `Mixup` for one batch of `labels` and `[h, w]` images: the mixing and the soft targets
/// `[B, classes]`. λ, the mixup/cutmix choice and the box come from `rng` (seed it per step for
/// exact resume).
pub fn plan_mix(
    cfg: &MixupConfig,
    labels: &[usize],
    num_classes: usize,
    [h, w]: [usize; 2],
    rng: &mut Rng,
) -> (Mix, Vec<f32>) {
    // timm forces cutmix_alpha = 1 when a min/max box ratio is given.
    let cutmix_alpha = if cfg.cutmix_minmax.is_some() { 1.0 } else { cfg.cutmix_alpha };
    let mut lam = 1.0;
    let mut use_cutmix = false;
    if cfg.enabled() && rng.uniform() < cfg.prob {
        lam = if cfg.mixup_alpha > 0.0 && cutmix_alpha > 0.0 {
            use_cutmix = rng.uniform() < cfg.switch_prob;
            let alpha = if use_cutmix { cutmix_alpha } else { cfg.mixup_alpha };
            rng.beta(alpha, alpha)
        } else if cfg.mixup_alpha > 0.0 {
            rng.beta(cfg.mixup_alpha, cfg.mixup_alpha)
        } else {
            use_cutmix = true;
            rng.beta(cutmix_alpha, cutmix_alpha)
        };
    }
    let mut mix = Mix::None;
    if lam < 1.0 {
        if use_cutmix {
            let (yl, yh, xl, xh) = match cfg.cutmix_minmax {
                Some([lo, hi]) => {
                    let cut_h = rng.randint((h as f64 * lo) as i64, (h as f64 * hi) as i64 - 1).max(0) as usize;
                    let cut_w = rng.randint((w as f64 * lo) as i64, (w as f64 * hi) as i64 - 1).max(0) as usize;
                    let yl = rng.randint(0, (h - cut_h) as i64 - 1).max(0) as usize;
                    let xl = rng.randint(0, (w - cut_w) as i64 - 1).max(0) as usize;
                    (yl, yl + cut_h, xl, xl + cut_w)
                }
                None => {
                    let ratio = (1.0 - lam).sqrt();
                    let (cut_h, cut_w) = ((h as f64 * ratio) as i64, (w as f64 * ratio) as i64);
                    let cy = rng.randint(0, h as i64 - 1);
                    let cx = rng.randint(0, w as i64 - 1);
                    let clip = |v: i64, hi: usize| v.clamp(0, hi as i64) as usize;
                    (clip(cy - cut_h / 2, h), clip(cy + cut_h / 2, h), clip(cx - cut_w / 2, w), clip(cx + cut_w / 2, w))
                }
            };
            // timm corrects λ to the pasted area.
            lam = 1.0 - ((yh - yl) * (xh - xl)) as f64 / (h * w) as f64;
            mix = Mix::Cut { rows: (yl, yh), cols: (xl, xh) };
        } else {
            mix = Mix::Blend { lam: lam as f32, rest: (1.0 - lam) as f32 };
        }
    }
    let y1 = smoothed_targets(labels, num_classes, cfg.label_smoothing);
    let flipped: Vec<usize> = labels.iter().rev().copied().collect();
    let y2 = smoothed_targets(&flipped, num_classes, cfg.label_smoothing);
    (mix, y1.iter().zip(&y2).map(|(a, b)| a * lam as f32 + b * (1.0 - lam) as f32).collect())
}

/// Mix a normalised `[B, C, H, W]` batch in place and return the soft targets `[B, classes]`
/// ([`plan_mix`], then [`Mix::apply`]).
pub fn mix_batch(
    cfg: &MixupConfig,
    images: &mut [f32],
    shape: [usize; 4],
    labels: &[usize],
    num_classes: usize,
    rng: &mut Rng,
) -> Vec<f32> {
    let (mix, targets) = plan_mix(cfg, labels, num_classes, [shape[2], shape[3]], rng);
    mix.apply(images, shape);
    targets
}
