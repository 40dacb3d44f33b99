//! timm's train transform (`transforms_imagenet_train`): RandomResizedCrop → flips →
//! RandAugment (or colour jitter) → normalise → RandomErasing.

use fast_image_resize::Resizer;
use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::randaugment::{self, RandAugmentConfig};
use super::resize::{crop, resize, Interpolation};
use super::{normalize_chw, to_chw_u8};
use crate::decode::Decoder;
use crate::rng::Rng;

/// The augmentation settings of timm's `train.py` (defaults as there, RandAugment as the
/// MaxxViT recipes use it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainTransformConfig {
    pub img_size: [usize; 2],
    pub scale: [f64; 2],
    pub ratio: [f64; 2],
    pub hflip: f64,
    pub vflip: f64,
    pub interpolation: Interpolation,
    /// timm `--aa`, e.g. `rand-m9-mstd0.5-inc1`; empty for none.
    pub auto_augment: String,
    /// Brightness / contrast / saturation strength, used only without auto-augment.
    pub color_jitter: f64,
    /// RandomErasing probability (`--reprob`), mode (`pixel`, `rand`, `const`) and count.
    pub re_prob: f64,
    pub re_mode: String,
    pub re_count: usize,
    pub mean: [f64; 3],
    pub std: [f64; 3],
}

impl Default for TrainTransformConfig {
    fn default() -> Self {
        Self {
            img_size: [224, 224],
            scale: [0.08, 1.0],
            ratio: [3.0 / 4.0, 4.0 / 3.0],
            hflip: 0.5,
            vflip: 0.0,
            interpolation: Interpolation::Random,
            auto_augment: "rand-m9-mstd0.5-inc1".into(),
            color_jitter: 0.4,
            re_prob: 0.0,
            re_mode: "pixel".into(),
            re_count: 1,
            mean: [0.5; 3],
            std: [0.5; 3],
        }
    }
}

/// timm `RandomResizedCropAndInterpolation.get_params`: `(top, left, height, width)`.
pub fn rrc_params(width: u32, height: u32, scale: [f64; 2], ratio: [f64; 2], rng: &mut Rng) -> (u32, u32, u32, u32) {
    let (w_img, h_img) = (width as f64, height as f64);
    let area = w_img * h_img;
    let log_ratio = (ratio[0].ln(), ratio[1].ln());
    for _ in 0..10 {
        let target_area = rng.range(scale[0], scale[1]) * area;
        let aspect = rng.range(log_ratio.0, log_ratio.1).exp();
        let w = (target_area * aspect).sqrt().round_ties_even();
        let h = (target_area / aspect).sqrt().round_ties_even();
        if w <= w_img && h <= h_img {
            let top = rng.randint(0, (h_img - h) as i64) as u32;
            let left = rng.randint(0, (w_img - w) as i64) as u32;
            return (top, left, h as u32, w as u32);
        }
    }
    // Central crop at the nearest allowed aspect ratio.
    let in_ratio = w_img / h_img;
    let (min_r, max_r) = (ratio[0].min(ratio[1]), ratio[0].max(ratio[1]));
    let (w, h) = if in_ratio < min_r {
        (width, (w_img / min_r).round_ties_even() as u32)
    } else if in_ratio > max_r {
        ((h_img * max_r).round_ties_even() as u32, height)
    } else {
        (width, height)
    };
    ((height - h) / 2, (width - w) / 2, h, w)
}

/// A train transform ready to run; one per worker thread (it owns resize buffers).
pub struct TrainTransform {
    pub config: TrainTransformConfig,
    randaugment: Option<RandAugmentConfig>,
    resizer: Resizer,
}

impl TrainTransform {
    pub fn new(config: TrainTransformConfig) -> Result<Self, String> {
        let randaugment = match config.auto_augment.as_str() {
            "" | "none" => None,
            spec => {
                let mut ra = RandAugmentConfig::parse(spec, config.mean)?;
                // timm passes the train interpolation to RandAugment unless it is 'random'.
                ra.resample = match config.interpolation {
                    Interpolation::Bicubic => Some(randaugment::Resample::Bicubic),
                    Interpolation::Bilinear => Some(randaugment::Resample::Bilinear),
                    _ => None,
                };
                Some(ra)
            }
        };
        if !matches!(config.re_mode.as_str(), "pixel" | "rand" | "const") {
            return Err(format!("re_mode '{}' (use pixel, rand or const)", config.re_mode));
        }
        Ok(Self { config, randaugment, resizer: Resizer::new() })
    }

    /// Crop, flip and augment into an `img_size` RGB image (before normalisation).
    pub fn augment(&mut self, img: &RgbImage, rng: &mut Rng) -> RgbImage {
        let c = &self.config;
        let (top, left, h, w) = rrc_params(img.width(), img.height(), c.scale, c.ratio, rng);
        self.augment_region(crop(img, left, top, w, h), rng)
    }

    /// [`Self::augment`] straight from encoded bytes: a JPEG is decoded only inside the crop box
    /// (same pixels as a full decode, and the same random draws in the same order).
    pub fn augment_encoded(&mut self, decoder: &mut Decoder, bytes: &[u8], rng: &mut Rng) -> Result<RgbImage, String> {
        let c = &self.config;
        let opened = decoder.open(bytes)?;
        let (top, left, h, w) = rrc_params(opened.width(), opened.height(), c.scale, c.ratio, rng);
        let region = decoder.crop(&opened, left, top, w, h)?;
        Ok(self.augment_region(region, rng))
    }

    fn augment_region(&mut self, region: RgbImage, rng: &mut Rng) -> RgbImage {
        let c = &self.config;
        let interp = match c.interpolation {
            Interpolation::Random => {
                if rng.bernoulli(0.5) {
                    Interpolation::Bicubic
                } else {
                    Interpolation::Bilinear
                }
            }
            other => other,
        };
        let [out_h, out_w] = c.img_size;
        let mut out = resize(&mut self.resizer, &region, out_w as u32, out_h as u32, interp);
        if c.hflip > 0.0 && rng.bernoulli(c.hflip) {
            image::imageops::flip_horizontal_in_place(&mut out);
        }
        if c.vflip > 0.0 && rng.bernoulli(c.vflip) {
            image::imageops::flip_vertical_in_place(&mut out);
        }
        match &self.randaugment {
            Some(ra) => ra.apply(out, rng),
            None if c.color_jitter > 0.0 => color_jitter(out, c.color_jitter, rng),
            None => out,
        }
    }

    /// Normalised CHW `f32` from an augmented image (RandomErasing included).
    pub fn finish_f32(&self, aug: &RgbImage, rng: &mut Rng, out: &mut [f32]) {
        normalize_chw(aug, self.config.mean, self.config.std, out);
        let [h, w] = self.config.img_size;
        random_erasing(out, [h, w], self.config.re_prob, &self.config.re_mode, self.config.re_count, rng);
    }

    /// The full transform to normalised CHW `f32` (RandomErasing included).
    pub fn apply_f32(&mut self, img: &RgbImage, rng: &mut Rng, out: &mut [f32]) {
        let aug = self.augment(img, rng);
        self.finish_f32(&aug, rng, out);
    }

    /// CHW `u8` from an augmented image, for normalising on the device, and the RandomErasing
    /// boxes to apply after that normalisation (as timm's prefetcher does); the same draws as
    /// [`TrainTransform::finish_f32`].
    pub fn finish_u8(&self, aug: &RgbImage, rng: &mut Rng, out: &mut [u8]) -> Vec<Erasure> {
        to_chw_u8(aug, out);
        let c = &self.config;
        erasures(c.img_size, c.re_prob, &c.re_mode, c.re_count, rng)
    }

    /// The full transform to CHW `u8` and the RandomErasing boxes (see [`TrainTransform::finish_u8`]).
    pub fn apply_u8(&mut self, img: &RgbImage, rng: &mut Rng, out: &mut [u8]) -> Vec<Erasure> {
        let aug = self.augment(img, rng);
        self.finish_u8(&aug, rng, out)
    }
}

/// torchvision `ColorJitter(b, c, s)` on PIL images: factors `U[max(0, 1-j), 1+j]`, applied in a
/// random order through PIL's `ImageEnhance`.
pub fn color_jitter(mut img: RgbImage, strength: f64, rng: &mut Rng) -> RgbImage {
    let mut order = [0usize, 1, 2, 3];
    rng.shuffle(&mut order);
    let factor = |rng: &mut Rng| rng.range((1.0 - strength).max(0.0), 1.0 + strength);
    let (b, c, s) = (factor(rng), factor(rng), factor(rng));
    for fn_id in order {
        img = match fn_id {
            0 => randaugment::brightness(&img, b),
            1 => randaugment::contrast(&img, c),
            2 => randaugment::color(&img, s),
            _ => img, // hue jitter is 0 in timm's default
        };
    }
    img
}

/// One RandomErasing box of a normalised CHW image, with its fill (`3·height·width` values,
/// channel-major): drawn on the host, applied there or on the device after normalisation.
#[derive(Debug, Clone, PartialEq)]
pub struct Erasure {
    pub top: usize,
    pub left: usize,
    pub height: usize,
    pub width: usize,
    pub values: Vec<f32>,
}

impl Erasure {
    pub fn apply(&self, img: &mut [f32], [h, w]: [usize; 2]) {
        let mut fill = self.values.iter();
        for c in 0..3 {
            for y in self.top..self.top + self.height {
                for x in self.left..self.left + self.width {
                    img[c * h * w + y * w + x] = *fill.next().expect("3·height·width values");
                }
            }
        }
    }
}

/// timm `RandomErasing`'s boxes for one image: with probability `prob`, `count` boxes of 2–33 %
/// of the area with log-uniform aspect ratio in (0.3, 1/0.3), filled per `mode` (`pixel`:
/// per-pixel normal values, `rand`: one normal colour, `const`: zeros).
pub fn erasures([h, w]: [usize; 2], prob: f64, mode: &str, count: usize, rng: &mut Rng) -> Vec<Erasure> {
    let mut out = vec![];
    if prob <= 0.0 || rng.uniform() > prob {
        return out;
    }
    let area = (h * w) as f64;
    let log_ratio = (0.3f64.ln(), (1.0 / 0.3f64).ln());
    let count = count.max(1);
    for _ in 0..count {
        for _ in 0..10 {
            let target = rng.range(0.02, 1.0 / 3.0) * area / count as f64;
            let aspect = rng.range(log_ratio.0, log_ratio.1).exp();
            let eh = (target * aspect).sqrt().round_ties_even() as usize;
            let ew = (target / aspect).sqrt().round_ties_even() as usize;
            if ew < w && eh < h {
                let top = rng.randint(0, (h - eh) as i64) as usize;
                let left = rng.randint(0, (w - ew) as i64) as usize;
                let colour: [f32; 3] =
                    std::array::from_fn(|_| if mode == "rand" { rng.gauss(0.0, 1.0) as f32 } else { 0.0 });
                let plane = eh * ew;
                let values = (0..3 * plane)
                    .map(|i| if mode == "pixel" { rng.gauss(0.0, 1.0) as f32 } else { colour[i / plane] })
                    .collect();
                out.push(Erasure { top, left, height: eh, width: ew, values });
                break;
            }
        }
    }
    out
}

/// timm `RandomErasing` on one normalised CHW image (see [`erasures`]).
pub fn random_erasing(img: &mut [f32], hw: [usize; 2], prob: f64, mode: &str, count: usize, rng: &mut Rng) {
    for e in erasures(hw, prob, mode, count, rng) {
        e.apply(img, hw);
    }
}
