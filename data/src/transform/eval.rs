//! timm's eval transform (`transforms_imagenet_eval`): resize by `img_size / crop_pct`, crop
//! (modes `center`, `squash`, `border`), normalise — driven by a model's pretrained cfg.

use std::path::Path;

use fast_image_resize::Resizer;
use image::{Rgb, RgbImage};

use super::normalize_chw;
use super::resize::{crop, resize, Interpolation};
use crate::decode::decode_rgb;
use crate::DataError;

/// The pretrained-cfg fields that define eval preprocessing.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalTransform {
    /// Output `[H, W]`.
    pub img_size: [usize; 2],
    pub crop_pct: f64,
    pub crop_mode: String,
    pub mean: [f64; 3],
    pub std: [f64; 3],
    pub interpolation: String,
}

impl EvalTransform {
    /// Resize and crop to `img_size` (RGB8, before normalisation).
    pub fn resize_and_crop(&self, img: &RgbImage) -> Result<RgbImage, DataError> {
        let interp = Interpolation::parse(&self.interpolation).map_err(DataError::Config)?;
        let [th, tw] = self.img_size;
        let scale = [(th as f64 / self.crop_pct).floor() as u32, (tw as f64 / self.crop_pct).floor() as u32];
        let (w, h) = (img.width(), img.height());
        let mut resizer = Resizer::new();
        let resized = match self.crop_mode.as_str() {
            "squash" => resize(&mut resizer, img, scale[1], scale[0], interp),
            "center" => {
                let (rw, rh) = if scale[0] == scale[1] {
                    // torchvision Resize(int): the shorter side to `size`, the other truncated.
                    let short = scale[0] as f64;
                    if w <= h {
                        (short as u32, (short * h as f64 / w as f64) as u32)
                    } else {
                        ((short * w as f64 / h as f64) as u32, short as u32)
                    }
                } else {
                    keep_ratio(w, h, scale, false)
                };
                resize(&mut resizer, img, rw.max(1), rh.max(1), interp)
            }
            "border" => {
                let (rw, rh) = keep_ratio(w, h, scale, true);
                resize(&mut resizer, img, rw.max(1), rh.max(1), interp)
            }
            other => return Err(DataError::Config(format!("crop_mode '{other}' (use center, squash or border)"))),
        };
        let fill = self.mean.map(|m| (255.0 * m).round_ties_even() as u8);
        Ok(center_crop_or_pad(&resized, tw as u32, th as u32, fill))
    }

    /// Decode, resize, crop and normalise one image into CHW `f32`.
    pub fn load(&self, path: &Path) -> Result<Vec<f32>, DataError> {
        let bytes = std::fs::read(path).map_err(|source| DataError::Io { path: path.to_path_buf(), source })?;
        let img = decode_rgb(&bytes).map_err(|reason| DataError::Decode { path: path.to_path_buf(), reason })?;
        self.apply(&img)
    }

    pub fn apply(&self, img: &RgbImage) -> Result<Vec<f32>, DataError> {
        let out_img = self.resize_and_crop(img)?;
        let mut out = vec![0f32; 3 * (out_img.width() * out_img.height()) as usize];
        normalize_chw(&out_img, self.mean, self.std, &mut out);
        Ok(out)
    }
}

/// timm `ResizeKeepRatio`: scale by the ratio of the shorter (or, `longest`, longer) side
/// relation, rounding each side.
fn keep_ratio(w: u32, h: u32, target: [u32; 2], longest: bool) -> (u32, u32) {
    let ratios = [h as f64 / target[0] as f64, w as f64 / target[1] as f64];
    let ratio = if longest { ratios[0].max(ratios[1]) } else { ratios[0].min(ratios[1]) };
    ((w as f64 / ratio).round_ties_even() as u32, (h as f64 / ratio).round_ties_even() as u32)
}

/// torchvision `CenterCrop` (offsets `int(round((size - crop) / 2))`), padding with `fill`
/// where the image is smaller (timm `CenterCropOrPad`).
fn center_crop_or_pad(img: &RgbImage, tw: u32, th: u32, fill: [u8; 3]) -> RgbImage {
    let (w, h) = (img.width(), img.height());
    if w >= tw && h >= th {
        let left = ((w - tw) as f64 / 2.0).round_ties_even() as u32;
        let top = ((h - th) as f64 / 2.0).round_ties_even() as u32;
        return crop(img, left, top, tw, th);
    }
    let mut out = RgbImage::from_pixel(tw, th, Rgb(fill));
    let (cw, ch) = (w.min(tw), h.min(th));
    let (src_left, src_top) = ((w - cw) / 2, (h - ch) / 2);
    let (dst_left, dst_top) = ((tw - cw) / 2, (th - ch) / 2);
    for y in 0..ch {
        for x in 0..cw {
            out.put_pixel(dst_left + x, dst_top + y, *img.get_pixel(src_left + x, src_top + y));
        }
    }
    out
}
