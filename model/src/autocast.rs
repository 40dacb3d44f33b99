//! Mixed precision in the manner of `torch.autocast(dtype=torch.bfloat16)`, which timm's
//! `--amp --amp-dtype bfloat16` uses: while a guard is alive on this thread, convolutions,
//! linear layers and the two attention matmuls cast their inputs and (f32 master) weights to the
//! low-precision dtype, compute there (tensor cores on a GPU), and hand f32 back; norms, softmax,
//! activations, residual sums and the loss stay f32.
//!
//! Burn 0.21 has no autocast of its own; tensors carry their dtype at run time and `cast` is
//! differentiable, so the backward pass runs the same ops in the same dtypes and every gradient
//! reaches its f32 parameter as f32. Handing f32 back after each op (torch keeps bf16 between
//! ops) costs a cast that fusion can absorb and keeps every non-matmul op in f32.

use std::cell::Cell;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, FloatDType, Tensor};

thread_local! {
    static AUTOCAST: Cell<Option<FloatDType>> = const { Cell::new(None) };
}

/// Autocast is on for this thread until the guard drops (guards nest).
#[must_use = "autocast ends when the guard is dropped"]
pub struct AutocastGuard {
    previous: Option<FloatDType>,
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        AUTOCAST.with(|a| a.set(self.previous));
    }
}

/// Compute matmuls and convolutions in `dtype` (`None`: full precision) until the guard drops.
pub fn autocast(dtype: Option<FloatDType>) -> AutocastGuard {
    AutocastGuard { previous: AUTOCAST.with(|a| a.replace(dtype)) }
}

/// The dtype matmuls and convolutions compute in on this thread, if autocast is on.
pub fn current() -> Option<FloatDType> {
    AUTOCAST.with(|a| a.get())
}

/// The casts around one autocast op: `down` to the compute dtype, `up` back to the dtype the
/// op's input came in.
pub(crate) struct Cast {
    compute: FloatDType,
    back: FloatDType,
}

impl Cast {
    /// `None` when autocast is off or the input already has the compute dtype.
    pub(crate) fn for_input<B: Backend, const D: usize>(x: &Tensor<B, D>) -> Option<Self> {
        let compute = current()?;
        let input = x.dtype();
        (input != DType::from(compute)).then(|| Self { compute, back: FloatDType::from(input) })
    }

    pub(crate) fn down<B: Backend, const D: usize>(&self, t: Tensor<B, D>) -> Tensor<B, D> {
        t.cast(self.compute)
    }

    pub(crate) fn up<B: Backend, const D: usize>(&self, t: Tensor<B, D>) -> Tensor<B, D> {
        t.cast(self.back)
    }
}
