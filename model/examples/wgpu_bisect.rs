//! Where does a golden case go wrong on wgpu? Runs the stem and every block on flex and on wgpu
//! (fusion on, or off with `--no-fusion`) with the same input (flex's output of the previous
//! block), eval and train, and prints each block's relative error; then the gradients after one
//! full backward, worst first.
//!
//! `cargo run -p model --example wgpu_bisect -- DIR [--no-fusion]`

use burn::backend::wgpu::{CubeBackend, WgpuDevice, WgpuRuntime};
use burn::backend::{Autodiff, Flex, Wgpu};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use model::golden::{rel_l2, GoldenCase};
use model::{load_safetensors, LoadMode, MaxxVit};

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

fn to<B: Backend>(v: &[f32], shape: [usize; 4], device: &B::Device) -> Tensor<B, 4> {
    Tensor::from_data(TensorData::new(v.to_vec(), shape), device)
}

fn load<B: Backend>(case: &GoldenCase, device: &B::Device) -> MaxxVit<B> {
    let m = MaxxVit::<B>::new(&case.cfg, &case.args, device).unwrap();
    load_safetensors(m, &case.weights(), LoadMode::Strict).unwrap().0
}

/// Per-block outputs given the same inputs; `train` uses the autodiff models (batch statistics).
fn blocks<R: Backend, W: Backend>(case: &GoldenCase, input: &[f32], shape: [usize; 4], rd: &R::Device, wd: &W::Device, tag: &str) {
    let (r, w) = (load::<R>(case, rd), load::<W>(case, wd));
    let x = to::<R>(input, shape, rd);
    let ry = r.stem.forward(x);
    let wy = w.stem.forward(to::<W>(input, shape, wd));
    let (rv, wv) = (values(ry.clone()), values(wy));
    println!("{tag} stem {:.2e}", rel_l2(&wv, &rv, 0.0));
    let mut x = ry;
    for (i, stage) in r.stages.iter().enumerate() {
        for (j, block) in stage.blocks.iter().enumerate() {
            let dims = x.dims();
            let xin = values(x.clone());
            let ry = block.forward(x);
            let wy = w.stages[i].blocks[j].forward(to::<W>(&xin, dims, wd));
            let (rv, wv) = (values(ry.clone()), values(wy));
            println!("{tag} stages.{i}.blocks.{j} {:?} -> {:?}: {:.2e}", dims, ry.dims(), rel_l2(&wv, &rv, 0.0));
            x = ry;
        }
    }
}

fn grads<R: AutodiffBackend, W: AutodiffBackend>(case: &GoldenCase, input: &[f32], shape: [usize; 4], target: &[i64], rd: &R::Device, wd: &W::Device) {
    fn run<B: AutodiffBackend>(m: &MaxxVit<B>, input: &[f32], shape: [usize; 4], target: &[i64], d: &B::Device) -> Vec<(String, Vec<f32>)> {
        let n = target.len();
        let logits = m.forward(to::<B>(input, shape, d));
        let t = Tensor::<B, 1, Int>::from_data(TensorData::new(target.to_vec(), [n]), d);
        let loss = log_softmax(logits, 1).gather(1, t.reshape([n, 1])).mean().neg();
        let g = loss.backward();
        m.gradients_by_key(&g).into_iter().map(|(k, s, v)| (k, v.unwrap_or_else(|| vec![0.0; s.iter().product()]))).collect()
    }
    let (r, w) = (load::<R>(case, rd), load::<W>(case, wd));
    let rg = run(&r, input, shape, target, rd);
    let wg = run(&w, input, shape, target, wd);
    let norm: f64 = rg.iter().flat_map(|(_, v)| v.iter()).map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let mut errs: Vec<(f64, String)> =
        rg.iter().zip(&wg).map(|((k, a), (_, b))| (rel_l2(b, a, 1e-3 * norm), k.clone())).collect();
    errs.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (e, k) in errs.iter().take(25) {
        println!("grad {k}: {e:.2e}");
    }
}

fn check<W: Backend>(case: &GoldenCase, wd: &W::Device) {
    let io = case.io().unwrap();
    let input = &io["input"];
    let shape: [usize; 4] = input.shape.clone().try_into().unwrap();
    let rd = Default::default();
    blocks::<Flex, W>(case, &input.f32, shape, &rd, wd, "eval ");
    blocks::<Autodiff<Flex>, Autodiff<W>>(case, &input.f32, shape, &rd, wd, "train");
    grads::<Autodiff<Flex>, Autodiff<W>>(case, &input.f32, shape, &io["target"].i64, &rd, wd);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let case = GoldenCase::load(std::path::Path::new(&args[0])).unwrap();
    let device = WgpuDevice::DefaultDevice;
    if args.iter().any(|a| a == "--no-fusion") {
        check::<CubeBackend<WgpuRuntime, f32, i32, u32>>(&case, &device);
    } else {
        check::<Wgpu>(&case, &device);
    }
}
