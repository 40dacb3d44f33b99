//! Bytes → RGB8. JPEG, PNG and WebP, sniffed by content (ImageNet has PNGs named `.JPEG`);
//! greyscale and CMYK come out as RGB.

use image::{ImageFormat, RgbImage};

/// Decode an encoded image; the error says why (the caller names the file or shard key).
pub fn decode_rgb(bytes: &[u8]) -> Result<RgbImage, String> {
    if bytes.is_empty() {
        return Err("empty file".into());
    }
    let format = image::guess_format(bytes).map_err(|e| format!("unknown image format: {e}"))?;
    if !matches!(format, ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP) {
        return Err(format!("unsupported image format {format:?}"));
    }
    let image = image::load_from_memory_with_format(bytes, format).map_err(|e| e.to_string())?;
    Ok(image.to_rgb8())
}
