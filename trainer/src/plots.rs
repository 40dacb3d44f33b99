//! PNG curves of `summary.csv` in `<run>/plots/`: `loss.png` (train blue, eval orange),
//! `accuracy.png` (top-1 blue, top-5 orange) and `lr.png`, with the y range printed at the
//! axis ends. Drawn directly (no plotting or font dependency).

use std::path::Path;

use anyhow::Result;
use image::{Rgb, RgbImage};

const W: u32 = 640;
const H: u32 = 400;
const MARGIN: u32 = 48;
const COLOURS: [Rgb<u8>; 2] = [Rgb([31, 119, 180]), Rgb([255, 127, 14])];

/// 3×5 digits and the few symbols the axis labels need.
fn glyph(c: char) -> [u8; 5] {
    match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        'e' => [0, 7, 7, 4, 7],
        _ => [0; 5],
    }
}

fn text(img: &mut RgbImage, x: u32, y: u32, s: &str) {
    for (i, c) in s.chars().enumerate() {
        for (row, bits) in glyph(c).iter().enumerate() {
            for col in 0..3 {
                if bits & (4 >> col) != 0 {
                    for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                        let (px, py) = (x + i as u32 * 8 + col * 2 + dx, y + row as u32 * 2 + dy);
                        if px < W && py < H {
                            img.put_pixel(px, py, Rgb([0, 0, 0]));
                        }
                    }
                }
            }
        }
    }
}

fn line(img: &mut RgbImage, (x0, y0): (f64, f64), (x1, y1): (f64, f64), colour: Rgb<u8>) {
    let steps = ((x1 - x0).abs().max((y1 - y0).abs()) as usize).max(1);
    for i in 0..=steps {
        let t = i as f64 / steps as f64;
        let (x, y) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
        for (dx, dy) in [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)] {
            let (px, py) = ((x + dx) as u32, (y + dy) as u32);
            if px < W && py < H {
                img.put_pixel(px, py, colour);
            }
        }
    }
}

/// Plot up to two series (finite values only) against epoch.
fn plot(path: &Path, series: &[Vec<f64>]) -> Result<()> {
    let mut img = RgbImage::from_pixel(W, H, Rgb([255, 255, 255]));
    let values: Vec<f64> = series.iter().flatten().copied().filter(|v| v.is_finite()).collect();
    let (lo, hi) = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(*v), b.max(*v)));
    let (lo, hi) = if lo.is_finite() && hi > lo { (lo, hi) } else { (lo.min(0.0), lo.max(0.0) + 1.0) };
    let n = series.iter().map(Vec::len).max().unwrap_or(0).max(2);
    let to_px = |i: usize, v: f64| {
        let x = MARGIN as f64 + (W - 2 * MARGIN) as f64 * i as f64 / (n - 1) as f64;
        let y = (H - MARGIN) as f64 - (H - 2 * MARGIN) as f64 * (v - lo) / (hi - lo);
        (x, y)
    };
    let grey = Rgb([160, 160, 160]);
    line(&mut img, (MARGIN as f64, MARGIN as f64), (MARGIN as f64, (H - MARGIN) as f64), grey);
    line(&mut img, (MARGIN as f64, (H - MARGIN) as f64), ((W - MARGIN) as f64, (H - MARGIN) as f64), grey);
    for (s, colour) in series.iter().zip(COLOURS) {
        let points: Vec<(f64, f64)> =
            s.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(i, v)| to_px(i, *v)).collect();
        for w in points.windows(2) {
            line(&mut img, w[0], w[1], colour);
        }
    }
    text(&mut img, 4, MARGIN - 4, &format!("{hi:.3e}"));
    text(&mut img, 4, H - MARGIN - 4, &format!("{lo:.3e}"));
    text(&mut img, W - MARGIN - 8, H - MARGIN + 8, &format!("{}", n - 1));
    img.save(path)?;
    Ok(())
}

/// Redraw the run's curves from its `summary.csv`.
pub fn write(summary: &Path, dir: &Path) -> Result<()> {
    let text = std::fs::read_to_string(summary)?;
    let rows: Vec<Vec<f64>> =
        text.lines().skip(1).map(|l| l.split(',').map(|v| v.parse().unwrap_or(f64::NAN)).collect()).collect();
    let col = |i: usize| rows.iter().map(|r| r.get(i).copied().unwrap_or(f64::NAN)).collect::<Vec<_>>();
    std::fs::create_dir_all(dir)?;
    plot(&dir.join("loss.png"), &[col(1), col(2)])?;
    plot(&dir.join("accuracy.png"), &[col(3), col(4)])?;
    plot(&dir.join("lr.png"), &[col(5)])?;
    Ok(())
}
