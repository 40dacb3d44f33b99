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
use model::blocks::attention::{AttentionCl, Partition};
use model::blocks::transformer::ParallelPartitionAttention;
use model::blocks::Block;
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
fn blocks<R: Backend, W: Backend>(
    case: &GoldenCase,
    input: &[f32],
    shape: [usize; 4],
    rd: &R::Device,
    wd: &W::Device,
    tag: &str,
) {
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
            parts(
                &r.stages[i].blocks[j],
                &w.stages[i].blocks[j],
                &xin,
                dims,
                wd,
                &format!("{tag}   stages.{i}.blocks.{j}"),
            );
            x = ry;
        }
    }
}

/// The parts of a block, each fed flex's input.
fn parts<R: Backend, W: Backend>(r: &Block<R>, w: &Block<W>, xin: &[f32], dims: [usize; 4], wd: &W::Device, tag: &str) {
    let rd = Default::default();
    let cmp = |name: &str, a: Tensor<R, 4>, b: Tensor<W, 4>| {
        println!("{tag}.{name}: {:.2e}", rel_l2(&values(b), &values(a), 0.0));
    };
    match (r, w) {
        (Block::Parallel(r), Block::Parallel(w)) => {
            let x0 = to::<R>(xin, dims, &rd);
            let a = r.conv[0].forward(x0.clone());
            cmp("conv.0", a.clone(), w.conv[0].forward(to::<W>(xin, dims, wd)));
            let av = values(a.clone());
            let b = r.conv[1].forward(a.clone());
            cmp("conv.1", b.clone(), w.conv[1].forward(to::<W>(&av, a.dims(), wd)));
            let bv = values(b.clone());
            let bp = b.clone().permute([0, 2, 3, 1]);
            cmp("attn", r.attn.forward(bp.clone()), w.attn.forward(to::<W>(&bv, b.dims(), wd).permute([0, 2, 3, 1])));
            let n1 = r.attn.norm1.forward(bp.clone());
            cmp("attn.norm1", n1.clone(), w.attn.norm1.forward(to::<W>(&bv, b.dims(), wd).permute([0, 2, 3, 1])));
            let size = r.attn.partition_size;
            let tr = Partition::Window.split(n1.clone(), size);
            let tv = values(tr.clone());
            let td = tr.dims();
            for stop in 5..11 {
                let a = parallel_chain(&r.attn, bp.clone(), stop);
                let b = parallel_chain(&w.attn, to::<W>(&bv, b.dims(), wd).permute([0, 2, 3, 1]), stop);
                println!("{tag}.attn parallel step {stop} {:?}: {:.2e}", a.dims(), rel_l2(&values(b), &values(a), 0.0));
            }
            for stop in 0..0 {
                let a = attention_chain(&r.attn.attn_block, tr.clone(), stop);
                let b = attention_chain(
                    &w.attn.attn_block,
                    Tensor::<W, 3>::from_data(TensorData::new(tv.clone(), td), wd),
                    stop,
                );
                println!("{tag}.attn_block step {stop} {:?}: {:.2e}", a.dims(), rel_l2(&values(b), &values(a), 0.0));
            }
        }
        (Block::MaxxVit(r), Block::MaxxVit(w)) => {
            let a = r.conv.forward(to::<R>(xin, dims, &rd));
            cmp("conv", a.clone(), w.conv.forward(to::<W>(xin, dims, wd)));
            let av = values(a.clone());
            let ap = a.clone().permute([0, 2, 3, 1]);
            let wp = to::<W>(&av, a.dims(), wd).permute([0, 2, 3, 1]);
            if let (Some(rb), Some(wb)) = (&r.attn_block, &w.attn_block) {
                cmp("attn_block", rb.forward(ap.clone()), wb.forward(wp.clone()));
            }
            cmp("attn_grid", r.attn_grid.forward(ap.clone()), w.attn_grid.forward(wp.clone()));
            if let (Some(rb), Some(wb)) = (&r.attn_block, &w.attn_block) {
                let (ra, wa) = (rb.forward(ap.clone()), wb.forward(wp.clone()));
                cmp("attn_block+attn_grid", r.attn_grid.forward(ra), w.attn_grid.forward(wa));
                let rc = r.conv.forward(to::<R>(xin, dims, &rd)).permute([0, 2, 3, 1]);
                let wc = w.conv.forward(to::<W>(xin, dims, wd)).permute([0, 2, 3, 1]);
                cmp("conv+attn_block", rb.forward(rc), wb.forward(wc));
            }
        }
        _ => {}
    }
}

/// AttentionCl::forward step by step; returns the intermediate after step `stop` (flattened).
fn attention_chain<B: Backend>(attn: &AttentionCl<B>, x: Tensor<B, 3>, stop: usize) -> Tensor<B, 1> {
    let flat = |t: Tensor<B, 4>| t.flatten::<1>(0, 3);
    let [b, n, _] = x.dims();
    let qkv = attn.qkv.forward(x);
    if stop == 0 {
        return qkv.flatten::<1>(0, 2);
    }
    let heads = attn.num_heads;
    let c3 = qkv.dims()[2];
    let dh = c3 / 3 / heads;
    let stacked: Tensor<B, 5> = qkv.reshape([b, n, heads, 3, dh]).permute([3, 0, 2, 1, 4]);
    let part = |s: usize| stacked.clone().narrow(0, s, 1).reshape([b, heads, n, dh]);
    let (q, k, v) = (part(0), part(1), part(2));
    if stop == 1 {
        return flat(k);
    }
    let bias = attn.rel_pos.as_ref().map(|r| r.bias());
    if stop == 2 {
        return bias.map(|b| b.flatten::<1>(0, 2)).unwrap_or_else(|| flat(q));
    }
    let q = q.mul_scalar((dh as f64).powf(-0.5));
    let scores = q.matmul(k.swap_dims(2, 3));
    if stop == 3 {
        return flat(scores);
    }
    let scores = match bias {
        Some(bias) => scores + bias.unsqueeze::<4>(),
        None => scores,
    };
    if stop == 4 {
        return flat(scores);
    }
    let p = burn::tensor::activation::softmax(scores, 3);
    if stop == 5 {
        return flat(p);
    }
    let out = p.matmul(v);
    if stop == 6 {
        return flat(out);
    }
    let out = out.swap_dims(1, 2).reshape([b, n, heads * dh]);
    if stop == 7 {
        return out.flatten::<1>(0, 2);
    }
    attn.proj.forward(out).flatten::<1>(0, 2)
}

fn parallel_chain<B: Backend>(p: &ParallelPartitionAttention<B>, x: Tensor<B, 4>, stop: usize) -> Tensor<B, 1> {
    let [_, h, w, _] = x.dims();
    let y = p.norm1.forward(x.clone());
    if stop == 0 {
        return y.flatten::<1>(0, 3);
    }
    let size = p.partition_size;
    let win = Partition::Window.merge(p.attn_block.forward(Partition::Window.split(y.clone(), size)), size, [h, w]);
    if stop == 1 {
        return win.flatten::<1>(0, 3);
    }
    let tokens = Partition::Grid.split(y.clone(), size);
    if stop == 2 {
        return tokens.flatten::<1>(0, 2);
    }
    let grid = Partition::Grid.merge(p.attn_grid.forward(tokens), size, [h, w]);
    if stop == 3 {
        return grid.flatten::<1>(0, 3);
    }
    let y = Tensor::cat(vec![win, grid], 3);
    if stop == 4 {
        return y.flatten::<1>(0, 3);
    }
    let x = x + y;
    if stop == 5 {
        return x.flatten::<1>(0, 3);
    }
    let n = p.norm2.forward(x.clone());
    if stop == 6 {
        return n.flatten::<1>(0, 3);
    }
    let f1 = p.mlp.fc1.forward(n);
    if stop == 7 {
        return f1.flatten::<1>(0, 3);
    }
    let a = p.mlp.act.apply(f1);
    if stop == 8 {
        return a.flatten::<1>(0, 3);
    }
    let y = p.mlp.fc2.forward(a);
    if stop == 9 {
        return y.flatten::<1>(0, 3);
    }
    (x + y).flatten::<1>(0, 3)
}

fn grads<R: AutodiffBackend, W: AutodiffBackend>(
    case: &GoldenCase,
    input: &[f32],
    shape: [usize; 4],
    target: &[i64],
    rd: &R::Device,
    wd: &W::Device,
) {
    fn run<B: AutodiffBackend>(
        m: &MaxxVit<B>,
        input: &[f32],
        shape: [usize; 4],
        target: &[i64],
        d: &B::Device,
    ) -> Vec<(String, Vec<f32>)> {
        let n = target.len();
        let logits = m.forward(to::<B>(input, shape, d));
        let t = Tensor::<B, 1, Int>::from_data(TensorData::new(target.to_vec(), [n]), d);
        let loss = log_softmax(logits, 1).gather(1, t.reshape([n, 1])).mean().neg();
        let g = loss.backward();
        m.gradients_by_key(&g)
            .into_iter()
            .map(|(k, s, v)| (k, v.unwrap_or_else(|| vec![0.0; s.iter().product()])))
            .collect()
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
    // What the trainer and the golden check run: our autodiff nodes and, on CubeCL, our kernels.
    model::layers::register_autodiff_ops::<W>();
    model::layers::register_autodiff_ops::<Flex>();
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
