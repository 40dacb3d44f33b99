//! NCCL through cudarc (`--features cuda`), one GPU per process.
//!
//! The TCP rendezvous ([`Tcp`]) ships rank 0's `ncclUniqueId` and stays open as the control plane
//! (barriers, config check, dead-peer detection before NCCL starts). Reductions are staged
//! through host memory: the gradient buckets arrive on the host anyway (see `ddp`), and CubeCL's
//! streams are private, so a host copy is also the synchronisation point. Device-resident
//! buckets would save two PCIe copies per bucket; measure before adding them (BENCH.md).

use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use cudarc::driver::{CudaContext, CudaStream};
use cudarc::nccl::{Comm, Id, ReduceOp};

use super::tcp::Tcp;
use super::{Collective, Rendezvous};

pub struct Nccl {
    comm: Comm,
    stream: Arc<CudaStream>,
    control: Tcp,
}

/// `cudarc` looks for `libnccl.so`, which NCCL's runtime packages do not ship (they ship
/// `libnccl.so.2`); `launch/train.sh` puts a symlink on `LD_LIBRARY_PATH`.
fn check_library() -> Result<()> {
    if unsafe { cudarc::nccl::sys::is_culib_present() } {
        Ok(())
    } else {
        bail!(
            "libnccl.so not found: put a libnccl.so -> libnccl.so.2 symlink on LD_LIBRARY_PATH (launch/train.sh does)"
        )
    }
}

impl Nccl {
    /// Join the NCCL communicator of the job; `control` is the already-connected rendezvous.
    pub fn connect(rv: &Rendezvous, ordinal: usize, mut control: Tcp) -> Result<Self> {
        check_library()?;
        let ctx = CudaContext::new(ordinal).map_err(|e| anyhow!("rank {}: CUDA device {ordinal}: {e:?}", rv.rank))?;
        let stream = ctx.new_stream().map_err(|e| anyhow!("rank {}: CUDA stream: {e:?}", rv.rank))?;
        // The 128-byte id travels as f32 values, each one byte: exact.
        let mut id_bytes = [0f32; 128];
        if rv.rank == 0 {
            let id = Id::new().map_err(|e| anyhow!("ncclGetUniqueId: {e:?}"))?;
            for (d, s) in id_bytes.iter_mut().zip(id.internal()) {
                *d = *s as u8 as f32;
            }
        }
        control.broadcast(&mut id_bytes, "nccl unique id")?;
        let mut internal = [0 as std::ffi::c_char; 128];
        for (d, s) in internal.iter_mut().zip(id_bytes) {
            *d = s as u8 as std::ffi::c_char;
        }
        let comm = Comm::from_rank(stream.clone(), rv.rank, rv.world, Id::uninit(internal))
            .map_err(|e| anyhow!("rank {}: ncclCommInitRank: {e:?}", rv.rank))?;
        Ok(Self { comm, stream, control })
    }

    fn reduce<T: cudarc::nccl::NcclType + cudarc::driver::DeviceRepr>(
        &mut self,
        buf: &mut [T],
        op: Option<ReduceOp>,
        what: &str,
    ) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let rank = self.comm.rank();
        let err = |stage: &str, e: String| anyhow!("rank {rank}: {what}: {stage}: {e}");
        let mut dev = self.stream.clone_htod(buf).map_err(|e| err("copy to GPU", format!("{e:?}")))?;
        match op {
            Some(op) => self.comm.all_reduce_in_place(&mut dev, &op).map(|_| ()),
            None => self.comm.broadcast_in_place(&mut dev, 0).map(|_| ()),
        }
        .map_err(|e| err("NCCL", format!("{e:?}")))?;
        self.stream.memcpy_dtoh(&dev, buf).map_err(|e| err("copy to host", format!("{e:?}")))?;
        self.stream.synchronize().map_err(|e| err("synchronize", format!("{e:?}")))?;
        Ok(())
    }
}

impl Collective for Nccl {
    fn rank(&self) -> usize {
        self.comm.rank()
    }
    fn world(&self) -> usize {
        self.comm.world_size()
    }
    fn all_reduce_sum(&mut self, buf: &mut [f32], what: &str) -> Result<()> {
        self.reduce(buf, Some(ReduceOp::Sum), what)
    }
    fn all_reduce_sum_f64(&mut self, buf: &mut [f64], what: &str) -> Result<()> {
        self.reduce(buf, Some(ReduceOp::Sum), what)
    }
    fn broadcast(&mut self, buf: &mut [f32], what: &str) -> Result<()> {
        self.reduce(buf, None, what)
    }
    fn barrier(&mut self, what: &str) -> Result<()> {
        self.control.barrier(what)
    }
}
