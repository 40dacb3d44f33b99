//! timm's eval transform (`transforms_factory.transforms_imagenet_eval`): resize, crop,
//! normalise, as driven by a model's pretrained cfg.

use std::path::Path;

use image::imageops::FilterType;
use image::{DynamicImage, RgbImage};

use crate::DataError;

/// The pretrained-cfg fields that define eval preprocessing.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalTransform {
    /// Output `[H, W]`.
    pub img_size: [usize; 2],
    pub crop_pct: f64,
    /// `center` (resize shorter side to `img / crop_pct`, centre crop) or `squash`
    /// (resize both sides to `img / crop_pct`, centre crop).
    pub crop_mode: String,
    pub mean: [f64; 3],
    pub std: [f64; 3],
    /// `bicubic`, `bilinear` or `nearest`.
    pub interpolation: String,
}

impl EvalTransform {
    fn filter(&self) -> Result<FilterType, DataError> {
        match self.interpolation.as_str() {
            "bicubic" => Ok(FilterType::CatmullRom),
            "bilinear" => Ok(FilterType::Triangle),
            "nearest" => Ok(FilterType::Nearest),
            other => Err(DataError::Config(format!("interpolation '{other}'"))),
        }
    }

    /// Decode, resize, crop and normalise one image into CHW `f32`.
    pub fn load(&self, path: &Path) -> Result<Vec<f32>, DataError> {
        let bytes = std::fs::read(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
        let image = image::load_from_memory(&bytes)
            .map_err(|e| DataError::Decode { path: path.to_path_buf(), reason: e.to_string() })?;
        self.apply(image)
    }

    pub fn apply(&self, image: DynamicImage) -> Result<Vec<f32>, DataError> {
        let rgb = image.to_rgb8();
        let [th, tw] = self.img_size;
        // timm: scale_size = floor(img_size / crop_pct).
        let scale = |s: usize| (s as f64 / self.crop_pct).floor() as u32;
        let (w, h) = (rgb.width(), rgb.height());
        let (rw, rh) = match self.crop_mode.as_str() {
            "squash" => (scale(tw), scale(th)),
            "center" => {
                // Resize the shorter side (torchvision Resize(int)), keeping the aspect ratio.
                let short = scale(th.min(tw)) as f64;
                if w <= h {
                    (short as u32, (short * h as f64 / w as f64) as u32)
                } else {
                    ((short * w as f64 / h as f64) as u32, short as u32)
                }
            }
            other => return Err(DataError::Config(format!("crop_mode '{other}' (supported: center, squash)"))),
        };
        let resized = image::imageops::resize(&rgb, rw.max(1), rh.max(1), self.filter()?);
        Ok(self.normalise(&center_crop(&resized, tw as u32, th as u32)))
    }

    fn normalise(&self, img: &RgbImage) -> Vec<f32> {
        let (w, h) = (img.width() as usize, img.height() as usize);
        let mut out = vec![0f32; 3 * h * w];
        for (x, y, pixel) in img.enumerate_pixels() {
            for c in 0..3 {
                let v = pixel.0[c] as f64 / 255.0;
                out[c * h * w + y as usize * w + x as usize] = ((v - self.mean[c]) / self.std[c]) as f32;
            }
        }
        out
    }
}

/// torchvision `CenterCrop`: offsets rounded as `int(round((size - crop) / 2))`.
fn center_crop(img: &RgbImage, tw: u32, th: u32) -> RgbImage {
    let left = ((img.width() as f64 - tw as f64) / 2.0).round().max(0.0) as u32;
    let top = ((img.height() as f64 - th as f64) / 2.0).round().max(0.0) as u32;
    image::imageops::crop_imm(img, left, top, tw.min(img.width()), th.min(img.height())).to_image()
}
