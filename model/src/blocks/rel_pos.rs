//! The three relative-position schemes of timm's `pos_embed_rel.py` (spec §2.10).
//!
//! Each produces an additive attention bias `[heads, N, N]` for a window of `N = h·w` tokens
//! (token `t = y·w + x`). The index tables are rebuilt at construction, never saved, exactly
//! like timm's non-persistent buffers.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use crate::config::{ActLayer, RelPosType};
use crate::layers::init::{param, Init};
use crate::layers::{InitRole, Mlp};

/// Swin's `gen_relative_position_index`: QUERY minus KEY, flattened `[N·N]`.
pub fn relative_position_index(window: [usize; 2]) -> Vec<i64> {
    offset_index(window, false)
}

/// Index into a flattened `[2h-1, 2w-1]` table; `key_minus_query` gives the TF orientation.
fn offset_index([wh, ww]: [usize; 2], key_minus_query: bool) -> Vec<i64> {
    let n = wh * ww;
    let mut index = Vec::with_capacity(n * n);
    for q in 0..n {
        for k in 0..n {
            let (qy, qx, ky, kx) = ((q / ww) as i64, (q % ww) as i64, (k / ww) as i64, (k % ww) as i64);
            let (dy, dx) = if key_minus_query { (ky - qy, kx - qx) } else { (qy - ky, qx - kx) };
            index.push((dy + wh as i64 - 1) * (2 * ww as i64 - 1) + (dx + ww as i64 - 1));
        }
    }
    index
}

/// RelPosMlp mode 'cr' coordinates `sign(d)·ln(1+|d|)` over `[2h-1, 2w-1, (dy, dx)]`.
pub fn rel_coords_log_cr([wh, ww]: [usize; 2]) -> Vec<f32> {
    let g = |d: i64| (d.signum() as f64 * (1.0 + d.abs() as f64).ln()) as f32;
    let mut coords = Vec::with_capacity((2 * wh - 1) * (2 * ww - 1) * 2);
    for a in 0..(2 * wh - 1) as i64 {
        for b in 0..(2 * ww - 1) as i64 {
            coords.push(g(a - (wh as i64 - 1)));
            coords.push(g(b - (ww as i64 - 1)));
        }
    }
    coords
}

fn int_tensor<B: Backend>(values: Vec<i64>, device: &B::Device) -> Tensor<B, 1, Int> {
    let n = values.len();
    Tensor::from_data(TensorData::new(values, [n]), device)
}

fn table_rows([wh, ww]: [usize; 2]) -> usize {
    (2 * wh - 1) * (2 * ww - 1)
}

/// Gather `[rows, heads]` table entries by a flat `[N·N]` index into `[heads, N, N]`.
fn gather_bias<B: Backend>(table: Tensor<B, 2>, index: &Tensor<B, 1, Int>, n: usize) -> Tensor<B, 3> {
    let heads = table.dims()[1];
    table.select(0, index.clone()).reshape([n, n, heads]).permute([2, 0, 1])
}

/// 'bias': Swin table `[(2h-1)(2w-1), heads]`, indexed query − key.
#[derive(Module, Debug)]
pub struct RelPosBias<B: Backend> {
    pub relative_position_bias_table: Param<Tensor<B, 2>>,
    pub index: Tensor<B, 1, Int>,
    pub window: [usize; 2],
}

/// 'mlp' (the "rmlp" models): a 2 → hidden → heads ReLU MLP over log coordinates, mode 'cr'.
#[derive(Module, Debug)]
pub struct RelPosMlp<B: Backend> {
    pub mlp: Mlp<B>,
    pub coords: Tensor<B, 3>,
    pub index: Tensor<B, 1, Int>,
    pub window: [usize; 2],
}

/// 'bias_tf': table `[heads, 2h-1, 2w-1]`, indexed key − query (the transpose of Swin's).
#[derive(Module, Debug)]
pub struct RelPosBiasTf<B: Backend> {
    pub relative_position_bias_table: Param<Tensor<B, 3>>,
    pub index: Tensor<B, 1, Int>,
    pub window: [usize; 2],
}

#[derive(Module, Debug)]
pub enum RelPos<B: Backend> {
    Bias(RelPosBias<B>),
    Mlp(RelPosMlp<B>),
    BiasTf(RelPosBiasTf<B>),
}

impl<B: Backend> RelPos<B> {
    /// `None` for rel-pos types timm treats as "no relative position".
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kind: RelPosType,
        window: [usize; 2],
        heads: usize,
        mlp_hidden: usize,
        mlp_drop: f64,
        role: InitRole,
        device: &B::Device,
    ) -> Option<Self> {
        let rows = table_rows(window);
        match kind {
            RelPosType::Bias => Some(Self::Bias(RelPosBias {
                // trunc_normal_(std=.02) with absolute bounds ±2: a plain normal in practice.
                relative_position_bias_table: param([rows, heads], Init::Normal(0.02), device),
                index: int_tensor(relative_position_index(window), device),
                window,
            })),
            RelPosType::Mlp => {
                let coords = TensorData::new(rel_coords_log_cr(window), [2 * window[0] - 1, 2 * window[1] - 1, 2]);
                Some(Self::Mlp(RelPosMlp {
                    mlp: Mlp::new(2, mlp_hidden, heads, ActLayer::Relu, (mlp_drop, 0.0), role, device),
                    coords: Tensor::from_data(coords, device),
                    index: int_tensor(relative_position_index(window), device),
                    window,
                }))
            }
            RelPosType::BiasTf => Some(Self::BiasTf(RelPosBiasTf {
                relative_position_bias_table: param(
                    [heads, 2 * window[0] - 1, 2 * window[1] - 1],
                    Init::Normal(0.02),
                    device,
                ),
                index: int_tensor(offset_index(window, true), device),
                window,
            })),
            RelPosType::None => None,
        }
    }

    /// The additive bias `[heads, N, N]`.
    pub fn bias(&self) -> Tensor<B, 3> {
        match self {
            Self::Bias(r) => gather_bias(r.relative_position_bias_table.val(), &r.index, r.window[0] * r.window[1]),
            Self::Mlp(r) => {
                let table = r.mlp.forward(r.coords.clone());
                let [a, b, heads] = table.dims();
                gather_bias(table.reshape([a * b, heads]), &r.index, r.window[0] * r.window[1])
            }
            Self::BiasTf(r) => {
                let [heads, a, b] = r.relative_position_bias_table.lazy_shape().dims::<3>();
                let n = r.window[0] * r.window[1];
                r.relative_position_bias_table
                    .val()
                    .reshape([heads, a * b])
                    .select(1, r.index.clone())
                    .reshape([heads, n, n])
            }
        }
    }
}
