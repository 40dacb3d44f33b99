//! A loader batch onto the device. On the CPU backend the loader hands over normalised `f32`
//! (mixed on the host); on a GPU backend it hands over `u8` (sent four to a word), a quarter of
//! the bytes, and the normalisation, RandomErasing and mixup/cutmix run on the device, in
//! timm's order: its prefetcher normalises and erases, then the train loop mixes. The draws
//! (erasing boxes and fills, λ and the cutmix box) are made on the host either way, so both
//! paths give the same batch.

use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use data::loader::{Batch, Output};
use data::mixup::Mix;

/// The loader output for a backend: `u8` where the device does the normalisation (CubeCL
/// backends), normalised `f32` on the CPU backend (there, the loader's worker threads are the
/// faster place for it). `force` overrides (config `data.normalize_on_device`).
pub fn output_for<B: Backend>(device: &B::Device, force: Option<bool>) -> Output {
    let on_device = force.unwrap_or_else(|| crate::device::is_cubecl::<B>(device));
    if on_device {
        Output::U8
    } else {
        Output::F32
    }
}

/// Bytes as `f32` values on the device, sent four to a 32-bit word: WGSL has no 8-bit integers
/// (CubeCL's wgsl compiler panics on its own thread and a `u8` tensor reads back as garbage:
/// docs/burn_faults.md §5), so every backend gets words and unpacks them with exact integer
/// shifts and masks; a quarter of the `f32` bytes still.
fn unpack_pixels<B: Backend>(bytes: &[u8], device: &B::Device) -> Tensor<B, 1> {
    let words: Vec<i32> = bytes
        .chunks(4)
        .map(|c| {
            let mut word = [0u8; 4];
            word[..c.len()].copy_from_slice(c);
            i32::from_le_bytes(word)
        })
        .collect();
    let m = words.len();
    let packed = Tensor::<B, 2, Int>::from_data(TensorData::new(words, [m, 1]), device).expand([m, 4]);
    let shifts = Tensor::<B, 2, Int>::from_data(TensorData::new(vec![0i32, 8, 16, 24], [1, 4]), device);
    // An arithmetic shift sign-extends the top byte; the mask keeps the byte either way.
    let unpacked = packed.bitwise_right_shift(shifts.expand([m, 4])).bitwise_and_scalar(255.elem());
    unpacked.reshape([m * 4]).slice(0..bytes.len()).float()
}

/// `[B, 3, H, W]` normalised images, erased and mixed per `mix`. `normalization` is the
/// loader's `(scale, shift)` ([`data::loader::Pipeline::normalization`]).
pub fn images<B: Backend>(
    mut batch: Batch,
    normalization: ([f32; 3], [f32; 3]),
    mix: Mix,
    device: &B::Device,
) -> Tensor<B, 4> {
    let shape = batch.shape;
    if batch.u8.is_empty() {
        mix.apply(&mut batch.f32, shape);
        return Tensor::from_data(TensorData::new(batch.f32, shape), device);
    }
    let [b, c, _, _] = shape;
    let (scale, shift) = normalization;
    let per_channel = |v: [f32; 3]| Tensor::<B, 4>::from_data(TensorData::new(v.to_vec(), [1, 3, 1, 1]), device);
    let mut x = unpack_pixels::<B>(&batch.u8, device).reshape(shape) * per_channel(scale) - per_channel(shift);
    for (row, e) in batch.erasures {
        let fill = Tensor::from_data(TensorData::new(e.values, [1, c, e.height, e.width]), device);
        x = x.slice_assign([row..row + 1, 0..c, e.top..e.top + e.height, e.left..e.left + e.width], fill);
    }
    match mix {
        Mix::None => x,
        Mix::Blend { lam, rest } => x.clone().mul_scalar(lam) + x.flip([0]).mul_scalar(rest),
        Mix::Cut { rows: (y0, y1), cols: (x0, x1) } if y0 < y1 && x0 < x1 => {
            let region = [0..b, 0..c, y0..y1, x0..x1];
            let pasted = x.clone().flip([0]).slice(region.clone());
            x.slice_assign(region, pasted)
        }
        Mix::Cut { .. } => x,
    }
}
