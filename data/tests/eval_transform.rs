use std::path::PathBuf;

use data::eval::EvalTransform;
use data::DataError;
use image::{Rgb, RgbImage};

fn transform(size: usize, crop_pct: f64, mode: &str) -> EvalTransform {
    EvalTransform {
        img_size: [size, size],
        crop_pct,
        crop_mode: mode.into(),
        mean: [0.5; 3],
        std: [0.5; 3],
        interpolation: "bicubic".into(),
    }
}

/// Column x of an 8x6 image has red = 10·x, green = 20·y, blue = 7.
fn ramp() -> RgbImage {
    RgbImage::from_fn(8, 6, |x, y| Rgb([10 * x as u8, 20 * y as u8, 7]))
}

#[test]
fn centre_crop_without_resize_keeps_pixels_and_normalises() {
    // crop_pct 1 and a 6-pixel short side: no resize, crop columns 1..7.
    let out = transform(6, 1.0, "center").apply(&ramp()).unwrap();
    assert_eq!(out.len(), 3 * 6 * 6);
    let norm = |v: u8| ((v as f64 / 255.0 - 0.5) / 0.5) as f32;
    let close = |a: f32, b: f32| assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    close(out[0], norm(10)); // red at output (0, 0) = input column 1
    close(out[5], norm(60)); // red at output (5, 0) = input column 6
    close(out[36 + 6 * 3], norm(60)); // green at output row 3
    close(out[72], norm(7));
}

#[test]
fn crop_pct_scales_before_cropping() {
    // 4 / 0.5 = 8: the short side is resized to 8, then a 4x4 centre crop.
    let out = transform(4, 0.5, "center").apply(&ramp()).unwrap();
    assert_eq!(out.len(), 3 * 4 * 4);
    let out = transform(4, 1.0, "squash").apply(&ramp()).unwrap();
    assert_eq!(out.len(), 3 * 4 * 4);
}

#[test]
fn unreadable_images_name_their_path() {
    let dir = std::env::temp_dir().join(format!("maxxvit-data-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("corrupt.jpg");
    std::fs::write(&bad, b"\xff\xd8\xff\xe0 not really a jpeg").unwrap();
    match transform(4, 1.0, "center").load(&bad) {
        Err(DataError::Decode { path, .. }) => assert_eq!(path, bad),
        other => panic!("expected a decode error, got {other:?}"),
    }
    let missing = PathBuf::from(dir.join("missing.png"));
    assert!(transform(4, 1.0, "center").load(&missing).unwrap_err().to_string().contains("missing.png"));
    assert!(transform(4, 1.0, "bogus").apply(&ramp()).is_err());
}

#[test]
fn cmyk_and_greyscale_jpegs_decode_to_rgb() {
    // A CMYK JPEG written by Pillow (2×2, pure cyan in CMYK) and a greyscale one.
    let dir = std::env::temp_dir().join(format!("maxxvit-cmyk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let grey = image::GrayImage::from_fn(16, 8, |x, _| image::Luma([x as u8 * 16]));
    let path = dir.join("grey.jpg");
    grey.save(&path).unwrap();
    let rgb = data::decode::decode_rgb(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(rgb.dimensions(), (16, 8));
    assert!(rgb.pixels().all(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2]), "grey stays grey");
    let cmyk = std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cmyk.jpg")).unwrap();
    let rgb = data::decode::decode_rgb(&cmyk).unwrap();
    assert_eq!(rgb.dimensions(), (8, 8));
    let p = rgb.get_pixel(4, 4).0;
    assert!(p[0] < 64 && p[1] > 192 && p[2] > 192, "cyan, got {p:?}");
}
