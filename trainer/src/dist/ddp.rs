//! Gradients and model state across ranks, moved as PyTorch DDP moves them.

use anyhow::Result;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use model::state_dict::Values;
use model::MaxxVit;

use super::Collective;
use crate::optim::KeyedGrads;

/// ~25 MB of f32 per all-reduce, PyTorch DDP's default bucket size.
pub const BUCKET_ELEMS: usize = 25 * 1024 * 1024 / 4;

/// Average the gradients over the ranks that computed any, in buckets filled in reverse
/// parameter order (`params`: key and element count, in model order). A rank whose micro-batches
/// were all unreadable passes `contributed = false` and still joins with zeros, so no rank waits
/// on it; the divisor counts only contributing ranks. Returns that count (0: skip the update).
pub fn all_reduce_grads<B: Backend>(
    grads: &mut KeyedGrads<B>,
    params: &[(String, usize)],
    contributed: bool,
    device: &B::Device,
    c: &mut dyn Collective,
) -> Result<usize> {
    if c.world() == 1 {
        return Ok(usize::from(contributed));
    }
    let keys: Vec<&(String, usize)> =
        params.iter().rev().filter(|(k, _)| !contributed || grads.grads.contains_key(k)).collect();
    let mut contributors = 0usize;
    let mut start = 0;
    // The first bucket starts with this rank's contribution flag, so the count costs no extra round.
    let mut flag_slot = 1usize;
    while start < keys.len() || flag_slot == 1 {
        let (mut end, mut elems) = (start, flag_slot);
        while end < keys.len() && (elems == flag_slot || elems + keys[end].1 <= BUCKET_ELEMS) {
            elems += keys[end].1;
            end += 1;
        }
        let mut bucket = Vec::with_capacity(elems);
        if flag_slot == 1 {
            bucket.push(if contributed { 1.0 } else { 0.0 });
        }
        for (k, n) in &keys[start..end] {
            match grads.grads.get(k) {
                Some(g) if contributed => {
                    bucket.extend(g.clone().into_data().convert::<f32>().to_vec::<f32>().expect("grad data"))
                }
                _ => bucket.resize(bucket.len() + n, 0.0),
            }
        }
        c.all_reduce_sum(&mut bucket, "gradients")?;
        let mut offset = 0;
        if flag_slot == 1 {
            contributors = bucket[0].round() as usize;
            offset = 1;
            flag_slot = 0;
        }
        let scale = 1.0 / contributors.max(1) as f32;
        for (k, n) in &keys[start..end] {
            let mean: Vec<f32> = bucket[offset..offset + n].iter().map(|v| v * scale).collect();
            grads.grads.insert(k.clone(), Tensor::from_data(TensorData::new(mean, [*n]), device));
            offset += n;
        }
        start = end;
    }
    Ok(contributors)
}

/// Rank 0's values on every rank: everything at the start (`buffers_only = false`), or the
/// BatchNorm buffers after each forward (DDP's `broadcast_buffers`, which keeps ranks identical).
pub fn broadcast_state<B: Backend>(
    model: MaxxVit<B>,
    c: &mut dyn Collective,
    buffers_only: bool,
) -> Result<MaxxVit<B>> {
    if c.world() == 1 {
        return Ok(model);
    }
    let mut entries = if buffers_only { model.buffer_state() } else { model.state_dict() };
    if entries.is_empty() {
        return Ok(model);
    }
    let mut flat: Vec<f32> = Vec::new();
    for (_, v) in &entries {
        match v {
            Values::F32(f) => flat.extend_from_slice(f),
            // Counters stay far below 2^24, so they travel exactly as f32.
            Values::I64(i) => flat.extend(i.iter().map(|x| *x as f32)),
        }
    }
    c.broadcast(&mut flat, if buffers_only { "buffers" } else { "initial weights" })?;
    let mut offset = 0;
    for (_, v) in &mut entries {
        match v {
            Values::F32(f) => {
                let n = f.len();
                f.copy_from_slice(&flat[offset..offset + n]);
                offset += n;
            }
            Values::I64(i) => {
                for x in i.iter_mut() {
                    *x = flat[offset] as i64;
                    offset += 1;
                }
            }
        }
    }
    Ok(model.set_state(entries))
}
