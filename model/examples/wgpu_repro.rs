//! Scratch: minimal repro of op faults on wgpu vs flex.
use burn::backend::wgpu::{CubeBackend, WgpuDevice, WgpuRuntime};
use burn::backend::{Autodiff, Flex, Wgpu};
use burn::tensor::activation::{gelu, relu};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use model::golden::rel_l2;

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

fn data(shape: &[usize], seed: u64) -> TensorData {
    let n: usize = shape.iter().product();
    let mut s = seed;
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    TensorData::new(v, shape.to_vec())
}

/// variant bits: 1 bias, 2 gelu (else relu), 4 epilogue at all, 8 transposed weight.
fn case<B: Backend>(d: &B::Device, shape: [usize; 4], n: usize, variant: u32) -> Vec<f32> {
    let k = shape[3];
    let track = |t: Tensor<B, 4>| if variant & 16 != 0 { t.require_grad() } else { t };
    let x = track(Tensor::<B, 4>::from_data(data(&shape, 1), d));
    let w = if variant & 8 != 0 {
        track(Tensor::<B, 2>::from_data(data(&[n, k], 2), d).unsqueeze::<4>()).squeeze::<2>().transpose()
    } else {
        track(Tensor::<B, 2>::from_data(data(&[k, n], 2), d).unsqueeze::<4>()).squeeze::<2>()
    };
    let b = track(Tensor::<B, 1>::from_data(data(&[n], 3), d).unsqueeze::<4>()).squeeze::<1>();
    let [b0, b1, b2, _] = shape;
    let mut y = if variant & 32 != 0 {
        let x2 = x.reshape([b0 * b1 * b2, k]);
        burn::tensor::module::linear(x2, w, (variant & 1 != 0).then_some(b)).reshape([b0, b1, b2, n])
    } else if variant & 64 != 0 {
        // x·Wᵀ as (W·xᵀ)ᵀ: the weight is read as stored.
        let x2 = x.reshape([b0 * b1 * b2, k]);
        let wt: Tensor<B, 2> = w.transpose();
        let y = wt.matmul(x2.transpose()).transpose();
        let y = if variant & 1 != 0 { y + b.unsqueeze() } else { y };
        y.reshape([b0, b1, b2, n])
    } else {
        burn::tensor::module::linear(x, w, (variant & 1 != 0).then_some(b))
    };
    if variant & 4 != 0 {
        y = if variant & 2 != 0 { gelu(y) } else { relu(y) };
    }
    values(y)
}

fn run<B: Backend>(d: &B::Device, s: [usize; 4], n: usize, v: u32) -> f64 {
    let r = case::<Flex>(&Default::default(), s, n, v);
    rel_l2(&case::<B>(d, s, n, v), &r, 0.0)
}

fn main() {
    let wd = WgpuDevice::DefaultDevice;
    for v in [29, 29 + 32, 31 + 32, 29 + 64, 31 + 64] {
        for (s, n) in [
            ([2, 8, 8, 24], 96),
            ([2, 8, 8, 24], 32),
            ([2, 8, 8, 16], 96),
            ([2, 8, 8, 40], 96),
            ([1, 8, 8, 24], 96),
            ([2, 8, 8, 32], 96),
            ([2, 1, 64, 24], 96),
        ] {
            let f = 0.0;
            let fa = run::<Autodiff<Wgpu>>(&wd, s, n, v);
            let u =
                if v & 16 != 0 { run::<Autodiff<CubeBackend<WgpuRuntime, f32, i32, u32>>>(&wd, s, n, v) } else { 0.0 };
            println!("v{v:2} {s:?} n{n}: fused {f:.2e} fused+autodiff {fa:.2e} unfused {u:.2e}");
        }
    }
}
