//! The gradient of a qkv projection from dQ, dK and dV as ONE CubeCL kernel of ours: a gather
//! into the projection's channel layout, where the composition stacks the three (a buffer and
//! three slice-assigns) and copies the stack back through the inverse of the split's permute
//! (issue 11: four launches per attention, BENCH.md "Own CubeCL kernels").
//!
//! The projection is `[b, n, 3·heads·dh]`; channel `h·3dh + s·dh + d` (head-first, the rw and
//! paper layouts) or `s·C + h·dh + d` (tf) holds part `s` (q, k, v) of head `h` (spec §2.9).
//! dQ, dK, dV are `[b, heads, n, dh]`, read through their strides. One unit per output element.
//! f32 only, as the attention node is.

use burn::tensor::ops::FloatTensor;
use burn::tensor::{Shape, TensorMetadata};
use burn_cubecl::cubecl;
use burn_cubecl::cubecl::calculate_cube_count_elemwise;
use burn_cubecl::cubecl::prelude::*;
use burn_cubecl::ops::numeric::empty_device_contiguous_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};

/// The qkv projection's gradient as a kernel of this backend.
pub trait QkvGradKernels: burn::tensor::backend::Backend {
    /// `d_qkv` `[b, n, 3·heads·dh]` from `dq`, `dk`, `dv` `[b, heads, n, dh]`.
    fn qkv_grad(
        dq: FloatTensor<Self>,
        dk: FloatTensor<Self>,
        dv: FloatTensor<Self>,
        head_first: bool,
    ) -> FloatTensor<Self>;
}

pub(super) fn register_backend<B: QkvGradKernels>() {
    super::register_op::<super::attention_core::QkvGradKernel<B>>(B::qkv_grad);
}

/// Element `[batch, head, token, d]` of `t` (any strides).
#[cube]
fn at<F: Float>(t: &Tensor<F>, batch: usize, head: usize, token: usize, d: usize) -> F {
    t[batch * t.stride(0) + head * t.stride(1) + token * t.stride(2) + d * t.stride(3)]
}

#[cube(launch)]
fn qkv_grad_kernel<F: Float>(
    dq: &Tensor<F>,
    dk: &Tensor<F>,
    dv: &Tensor<F>,
    out: &mut Tensor<F>,
    #[comptime] head_first: bool,
    #[define(F)] _dtype: StorageType,
) {
    if ABSOLUTE_POS >= out.len() {
        terminate!();
    }
    let (heads, tokens, dh) = (dq.shape(1), dq.shape(2), dq.shape(3));
    let channels = 3 * heads * dh;
    let channel = ABSOLUTE_POS % channels;
    let token = (ABSOLUTE_POS / channels) % tokens;
    let batch = ABSOLUTE_POS / (channels * tokens);
    let d = channel % dh;
    let part = if head_first { (channel / dh) % 3 } else { channel / (heads * dh) };
    let head = if head_first { channel / (3 * dh) } else { (channel / dh) % heads };
    if part == 0 {
        out[ABSOLUTE_POS] = at::<F>(dq, batch, head, token, d);
    } else if part == 1 {
        out[ABSOLUTE_POS] = at::<F>(dk, batch, head, token, d);
    } else {
        out[ABSOLUTE_POS] = at::<F>(dv, batch, head, token, d);
    }
}

fn qkv_grad<R: CubeRuntime>(
    dq: CubeTensor<R>,
    dk: CubeTensor<R>,
    dv: CubeTensor<R>,
    head_first: bool,
) -> CubeTensor<R> {
    let [b, heads, n, dh] = dq.shape().dims::<4>();
    let out = empty_device_contiguous_dtype::<R>(
        dq.client.clone(),
        dq.device.clone(),
        Shape::new([b, n, 3 * heads * dh]),
        dq.dtype,
    );
    let elements = b * n * 3 * heads * dh;
    let (client, dtype) = (dq.client.clone(), dq.dtype);
    let cube_dim = CubeDim::new(&client, elements);
    qkv_grad_kernel::launch::<R>(
        &client,
        calculate_cube_count_elemwise(&client, elements, cube_dim),
        cube_dim,
        dq.into_tensor_arg(),
        dk.into_tensor_arg(),
        dv.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        head_first,
        dtype.into(),
    );
    out
}

impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> QkvGradKernels for CubeBackend<R, F, I, BT> {
    fn qkv_grad(
        dq: FloatTensor<Self>,
        dk: FloatTensor<Self>,
        dv: FloatTensor<Self>,
        head_first: bool,
    ) -> FloatTensor<Self> {
        qkv_grad::<R>(dq, dk, dv, head_first)
    }
}

/// Under fusion the call is one custom operation of the stream, run by the inner backend.
mod fusion {
    use std::marker::PhantomData;

    use burn::tensor::ops::FloatTensor;
    use burn::tensor::{Shape, TensorMetadata};
    use burn_fusion::stream::{Operation, OperationStreams};
    use burn_fusion::{Fusion, FusionBackend, FusionRuntime};
    use burn_ir::{CustomOpIr, HandleContainer, OperationIr, TensorIr};

    use super::QkvGradKernels;

    #[derive(Clone, Debug)]
    struct QkvGradOp<B> {
        desc: CustomOpIr,
        head_first: bool,
        _backend: PhantomData<B>,
    }

    impl<B: FusionBackend + QkvGradKernels> Operation<B::FusionRuntime> for QkvGradOp<B> {
        fn execute(&self, handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>) {
            let ([dq, dk, dv], [out]) = self.desc.as_fixed();
            let [dq, dk, dv] = [dq, dk, dv].map(|t| handles.get_float_tensor::<B>(t));
            handles.register_float_tensor::<B>(&out.id, B::qkv_grad(dq, dk, dv, self.head_first));
        }
    }

    impl<B: FusionBackend + QkvGradKernels> QkvGradKernels for Fusion<B> {
        fn qkv_grad(
            dq: FloatTensor<Self>,
            dk: FloatTensor<Self>,
            dv: FloatTensor<Self>,
            head_first: bool,
        ) -> FloatTensor<Self> {
            let (client, dtype) = (dq.client.clone(), dq.dtype);
            let [b, heads, n, dh] = dq.shape().dims::<4>();
            let streams = OperationStreams::with_inputs([&dq, &dk, &dv]);
            let output = TensorIr::uninit(client.create_empty_handle(), Shape::new([b, n, 3 * heads * dh]), dtype);
            let desc = CustomOpIr::new("maxxvit_qkv_grad", &[dq.into_ir(), dk.into_ir(), dv.into_ir()], &[output]);
            let op = QkvGradOp::<B> { desc: desc.clone(), head_first, _backend: PhantomData };
            let [out] = <[_; 1]>::try_from(client.register(streams, OperationIr::Custom(desc), op))
                .unwrap_or_else(|_| unreachable!("the qkv gradient op has one output"));
            out
        }
    }
}
