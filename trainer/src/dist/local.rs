//! In-process collective over threads, for unit tests of code that uses [`Collective`].

use std::sync::{Arc, Barrier, Mutex};

use anyhow::Result;

use super::Collective;

struct Shared {
    barrier: Barrier,
    f32s: Mutex<Vec<Vec<f32>>>,
    f64s: Mutex<Vec<Vec<f64>>>,
}

pub struct InProcess {
    rank: usize,
    world: usize,
    shared: Arc<Shared>,
}

impl InProcess {
    /// One handle per rank; give each to its own thread.
    pub fn group(world: usize) -> Vec<Self> {
        let shared = Arc::new(Shared {
            barrier: Barrier::new(world),
            f32s: Mutex::new(vec![vec![]; world]),
            f64s: Mutex::new(vec![vec![]; world]),
        });
        (0..world).map(|rank| Self { rank, world, shared: shared.clone() }).collect()
    }

    fn exchange<T: Copy + Default + std::ops::AddAssign>(&self, slots: &Mutex<Vec<Vec<T>>>, buf: &mut [T], sum: bool) {
        slots.lock().unwrap()[self.rank] = buf.to_vec();
        self.shared.barrier.wait();
        {
            let all = slots.lock().unwrap();
            if sum {
                // In rank order, as the other implementations sum.
                let mut acc = all[0].clone();
                for other in &all[1..] {
                    for (a, b) in acc.iter_mut().zip(other) {
                        *a += *b;
                    }
                }
                buf.copy_from_slice(&acc);
            } else {
                buf.copy_from_slice(&all[0]);
            }
        }
        self.shared.barrier.wait();
    }
}

impl Collective for InProcess {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world(&self) -> usize {
        self.world
    }
    fn all_reduce_sum(&mut self, buf: &mut [f32], _: &str) -> Result<()> {
        self.exchange(&self.shared.f32s, buf, true);
        Ok(())
    }
    fn all_reduce_sum_f64(&mut self, buf: &mut [f64], _: &str) -> Result<()> {
        self.exchange(&self.shared.f64s, buf, true);
        Ok(())
    }
    fn broadcast(&mut self, buf: &mut [f32], _: &str) -> Result<()> {
        self.exchange(&self.shared.f32s, buf, false);
        Ok(())
    }
}
