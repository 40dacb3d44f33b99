//! JPEG decoding: pixels equal Pillow's (what timm trains on), and a cropping-region decode
//! equals a full decode followed by the crop, for every chroma subsampling.

use std::path::{Path, PathBuf};

use data::decode::{decode_rgb, encode_jpeg, Decoder, Opened};
use data::rng::Rng;
use image::RgbImage;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn png(path: &Path) -> RgbImage {
    image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).into_rgb8()
}

#[test]
fn jpeg_decode_is_pillows_pixel_for_pixel() {
    let dir = fixtures().join("jpeg");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "jpg") {
            let ours = decode_rgb(&std::fs::read(&path).unwrap()).unwrap();
            let pillow = png(&path.with_extension("pil.png"));
            assert_eq!(ours.dimensions(), pillow.dimensions(), "{}", path.display());
            let differing = ours.as_raw().iter().zip(pillow.as_raw()).filter(|(a, b)| a != b).count();
            assert_eq!(differing, 0, "{}: {differing} values differ from Pillow's decode", path.display());
            checked += 1;
        }
    }
    assert_eq!(checked, 4, "the four fixtures of make_jpeg_fixtures.py");
}

#[test]
fn cropping_region_decode_equals_full_decode_then_crop() {
    let photo = png(&fixtures().join("photo_chelsea.png"));
    // Odd sizes, so the last iMCU row and column are partial.
    let photo = image::imageops::crop_imm(&photo, 3, 2, 219, 141).to_image();
    let mut decoder = Decoder::new();
    let mut rng = Rng::new(7);
    for subsamp in 0..7 {
        for progressive in [false, true] {
            let jpeg = encode_jpeg(&photo, 90, subsamp, progressive).unwrap();
            let opened = decoder.open(&jpeg).unwrap();
            assert!(matches!(opened, Opened::Jpeg { .. }), "a JPEG is opened by its header only");
            let full = decoder.decode(&jpeg).unwrap();
            let (w, h) = full.dimensions();
            let mut boxes = vec![(0, 0, w, h), (w - 1, h - 1, 1, 1), (0, h - 5, w, 5), (17, 0, 1, h), (31, 33, 64, 48)];
            for _ in 0..150 {
                let (bw, bh) = (rng.randint(1, w as i64) as u32, rng.randint(1, h as i64) as u32);
                boxes.push((rng.randint(0, (w - bw) as i64) as u32, rng.randint(0, (h - bh) as i64) as u32, bw, bh));
            }
            for (left, top, bw, bh) in boxes {
                let region = decoder.crop(&opened, left, top, bw, bh).unwrap();
                let expected = image::imageops::crop_imm(&full, left, top, bw, bh).to_image();
                assert!(
                    region == expected,
                    "subsampling {subsamp}, progressive {progressive}: box ({left}, {top}, {bw}, {bh}) differs from the full decode"
                );
            }
        }
    }
}
