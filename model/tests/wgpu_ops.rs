//! One regression test per Burn 0.21 / CubeCL 0.10 fault found on the GPU path (docs/burn_faults.md),
//! run on Burn's wgpu backend (in CI: Mesa's lavapipe, a Vulkan device on the CPU; `setup.sh`
//! installs it) with fusion on and off, against the CPU backend (flex):
//!
//! - our workaround must agree with flex on every CubeCL backend;
//! - the faulty Burn composition must still be faulty: when one of these fails, Burn fixed the
//!   fault and the workaround it names can go.
//!
//! The kernels are the ones CUDA runs (same CubeCL kernels and fusion compiler); only the
//! shader compiler differs.

use burn::backend::wgpu::{CubeBackend, WgpuDevice, WgpuRuntime};
use burn::backend::{Autodiff, Flex, Wgpu};
use burn::module::Param;
use burn::tensor::activation::{gelu, relu};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use model::golden::rel_l2;
use model::layers::norm::gelu_exact;
use model::layers::Linear;

type Fused = Autodiff<Wgpu>;
type Unfused = Autodiff<CubeBackend<WgpuRuntime, f32, i32, u32>>;
type Cpu = Autodiff<Flex>;

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

/// Deterministic values in [-scale, scale).
fn data(shape: &[usize], seed: u64, scale: f32) -> TensorData {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let n: usize = shape.iter().product();
    let v = (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0) * scale
        })
        .collect();
    TensorData::new(v, shape.to_vec())
}

fn wgpu() -> WgpuDevice {
    WgpuDevice::DefaultDevice
}

/// One computation, run on any autodiff backend.
trait Probe {
    fn run<B: AutodiffBackend>(&self, device: &B::Device) -> Vec<f32>;
}

/// A probe's result on flex, and its relative error there on fused and on unfused wgpu.
fn errors(probe: &impl Probe) -> (f64, f64) {
    let cpu = probe.run::<Cpu>(&Default::default());
    let fused = probe.run::<Fused>(&wgpu());
    let unfused = probe.run::<Unfused>(&wgpu());
    (rel_l2(&fused, &cpu, 0.0), rel_l2(&unfused, &cpu, 0.0))
}

/// Our composition agrees with flex on fused and unfused wgpu.
fn assert_exact(probe: &impl Probe, what: &str) {
    let (fused, unfused) = errors(probe);
    assert!(fused < 1e-6 && unfused < 1e-6, "{what}: fused {fused:.2e}, unfused {unfused:.2e}");
}

/// Burn's own composition is still wrong by more than `above` on fused and unfused wgpu; when it
/// is not, the fault is fixed upstream and `workaround` can go.
fn assert_still_faulty(probe: &impl Probe, above: f64, fault: &str, workaround: &str) {
    let (fused, unfused) = errors(probe);
    assert!(
        fused > above && unfused > above,
        "{fault} now matches flex (fused {fused:.2e}, unfused {unfused:.2e}): fixed upstream, {workaround}"
    );
}

/// `y` followed by the gradients `grads_of` reads from the backward of `sum(y · probe)`, with
/// `probe` deterministic values from `seed`: what a probe compares across backends.
fn output_and_grads<B: AutodiffBackend, const D: usize>(
    y: Tensor<B, D>,
    seed: u64,
    grads_of: impl FnOnce(&B::Gradients) -> Vec<Vec<f32>>,
) -> Vec<f32> {
    let probe = Tensor::<B, D>::from_data(data(&y.dims(), seed, 1.0), &y.device());
    let grads = (y.clone() * probe).sum().backward();
    let mut out = values(y.inner());
    out.extend(grads_of(&grads).into_iter().flatten());
    out
}

/// Our op (`ours`) equals the composition it replaces (`composed`) on flex, and flex on fused and
/// unfused wgpu.
fn assert_matches_composition(ours: &impl Probe, composed: &impl Probe, what: &str) {
    let cpu_ours = ours.run::<Cpu>(&Default::default());
    let cpu_composed = composed.run::<Cpu>(&Default::default());
    let vs_composed = rel_l2(&cpu_ours, &cpu_composed, 0.0);
    assert!(vs_composed < 1e-6, "{what}: ours vs the composition on flex {vs_composed:.2e}");
    assert_exact(ours, what);
}

/// The gradient of `sum(gelu(x)·w)` for x over [-4, 4): ours (`gelu_exact`) or Burn's `gelu`.
struct GeluGrad {
    ours: bool,
}

impl Probe for GeluGrad {
    fn run<B: AutodiffBackend>(&self, d: &B::Device) -> Vec<f32> {
        let x = Tensor::<B, 2>::from_data(data(&[64, 48], 1, 4.0), d).require_grad();
        let w = Tensor::<B, 2>::from_data(data(&[64, 48], 2, 1.0), d);
        let y = if self.ours { gelu_exact(x.clone()) } else { gelu(x.clone()) };
        let grads = (y * w).sum().backward();
        values(x.grad(&grads).unwrap())
    }
}

/// Fault 1: exact GELU's gradient. Burn's default `gelu_backward` is the derivative of the tanh
/// approximation; burn-cubecl keeps that default (flex overrides it with the exact one).
#[test]
fn gelu_gradient_is_exact_on_cubecl_backends() {
    assert_exact(&GeluGrad { ours: true }, "our exact GELU gradient");
    assert_still_faulty(
        &GeluGrad { ours: false },
        1e-4,
        "Burn's gelu gradient",
        "model::layers::norm::gelu_exact can use Burn's gelu in training again",
    );
}

/// A tracked `x [2, 8, 8, k] · Wᵀ + b`, then an activation, as the transformer MLPs compute it:
/// our `Linear` (flattened to 2-D) or Burn's batched `linear` on the transposed weight view.
struct LinearAct {
    k: usize,
    ours: bool,
    gelu: bool,
}

impl Probe for LinearAct {
    fn run<B: AutodiffBackend>(&self, d: &B::Device) -> Vec<f32> {
        let (k, n) = (self.k, 96);
        let x = Tensor::<B, 4>::from_data(data(&[2, 8, 8, k], 3, 1.0), d).require_grad();
        let w = Tensor::<B, 2>::from_data(data(&[n, k], 4, 0.3), d).require_grad();
        let b = Tensor::<B, 1>::from_data(data(&[n], 5, 0.1), d).require_grad();
        let y = if self.ours {
            Linear { weight: Param::from_tensor(w), bias: Some(Param::from_tensor(b)) }.forward(x)
        } else {
            burn::tensor::module::linear(x, w.transpose(), Some(b))
        };
        values(if self.gelu { gelu(y) } else { relu(y) })
    }
}

/// Fault 2: in training (tracked inputs), a rank-4 `linear` on a transposed weight view with a
/// bias and an activation after it is computed wrongly by the fused matmul for in-features 24
/// and 40 (not 16 or 32): relative error ~0.5. Fusion off is exact.
#[test]
fn linear_with_bias_and_activation_in_training_matches_flex() {
    for k in [16, 24, 40] {
        for gelu in [false, true] {
            assert_exact(&LinearAct { k, ours: true, gelu }, &format!("our Linear k={k} gelu={gelu}"));
        }
    }
    let (fused, unfused) = errors(&LinearAct { k: 24, ours: false, gelu: false });
    assert!(unfused < 1e-6, "unfused batched linear: {unfused:.2e}");
    assert!(
        fused > 1e-2,
        "Burn's fused batched linear + bias + relu now matches flex ({fused:.2e}): fixed upstream, \
         model::layers::Linear::forward need not flatten to 2-D"
    );
}

/// A depthwise conv (weight `[C·m, 1, k, k]`, groups C) and the gradients of a weighted sum of its
/// output, through our op (`layers::depthwise`) or Burn's `conv2d`.
struct Depthwise {
    channels: usize,
    multiplier: usize,
    kernel: usize,
    stride: usize,
    size: usize,
    /// x made from an NHWC tensor by a permute and the output read back channels-last, so the
    /// conv gets a strided input and a strided output gradient (as in the ConvNeXt blocks).
    channels_last: bool,
    ours: bool,
}

impl Probe for Depthwise {
    fn run<B: AutodiffBackend>(&self, d: &B::Device) -> Vec<f32> {
        use burn::tensor::ops::ConvOptions;
        model::layers::register_autodiff_ops::<B::InnerBackend>();
        let (c, co, k, s) = (self.channels, self.channels * self.multiplier, self.kernel, self.stride);
        let x = if self.channels_last {
            Tensor::<B, 4>::from_data(data(&[2, self.size, self.size, c], 6, 1.0), d).require_grad()
        } else {
            Tensor::<B, 4>::from_data(data(&[2, c, self.size, self.size], 6, 1.0), d).require_grad()
        };
        let input = if self.channels_last { x.clone().permute([0, 3, 1, 2]) } else { x.clone() };
        let w = Tensor::<B, 4>::from_data(data(&[co, 1, k, k], 7, 0.5), d).require_grad();
        let b = Tensor::<B, 1>::from_data(data(&[co], 8, 0.1), d).require_grad();
        let pad = ((s - 1) + (k - 1)) / 2;
        let options = ConvOptions::new([s, s], [pad, pad], [1, 1], c);
        let y = if self.ours {
            model::layers::depthwise::depthwise_conv2d(input, w.clone(), Some(b.clone()), options)
        } else {
            burn::tensor::module::conv2d(input, w.clone(), Some(b.clone()), options)
        };
        let y = if self.channels_last { y.permute([0, 2, 3, 1]) } else { y };
        output_and_grads(y, 9, |g| {
            vec![values(x.grad(g).unwrap()), values(w.grad(g).unwrap()), values(b.grad(g).unwrap())]
        })
    }
}

/// timm's `Mlp` (GELU) over a channels-last `[2, h, w, c]` map in training: `Mlp::forward`,
/// which views the map as `[rows, c]` tokens once where every contraction is a multiple of 16
/// (fusion then puts the biases and GELU on the matmul writes), or each linear on the map as
/// before; the output and the gradients of the map and of every parameter.
struct MlpProbe {
    size: usize,
    channels: usize,
    hidden: usize,
    ours: bool,
}

impl Probe for MlpProbe {
    fn run<B: AutodiffBackend>(&self, d: &B::Device) -> Vec<f32> {
        use model::config::ActLayer;
        use model::layers::Mlp;
        let (c, hidden) = (self.channels, self.hidden);
        let linear = |out: usize, inp: usize, seed: u64| Linear {
            weight: Param::from_tensor(Tensor::<B, 2>::from_data(data(&[out, inp], seed, 0.3), d)),
            bias: Some(Param::from_tensor(Tensor::<B, 1>::from_data(data(&[out], seed + 1, 0.3), d))),
        };
        let mlp =
            Mlp { fc1: linear(hidden, c, 71), fc2: linear(c, hidden, 73), act: ActLayer::Gelu, drop1: 0.0, drop2: 0.0 };
        let x = Tensor::<B, 4>::from_data(data(&[2, self.size, self.size, c], 75, 1.0), d).require_grad();
        let y =
            if self.ours { mlp.forward(x.clone()) } else { mlp.fc2.forward(mlp.act.apply(mlp.fc1.forward(x.clone()))) };
        output_and_grads(y, 76, |g| {
            let grads = [&mlp.fc1, &mlp.fc2].into_iter().flat_map(|l| {
                [values(l.weight.val().grad(g).unwrap()), values(l.bias.as_ref().unwrap().val().grad(g).unwrap())]
            });
            std::iter::once(values(x.grad(g).unwrap())).chain(grads).collect()
        })
    }
}

/// The MLP's token path equals the per-linear path on flex, and flex on fused and unfused wgpu,
/// at widths whose contractions are all multiples of 16 (the token path) and at 24 (not taken).
#[test]
fn mlp_token_path_matches_the_per_linear_path_and_flex() {
    for (size, channels, hidden) in [(4, 32, 64), (8, 16, 64), (4, 24, 96)] {
        let ours = MlpProbe { size, channels, hidden, ours: true };
        let what = format!("mlp {size}x{size}x{channels}, hidden {hidden}");
        assert_matches_composition(&ours, &MlpProbe { ours: false, ..ours }, &what);
    }
}

/// timm's `Downsample2d` (2x2 average pool, then a biased 1x1 expand) over an NCHW map in
/// training: `Downsample2d::forward`, whose expand runs as one matmul over channels-last tokens
/// where every contraction is a multiple of 16, or the pool and Burn's 1x1 conv; the output and
/// the gradients of the map, the weight and the bias.
struct DownsampleProbe {
    size: usize,
    channels: usize,
    out: usize,
    ours: bool,
}

impl Probe for DownsampleProbe {
    fn run<B: AutodiffBackend>(&self, d: &B::Device) -> Vec<f32> {
        use model::config::{PaddingMode, PoolType};
        use model::layers::{pool2d, Conv2d, Downsample2d};
        let (c, out) = (self.channels, self.out);
        let expand = Conv2d {
            weight: Param::from_tensor(Tensor::<B, 4>::from_data(data(&[out, c, 1, 1], 81, 0.3), d)),
            bias: Some(Param::from_tensor(Tensor::<B, 1>::from_data(data(&[out], 82, 0.3), d))),
            stride: 1,
            groups: 1,
            padding: PaddingMode::Symmetric,
        };
        let down = Downsample2d { expand: Some(expand), pool: PoolType::Avg2, padding: PaddingMode::Symmetric };
        let x = Tensor::<B, 4>::from_data(data(&[2, c, self.size, self.size], 83, 1.0), d).require_grad();
        let y = if self.ours {
            down.forward(x.clone())
        } else {
            down.expand.as_ref().unwrap().forward(pool2d(x.clone(), PoolType::Avg2, PaddingMode::Symmetric))
        };
        let conv = down.expand.as_ref().unwrap();
        output_and_grads(y, 84, |g| {
            vec![
                values(x.grad(g).unwrap()),
                values(conv.weight.val().grad(g).unwrap()),
                values(conv.bias.as_ref().unwrap().val().grad(g).unwrap()),
            ]
        })
    }
}

/// The downsample's token path equals the pool + 1x1 conv on flex, and flex on fused and unfused
/// wgpu, where it is taken (32 → 64 channels, 32 tokens) and where it is not (24 channels).
#[test]
fn downsample_token_path_matches_the_conv_and_flex() {
    for (size, channels, out) in [(8, 32, 64), (8, 24, 48)] {
        let ours = DownsampleProbe { size, channels, out, ours: true };
        let what = format!("downsample {size}px {channels} -> {out}");
        assert_matches_composition(&ours, &DownsampleProbe { ours: false, ..ours }, &what);
    }
}

/// Our depthwise op (a weight gradient in constant launches, not Burn's loop over channels) equals
/// Burn's conv2d on flex, and flex on fused and unfused wgpu (where the build has it, through our
/// CubeCL weight and bias gradient, `layers::cube_depthwise`), for the family's depthwise convs:
/// MBConv 3x3 and ConvNeXt 7x7, strides 1 and 2, channel multiplier 1 and 2, odd and even sizes,
/// NCHW and channels-last inputs (the kernel reads strided x and output gradients).
#[test]
fn depthwise_conv_matches_burns_conv2d_and_flex() {
    for (channels, multiplier, kernel, stride, size, channels_last) in [
        (16, 1, 3, 1, 8, false),
        (16, 1, 3, 2, 8, false),
        (12, 1, 7, 1, 9, false),
        (8, 2, 7, 2, 8, false),
        (24, 1, 7, 2, 7, false),
        (12, 1, 7, 1, 9, true),
        (8, 2, 3, 2, 8, true),
    ] {
        let ours = Depthwise { channels, multiplier, kernel, stride, size, channels_last, ours: true };
        let what =
            format!("depthwise {channels}x{multiplier} k{kernel} s{stride} {size}px channels-last {channels_last}");
        assert_matches_composition(&ours, &Depthwise { ours: false, ..ours }, &what);
    }
    use model::layers::depthwise::has_grad_kernel;
    let kernel = has_grad_kernel::<Wgpu>() && has_grad_kernel::<CubeBackend<WgpuRuntime, f32, i32, u32>>();
    assert_eq!(kernel, cfg!(feature = "cube-wgpu"), "the wgpu runs took our gradient kernel: {kernel}");
}

/// Layer norm over axis `dim` of a `dims`-shaped map (made from an NCHW tensor by a permute when
/// `permuted`, as the channels-last blocks get it), and the gradients of a weighted sum of its
/// output, through our op (`layers::layer_norm`) or the taped decomposition.
struct LayerNormProbe {
    dims: [usize; 4],
    dim: usize,
    permuted: bool,
    /// The norm's input also read by a residual add after it (`norm(x) + x/2`, as a pre-norm
    /// block's input is): its gradient then has two parts, which our backward kernel adds in.
    residual: bool,
    ours: bool,
}

impl Probe for LayerNormProbe {
    fn run<B: AutodiffBackend>(&self, d: &B::Device) -> Vec<f32> {
        use model::layers::layer_norm::{decomposed, layer_norm};
        model::layers::register_autodiff_ops::<B::InnerBackend>();
        let dims = self.dims;
        let x = if self.permuted {
            let [n, h, w, c] = dims;
            Tensor::<B, 4>::from_data(data(&[n, c, h, w], 41, 2.0), d).require_grad()
        } else {
            Tensor::<B, 4>::from_data(data(&dims, 41, 2.0), d).require_grad()
        };
        let input = if self.permuted { x.clone().permute([0, 2, 3, 1]) } else { x.clone() };
        let c = dims[self.dim];
        let w = Tensor::<B, 1>::from_data(data(&[c], 42, 1.0), d).require_grad();
        let b = Tensor::<B, 1>::from_data(data(&[c], 43, 0.5), d).require_grad();
        let norm = if self.ours { layer_norm::<B, 4> } else { decomposed::<B, 4> };
        let input = input.add_scalar(0.25);
        let y = norm(input.clone(), w.clone(), b.clone(), self.dim, 1e-5);
        let y = if self.residual { y + input.mul_scalar(0.5) } else { y };
        output_and_grads(y, 44, |g| {
            vec![values(x.grad(g).unwrap()), values(w.grad(g).unwrap()), values(b.grad(g).unwrap())]
        })
    }
}

/// Our layer norm (one autodiff node, torch's backward formula) equals the taped decomposition
/// on flex, and flex on fused and unfused wgpu: channels-last (last axis, contiguous and
/// permuted) and LayerNorm2d's channel axis of NCHW. On wgpu the node runs our CubeCL kernels
/// (`layers::cube_norm`) where the build has them: the `[3, 20, 18, 300]` map takes the
/// kernels' other paths (units owning two channels, 1,080 rows: several rows per backward cube).
#[test]
fn layer_norm_op_matches_the_decomposition_and_flex() {
    use model::layers::layer_norm::kernels;
    let (small, wide) = ([2, 6, 5, 24], [3, 20, 18, 300]);
    let check_all = || {
        for (dims, dim, permuted, residual) in [
            (small, 3, false, false),
            (small, 3, true, false),
            (small, 1, false, false),
            (wide, 3, true, false),
            (wide, 1, false, false),
            (small, 3, false, true),
            (wide, 3, true, true),
            (wide, 1, false, true),
        ] {
            let ours = LayerNormProbe { dims, dim, permuted, residual, ours: true };
            let what = format!("layer norm {dims:?} axis {dim} permuted {permuted} residual {residual}");
            assert_matches_composition(&ours, &LayerNormProbe { ours: false, ..ours }, &what);
        }
    };
    // As registered by default: fused wgpu runs the composition's forward and our backward
    // kernel (docs/burn_faults.md §8), unfused wgpu both kernels.
    check_all();
    let cube = cfg!(feature = "cube-wgpu");
    assert_eq!(kernels::<CubeBackend<WgpuRuntime, f32, i32, u32>>(), (cube, cube), "unfused wgpu's kernels");
    assert_eq!(kernels::<Wgpu>(), (false, cube), "fused wgpu's kernels by default");
    // Our forward kernel under fusion too (MAXXVIT_OWN_KERNELS_FUSED).
    #[cfg(feature = "cube-wgpu")]
    {
        model::layers::cube_norm::register_fused();
        check_all();
        assert_eq!(kernels::<Wgpu>(), (true, true), "fused wgpu's kernels after register_fused");
    }
}

/// Batch norm in training over a `[n, 12, 5, 6]` map (batch statistics), through our node
/// (`layers::batch_norm`) or the taped composition: the output, the batch mean and variance
/// (what updates the running statistics), and the gradients of a weighted sum of the output
/// with respect to the input, weight and bias.
struct BatchNormProbe {
    batch: usize,
    ours: bool,
}

impl Probe for BatchNormProbe {
    fn run<B: AutodiffBackend>(&self, d: &B::Device) -> Vec<f32> {
        use model::layers::batch_norm::{batch_norm_train, decomposed};
        model::layers::register_autodiff_ops::<B::InnerBackend>();
        let x = Tensor::<B, 4>::from_data(data(&[self.batch, 12, 5, 6], 61, 2.0), d).require_grad();
        let w = Tensor::<B, 1>::from_data(data(&[12], 62, 1.0), d).require_grad();
        let b = Tensor::<B, 1>::from_data(data(&[12], 63, 0.5), d).require_grad();
        let norm = if self.ours { batch_norm_train::<B> } else { decomposed::<B> };
        let (y, mean, var) = norm(x.clone().add_scalar(0.25), w.clone(), b.clone(), 1e-5);
        let mut out = values(mean);
        out.extend(values(var));
        out.extend(output_and_grads(y, 64, |g| {
            vec![values(x.grad(g).unwrap()), values(w.grad(g).unwrap()), values(b.grad(g).unwrap())]
        }));
        out
    }
}

/// Our batch norm node equals the taped composition on flex, and flex on fused and unfused
/// wgpu, at batch 1 and 3.
#[test]
fn batch_norm_node_matches_the_composition_and_flex() {
    for batch in [1, 3] {
        let ours = BatchNormProbe { batch, ours: true };
        assert_matches_composition(
            &ours,
            &BatchNormProbe { batch, ours: false },
            &format!("batch norm, batch {batch}"),
        );
    }
}

/// Attention over a qkv projection `[2, 16, 3·2·8]` split head-first (the rw layout) or
/// part-first (tf) as the channels-last blocks do, with a relative-position bias or without, and
/// the gradients of a weighted sum of its output with respect to the projection and the bias: our
/// autodiff node (`layers::attention_core`, whose projection gradient is our gather kernel on
/// wgpu where the build has it) or the composition (`blocks::attention::scaled_attention`).
struct AttentionCoreProbe {
    bias: bool,
    head_first: bool,
    ours: bool,
}

impl Probe for AttentionCoreProbe {
    fn run<B: AutodiffBackend>(&self, d: &B::Device) -> Vec<f32> {
        use model::layers::attention_core::{registered, stack_qkv, unstack, QkvLayout};
        model::layers::register_autodiff_ops::<B::InnerBackend>();
        let (b, n, heads, dh) = (2, 16, 2, 8);
        let qkv = Tensor::<B, 3>::from_data(data(&[b, n, 3 * heads * dh], 51, 1.0), d).require_grad();
        let bias = Tensor::<B, 3>::from_data(data(&[heads, n, n], 52, 0.5), d).require_grad();
        let layout = QkvLayout { heads, head_first: self.head_first };
        let bias_in = self.bias.then(|| bias.clone());
        // A scaled view of the projection, as a linear's output arrives (its own backward op).
        let input = qkv.clone().mul_scalar(1.5);
        let y = if self.ours {
            registered::<B>().expect("registered")(input, layout, bias_in)
        } else {
            let [q, k, v] = unstack(stack_qkv(input, layout));
            model::blocks::attention::scaled_attention(q, k, v, bias_in, 0.0)
        };
        output_and_grads(y, 53, |g| {
            let mut grads = vec![values(qkv.grad(g).unwrap())];
            if self.bias {
                grads.push(values(bias.grad(g).unwrap()));
            }
            grads
        })
    }
}

/// Our attention node equals the composition on flex, and flex on fused and unfused wgpu.
#[test]
fn attention_node_matches_the_composition_and_flex() {
    for (bias, head_first) in [(true, true), (false, true), (true, false)] {
        let what = format!("attention node, bias {bias}, head-first {head_first}");
        assert_matches_composition(
            &AttentionCoreProbe { bias, head_first, ours: true },
            &AttentionCoreProbe { bias, head_first, ours: false },
            &what,
        );
    }
    use model::layers::attention_core::has_qkv_grad_kernel;
    let kernel = has_qkv_grad_kernel::<Wgpu>() && has_qkv_grad_kernel::<CubeBackend<WgpuRuntime, f32, i32, u32>>();
    assert_eq!(kernel, cfg!(feature = "cube-wgpu"), "the wgpu runs took our qkv gradient kernel: {kernel}");
}

/// A `[b, c, 1, 1]` map to tokens `[b, 1, c]` and on (`Attention2d` on a 1x1 map): reshape,
/// swap of the size-1 axis, reshape; the gradient of a weighted sum with respect to the map.
/// Burn's `swap_dims` or ours (`layers::swap_dims`, a reshape when an axis has size 1).
struct UnitAxisSwap {
    ours: bool,
}

impl Probe for UnitAxisSwap {
    fn run<B: AutodiffBackend>(&self, d: &B::Device) -> Vec<f32> {
        let (b, c) = (2, 48);
        let x = Tensor::<B, 4>::from_data(data(&[b, c, 1, 1], 31, 1.0), d).require_grad();
        let flat = x.clone().reshape([b, c, 1]);
        let tokens = if self.ours { model::layers::swap_dims(flat, 1, 2) } else { flat.swap_dims(1, 2) };
        let y = tokens.reshape([b, 1, 1, c]);
        output_and_grads(y, 34, |g| vec![values(x.grad(g).unwrap())])
    }
}

/// Burn's swap_dims of a size-1 axis then reshape has a wrong gradient on CubeCL (fused and
/// unfused; the forward is right); ours is exact.
#[test]
fn swap_of_a_unit_axis_then_reshape_matches_flex() {
    assert_exact(&UnitAxisSwap { ours: true }, "ours");
    assert_still_faulty(
        &UnitAxisSwap { ours: false },
        1e-2,
        "Burn's swap_dims of a unit axis + reshape",
        "model::layers::swap_dims can go",
    );
}

/// timm's `Attention2d` as the model composes it (1x1-conv qkv, NCHW to tokens, head-first split,
/// attention with a bias, back to NCHW, 1x1-conv proj) on an `hw x hw` map, with our swaps: the
/// output and the gradients of the map, both convs' weights and the bias.
struct Attention2dProbe {
    hw: usize,
}

impl Probe for Attention2dProbe {
    fn run<B: AutodiffBackend>(&self, d: &B::Device) -> Vec<f32> {
        use burn::tensor::module::conv2d;
        use burn::tensor::ops::ConvOptions;
        use model::layers::swap_dims;
        let (b, heads, dh, hw) = (2, 2, 8, self.hw);
        let (dim, n) = (heads * dh, hw * hw);
        let x = Tensor::<B, 4>::from_data(data(&[b, dim, hw, hw], 21, 1.0), d).require_grad();
        let wq = Tensor::<B, 4>::from_data(data(&[3 * dim, dim, 1, 1], 22, 0.3), d).require_grad();
        let wp = Tensor::<B, 4>::from_data(data(&[dim, dim, 1, 1], 23, 0.3), d).require_grad();
        let bias = Tensor::<B, 3>::from_data(data(&[heads, n, n], 24, 0.5), d).require_grad();
        let opts = || ConvOptions::new([1, 1], [0, 0], [1, 1], 1);
        let qkv = conv2d(x.clone(), wq.clone(), None, opts());
        let tokens = swap_dims(qkv.reshape([b, 3 * dim, n]), 1, 2);
        let stacked: Tensor<B, 5> = tokens.reshape([b, n, heads, 3, dh]).permute([3, 0, 2, 1, 4]);
        let part = |s: usize| stacked.clone().narrow(0, s, 1).reshape([b, heads, n, dh]);
        let y = model::blocks::attention::scaled_attention(part(0), part(1), part(2), Some(bias.clone()), 0.0);
        let y = conv2d(swap_dims(y, 2, 3).reshape([b, dim, hw, hw]), wp.clone(), None, opts());
        output_and_grads(y, 25, |g| {
            let mut grads: Vec<Vec<f32>> = [x, wq, wp].iter().map(|t| values(t.grad(g).unwrap())).collect();
            grads.push(values(bias.grad(g).unwrap()));
            grads
        })
    }
}

/// The T block's attention on the last stage's 1x1 map of a small input (the smoke config at
/// 32x32) and on a 2x2 map: exact on fused and unfused wgpu.
#[test]
fn attention_2d_on_a_one_by_one_map_matches_flex() {
    for hw in [1, 2] {
        assert_exact(&Attention2dProbe { hw }, &format!("{hw}x{hw} map"));
    }
}
