//! timm's image transforms on RGB8 images (`transforms_factory.py`): the train transform
//! (RandomResizedCrop, flip, RandAugment or colour jitter) and the eval transform
//! (resize, crop), then normalisation into CHW `f32`.

/// `fn NAME(ARGS) -> R { BODY }`, plus a copy of BODY compiled for AVX2 that runs when the CPU
/// has it: wider vectors and inline rounding, the same IEEE results (Rust never contracts
/// `a * b + c` into an FMA), so PIL bit-exactness holds on both paths.
macro_rules! avx2_multiversion {
    ($(#[$meta:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn portable($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    portable($($arg),*)
                }
                return unsafe { avx2($($arg),*) };
            }
            portable($($arg),*)
        }
    };
}

pub mod affine;
pub mod eval;
pub mod randaugment;
pub mod resize;
pub mod train;

pub use eval::EvalTransform;
pub use resize::Interpolation;
pub use train::{TrainTransform, TrainTransformConfig};

use image::RgbImage;

/// `(x / 255 - mean) / std` as `x · scale − shift` per channel: the `(scale, shift)` that both
/// [`normalize_chw`] and the device-side normalisation of `u8` batches use.
pub fn normalize_coefficients(mean: [f64; 3], std: [f64; 3]) -> ([f32; 3], [f32; 3]) {
    let scale: [f32; 3] = std::array::from_fn(|c| (1.0 / (255.0 * std[c])) as f32);
    let shift: [f32; 3] = std::array::from_fn(|c| (mean[c] / std[c]) as f32);
    (scale, shift)
}

/// `(x / 255 - mean) / std`, HWC u8 → CHW f32.
pub fn normalize_chw(img: &RgbImage, mean: [f64; 3], std: [f64; 3], out: &mut [f32]) {
    let plane = (img.width() * img.height()) as usize;
    assert_eq!(out.len(), 3 * plane, "output buffer size");
    let (scale, shift) = normalize_coefficients(mean, std);
    normalize_planes(img.as_raw(), scale, shift, out);
}

avx2_multiversion! {
    fn normalize_planes(src: &[u8], scale: [f32; 3], shift: [f32; 3], out: &mut [f32]) {
        let plane = src.len() / 3;
        let (r, rest) = out.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        for (((px, r), g), b) in src.chunks_exact(3).zip(r).zip(g).zip(b) {
            *r = px[0] as f32 * scale[0] - shift[0];
            *g = px[1] as f32 * scale[1] - shift[1];
            *b = px[2] as f32 * scale[2] - shift[2];
        }
    }
}

/// HWC u8 → CHW u8 (for normalising on the device, as timm's prefetcher does).
pub fn to_chw_u8(img: &RgbImage, out: &mut [u8]) {
    let plane = (img.width() * img.height()) as usize;
    assert_eq!(out.len(), 3 * plane, "output buffer size");
    split_planes(img.as_raw(), out);
}

avx2_multiversion! {
    fn split_planes(src: &[u8], out: &mut [u8]) {
        let plane = src.len() / 3;
        let (r, rest) = out.split_at_mut(plane);
        let (g, b) = rest.split_at_mut(plane);
        for (((px, r), g), b) in src.chunks_exact(3).zip(r).zip(g).zip(b) {
            *r = px[0];
            *g = px[1];
            *b = px[2];
        }
    }
}
