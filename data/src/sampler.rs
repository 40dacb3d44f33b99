//! Which samples each rank sees, deterministically from `(seed, epoch)`.
//!
//! Indexable sources (ImageFolder): one global order per epoch; global step `s` covers
//! `order[s·G .. (s+1)·G]` for global batch `G`, and rank `r` of `N` takes the `r`-th slice of
//! `G/N`. So the samples of a global step do not depend on `N`, and a run resumed on another
//! number of ranks with the same global batch continues with exactly the same samples.
//!
//! Shards (WebDataset): a Fisher–Yates permutation of the shard list, the same on every rank,
//! dealt out with stride `N·W` to rank `r`, worker `w` (position `r·W + w`), as timm's
//! `_split_by_node_and_worker` does; each worker streams its shards through a bounded shuffle
//! buffer and yields exactly `n = ceil(ceil(S / (N·W)) / B) · B` samples per epoch, wrapping
//! around its own shard list when it runs short (timm's `with_epoch`). As in timm, the epoch
//! boundary is a sample count, so what is still in the shuffle buffer when it is reached (at
//! most its size per worker) waits for the next epoch. Resume is exact on the
//! same `N` and `W`: each worker skips the samples it already yielded this epoch. On another `N`
//! or `W` the shard split changes, so the interrupted epoch restarts from its beginning with the
//! new split (samples already seen in that epoch may repeat; nothing is skipped).

use crate::rng::{splitmix64, Rng};

/// Global, epoch-seeded order of an indexable data set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSampler {
    pub len: usize,
    pub seed: u64,
    pub shuffle: bool,
    pub global_batch: usize,
    pub rank: usize,
    pub world: usize,
}

impl IndexSampler {
    pub fn new(
        len: usize,
        seed: u64,
        shuffle: bool,
        global_batch: usize,
        rank: usize,
        world: usize,
    ) -> Result<Self, String> {
        if world == 0 || rank >= world {
            return Err(format!("rank {rank} is not in a world of {world}"));
        }
        if global_batch == 0 || global_batch % world != 0 {
            return Err(format!("global batch {global_batch} must be a positive multiple of the world size {world}"));
        }
        Ok(Self { len, seed, shuffle, global_batch, rank, world })
    }

    pub fn local_batch(&self) -> usize {
        self.global_batch / self.world
    }

    /// Global batches per epoch: training drops the incomplete tail (as timm's train loader
    /// does), evaluation keeps it.
    pub fn steps_per_epoch(&self) -> usize {
        if self.shuffle {
            self.len / self.global_batch
        } else {
            self.len.div_ceil(self.global_batch)
        }
    }

    /// Positions in the epoch order that this rank takes at `step` (clipped at the end).
    pub fn rank_range(&self, step: usize) -> std::ops::Range<usize> {
        let b = self.local_batch();
        let start = (step * self.global_batch + self.rank * b).min(self.len);
        start..(start + b).min(self.len)
    }

    pub fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.len).collect();
        if self.shuffle {
            Rng::new(splitmix64(self.seed ^ splitmix64(epoch ^ 0x0ADE))).shuffle(&mut order);
        }
        order
    }

    /// This rank's sample indices for `step`, from a precomputed `epoch_order`.
    pub fn rank_batch(&self, order: &[usize], step: usize) -> Vec<usize> {
        order[self.rank_range(step)].to_vec()
    }
}

/// Deals shards to (rank, worker) positions for one epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardPlan {
    pub num_shards: usize,
    pub seed: u64,
    pub shuffle: bool,
    pub rank: usize,
    pub world: usize,
    pub workers: usize,
}

impl ShardPlan {
    /// Shard indices for `worker` of this rank in `epoch`.
    pub fn worker_shards(&self, epoch: u64, worker: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.num_shards).collect();
        if self.shuffle {
            Rng::new(splitmix64(self.seed ^ splitmix64(epoch ^ 0x5A4D))).shuffle(&mut order);
        }
        let stride = self.world * self.workers;
        order.into_iter().skip(self.rank * self.workers + worker).step_by(stride).collect()
    }

    /// Samples every worker yields per epoch, a multiple of `batch` (timm's `with_epoch`).
    pub fn samples_per_worker(&self, num_samples: usize, batch: usize) -> usize {
        let per_worker = num_samples.div_ceil(self.world * self.workers);
        per_worker.div_ceil(batch) * batch
    }
}

/// webdataset's `shuffle(bufsize, initial)`: each incoming sample is appended (plus one more
/// while the buffer is below `bufsize`), and once `initial` are held a uniformly chosen one is
/// emitted; the rest drains at the end.
#[derive(Debug)]
pub struct ShuffleBuffer<T> {
    buf: Vec<T>,
    size: usize,
    initial: usize,
    exhausted: bool,
    rng: Rng,
}

impl<T> ShuffleBuffer<T> {
    pub fn new(size: usize, initial: usize, rng: Rng) -> Self {
        let size = size.max(1);
        Self { buf: Vec::with_capacity(size), size, initial: initial.clamp(1, size), exhausted: false, rng }
    }

    /// The next shuffled item, pulling from `source` as needed; `None` when both are empty.
    pub fn next(&mut self, source: &mut impl Iterator<Item = T>) -> Option<T> {
        while !self.exhausted {
            match source.next() {
                Some(item) => {
                    self.buf.push(item);
                    if self.buf.len() < self.size {
                        match source.next() {
                            Some(more) => self.buf.push(more),
                            None => self.exhausted = true,
                        }
                    }
                    if self.buf.len() >= self.initial {
                        break;
                    }
                }
                None => self.exhausted = true,
            }
        }
        if self.buf.is_empty() {
            return None;
        }
        let k = self.rng.below(self.buf.len());
        Some(self.buf.swap_remove(k))
    }
}
