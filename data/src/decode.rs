//! Bytes → RGB8. JPEG through libjpeg-turbo (the decoder inside Pillow's wheels, so pixels are
//! timm's own), PNG/WebP and CMYK JPEGs through `image`; greyscale comes out as RGB. Formats are
//! sniffed by content (ImageNet has PNGs named `.JPEG`).
//!
//! RandomResizedCrop needs only the image size before it draws its box, so [`Decoder::open`]
//! reads just a JPEG's header and [`Opened::crop`] decodes only the box (libjpeg-turbo's
//! cropping region): rows below it are never decoded, rows above are only Huffman-skipped.

use std::cell::RefCell;
use std::ffi::CStr;

use image::{ImageFormat, RgbImage};
use turbojpeg_sys as tj;

/// One libjpeg-turbo decompressor; one per worker thread (the handle keeps its buffers).
pub struct Decoder {
    handle: tj::tjhandle,
    /// Decompressed region, reused between images (a fresh one would be page-faulted in each time).
    region: Vec<u8>,
}

// A handle is used by one thread at a time (owned by one worker); libjpeg-turbo keeps no
// thread-affine state in it.
unsafe impl Send for Decoder {}

impl Drop for Decoder {
    fn drop(&mut self) {
        unsafe { tj::tj3Destroy(self.handle) }
    }
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

/// An image whose size is known: a JPEG with only its header read, or a decoded image.
pub enum Opened<'a> {
    Jpeg { bytes: &'a [u8], width: u32, height: u32, subsamp: i32 },
    Decoded(RgbImage),
}

impl Opened<'_> {
    pub fn width(&self) -> u32 {
        match self {
            Self::Jpeg { width, .. } => *width,
            Self::Decoded(img) => img.width(),
        }
    }

    pub fn height(&self) -> u32 {
        match self {
            Self::Jpeg { height, .. } => *height,
            Self::Decoded(img) => img.height(),
        }
    }
}

impl Decoder {
    pub fn new() -> Self {
        let handle = unsafe { tj::tj3Init(tj::TJINIT_TJINIT_DECOMPRESS as i32) };
        assert!(!handle.is_null(), "libjpeg-turbo could not allocate a decompressor");
        Self { handle, region: Vec::new() }
    }

    /// Decode the whole image.
    pub fn decode(&mut self, bytes: &[u8]) -> Result<RgbImage, String> {
        match self.open(bytes)? {
            Opened::Decoded(img) => Ok(img),
            Opened::Jpeg { bytes, width, height, .. } => self.decompress(bytes, None, width, height),
        }
    }

    /// Read enough of the image to know its size: a JPEG's header, anything else decoded whole.
    pub fn open<'a>(&mut self, bytes: &'a [u8]) -> Result<Opened<'a>, String> {
        if bytes.is_empty() {
            return Err("empty file".into());
        }
        let format = image::guess_format(bytes).map_err(|e| format!("unknown image format: {e}"))?;
        if !matches!(format, ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP) {
            return Err(format!("unsupported image format {format:?}"));
        }
        if format == ImageFormat::Jpeg {
            // libjpeg-turbo decodes a truncated file into a partly grey image with only a warning;
            // Pillow (and so timm) refuses it. A JPEG must end with its end-of-image marker
            // (allowing trailing bytes after it).
            if !bytes[bytes.len().saturating_sub(4096)..].windows(2).any(|w| w == [0xFF, 0xD9]) {
                return Err("truncated JPEG (no end-of-image marker)".into());
            }
            if unsafe { tj::tj3DecompressHeader(self.handle, bytes.as_ptr(), bytes.len() as _) } != 0 {
                return Err(self.error());
            }
            let get = |param| unsafe { tj::tj3Get(self.handle, param as i32) };
            let colorspace = get(tj::TJPARAM_TJPARAM_COLORSPACE);
            // TurboJPEG cannot convert CMYK/YCCK to RGB; `image` does (as Pillow's convert does).
            if colorspace != tj::TJCS_TJCS_CMYK as i32 && colorspace != tj::TJCS_TJCS_YCCK as i32 {
                let (width, height) = (get(tj::TJPARAM_TJPARAM_JPEGWIDTH), get(tj::TJPARAM_TJPARAM_JPEGHEIGHT));
                if width <= 0 || height <= 0 {
                    return Err(format!("JPEG header gives a {width}x{height} image"));
                }
                let subsamp = get(tj::TJPARAM_TJPARAM_SUBSAMP);
                return Ok(Opened::Jpeg { bytes, width: width as u32, height: height as u32, subsamp });
            }
        }
        let image = image::load_from_memory_with_format(bytes, format).map_err(|e| e.to_string())?;
        Ok(Opened::Decoded(image.into_rgb8()))
    }

    /// The box `(left, top, width, height)` of an opened image, pixel for pixel what a full
    /// decode followed by a crop gives.
    pub fn crop(
        &mut self,
        opened: &Opened<'_>,
        left: u32,
        top: u32,
        width: u32,
        height: u32,
    ) -> Result<RgbImage, String> {
        assert!(left + width <= opened.width() && top + height <= opened.height(), "crop box inside the image");
        match *opened {
            Opened::Decoded(ref img) => Ok(crate::transform::resize::crop(img, left, top, width, height)),
            Opened::Jpeg { bytes, width: full_w, height: full_h, subsamp } => {
                let Some(mcu_w) = mcu_width(subsamp) else {
                    let img = self.decompress(bytes, None, full_w, full_h)?;
                    return Ok(crate::transform::resize::crop(&img, left, top, width, height));
                };
                // The region's left edge must sit on an iMCU column, and one iMCU of margin left and
                // right gives the horizontal chroma upsampler the neighbours it has in a full decode
                // (without it, edge columns differ). libjpeg-turbo keeps the vertical context itself.
                let x0 = (left / mcu_w).saturating_sub(1) * mcu_w;
                let x1 = (left + width + mcu_w).min(full_w);
                let mut region = std::mem::take(&mut self.region);
                region.resize((x1 - x0) as usize * height as usize * 3, 0);
                let decoded =
                    self.decompress_into(bytes, Some((x0, top, x1 - x0, height)), full_w, full_h, &mut region);
                let cropped =
                    decoded.map(|()| crate::transform::resize::crop_raw(&region, x1 - x0, left - x0, 0, width, height));
                self.region = region;
                cropped
            }
        }
    }

    fn decompress(
        &mut self,
        bytes: &[u8],
        region: Option<(u32, u32, u32, u32)>,
        full_w: u32,
        full_h: u32,
    ) -> Result<RgbImage, String> {
        let (_, _, w, h) = region.unwrap_or((0, 0, full_w, full_h));
        let mut out = vec![0u8; w as usize * h as usize * 3];
        self.decompress_into(bytes, region, full_w, full_h, &mut out)?;
        Ok(RgbImage::from_raw(w, h, out).expect("buffer sized for the region"))
    }

    /// Decompress `region` (or the whole image) of the JPEG whose header was read into `out`,
    /// `w * 3` bytes per row.
    fn decompress_into(
        &mut self,
        bytes: &[u8],
        region: Option<(u32, u32, u32, u32)>,
        full_w: u32,
        full_h: u32,
        out: &mut [u8],
    ) -> Result<(), String> {
        let (x, y, w, h) = region.unwrap_or((0, 0, full_w, full_h));
        assert_eq!(out.len(), w as usize * h as usize * 3, "output buffer size");
        let tj_region = match region {
            Some(_) => tj::tjregion { x: x as i32, y: y as i32, w: w as i32, h: h as i32 },
            None => tj::tjregion { x: 0, y: 0, w: 0, h: 0 }, // TJUNCROPPED
        };
        // The header again (a few µs): the handle may have read another image since `open`, and
        // the cropping region is checked against the header the handle holds.
        unsafe {
            if tj::tj3DecompressHeader(self.handle, bytes.as_ptr(), bytes.len() as _) != 0
                || tj::tj3SetCroppingRegion(self.handle, tj_region) != 0
            {
                return Err(self.error());
            }
        }
        let rc = unsafe {
            tj::tj3Decompress8(
                self.handle,
                bytes.as_ptr(),
                bytes.len() as _,
                out.as_mut_ptr(),
                (w * 3) as i32,
                tj::TJPF_TJPF_RGB as i32,
            )
        };
        // A warning (e.g. "extraneous bytes before marker") leaves a complete image, and Pillow
        // accepts such files; truncation was refused in `open`.
        if rc != 0 && unsafe { tj::tj3GetErrorCode(self.handle) } != tj::TJERR_TJERR_WARNING as i32 {
            return Err(self.error());
        }
        Ok(())
    }

    fn error(&self) -> String {
        let message = unsafe { CStr::from_ptr(tj::tj3GetErrorStr(self.handle)) };
        format!("JPEG: {}", message.to_string_lossy())
    }
}

/// The iMCU width for a chroma subsampling, or `None` when libjpeg-turbo does not know it.
fn mcu_width(subsamp: i32) -> Option<u32> {
    // turbojpeg.h's `tjMCUWidth` (a header-only array, not a linkable symbol),
    // indexed 4:4:4, 4:2:2, 4:2:0, grey, 4:4:0, 4:1:1, 4:4:1.
    const MCU_WIDTH: [u32; 7] = [8, 16, 16, 8, 8, 32, 8];
    usize::try_from(subsamp).ok().and_then(|i| MCU_WIDTH.get(i).copied())
}

thread_local! {
    static DECODER: RefCell<Decoder> = RefCell::new(Decoder::new());
}

/// Decode an encoded image with this thread's decoder; the error says why (the caller names the
/// file or shard key).
pub fn decode_rgb(bytes: &[u8]) -> Result<RgbImage, String> {
    DECODER.with(|d| d.borrow_mut().decode(bytes))
}

/// Encode RGB8 as a baseline (or progressive) JPEG with libjpeg-turbo. `subsamp` is TurboJPEG's
/// code: 0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0, 3 = grey, 4 = 4:4:0, 5 = 4:1:1, 6 = 4:4:1. For tests
/// and benchmarks that need JPEGs of every kind.
pub fn encode_jpeg(img: &RgbImage, quality: i32, subsamp: i32, progressive: bool) -> Result<Vec<u8>, String> {
    unsafe {
        let handle = tj::tj3Init(tj::TJINIT_TJINIT_COMPRESS as i32);
        assert!(!handle.is_null(), "libjpeg-turbo could not allocate a compressor");
        let error = || format!("JPEG: {}", CStr::from_ptr(tj::tj3GetErrorStr(handle)).to_string_lossy());
        let mut buf: *mut u8 = std::ptr::null_mut();
        let mut size = 0;
        let ok = tj::tj3Set(handle, tj::TJPARAM_TJPARAM_QUALITY as i32, quality) == 0
            && tj::tj3Set(handle, tj::TJPARAM_TJPARAM_SUBSAMP as i32, subsamp) == 0
            && tj::tj3Set(handle, tj::TJPARAM_TJPARAM_PROGRESSIVE as i32, progressive as i32) == 0
            && tj::tj3Compress8(
                handle,
                img.as_raw().as_ptr(),
                img.width() as i32,
                0,
                img.height() as i32,
                tj::TJPF_TJPF_RGB as i32,
                &mut buf,
                &mut size,
            ) == 0;
        let result = if ok { Ok(std::slice::from_raw_parts(buf, size as usize).to_vec()) } else { Err(error()) };
        tj::tj3Free(buf.cast());
        tj::tj3Destroy(handle);
        result
    }
}
