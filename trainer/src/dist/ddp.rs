//! Gradients and model state across ranks, moved as PyTorch DDP moves them.

use std::collections::HashMap;

use anyhow::Result;
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Tensor, TensorData};
use model::MaxxVit;

use super::{Collective, Flat};
use crate::optim::KeyedGrads;

/// ~25 MB of f32 per all-reduce, PyTorch DDP's default bucket size.
pub const BUCKET_ELEMS: usize = 25 * 1024 * 1024 / 4;

/// Average the gradients over the ranks that computed any, in buckets filled in reverse
/// parameter order (`params`: key and element count, in model order). A rank whose micro-batches
/// were all unreadable passes `contributed = false` and still joins with zeros, so no rank waits
/// on it; the divisor counts only contributing ranks. Returns that count (0: skip the update).
///
/// Each bucket is one flat tensor concatenated on the device, reduced in place by the
/// collective ([`Collective::all_reduce_sum_device`]: NCCL on device memory, TCP through the
/// host), then scaled and split on the device. The one host read is the contributor count
/// (4 bytes, first slot of the first bucket): it picks the divisor and whether to step at all.
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
        let mut parts = Vec::with_capacity(end - start + 1);
        if flag_slot == 1 {
            parts.push(Tensor::<B, 1>::from_data(TensorData::new(vec![f32::from(u8::from(contributed))], [1]), device));
        }
        for (k, n) in &keys[start..end] {
            parts.push(match grads.grads.get(k) {
                Some(g) if contributed => g.clone(),
                _ => Tensor::zeros([*n], device),
            });
        }
        let mut bucket = Flat(Tensor::cat(parts, 0));
        c.all_reduce_sum_device(&mut bucket, "gradients")?;
        let mut offset = 0;
        if flag_slot == 1 {
            let count: f32 = bucket.0.clone().slice(0..1).into_scalar().elem();
            contributors = count.round() as usize;
            offset = 1;
            flag_slot = 0;
        }
        let mean = bucket.0.mul_scalar(1.0 / contributors.max(1) as f32);
        for (k, n) in &keys[start..end] {
            grads.grads.insert(k.clone(), mean.clone().slice(offset..offset + n));
            offset += n;
        }
        start = end;
    }
    Ok(contributors)
}

/// Rank 0's values on every rank: everything at the start (`buffers_only = false`), or the
/// BatchNorm buffers after each forward (DDP's `broadcast_buffers`, which keeps ranks identical).
/// One flat device tensor of every entry, broadcast in place by the collective, split back on
/// the device.
pub fn broadcast_state<B: Backend>(
    model: MaxxVit<B>,
    c: &mut dyn Collective,
    buffers_only: bool,
) -> Result<MaxxVit<B>> {
    if c.world() == 1 {
        return Ok(model);
    }
    let entries = model.flat_tensors(buffers_only);
    if entries.is_empty() {
        return Ok(model);
    }
    let sizes: Vec<(String, usize)> = entries.iter().map(|(k, t)| (k.clone(), t.dims()[0])).collect();
    let mut flat = Flat(Tensor::cat(entries.into_iter().map(|(_, t)| t).collect(), 0));
    c.broadcast_device(&mut flat, if buffers_only { "buffers" } else { "initial weights" })?;
    let mut offset = 0;
    let mut values = HashMap::with_capacity(sizes.len());
    for (key, n) in sizes {
        values.insert(key, flat.0.clone().slice(offset..offset + n));
        offset += n;
    }
    Ok(model.set_flat_tensors(values))
}
