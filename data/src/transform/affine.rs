//! PIL's affine warp, `img.transform(size, AFFINE, m, resample, fillcolor)`, behind RandAugment's
//! rotate, shear and translate ops: output pixel `(x, y)` samples the input at
//! `m · (x + ½, y + ½)`; samples outside the input keep the fill colour. The arithmetic is
//! PIL's `bilinear_filter32RGB` / `bicubic_filter32RGB` term for term, so the result is
//! bit-identical (tests/pil_parity.rs).
//!
//! Speed without changing a bit: the three channels of a pixel are filtered side by side as f64
//! vector lanes (PIL does the same operations per channel, in the same order), with AVX
//! intrinsics where the CPU has AVX2; and a zero fraction skips the taps it cannot change.

use std::cell::RefCell;

use image::RgbImage;

use super::randaugment::{cubic, Resample};

/// A pixel's channels as f64 (the fourth lane is padding).
type Px = [f64; 4];

thread_local! {
    /// The source as [`Px`], reused between calls.
    static SOURCE: RefCell<Vec<Px>> = const { RefCell::new(Vec::new()) };
}

pub fn affine(img: &RgbImage, m: [f64; 6], resample: Resample, fill: [u8; 3]) -> RgbImage {
    SOURCE.with(|buf| {
        let mut src = buf.borrow_mut();
        src.clear();
        src.extend(img.as_raw().chunks_exact(3).map(|p| [p[0] as f64, p[1] as f64, p[2] as f64, 0.0]));
        let (w, h) = (img.width() as usize, img.height() as usize);
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            return unsafe { warp_avx2(&src, w, h, m, resample, fill) };
        }
        warp::<Portable>(&src, w, h, m, resample, fill)
    })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn warp_avx2(src: &[Px], w: usize, h: usize, m: [f64; 6], resample: Resample, fill: [u8; 3]) -> RgbImage {
    warp::<Avx>(src, w, h, m, resample, fill)
}

/// The per-pixel arithmetic on a pixel's channel lanes. `unsafe`: the AVX implementation may
/// only run where the CPU has AVX2 (it is only used from `warp_avx2`).
trait Lanes {
    type V: Copy;
    unsafe fn load(p: &Px) -> Self::V;
    /// PIL's bilinear step `a + (b - a) * d`.
    unsafe fn lerp(a: Self::V, b: Self::V, d: f64) -> Self::V;
    /// PIL's bicubic step (its a = −1 cubic) in PIL's evaluation order, see [`cubic`].
    unsafe fn cubic(v1: Self::V, v2: Self::V, v3: Self::V, v4: Self::V, d: f64) -> Self::V;
    /// PIL's float → u8 (bilinear: truncate, in range anyway; bicubic: clip, then truncate).
    unsafe fn store(out: &mut [u8], v: Self::V);
}

struct Portable;

impl Lanes for Portable {
    type V = Px;

    #[inline(always)]
    unsafe fn load(p: &Px) -> Px {
        *p
    }

    #[inline(always)]
    unsafe fn lerp(a: Px, b: Px, d: f64) -> Px {
        [a[0] + (b[0] - a[0]) * d, a[1] + (b[1] - a[1]) * d, a[2] + (b[2] - a[2]) * d, 0.0]
    }

    #[inline(always)]
    unsafe fn cubic(v1: Px, v2: Px, v3: Px, v4: Px, d: f64) -> Px {
        let c = |i: usize| cubic(v1[i], v2[i], v3[i], v4[i], d);
        [c(0), c(1), c(2), 0.0]
    }

    #[inline(always)]
    unsafe fn store(out: &mut [u8], v: Px) {
        out[0] = v[0] as u8;
        out[1] = v[1] as u8;
        out[2] = v[2] as u8;
    }
}

#[cfg(target_arch = "x86_64")]
struct Avx;

#[cfg(target_arch = "x86_64")]
impl Lanes for Avx {
    type V = std::arch::x86_64::__m256d;

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load(p: &Px) -> Self::V {
        std::arch::x86_64::_mm256_loadu_pd(p.as_ptr())
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn lerp(a: Self::V, b: Self::V, d: f64) -> Self::V {
        use std::arch::x86_64::*;
        _mm256_add_pd(a, _mm256_mul_pd(_mm256_sub_pd(b, a), _mm256_set1_pd(d)))
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn cubic(v1: Self::V, v2: Self::V, v3: Self::V, v4: Self::V, d: f64) -> Self::V {
        use std::arch::x86_64::*;
        // `-a + b` is `b - a` exactly (IEEE subtraction is addition of the negation).
        {
            let d = _mm256_set1_pd(d);
            let p2 = _mm256_sub_pd(v3, v1);
            let p3 = _mm256_sub_pd(_mm256_add_pd(_mm256_mul_pd(_mm256_set1_pd(2.0), _mm256_sub_pd(v1, v2)), v3), v4);
            let p4 = _mm256_add_pd(_mm256_sub_pd(_mm256_sub_pd(v2, v1), v3), v4);
            let inner = _mm256_add_pd(p3, _mm256_mul_pd(d, p4));
            let inner = _mm256_add_pd(p2, _mm256_mul_pd(d, inner));
            _mm256_add_pd(v2, _mm256_mul_pd(d, inner))
        }
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn store(out: &mut [u8], v: Self::V) {
        use std::arch::x86_64::*;
        let mut lanes = [0i32; 4];
        {
            let clipped = _mm256_min_pd(_mm256_max_pd(v, _mm256_setzero_pd()), _mm256_set1_pd(255.0));
            _mm_storeu_si128(lanes.as_mut_ptr().cast(), _mm256_cvttpd_epi32(clipped));
        }
        out[0] = lanes[0] as u8;
        out[1] = lanes[1] as u8;
        out[2] = lanes[2] as u8;
    }
}

#[inline(always)]
fn clamp_to(v: i64, len: i64) -> usize {
    v.clamp(0, len - 1) as usize
}

#[inline(always)]
#[allow(unused_unsafe)] // `at!` nests inside `op!`
fn warp<L: Lanes>(src: &[Px], w: usize, h: usize, m: [f64; 6], resample: Resample, fill: [u8; 3]) -> RgbImage {
    // Macros, not closures: a closure is its own function, compiled without AVX2, and the lane
    // operations would not inline into it.
    macro_rules! at {
        ($i:expr) => {
            unsafe { L::load(&src[$i]) }
        };
    }
    macro_rules! op {
        ($f:ident($($arg:expr),*)) => {
            unsafe { L::$f($($arg),*) }
        };
    }
    let (wi, hi) = (w as i64, h as i64);
    let mut out = vec![0u8; w * h * 3];
    for (y, out_row) in out.chunks_exact_mut(w * 3).enumerate() {
        let yo = y as f64 + 0.5;
        for (x, o) in out_row.chunks_exact_mut(3).enumerate() {
            let xo = x as f64 + 0.5;
            let xin = m[0] * xo + m[1] * yo + m[2];
            let yin = m[3] * xo + m[4] * yo + m[5];
            if xin < 0.0 || xin >= w as f64 || yin < 0.0 || yin >= h as f64 {
                o.copy_from_slice(&fill);
                continue;
            }
            let (fx, fy) = (xin - 0.5, yin - 0.5);
            let (floor_x, floor_y) = (fx.floor(), fy.floor());
            let (x0, y0) = (floor_x as i64, floor_y as i64);
            let (dx, dy) = (fx - floor_x, fy - floor_y);
            match resample {
                // A zero fraction makes PIL's interpolation return its first operand exactly
                // (`a + (b - a) * 0`, `v2 + 0 * (…)`), so the taps it weights by zero can be
                // skipped: shears and translations have dx or dy = 0 at every pixel.
                Resample::Bilinear => {
                    let (c0, c1) = (clamp_to(x0, wi), clamp_to(x0 + 1, wi));
                    let r0 = clamp_to(y0, hi) * w;
                    macro_rules! line {
                        ($r:expr) => {
                            if dx == 0.0 {
                                at!($r + c0)
                            } else {
                                op!(lerp(at!($r + c0), at!($r + c1), dx))
                            }
                        };
                    }
                    let v = if dy == 0.0 {
                        line!(r0)
                    } else {
                        // PIL repeats the last row below the image.
                        let r1 = if y0 + 1 < hi { clamp_to(y0 + 1, hi) * w } else { r0 };
                        op!(lerp(line!(r0), line!(r1), dy))
                    };
                    op!(store(o, v));
                }
                Resample::Bicubic if x0 >= 1 && x0 + 2 < wi && y0 >= 1 && y0 + 2 < hi => {
                    // Interior: all 4×4 taps inside the image.
                    let base = (y0 as usize - 1) * w + x0 as usize - 1;
                    macro_rules! line {
                        ($t:expr) => {
                            if dx == 0.0 {
                                at!($t + 1)
                            } else {
                                op!(cubic(at!($t), at!($t + 1), at!($t + 2), at!($t + 3), dx))
                            }
                        };
                    }
                    let v = if dy == 0.0 {
                        line!(base + w)
                    } else {
                        op!(cubic(line!(base), line!(base + w), line!(base + 2 * w), line!(base + 3 * w), dy))
                    };
                    op!(store(o, v));
                }
                Resample::Bicubic => {
                    let (xb, yb) = (x0 - 1, y0 - 1);
                    let cols = [clamp_to(xb, wi), clamp_to(xb + 1, wi), clamp_to(xb + 2, wi), clamp_to(xb + 3, wi)];
                    macro_rules! line {
                        ($y:expr) => {{
                            let r = clamp_to($y, hi) * w;
                            op!(cubic(at!(r + cols[0]), at!(r + cols[1]), at!(r + cols[2]), at!(r + cols[3]), dx))
                        }};
                    }
                    // Row yb is clamped; rows below it exist only inside the image (else repeat).
                    let v1 = line!(yb);
                    let v2 = if (0..hi).contains(&(yb + 1)) { line!(yb + 1) } else { v1 };
                    let v3 = if (0..hi).contains(&(yb + 2)) { line!(yb + 2) } else { v2 };
                    let v4 = if (0..hi).contains(&(yb + 3)) { line!(yb + 3) } else { v3 };
                    op!(store(o, op!(cubic(v1, v2, v3, v4, dy))));
                }
            }
        }
    }
    RgbImage::from_raw(w as u32, h as u32, out).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixtures (tests/pil_parity.rs) check whichever path this CPU takes against PIL; this
    /// checks the other path against it, pixel for pixel.
    #[test]
    fn portable_and_vector_paths_agree() {
        let (w, h) = (37usize, 29usize);
        let mut state = 0x9e3779b97f4a7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let src: Vec<Px> =
            (0..w * h).map(|_| [next() as u8 as f64, next() as u8 as f64, next() as u8 as f64, 0.0]).collect();
        let (s, c) = (0.3f64.sin(), 0.3f64.cos());
        let matrices = [
            [c, s, -3.0, -s, c, 5.0],
            [1.0, 0.25, 0.0, 0.0, 1.0, 0.0],
            [1.0, 0.0, 0.0, -0.2, 1.0, 0.0],
            [1.0, 0.0, 7.3, 0.0, 1.0, 0.0],
            [1.0, 0.0, 0.0, 0.0, 1.0, -4.6],
        ];
        let mut compared = 0;
        for m in matrices {
            for resample in [Resample::Bilinear, Resample::Bicubic] {
                let portable = warp::<Portable>(&src, w, h, m, resample, [1, 2, 3]);
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx2") {
                    let vector = unsafe { warp_avx2(&src, w, h, m, resample, [1, 2, 3]) };
                    assert!(portable == vector, "{resample:?} {m:?}: the AVX path differs from the portable one");
                    compared += 1;
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            assert_eq!(compared, 10);
        }
    }
}
