//! timm's RandAugment (`auto_augment.py`, `rand-m9-mstd0.5-inc1`) with Pillow's pixel semantics:
//! LUT ops (`ImageOps`), blends (`ImageEnhance`, float32 like `ImagingBlend`) and affine warps
//! (`Image.transform`: pixel-centre sampling, PIL's bilinear / bicubic, a fill colour).

use image::RgbImage;

pub use super::affine::affine;
use crate::rng::Rng;

/// `_RAND_INCREASING_TRANSFORMS` (used with `inc1`) and `_RAND_TRANSFORMS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    AutoContrast,
    Equalize,
    Invert,
    Rotate,
    Posterize,
    PosterizeIncreasing,
    Solarize,
    SolarizeIncreasing,
    SolarizeAdd,
    Color,
    ColorIncreasing,
    Contrast,
    ContrastIncreasing,
    Brightness,
    BrightnessIncreasing,
    Sharpness,
    SharpnessIncreasing,
    ShearX,
    ShearY,
    TranslateXRel,
    TranslateYRel,
}

pub const INCREASING_OPS: [Op; 15] = [
    Op::AutoContrast,
    Op::Equalize,
    Op::Invert,
    Op::Rotate,
    Op::PosterizeIncreasing,
    Op::SolarizeIncreasing,
    Op::SolarizeAdd,
    Op::ColorIncreasing,
    Op::ContrastIncreasing,
    Op::BrightnessIncreasing,
    Op::SharpnessIncreasing,
    Op::ShearX,
    Op::ShearY,
    Op::TranslateXRel,
    Op::TranslateYRel,
];

pub const DEFAULT_OPS: [Op; 15] = [
    Op::AutoContrast,
    Op::Equalize,
    Op::Invert,
    Op::Rotate,
    Op::Posterize,
    Op::Solarize,
    Op::SolarizeAdd,
    Op::Color,
    Op::Contrast,
    Op::Brightness,
    Op::Sharpness,
    Op::ShearX,
    Op::ShearY,
    Op::TranslateXRel,
    Op::TranslateYRel,
];

/// PIL resampling filter for the geometric ops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resample {
    Bilinear,
    Bicubic,
}

/// A parsed `rand-…` config string plus the hparams timm's transform factory passes.
#[derive(Debug, Clone, PartialEq)]
pub struct RandAugmentConfig {
    pub magnitude: f64,
    pub num_layers: usize,
    pub prob: f64,
    pub magnitude_std: f64,
    pub magnitude_max: f64,
    pub increasing: bool,
    /// `img_mean` hparam: `round(255 · mean)`.
    pub fill: [u8; 3],
    /// `None`: a random choice of bilinear / bicubic per op (timm's default with
    /// `train_interpolation='random'`).
    pub resample: Option<Resample>,
}

impl RandAugmentConfig {
    /// Parse timm's string, e.g. `rand-m9-mstd0.5-inc1`.
    pub fn parse(spec: &str, mean: [f64; 3]) -> Result<Self, String> {
        let mut parts = spec.split('-');
        if parts.next() != Some("rand") {
            return Err(format!("auto-augment '{spec}': only 'rand-…' (RandAugment) is supported"));
        }
        let fill = mean.map(|m| (255.0 * m).round_ties_even().min(255.0) as u8);
        let mut cfg = Self {
            magnitude: 10.0,
            num_layers: 2,
            prob: 0.5,
            magnitude_std: 0.0,
            magnitude_max: 10.0,
            increasing: false,
            fill,
            resample: None,
        };
        for part in parts {
            let split = part.find(|c: char| c.is_ascii_digit()).unwrap_or(part.len());
            let (key, val) = part.split_at(split);
            let num = |v: &str| v.parse::<f64>().map_err(|_| format!("auto-augment '{spec}': bad value in '{part}'"));
            match key {
                "m" => cfg.magnitude = num(val)?,
                "n" => cfg.num_layers = num(val)? as usize,
                "p" => cfg.prob = num(val)?,
                "mstd" => {
                    let v = num(val)?;
                    cfg.magnitude_std = if v > 100.0 { f64::INFINITY } else { v };
                }
                "mmax" => cfg.magnitude_max = num(val)?,
                "inc" => cfg.increasing = num(val)? != 0.0,
                _ => return Err(format!("auto-augment '{spec}': unknown section '{part}'")),
            }
        }
        Ok(cfg)
    }

    fn ops(&self) -> &'static [Op; 15] {
        if self.increasing {
            &INCREASING_OPS
        } else {
            &DEFAULT_OPS
        }
    }

    /// timm `RandAugment.__call__`: `num_layers` ops drawn with replacement, each applied with
    /// probability `prob` at a (noisy) magnitude.
    pub fn apply(&self, mut img: RgbImage, rng: &mut Rng) -> RgbImage {
        for _ in 0..self.num_layers {
            let op = self.ops()[rng.below(15)];
            if self.prob < 1.0 && rng.uniform() > self.prob {
                continue;
            }
            let mut m = self.magnitude;
            if self.magnitude_std == f64::INFINITY {
                m = rng.range(0.0, m);
            } else if self.magnitude_std > 0.0 {
                m = rng.gauss(m, self.magnitude_std);
            }
            let m = m.clamp(0.0, self.magnitude_max);
            let resample =
                self.resample
                    .unwrap_or_else(|| if rng.bernoulli(0.5) { Resample::Bicubic } else { Resample::Bilinear });
            img = apply_op(op, img, m, rng, self.fill, resample);
        }
        img
    }
}

fn negate(v: f64, rng: &mut Rng) -> f64 {
    if rng.uniform() > 0.5 {
        -v
    } else {
        v
    }
}

/// One op at magnitude `m` (0..10), with timm's level-to-argument mapping.
pub fn apply_op(op: Op, img: RgbImage, m: f64, rng: &mut Rng, fill: [u8; 3], resample: Resample) -> RgbImage {
    let level = m / 10.0;
    let enhance = level * 1.8 + 0.1;
    let enhance_inc = |rng: &mut Rng| (1.0 + negate(level * 0.9, rng)).max(0.1);
    match op {
        Op::AutoContrast => auto_contrast(&img),
        Op::Equalize => equalize(&img),
        Op::Invert => lut(&img, &std::array::from_fn(|i| 255 - i as u8)),
        Op::Rotate => rotate(&img, negate(level * 30.0, rng), resample, fill),
        Op::Posterize => posterize(&img, (level * 4.0) as u32),
        Op::PosterizeIncreasing => posterize(&img, 4 - (level * 4.0) as u32),
        Op::Solarize => solarize(&img, (level * 256.0) as u32),
        Op::SolarizeIncreasing => solarize(&img, 256 - (level * 256.0) as u32),
        Op::SolarizeAdd => solarize_add(&img, (level * 110.0) as u32, 128),
        Op::Color => color(&img, enhance),
        Op::ColorIncreasing => color(&img, enhance_inc(rng)),
        Op::Contrast => contrast(&img, enhance),
        Op::ContrastIncreasing => contrast(&img, enhance_inc(rng)),
        Op::Brightness => brightness(&img, enhance),
        Op::BrightnessIncreasing => brightness(&img, enhance_inc(rng)),
        Op::Sharpness => sharpness(&img, enhance),
        Op::SharpnessIncreasing => sharpness(&img, enhance_inc(rng)),
        Op::ShearX => affine(&img, [1.0, negate(level * 0.3, rng), 0.0, 0.0, 1.0, 0.0], resample, fill),
        Op::ShearY => affine(&img, [1.0, 0.0, 0.0, negate(level * 0.3, rng), 1.0, 0.0], resample, fill),
        Op::TranslateXRel => {
            let px = negate(level * 0.45, rng) * img.width() as f64;
            affine(&img, [1.0, 0.0, px, 0.0, 1.0, 0.0], resample, fill)
        }
        Op::TranslateYRel => {
            let px = negate(level * 0.45, rng) * img.height() as f64;
            affine(&img, [1.0, 0.0, 0.0, 0.0, 1.0, px], resample, fill)
        }
    }
}

/// `Image.point(lut)` with one 256-entry table for all three bands.
pub fn lut(img: &RgbImage, table: &[u8; 256]) -> RgbImage {
    let data = img.as_raw().iter().map(|v| table[*v as usize]).collect();
    RgbImage::from_raw(img.width(), img.height(), data).unwrap()
}

fn lut_per_channel(img: &RgbImage, tables: &[[u8; 256]; 3]) -> RgbImage {
    let data = img.as_raw().iter().enumerate().map(|(i, v)| tables[i % 3][*v as usize]).collect();
    RgbImage::from_raw(img.width(), img.height(), data).unwrap()
}

fn histograms(img: &RgbImage) -> [[u64; 256]; 3] {
    let mut h = [[0u64; 256]; 3];
    for (i, v) in img.as_raw().iter().enumerate() {
        h[i % 3][*v as usize] += 1;
    }
    h
}

/// `ImageOps.autocontrast(img)` (cutoff 0): stretch each band's [min, max] to [0, 255].
pub fn auto_contrast(img: &RgbImage) -> RgbImage {
    let tables = histograms(img).map(|h| {
        let lo = (0..256).find(|&i| h[i] > 0).unwrap_or(0);
        let hi = (0..256).rev().find(|&i| h[i] > 0).unwrap_or(0);
        if hi <= lo {
            return std::array::from_fn(|i| i as u8);
        }
        let scale = 255.0 / (hi - lo) as f64;
        let offset = -(lo as f64) * scale;
        std::array::from_fn(|i| ((i as f64 * scale + offset) as i64).clamp(0, 255) as u8)
    });
    lut_per_channel(img, &tables)
}

/// `ImageOps.equalize(img)`: PIL's per-band histogram equalisation.
pub fn equalize(img: &RgbImage) -> RgbImage {
    let tables = histograms(img).map(|h| {
        let nonzero: Vec<u64> = h.iter().copied().filter(|c| *c > 0).collect();
        if nonzero.len() <= 1 {
            return std::array::from_fn(|i| i as u8);
        }
        let step = (nonzero.iter().sum::<u64>() - nonzero.last().unwrap()) / 255;
        if step == 0 {
            return std::array::from_fn(|i| i as u8);
        }
        let mut n = step / 2;
        let mut table = [0u8; 256];
        for i in 0..256 {
            table[i] = (n / step).min(255) as u8;
            n += h[i];
        }
        table
    });
    lut_per_channel(img, &tables)
}

/// `ImageOps.posterize`, with Pillow < 13's result for 0 bits (an all-black image) —
/// Pillow 13 raises instead, which timm's RandAugment can hit at magnitude 10.
pub fn posterize(img: &RgbImage, bits: u32) -> RgbImage {
    if bits >= 8 {
        return img.clone();
    }
    let mask = !((1u32 << (8 - bits)) - 1) as u8;
    lut(img, &std::array::from_fn(|i| i as u8 & mask))
}

/// `ImageOps.solarize`: invert values at or above `threshold`.
pub fn solarize(img: &RgbImage, threshold: u32) -> RgbImage {
    lut(img, &std::array::from_fn(|i| if (i as u32) < threshold { i as u8 } else { 255 - i as u8 }))
}

/// timm `solarize_add`: add `add` to values below `threshold`, saturating.
pub fn solarize_add(img: &RgbImage, add: u32, threshold: u32) -> RgbImage {
    lut(img, &std::array::from_fn(|i| if (i as u32) < threshold { (i as u32 + add).min(255) as u8 } else { i as u8 }))
}

/// `ImagingBlend(degenerate, img, factor)` in float32, truncating like PIL.
fn blend(degenerate: &[u8], img: &RgbImage, factor: f64) -> RgbImage {
    let mut data = vec![0u8; degenerate.len()];
    blend_into(degenerate, img.as_raw(), factor as f32, &mut data);
    RgbImage::from_raw(img.width(), img.height(), data).unwrap()
}

avx2_multiversion! {
    fn blend_into(degenerate: &[u8], img: &[u8], alpha: f32, out: &mut [u8]) {
        for ((o, &a), &b) in out.iter_mut().zip(degenerate).zip(img) {
            *o = blend_value(a, b, alpha);
        }
    }
}

/// `convert("L")`: ITU-R 601-2 luma in Pillow's 16.16 fixed point, rounded.
#[inline(always)]
fn luma(px: &[u8]) -> u8 {
    ((px[0] as u32 * 19595 + px[1] as u32 * 38470 + px[2] as u32 * 7471 + 0x8000) >> 16) as u8
}

/// `ImageEnhance.Color`: blend with the greyscale image.
pub fn color(img: &RgbImage, factor: f64) -> RgbImage {
    let mut data = vec![0u8; img.as_raw().len()];
    color_into(img.as_raw(), factor as f32, &mut data);
    RgbImage::from_raw(img.width(), img.height(), data).unwrap()
}

avx2_multiversion! {
    /// Blend each pixel with its own luma (the grey image PIL builds), in one pass.
    fn color_into(img: &[u8], alpha: f32, out: &mut [u8]) {
        for (o, px) in out.chunks_exact_mut(3).zip(img.chunks_exact(3)) {
            let grey = luma(px);
            o[0] = blend_value(grey, px[0], alpha);
            o[1] = blend_value(grey, px[1], alpha);
            o[2] = blend_value(grey, px[2], alpha);
        }
    }
}

/// `ImageEnhance.Contrast`: blend with a flat image at the rounded mean luma.
pub fn contrast(img: &RgbImage, factor: f64) -> RgbImage {
    let n = (img.width() * img.height()) as f64;
    let mean = img.as_raw().chunks_exact(3).map(|px| luma(px) as f64).sum::<f64>() / n;
    lut(img, &blend_with_constant((mean + 0.5) as u8, factor))
}

/// `ImageEnhance.Brightness`: blend with black.
pub fn brightness(img: &RgbImage, factor: f64) -> RgbImage {
    lut(img, &blend_with_constant(0, factor))
}

/// A blend with a flat image depends on the pixel value alone: [`blend_value`] tabulated.
fn blend_with_constant(flat: u8, factor: f64) -> [u8; 256] {
    std::array::from_fn(|v| blend_value(flat, v as u8, factor as f32))
}

/// PIL's `Image.blend(degenerate, img, alpha)` for one value: it truncates when interpolating
/// (the value stays in range) and clips then truncates when extrapolating, both of which are
/// Rust's saturating `as` cast.
#[inline(always)]
fn blend_value(degenerate: u8, value: u8, alpha: f32) -> u8 {
    (degenerate as f32 + alpha * (value as f32 - degenerate as f32)) as u8
}

/// `ImageEnhance.Sharpness`: blend with `ImageFilter.SMOOTH` (3x3, 1/13 weights with 5 in the
/// centre; border pixels copied unchanged).
pub fn sharpness(img: &RgbImage, factor: f64) -> RgbImage {
    blend(smooth(img).as_raw(), img, factor)
}

fn smooth(img: &RgbImage) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w < 3 || h < 3 {
        return img.clone();
    }
    let src = img.as_raw();
    let mut out = src.clone();
    // PIL divides the kernel by its sum in float32 and rounds by adding 0.5 before truncating;
    // the sum order (row below, centre row, row above) matters for float equality. Channels are
    // interleaved, so a pixel's horizontal neighbours are 3 bytes away in every channel.
    smooth_rows(src, &mut out, w, h);
    RgbImage::from_raw(w as u32, h as u32, out).unwrap()
}

avx2_multiversion! {
    fn smooth_rows(src: &[u8], out: &mut [u8], w: usize, h: usize) {
        let stride = w * 3;
        let (k1, k5) = (1.0f32 / 13.0, 5.0f32 / 13.0);
        for y in 1..h - 1 {
            let (above, centre, below) =
                (&src[(y - 1) * stride..y * stride], &src[y * stride..(y + 1) * stride], &src[(y + 1) * stride..(y + 2) * stride]);
            for (i, o) in out[y * stride + 3..(y + 1) * stride - 3].iter_mut().enumerate() {
                let i = i + 3;
                let mut sum = 0.5f32;
                sum += smooth_row(below, i, k1, k1);
                sum += smooth_row(centre, i, k5, k1);
                sum += smooth_row(above, i, k1, k1);
                *o = sum.clamp(0.0, 255.0) as u8;
            }
        }
    }
}

#[inline(always)]
fn smooth_row(r: &[u8], i: usize, centre: f32, side: f32) -> f32 {
    r[i - 3] as f32 * side + r[i] as f32 * centre + r[i + 3] as f32 * side
}

/// `img.rotate(degrees, resample, fillcolor)` (no expand): an affine warp about the centre.
pub fn rotate(img: &RgbImage, degrees: f64, resample: Resample, fill: [u8; 3]) -> RgbImage {
    let angle = degrees.rem_euclid(360.0);
    if angle == 0.0 {
        return img.clone();
    }
    let (w, h) = (img.width() as f64, img.height() as f64);
    let rad = -angle.to_radians();
    let round15 = |v: f64| (v * 1e15).round() / 1e15;
    let (c, s) = (round15(rad.cos()), round15(rad.sin()));
    let mut m = [c, s, 0.0, -s, c, 0.0];
    let (cx, cy) = (w / 2.0, h / 2.0);
    m[2] = m[0] * -cx + m[1] * -cy + cx;
    m[5] = m[3] * -cx + m[4] * -cy + cy;
    affine(img, m, resample, fill)
}

/// PIL's `BICUBIC` macro (its a = −1 cubic), evaluated in the same order.
#[inline(always)]
pub(crate) fn cubic(v1: f64, v2: f64, v3: f64, v4: f64, d: f64) -> f64 {
    let p1 = v2;
    let p2 = -v1 + v3;
    let p3 = 2.0 * (v1 - v2) + v3 - v4;
    let p4 = -v1 + v2 - v3 + v4;
    p1 + d * (p2 + d * (p3 + d * p4))
}
