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
    // zune-jpeg decodes a truncated file into a partly grey image; Pillow (and so timm) refuses
    // it. A JPEG must end with its end-of-image marker (allowing trailing bytes after it).
    if format == ImageFormat::Jpeg && !bytes[bytes.len().saturating_sub(4096)..].windows(2).any(|w| w == [0xFF, 0xD9]) {
        return Err("truncated JPEG (no end-of-image marker)".into());
    }
    let image = image::load_from_memory_with_format(bytes, format).map_err(|e| e.to_string())?;
    Ok(image.into_rgb8())
}
