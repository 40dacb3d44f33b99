//! Layer norm as CubeCL kernels of ours: the forward in ONE launch and the backward (dx, dw, db)
//! in TWO, where Burn's composition takes three and five, most of them reductions (issue 11,
//! BENCH.md "Layer norm kernels").
//!
//! The normalised axis is the middle one of `x` viewed as `[outer, C, inner]` (`inner` = 1 for a
//! channels-last norm, `H·W` for a channels-first one), `x` contiguous. A cube of `W` units
//! (`W` the next power of two of `C`, at most 256) takes a run of rows; each unit owns the
//! channels `u, u + W, ..`; row sums are tree reductions in shared memory. The maths is the
//! composition's, op for op (`μ = Σx/C`, `σ = sqrt(Σ(x − μ)²/C + ε)`, `y = (x − μ)/σ·w + b`;
//! `dx = (g·w − Σg·w/C − x̂·Σ(g·w·x̂)/C)/σ`); only the order of the summands differs.
//! The weight and bias gradients are per-cube partial sums (each unit's own channels, kept in
//! shared memory across the cube's rows), added up by a second small kernel: deterministic, no
//! atomics.
//!
//! Reached through [`LayerNormKernels`], implemented for `CubeBackend` (the launches) and for
//! `Fusion<B>` (a custom operation in the fusion stream: a barrier, like burn-vision's ops).
//! [`register`] puts them in the op registry for the CubeCL backends this build has, where the
//! layer-norm autodiff node ([`super::layer_norm`]) finds them.

use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Shape, TensorMetadata};
use burn_cubecl::cubecl;
use burn_cubecl::cubecl::prelude::*;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};

/// Units per cube at most: a cube this size is legal on every CubeCL device we target.
const MAX_UNITS: usize = 256;
/// Channels per unit at most (the kernels keep a unit's weight-gradient partial sums in shared
/// memory): `C ≤ MAX_UNITS · MAX_CHANNELS_PER_UNIT`.
const MAX_CHANNELS_PER_UNIT: usize = 16;
/// Cubes of the backward at most: the partial sums the second kernel adds are `[cubes, 2, C]`.
const MAX_BACKWARD_CUBES: usize = 1024;

/// Layer norm over one axis as kernels of this backend.
pub trait LayerNormKernels: burn::tensor::backend::Backend {
    /// `[y, μ, σ]` of the layer norm of `x` over axis `dim`; `μ` and `σ` have `x`'s shape with
    /// `dim` of size 1.
    fn layer_norm_forward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        dim: usize,
        eps: f64,
    ) -> [FloatTensor<Self>; 3];

    /// `[dx, dw, db]` of the layer norm over axis `dim`, given the output gradient and the
    /// forward's `x`, weight (`[C]`), `μ` and `σ`; `dx` plus `addend` (`x`'s shape) where given:
    /// the gradient `x` already has from its other readers (a residual), which would otherwise
    /// be added by a launch of its own.
    #[allow(clippy::too_many_arguments)]
    fn layer_norm_backward(
        grad: FloatTensor<Self>,
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        std: FloatTensor<Self>,
        addend: Option<FloatTensor<Self>>,
        dim: usize,
    ) -> [FloatTensor<Self>; 3];
}

/// Whether the kernels take a layer norm of `channels` channels in `dtype`.
pub fn supports(channels: usize, dtype: DType) -> bool {
    dtype == DType::F32 && channels <= MAX_UNITS * MAX_CHANNELS_PER_UNIT
}

/// Put our kernels (these, [`super::cube_depthwise`]'s and [`super::cube_qkv`]'s) in the op
/// registry for the CubeCL backends of this build: all of them for the unfused backends; for the
/// fused ones all but the layer-norm forward, which they get only when
/// `MAXXVIT_OWN_KERNELS_FUSED` is set ([`register_fused`]): as a custom op of the fusion stream
/// it is exact op by op (`model/tests/wgpu_ops.rs`), but with it the maxvit_rmlp_small_rw golden
/// case goes wrong in training on lavapipe (docs/burn_faults.md §8, not narrowed further).
/// `MAXXVIT_NO_OWN_KERNELS` turns them all off (Burn's compositions, for A/B checks).
pub fn register() {
    if std::env::var_os("MAXXVIT_NO_OWN_KERNELS").is_some() {
        return;
    }
    #[cfg(feature = "cube-wgpu")]
    {
        register_backend::<WgpuCube>(true);
        register_backend::<burn_fusion::Fusion<WgpuCube>>(false);
    }
    #[cfg(feature = "cube-cuda")]
    {
        register_backend::<CudaCube>(true);
        register_backend::<burn_fusion::Fusion<CudaCube>>(false);
    }
    if std::env::var_os("MAXXVIT_OWN_KERNELS_FUSED").is_some() {
        register_fused();
    }
}

/// All our kernels for the fused CubeCL backends, the layer-norm forward included.
pub fn register_fused() {
    #[cfg(feature = "cube-wgpu")]
    register_backend::<burn_fusion::Fusion<WgpuCube>>(true);
    #[cfg(feature = "cube-cuda")]
    register_backend::<burn_fusion::Fusion<CudaCube>>(true);
}

/// The unfused CubeCL backends of Burn's `Wgpu` and `Cuda` (their default element types).
#[cfg(feature = "cube-wgpu")]
type WgpuCube = CubeBackend<burn::backend::wgpu::WgpuRuntime, f32, i32, u32>;
#[cfg(feature = "cube-cuda")]
type CudaCube = CubeBackend<burn::cubecl::cuda::CudaRuntime, f32, i32, u8>;

fn register_backend<B>(layer_norm_forward: bool)
where
    B: LayerNormKernels + super::cube_depthwise::DepthwiseGradKernels + super::cube_qkv::QkvGradKernels,
{
    if layer_norm_forward {
        super::register_op::<super::layer_norm::ForwardKernel<B>>(B::layer_norm_forward);
    }
    super::register_op::<super::layer_norm::BackwardKernel<B>>(B::layer_norm_backward);
    super::cube_depthwise::register_backend::<B>();
    super::cube_qkv::register_backend::<B>();
}

/// The shape of `x` as `[outer, C, inner]` around axis `dim`.
fn split_at(shape: &Shape, dim: usize) -> [usize; 3] {
    let dims = shape.as_slice();
    [dims[..dim].iter().product(), dims[dim], dims[dim + 1..].iter().product()]
}

/// `shape` with axis `dim` of size 1: the shape of the per-row statistics.
fn row_shape(shape: &Shape, dim: usize) -> Shape {
    let mut shape = shape.clone();
    shape[dim] = 1;
    shape
}

/// Units per cube for `channels` channels: a power of two, so the tree reductions halve evenly.
fn units_for(channels: usize) -> usize {
    channels.next_power_of_two().min(MAX_UNITS)
}

/// `Σ sums[0..units]` into `sums[0]`, read by every unit. Every unit of the cube must call it.
#[cube]
pub(super) fn cube_sum<F: Float>(sums: &mut SharedMemory<F>, unit: usize, half_units: u32) {
    let mut stride = half_units as usize;
    while stride > 0 {
        if unit < stride {
            sums[unit] = sums[unit] + sums[unit + stride];
        }
        sync_cube();
        stride /= 2;
    }
}

/// Two such sums at once (one barrier per step for both).
#[cube]
fn cube_sum2<F: Float>(a: &mut SharedMemory<F>, b: &mut SharedMemory<F>, unit: usize, half_units: u32) {
    let mut stride = half_units as usize;
    while stride > 0 {
        if unit < stride {
            a[unit] = a[unit] + a[unit + stride];
            b[unit] = b[unit] + b[unit + stride];
        }
        sync_cube();
        stride /= 2;
    }
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn layer_norm_forward_kernel<F: Float>(
    x: &Tensor<F>,
    weight: &Tensor<F>,
    bias: &Tensor<F>,
    y: &mut Tensor<F>,
    mean_out: &mut Tensor<F>,
    std_out: &mut Tensor<F>,
    channels: u32,
    inner: u32,
    rows: u32,
    rows_per_cube: u32,
    half_units: u32,
    eps: f32,
    #[comptime] units: usize,
    #[define(F)] _dtype: StorageType,
) {
    let unit = UNIT_POS_X as usize;
    let (channels, inner, rows) = (channels as usize, inner as usize, rows as usize);
    let count = F::cast_from(channels as u32);
    let mut sums = SharedMemory::<F>::new(units);
    let first = CUBE_POS_X as usize * rows_per_cube as usize;
    let mut last = first + rows_per_cube as usize;
    if last > rows {
        last = rows;
    }
    for row in first..last {
        let base = (row / inner) * channels * inner + row % inner;
        let mut partial = F::new(0.0);
        let mut c = unit;
        while c < channels {
            partial += x[base + c * inner];
            c += units;
        }
        sums[unit] = partial;
        sync_cube();
        cube_sum::<F>(&mut sums, unit, half_units);
        let mean = sums[0] / count;
        sync_cube();

        let mut partial = F::new(0.0);
        let mut c = unit;
        while c < channels {
            let centred = x[base + c * inner] - mean;
            partial += centred * centred;
            c += units;
        }
        sums[unit] = partial;
        sync_cube();
        cube_sum::<F>(&mut sums, unit, half_units);
        let std = F::sqrt(sums[0] / count + F::cast_from(eps));
        sync_cube();

        let mut c = unit;
        while c < channels {
            let at = base + c * inner;
            y[at] = (x[at] - mean) / std * weight[c] + bias[c];
            c += units;
        }
        if unit == 0 {
            mean_out[row] = mean;
            std_out[row] = std;
        }
    }
}

/// Where element `linear` of `t`'s shape, counted in row-major order, lies in `t`'s memory.
#[cube]
fn strided_offset<F: Float>(t: &Tensor<F>, linear: usize) -> usize {
    let mut offset = 0usize;
    let mut remaining = linear;
    let mut axis = t.rank();
    while axis > 0 {
        axis -= 1;
        let size = t.shape(axis);
        offset += (remaining % size) * t.stride(axis);
        remaining /= size;
    }
    offset
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn layer_norm_backward_kernel<F: Float>(
    grad: &Tensor<F>,
    x: &Tensor<F>,
    weight: &Tensor<F>,
    mean: &Tensor<F>,
    std: &Tensor<F>,
    addend: &Tensor<F>,
    dx: &mut Tensor<F>,
    partials: &mut Tensor<F>,
    channels: u32,
    inner: u32,
    rows: u32,
    rows_per_cube: u32,
    half_units: u32,
    #[comptime] units: usize,
    #[comptime] padded_channels: usize,
    #[comptime] has_addend: bool,
    #[define(F)] _dtype: StorageType,
) {
    let unit = UNIT_POS_X as usize;
    let (channels, inner, rows) = (channels as usize, inner as usize, rows as usize);
    let count = F::cast_from(channels as u32);
    let mut sums_g_w = SharedMemory::<F>::new(units);
    let mut sums_g_w_x_hat = SharedMemory::<F>::new(units);
    // Σ g·x̂ and Σ g over this cube's rows, per channel; each slot is written by one unit only.
    let mut dw_partial = SharedMemory::<F>::new(padded_channels);
    let mut db_partial = SharedMemory::<F>::new(padded_channels);
    let mut c = unit;
    while c < channels {
        dw_partial[c] = F::new(0.0);
        db_partial[c] = F::new(0.0);
        c += units;
    }
    let cube = CUBE_POS_X as usize;
    let first = cube * rows_per_cube as usize;
    let mut last = first + rows_per_cube as usize;
    if last > rows {
        last = rows;
    }
    for row in first..last {
        let base = (row / inner) * channels * inner + row % inner;
        let (mu, sigma) = (mean[row], std[row]);
        let mut partial_g_w = F::new(0.0);
        let mut partial_g_w_x_hat = F::new(0.0);
        let mut c = unit;
        while c < channels {
            let at = base + c * inner;
            let g_w = grad[at] * weight[c];
            partial_g_w += g_w;
            partial_g_w_x_hat += g_w * ((x[at] - mu) / sigma);
            c += units;
        }
        sums_g_w[unit] = partial_g_w;
        sums_g_w_x_hat[unit] = partial_g_w_x_hat;
        sync_cube();
        cube_sum2::<F>(&mut sums_g_w, &mut sums_g_w_x_hat, unit, half_units);
        let mean_g_w = sums_g_w[0] / count;
        let mean_g_w_x_hat = sums_g_w_x_hat[0] / count;
        sync_cube();

        let mut c = unit;
        while c < channels {
            let at = base + c * inner;
            let g = grad[at];
            let x_hat = (x[at] - mu) / sigma;
            let d = (g * weight[c] - mean_g_w - x_hat * mean_g_w_x_hat) / sigma;
            if has_addend {
                dx[at] = d + addend[strided_offset::<F>(addend, at)];
            } else {
                dx[at] = d;
            }
            dw_partial[c] += g * x_hat;
            db_partial[c] += g;
            c += units;
        }
    }
    let mut c = unit;
    while c < channels {
        partials[cube * 2 * channels + c] = dw_partial[c];
        partials[cube * 2 * channels + channels + c] = db_partial[c];
        c += units;
    }
}

/// `dw[c] = Σ_k partials[k, 0, c]`, `db[c] = Σ_k partials[k, 1, c]`, one unit per channel.
#[cube(launch)]
fn column_sums_kernel<F: Float>(
    partials: &Tensor<F>,
    dw: &mut Tensor<F>,
    db: &mut Tensor<F>,
    channels: u32,
    cubes: u32,
    #[define(F)] _dtype: StorageType,
) {
    let c = ABSOLUTE_POS;
    let channels = channels as usize;
    if c >= channels {
        terminate!();
    }
    let mut sum_w = F::new(0.0);
    let mut sum_b = F::new(0.0);
    for k in 0..cubes as usize {
        sum_w += partials[k * 2 * channels + c];
        sum_b += partials[k * 2 * channels + channels + c];
    }
    dw[c] = sum_w;
    db[c] = sum_b;
}

fn empty_like<R: CubeRuntime>(reference: &CubeTensor<R>, shape: Shape) -> CubeTensor<R> {
    empty_device_contiguous_dtype::<R>(reference.client.clone(), reference.device.clone(), shape, reference.dtype)
}

fn forward<R: CubeRuntime>(
    x: CubeTensor<R>,
    weight: CubeTensor<R>,
    bias: CubeTensor<R>,
    dim: usize,
    eps: f64,
) -> [CubeTensor<R>; 3] {
    let (x, weight, bias) = (into_contiguous(x), into_contiguous(weight), into_contiguous(bias));
    let shape = x.shape();
    let [outer, channels, inner] = split_at(&shape, dim);
    let rows = outer * inner;
    let y = empty_like(&x, shape.clone());
    let mean = empty_like(&x, row_shape(&shape, dim));
    let std = empty_like(&x, row_shape(&shape, dim));
    let units = units_for(channels);
    let rows_per_cube = 1;
    let dtype = x.dtype;
    layer_norm_forward_kernel::launch::<R>(
        &x.client.clone(),
        CubeCount::Static(rows as u32, 1, 1),
        CubeDim::new_1d(units as u32),
        x.into_tensor_arg(),
        weight.into_tensor_arg(),
        bias.into_tensor_arg(),
        y.clone().into_tensor_arg(),
        mean.clone().into_tensor_arg(),
        std.clone().into_tensor_arg(),
        channels as u32,
        inner as u32,
        rows as u32,
        rows_per_cube,
        (units / 2) as u32,
        eps as f32,
        units,
        dtype.into(),
    );
    [y, mean, std]
}

fn backward<R: CubeRuntime>(
    grad: CubeTensor<R>,
    x: CubeTensor<R>,
    weight: CubeTensor<R>,
    mean: CubeTensor<R>,
    std: CubeTensor<R>,
    addend: Option<CubeTensor<R>>,
    dim: usize,
) -> [CubeTensor<R>; 3] {
    let has_addend = addend.is_some();
    // Read through its strides (it often arrives as a view: a copy would cost the launch saved);
    // without one the kernel still takes a tensor there, unread.
    let addend = addend.unwrap_or_else(|| grad.clone());
    let [grad, x, weight, mean, std] = [grad, x, weight, mean, std].map(into_contiguous);
    let shape = x.shape();
    let [outer, channels, inner] = split_at(&shape, dim);
    let rows = outer * inner;
    let cubes = rows.clamp(1, MAX_BACKWARD_CUBES);
    let rows_per_cube = rows.div_ceil(cubes);
    let cubes = rows.div_ceil(rows_per_cube).max(1);
    let units = units_for(channels);
    let padded_channels = channels.div_ceil(units) * units;
    let dx = empty_like(&x, shape.clone());
    let partials = empty_like(&x, Shape::new([cubes, 2, channels]));
    let dw = empty_like(&x, Shape::new([channels]));
    let db = empty_like(&x, Shape::new([channels]));
    let (client, dtype) = (x.client.clone(), x.dtype);
    layer_norm_backward_kernel::launch::<R>(
        &client,
        CubeCount::Static(cubes as u32, 1, 1),
        CubeDim::new_1d(units as u32),
        grad.into_tensor_arg(),
        x.into_tensor_arg(),
        weight.into_tensor_arg(),
        mean.into_tensor_arg(),
        std.into_tensor_arg(),
        addend.into_tensor_arg(),
        dx.clone().into_tensor_arg(),
        partials.clone().into_tensor_arg(),
        channels as u32,
        inner as u32,
        rows as u32,
        rows_per_cube as u32,
        (units / 2) as u32,
        units,
        padded_channels,
        has_addend,
        dtype.into(),
    );
    let sum_units = channels.min(MAX_UNITS);
    column_sums_kernel::launch::<R>(
        &client,
        CubeCount::Static(channels.div_ceil(sum_units) as u32, 1, 1),
        CubeDim::new_1d(sum_units as u32),
        partials.into_tensor_arg(),
        dw.clone().into_tensor_arg(),
        db.clone().into_tensor_arg(),
        channels as u32,
        cubes as u32,
        dtype.into(),
    );
    [dx, dw, db]
}

impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> LayerNormKernels for CubeBackend<R, F, I, BT> {
    fn layer_norm_forward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        dim: usize,
        eps: f64,
    ) -> [FloatTensor<Self>; 3] {
        forward::<R>(x, weight, bias, dim, eps)
    }

    fn layer_norm_backward(
        grad: FloatTensor<Self>,
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        std: FloatTensor<Self>,
        addend: Option<FloatTensor<Self>>,
        dim: usize,
    ) -> [FloatTensor<Self>; 3] {
        backward::<R>(grad, x, weight, mean, std, addend, dim)
    }
}

/// Under fusion each call is one custom operation of the stream, run by the inner backend.
mod fusion {
    use std::marker::PhantomData;

    use burn::tensor::ops::FloatTensor;
    use burn::tensor::{Shape, TensorMetadata};
    use burn_fusion::stream::{Operation, OperationStreams};
    use burn_fusion::{Fusion, FusionBackend, FusionRuntime};
    use burn_ir::{CustomOpIr, HandleContainer, OperationIr, TensorIr};

    use super::{row_shape, LayerNormKernels};

    #[derive(Clone, Debug)]
    struct ForwardOp<B> {
        desc: CustomOpIr,
        dim: usize,
        eps: f64,
        _backend: PhantomData<B>,
    }

    impl<B: FusionBackend + LayerNormKernels> Operation<B::FusionRuntime> for ForwardOp<B> {
        fn execute(&self, handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>) {
            let ([x, weight, bias], [y, mean, std]) = self.desc.as_fixed();
            let [x, weight, bias] = [x, weight, bias].map(|t| handles.get_float_tensor::<B>(t));
            let outputs = B::layer_norm_forward(x, weight, bias, self.dim, self.eps);
            for (ir, tensor) in [y, mean, std].into_iter().zip(outputs) {
                handles.register_float_tensor::<B>(&ir.id, tensor);
            }
        }
    }

    #[derive(Clone, Debug)]
    struct BackwardOp<B> {
        desc: CustomOpIr,
        dim: usize,
        _backend: PhantomData<B>,
    }

    impl<B: FusionBackend + LayerNormKernels> Operation<B::FusionRuntime> for BackwardOp<B> {
        fn execute(&self, handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>) {
            // Inputs `[grad, x, weight, μ, σ]`, then the addend where there is one.
            let mut inputs: Vec<_> = self.desc.inputs.iter().map(|t| handles.get_float_tensor::<B>(t)).collect();
            let addend = (inputs.len() == 6).then(|| inputs.pop().expect("six inputs"));
            let [grad, x, weight, mean, std]: [_; 5] =
                inputs.try_into().unwrap_or_else(|_| unreachable!("a layer-norm backward has 5 or 6 inputs"));
            let outputs = B::layer_norm_backward(grad, x, weight, mean, std, addend, self.dim);
            for (ir, tensor) in self.desc.outputs.iter().zip(outputs) {
                handles.register_float_tensor::<B>(&ir.id, tensor);
            }
        }
    }

    fn three<R: FusionRuntime>(outputs: Vec<burn_fusion::FusionTensor<R>>) -> [burn_fusion::FusionTensor<R>; 3] {
        outputs.try_into().unwrap_or_else(|_| unreachable!("a layer-norm op has three outputs"))
    }

    impl<B: FusionBackend + LayerNormKernels> LayerNormKernels for Fusion<B> {
        fn layer_norm_forward(
            x: FloatTensor<Self>,
            weight: FloatTensor<Self>,
            bias: FloatTensor<Self>,
            dim: usize,
            eps: f64,
        ) -> [FloatTensor<Self>; 3] {
            let (client, shape, dtype) = (x.client.clone(), x.shape(), x.dtype);
            let streams = OperationStreams::with_inputs([&x, &weight, &bias]);
            let out = |shape: Shape| TensorIr::uninit(client.create_empty_handle(), shape, dtype);
            let outputs = [out(shape.clone()), out(row_shape(&shape, dim)), out(row_shape(&shape, dim))];
            let inputs = [x.into_ir(), weight.into_ir(), bias.into_ir()];
            let desc = CustomOpIr::new("maxxvit_layer_norm_forward", &inputs, &outputs);
            let op = ForwardOp::<B> { desc: desc.clone(), dim, eps, _backend: PhantomData };
            three(client.register(streams, OperationIr::Custom(desc), op))
        }

        fn layer_norm_backward(
            grad: FloatTensor<Self>,
            x: FloatTensor<Self>,
            weight: FloatTensor<Self>,
            mean: FloatTensor<Self>,
            std: FloatTensor<Self>,
            addend: Option<FloatTensor<Self>>,
            dim: usize,
        ) -> [FloatTensor<Self>; 3] {
            let (client, shape, dtype) = (x.client.clone(), x.shape(), x.dtype);
            let channels = Shape::new([shape[dim]]);
            let tensors: Vec<_> = [grad, x, weight, mean, std].into_iter().chain(addend).collect();
            let streams = OperationStreams::with_inputs(&tensors);
            let out = |shape: Shape| TensorIr::uninit(client.create_empty_handle(), shape, dtype);
            let outputs = [out(shape.clone()), out(channels.clone()), out(channels)];
            let inputs: Vec<_> = tensors.into_iter().map(|t| t.into_ir()).collect();
            let desc = CustomOpIr::new("maxxvit_layer_norm_backward", &inputs, &outputs);
            let op = BackwardOp::<B> { desc: desc.clone(), dim, _backend: PhantomData };
            three(client.register(streams, OperationIr::Custom(desc), op))
        }
    }
}
