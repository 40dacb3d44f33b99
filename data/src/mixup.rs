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

/// Mix a normalised `[B, C, H, W]` batch in place and return the soft targets `[B, classes]`.
/// λ, the mixup/cutmix choice and the box come from `rng` (seed it per step for exact resume).
pub fn mix_batch(
    cfg: &MixupConfig,
    images: &mut [f32],
    shape: [usize; 4],
    labels: &[usize],
    num_classes: usize,
    rng: &mut Rng,
) -> Vec<f32> {
    let [b, c, h, w] = shape;
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
    let plane = h * w;
    let sample = c * plane;
    if lam < 1.0 {
        let original = images[..b * sample].to_vec();
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
            lam = 1.0 - ((yh - yl) * (xh - xl)) as f64 / plane as f64;
            for i in 0..b {
                let j = b - 1 - i;
                for ch in 0..c {
                    for y in yl..yh {
                        let (dst, src) = (i * sample + ch * plane + y * w, j * sample + ch * plane + y * w);
                        images[dst + xl..dst + xh].copy_from_slice(&original[src + xl..src + xh]);
                    }
                }
            }
        } else {
            let (l, r) = (lam as f32, (1.0 - lam) as f32);
            for i in 0..b {
                let j = b - 1 - i;
                for k in 0..sample {
                    images[i * sample + k] = original[i * sample + k] * l + original[j * sample + k] * r;
                }
            }
        }
    }
    let y1 = smoothed_targets(labels, num_classes, cfg.label_smoothing);
    let flipped: Vec<usize> = labels.iter().rev().copied().collect();
    let y2 = smoothed_targets(&flipped, num_classes, cfg.label_smoothing);
    y1.iter().zip(&y2).map(|(a, b)| a * lam as f32 + b * (1.0 - lam) as f32).collect()
}
