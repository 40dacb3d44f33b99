//! timm's image transforms on RGB8 images (`transforms_factory.py`): the train transform
//! (RandomResizedCrop, flip, RandAugment or colour jitter) and the eval transform
//! (resize, crop), then normalisation into CHW `f32`.

pub mod affine;
pub mod eval;
pub mod randaugment;
pub mod resize;
pub mod train;

pub use eval::EvalTransform;
pub use resize::Interpolation;
pub use train::{TrainTransform, TrainTransformConfig};

use image::RgbImage;

/// `(x / 255 - mean) / std`, HWC u8 → CHW f32.
pub fn normalize_chw(img: &RgbImage, mean: [f64; 3], std: [f64; 3], out: &mut [f32]) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let plane = w * h;
    assert_eq!(out.len(), 3 * plane, "output buffer size");
    let scale: [f32; 3] = std::array::from_fn(|c| (1.0 / (255.0 * std[c])) as f32);
    let shift: [f32; 3] = std::array::from_fn(|c| (mean[c] / std[c]) as f32);
    for (i, px) in img.as_raw().chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * plane + i] = px[c] as f32 * scale[c] - shift[c];
        }
    }
}

/// HWC u8 → CHW u8 (for normalising on the device, as timm's prefetcher does).
pub fn to_chw_u8(img: &RgbImage, out: &mut [u8]) {
    let plane = (img.width() * img.height()) as usize;
    assert_eq!(out.len(), 3 * plane, "output buffer size");
    for (i, px) in img.as_raw().chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * plane + i] = px[c];
        }
    }
}
