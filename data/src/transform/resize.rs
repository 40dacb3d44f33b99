//! Resizing with PIL's filters (fast_image_resize's convolution resampler, which follows
//! Pillow's: support scaled by the downscale factor, bicubic a = −0.5).

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::RgbImage;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interpolation {
    Nearest,
    Bilinear,
    Bicubic,
    /// timm's `random`: bilinear or bicubic, chosen per image.
    Random,
}

impl Interpolation {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "nearest" => Ok(Self::Nearest),
            "bilinear" => Ok(Self::Bilinear),
            "bicubic" => Ok(Self::Bicubic),
            "random" => Ok(Self::Random),
            other => Err(format!("interpolation '{other}' (use nearest, bilinear, bicubic or random)")),
        }
    }

    fn alg(self) -> ResizeAlg {
        match self {
            Self::Nearest => ResizeAlg::Nearest,
            Self::Bilinear | Self::Random => ResizeAlg::Convolution(FilterType::Bilinear),
            Self::Bicubic => ResizeAlg::Convolution(FilterType::CatmullRom),
        }
    }
}

/// Copy the box `(left, top, width, height)` out of `img` (PIL's `crop`: the resampler then
/// clamps at the box edge instead of reading pixels outside it).
pub fn crop(img: &RgbImage, left: u32, top: u32, width: u32, height: u32) -> RgbImage {
    crop_raw(img.as_raw(), img.width(), left, top, width, height)
}

/// [`crop`] from a packed RGB8 buffer `stride_px` pixels wide, row by row.
pub fn crop_raw(src: &[u8], stride_px: u32, left: u32, top: u32, width: u32, height: u32) -> RgbImage {
    let (stride, row_len) = (stride_px as usize * 3, width as usize * 3);
    assert!(left + width <= stride_px && (top + height) as usize * stride <= src.len(), "crop box inside the image");
    let mut out = Vec::with_capacity(row_len * height as usize);
    for y in top as usize..(top + height) as usize {
        let start = y * stride + left as usize * 3;
        out.extend_from_slice(&src[start..start + row_len]);
    }
    RgbImage::from_raw(width, height, out).expect("buffer sized for the box")
}

/// Resize to `width × height`. `resizer` keeps its buffers between calls (one per thread).
pub fn resize(resizer: &mut Resizer, img: &RgbImage, width: u32, height: u32, interp: Interpolation) -> RgbImage {
    if img.width() == width && img.height() == height {
        return img.clone();
    }
    let src =
        ImageRef::new(img.width(), img.height(), img.as_raw(), PixelType::U8x3).expect("RGB8 buffer matches its size");
    let mut dst = Image::new(width, height, PixelType::U8x3);
    resizer
        .resize(&src, &mut dst, &ResizeOptions::new().resize_alg(interp.alg()))
        .expect("same pixel type on both sides");
    RgbImage::from_raw(width, height, dst.into_vec()).expect("resized buffer matches its size")
}
