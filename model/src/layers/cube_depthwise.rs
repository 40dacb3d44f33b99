//! The weight and bias gradients of a depthwise conv as ONE CubeCL kernel of ours, where the
//! grouped-convolution form of [`super::depthwise`] takes a transpose copy or two, the packing
//! copies of Burn's direct conv, the conv, and two reductions for the bias (issue 11, BENCH.md
//! "Depthwise weight gradient kernel").
//!
//! With `o = c·m + j` (channel multiplier `m`), tap `(a, b)`:
//! `dW[o, 0, a, b] = Σ_n Σ_{y,x} dY[n, o, y, x] · X[n, c, y·s + a·d − p, x·s + b·d − p]` (zero
//! outside `X`) and `db[o] = Σ_n Σ_{y,x} dY[n, o, y, x]`. One cube per `(tap, o)`, the bias as
//! one more tap; its units stride over the `N·oh·ow` output positions and add their partial sums
//! in shared memory. Deterministic, no atomics. `X` and `dY` are read through their strides (no
//! contiguous copies first).

use burn::tensor::ops::{ConvOptions, FloatTensor};
use burn::tensor::{DType, Shape, TensorMetadata};
use burn_cubecl::cubecl;
use burn_cubecl::cubecl::prelude::*;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};

use super::cube_norm::cube_sum;

/// Units per cube.
const UNITS: usize = 256;

/// The weight and bias gradients of a depthwise conv as kernels of this backend.
pub trait DepthwiseGradKernels: burn::tensor::backend::Backend {
    /// `[dW, db]` of the depthwise conv of `x` (`[N, C, H, W]`) with a weight of `weight_dims`
    /// (`[C·m, 1, kh, kw]`), given the output gradient `[N, C·m, oh, ow]`.
    fn depthwise_weight_bias_grad(
        x: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        weight_dims: [usize; 4],
        options: ConvOptions<2>,
    ) -> [FloatTensor<Self>; 2];
}

/// Whether the kernel takes a depthwise conv in `dtype`.
pub fn supports(dtype: DType) -> bool {
    dtype == DType::F32
}

pub(super) fn register_backend<B: DepthwiseGradKernels>() {
    super::register_op::<super::depthwise::GradKernel<B>>(B::depthwise_weight_bias_grad);
}

#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn depthwise_weight_bias_grad_kernel<F: Float>(
    x: &Tensor<F>,
    grad: &Tensor<F>,
    dw: &mut Tensor<F>,
    db: &mut Tensor<F>,
    geometry: Sequence<u32>,
    #[comptime] units: usize,
    #[define(F)] _dtype: StorageType,
) {
    // [batch, in_channels, height, width, out_channels, out_h, out_w, kh, kw,
    //  stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, multiplier]
    let batch = *geometry.index(0usize) as usize;
    let (height, width) = (*geometry.index(2usize) as usize, *geometry.index(3usize) as usize);
    let (out_h, out_w) = (*geometry.index(5usize) as usize, *geometry.index(6usize) as usize);
    let (kh, kw) = (*geometry.index(7usize) as usize, *geometry.index(8usize) as usize);
    let (stride_h, stride_w) = (*geometry.index(9usize) as usize, *geometry.index(10usize) as usize);
    let (pad_h, pad_w) = (*geometry.index(11usize) as usize, *geometry.index(12usize) as usize);
    let (dil_h, dil_w) = (*geometry.index(13usize) as usize, *geometry.index(14usize) as usize);
    let multiplier = *geometry.index(15usize) as usize;

    let unit = UNIT_POS_X as usize;
    let tap = CUBE_POS_X as usize;
    let o = CUBE_POS_Y as usize;
    let c = o / multiplier;
    let is_bias = tap == kh * kw;
    let (a, b) = (tap / kw, tap % kw);
    let positions = batch * out_h * out_w;
    let mut partial = F::new(0.0);
    let mut at = unit;
    while at < positions {
        let n = at / (out_h * out_w);
        let y = (at / out_w) % out_h;
        let x_pos = at % out_w;
        let g = grad[n * grad.stride(0) + o * grad.stride(1) + y * grad.stride(2) + x_pos * grad.stride(3)];
        if is_bias {
            partial += g;
        } else {
            // Input row and column, shifted by the padding so they stay unsigned.
            let row = y * stride_h + a * dil_h;
            let col = x_pos * stride_w + b * dil_w;
            if row >= pad_h && col >= pad_w && row - pad_h < height && col - pad_w < width {
                let at_x =
                    n * x.stride(0) + c * x.stride(1) + (row - pad_h) * x.stride(2) + (col - pad_w) * x.stride(3);
                partial += g * x[at_x];
            }
        }
        at += units;
    }
    let mut sums = SharedMemory::<F>::new(units);
    sums[unit] = partial;
    sync_cube();
    cube_sum::<F>(&mut sums, unit, (units / 2) as u32);
    if unit == 0 {
        if is_bias {
            db[o] = sums[0];
        } else {
            dw[o * kh * kw + tap] = sums[0];
        }
    }
}

fn weight_bias_grad<R: CubeRuntime>(
    x: CubeTensor<R>,
    grad: CubeTensor<R>,
    weight_dims: [usize; 4],
    options: ConvOptions<2>,
) -> [CubeTensor<R>; 2] {
    // Both read through their strides: the gradient arrives as an NCHW view of the channels-last
    // norm's output gradient, and copying it (and often x) contiguous cost two launches.
    let [batch, in_channels, height, width] = x.shape().dims::<4>();
    let [_, out_channels, out_h, out_w] = grad.shape().dims::<4>();
    let [_, _, kh, kw] = weight_dims;
    let new = |shape: Shape| empty_device_contiguous_dtype::<R>(x.client.clone(), x.device.clone(), shape, x.dtype);
    let dw = new(Shape::new(weight_dims));
    let db = new(Shape::new([out_channels]));
    let geometry = [
        batch,
        in_channels,
        height,
        width,
        out_channels,
        out_h,
        out_w,
        kh,
        kw,
        options.stride[0],
        options.stride[1],
        options.padding[0],
        options.padding[1],
        options.dilation[0],
        options.dilation[1],
        out_channels / in_channels,
    ];
    let mut sequence = SequenceArg::new();
    for value in geometry {
        sequence.push(value as u32);
    }
    let (client, dtype) = (x.client.clone(), x.dtype);
    depthwise_weight_bias_grad_kernel::launch::<R>(
        &client,
        CubeCount::Static((kh * kw + 1) as u32, out_channels as u32, 1),
        CubeDim::new_1d(UNITS as u32),
        x.into_tensor_arg(),
        grad.into_tensor_arg(),
        dw.clone().into_tensor_arg(),
        db.clone().into_tensor_arg(),
        sequence,
        UNITS,
        dtype.into(),
    );
    [dw, db]
}

impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> DepthwiseGradKernels
    for CubeBackend<R, F, I, BT>
{
    fn depthwise_weight_bias_grad(
        x: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        weight_dims: [usize; 4],
        options: ConvOptions<2>,
    ) -> [FloatTensor<Self>; 2] {
        weight_bias_grad::<R>(x, output_grad, weight_dims, options)
    }
}

/// Under fusion the call is one custom operation of the stream, run by the inner backend.
mod fusion {
    use std::marker::PhantomData;

    use burn::tensor::ops::{ConvOptions, FloatTensor};
    use burn::tensor::Shape;
    use burn_fusion::stream::{Operation, OperationStreams};
    use burn_fusion::{Fusion, FusionBackend, FusionRuntime};
    use burn_ir::{CustomOpIr, HandleContainer, OperationIr, TensorIr};

    use super::DepthwiseGradKernels;

    #[derive(Clone, Debug)]
    struct GradOp<B> {
        desc: CustomOpIr,
        weight_dims: [usize; 4],
        options: ConvOptions<2>,
        _backend: PhantomData<B>,
    }

    impl<B: FusionBackend + DepthwiseGradKernels> Operation<B::FusionRuntime> for GradOp<B> {
        fn execute(&self, handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>) {
            let ([x, grad], [dw, db]) = self.desc.as_fixed();
            let [x, grad] = [x, grad].map(|t| handles.get_float_tensor::<B>(t));
            let outputs = B::depthwise_weight_bias_grad(x, grad, self.weight_dims, self.options.clone());
            for (ir, tensor) in [dw, db].into_iter().zip(outputs) {
                handles.register_float_tensor::<B>(&ir.id, tensor);
            }
        }
    }

    impl<B: FusionBackend + DepthwiseGradKernels> DepthwiseGradKernels for Fusion<B> {
        fn depthwise_weight_bias_grad(
            x: FloatTensor<Self>,
            output_grad: FloatTensor<Self>,
            weight_dims: [usize; 4],
            options: ConvOptions<2>,
        ) -> [FloatTensor<Self>; 2] {
            let (client, dtype) = (x.client.clone(), x.dtype);
            let streams = OperationStreams::with_inputs([&x, &output_grad]);
            let out = |shape: Shape| TensorIr::uninit(client.create_empty_handle(), shape, dtype);
            let outputs = [out(Shape::new(weight_dims)), out(Shape::new([weight_dims[0]]))];
            let desc =
                CustomOpIr::new("maxxvit_depthwise_weight_bias_grad", &[x.into_ir(), output_grad.into_ir()], &outputs);
            let op = GradOp::<B> { desc: desc.clone(), weight_dims, options, _backend: PhantomData };
            let outputs = client.register(streams, OperationIr::Custom(desc), op);
            outputs.try_into().unwrap_or_else(|_| unreachable!("the depthwise gradient op has two outputs"))
        }
    }
}
