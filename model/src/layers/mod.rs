//! Building blocks shared by every MaxxViT-family block.

pub mod attention_core;
pub mod batch_norm;
pub mod buffer;
pub mod conv;
#[cfg(feature = "cube")]
pub mod cube_depthwise;
#[cfg(feature = "cube")]
pub mod cube_norm;
#[cfg(feature = "cube")]
pub mod cube_qkv;
pub mod depthwise;
pub mod init;
pub mod layer_norm;
pub mod norm;
mod norm_node;

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorPrimitive};

pub use buffer::Buffer;
pub use conv::{pool2d, Conv2d, ConvSpec, Downsample2d, Linear};
pub use init::{Init, InitRole};
pub use norm::{drop_path, dropout, BatchNorm2d, LayerNorm, LayerNorm2d, LayerScale, Norm2d};

use crate::config::ActLayer;

/// Ops of ours (an autodiff node with its own backward) for the models on `Autodiff<I>`: the
/// depthwise conv ([`depthwise`]), batch norm's training forward ([`batch_norm`]), layer norm
/// ([`layer_norm`]) and attention ([`attention_core`]). Rust has no specialisation and the
/// model is generic over `B: Backend`, so a backend opts in at run time (the trainer and the
/// golden check do); an unregistered one gets Burn's compositions (same values, more
/// launches). Idempotent.
pub fn register_autodiff_ops<I: Backend>() {
    depthwise::register::<I>();
    batch_norm::register::<I>();
    layer_norm::register::<I>();
    #[cfg(feature = "cube")]
    cube_norm::register();
    attention_core::register::<I>();
}

fn op_registry() -> &'static RwLock<HashMap<TypeId, Box<dyn Any + Send + Sync>>> {
    static REGISTRY: OnceLock<RwLock<HashMap<TypeId, Box<dyn Any + Send + Sync>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// Register `f` as the implementation of the op whose signature is `F` (a fn-pointer type that
/// names the backend, so each backend and rank has its own entry).
fn register_op<F: Any + Send + Sync + Copy>(f: F) {
    op_registry().write().unwrap().insert(TypeId::of::<F>(), Box::new(f));
}

/// A float primitive as a tensor of rank `D` (our autodiff nodes work on primitives).
fn float<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// A float tensor's primitive.
fn primitive<B: Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

/// The implementation registered for the signature `F`, if any.
fn registered_op<F: Any + Send + Sync + Copy>() -> Option<F> {
    op_registry().read().unwrap().get(&TypeId::of::<F>()).and_then(|f| f.downcast_ref::<F>().copied())
}

/// `Tensor::swap_dims`, except that a swap moving a size-1 axis is a reshape (the same element
/// order). Burn 0.21's CubeCL backends (fused and unfused) get the gradient wrong through a
/// swap_dims of a size-1 axis followed by a reshape (docs/burn_faults.md §4): the 1x1 maps of
/// a small input's last stage, or batch 1 in the depthwise weight gradient.
pub fn swap_dims<B: Backend, const D: usize>(t: Tensor<B, D>, a: usize, b: usize) -> Tensor<B, D> {
    let mut dims = t.dims();
    if dims[a] == 1 || dims[b] == 1 {
        dims.swap(a, b);
        t.reshape(dims)
    } else {
        t.swap_dims(a, b)
    }
}

/// timm `Mlp` (channels-last Linear layers): fc1 → act → drop → fc2 → drop (spec §2.5).
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
    pub act: ActLayer,
    pub drop1: f64,
    pub drop2: f64,
}

impl<B: Backend> Mlp<B> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        in_f: usize,
        hidden: usize,
        out_f: usize,
        act: ActLayer,
        drop: (f64, f64),
        role: InitRole,
        device: &B::Device,
    ) -> Self {
        Self {
            fc1: Linear::new(in_f, hidden, true, role, true, device),
            fc2: Linear::new(hidden, out_f, true, role, true, device),
            act,
            drop1: drop.0,
            drop2: drop.1,
        }
    }

    /// Over `[.., C]`. Where every contraction is exact ([`Self::tokens_are_exact`]) the map is
    /// viewed as `[rows, C]` tokens once, in and out, so fusion puts fc1's bias and the
    /// activation on fc1's matmul write and fc2's bias on fc2's (issue 11: with the 2-D view
    /// taken per linear, each reshape closed a fused block and the bias adds and the activation
    /// were launches of their own). The same values either way.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let rows = x.dims()[..D - 1].iter().product::<usize>();
        if D > 2 && self.tokens_are_exact(rows) {
            return conv::over_tokens(x, |tokens| self.forward_tokens(tokens));
        }
        let x = dropout(self.act.apply(self.fc1.forward(x)), self.drop1);
        dropout(self.fc2.forward(x), self.drop2)
    }

    fn forward_tokens(&self, tokens: Tensor<B, 2>) -> Tensor<B, 2> {
        let x = dropout(self.act.apply(self.fc1.forward_2d(tokens)), self.drop1);
        dropout(self.fc2.forward_2d(x), self.drop2)
    }

    /// Whether the token path's matmuls are exact ([`matmuls_are_exact`]): the input, hidden
    /// and output widths and the token count.
    fn tokens_are_exact(&self, rows: usize) -> bool {
        let [hidden, c_in] = self.fc1.weight.lazy_shape().dims::<2>();
        let c_out = self.fc2.weight.lazy_shape().dims::<2>()[0];
        matmuls_are_exact(&[rows, c_in, hidden, c_out])
    }
}

/// timm `ConvMlp` (NCHW, 1x1 convs): fc1 → act → drop → fc2.
#[derive(Module, Debug)]
pub struct ConvMlp<B: Backend> {
    pub fc1: Conv2d<B>,
    pub fc2: Conv2d<B>,
    pub act: ActLayer,
    pub drop: f64,
}

impl<B: Backend> ConvMlp<B> {
    pub fn new(
        dim: usize,
        hidden: usize,
        bias: bool,
        act: ActLayer,
        drop: f64,
        role: InitRole,
        device: &B::Device,
    ) -> Self {
        Self {
            fc1: ConvSpec::new(dim, hidden, 1, role).bias(bias).in_mlp(true).init(device),
            fc2: ConvSpec::new(hidden, dim, 1, role).bias(bias).in_mlp(true).init(device),
            act,
            drop,
        }
    }

    /// Over the channels-last tokens of the map, both 1x1 convs as matmuls
    /// ([`Conv2d::forward_tokens`]); the permutes are views, the token reshape one copy (the
    /// im2col copy Burn's first 1x1 conv makes too).
    /// Shapes outside [`ConvMlp::tokens_are_exact`] keep Burn's 1x1 convs.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [n, _, h, w] = x.dims();
        if !self.tokens_are_exact(n * h * w) {
            let x = dropout(self.act.apply(self.fc1.forward(x)), self.drop);
            return self.fc2.forward(x);
        }
        conv::tokens_to_map(self.forward_tokens(conv::map_to_tokens(x)), [n, h, w])
    }

    /// Whether the token path's matmuls are exact ([`matmuls_are_exact`]): the input and hidden
    /// widths (forward), the hidden and output widths (input gradients) and the token count
    /// (weight gradients).
    fn tokens_are_exact(&self, rows: usize) -> bool {
        let [hidden, c_in, _, _] = self.fc1.weight.lazy_shape().dims::<4>();
        let c_out = self.fc2.weight.lazy_shape().dims::<4>()[0];
        matmuls_are_exact(&[rows, c_in, hidden, c_out])
    }

    /// `mlp(norm(x))`. A layer norm runs on the contiguous tokens the MLP reads anyway (the
    /// same values as LayerNorm2d over NCHW channels, a strided axis, whose reductions and
    /// backward take more launches: issue 11); a batch norm on the map first.
    /// Then the layer scale `ls`, on the tokens where the token path runs: there its gradient is
    /// one reduction (over NCHW, one per broadcast axis) and fusion puts the multiply on the
    /// second matmul's write (issue 11).
    pub fn forward_normed(&self, x: Tensor<B, 4>, norm: &Norm2d<B>, ls: &Option<LayerScale<B>>) -> Tensor<B, 4> {
        match norm {
            Norm2d::Layer(ln) if self.tokens_are_exact(x.dims()[0] * x.dims()[2] * x.dims()[3]) => {
                let [n, _, h, w] = x.dims();
                let tokens = layer_norm::layer_norm(conv::map_to_tokens(x), ln.weight.val(), ln.bias.val(), 1, ln.eps);
                conv::tokens_to_map(norm::layer_scale_tokens(ls, self.forward_tokens(tokens)), [n, h, w])
            }
            _ => norm::layer_scale_2d(ls, self.forward(norm.forward(x))),
        }
    }

    /// fc1 → act → drop → fc2 over `[rows, C]` tokens.
    fn forward_tokens(&self, tokens: Tensor<B, 2>) -> Tensor<B, 2> {
        let y = dropout(self.act.apply(self.fc1.forward_tokens(tokens)), self.drop);
        self.fc2.forward_tokens(y)
    }
}

/// Whether matmuls contracting over each of `contractions` are exact on every CubeCL backend:
/// CubeCL's matmul is wrong on wgpu for some `k` of 8 or 24 (docs/burn_faults.md §6) and exact
/// at multiples of 16. Every production width is a multiple of 16; the tiny golden models' 8,
/// 12 and 24 are not, so they keep the forms that do not depend on it.
pub fn matmuls_are_exact(contractions: &[usize]) -> bool {
    contractions.iter().all(|k| k % 16 == 0)
}
