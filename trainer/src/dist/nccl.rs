//! NCCL through cudarc (`--features cuda`), one GPU per process.
//!
//! The TCP rendezvous ([`Tcp`]) ships rank 0's `ncclUniqueId` and stays open as the control plane
//! (barriers, config check, dead-peer detection before NCCL starts).
//!
//! Gradient buckets and broadcast state ([`DeviceBuffer`]s of `Cuda` or `Autodiff<Cuda>`
//! tensors) are reduced in place in GPU memory: the fusion stream is drained and the CubeCL
//! tensor resolved, its buffer's `CUdeviceptr` read from CubeCL's storage, CubeCL's stream
//! synchronised (CubeCL's streams are private, so the host orders the two), NCCL runs on our
//! stream, and that stream is synchronised before CubeCL can read the buffer again. Only the
//! small host-side sums (loss, validation counts: `all_reduce_sum`/`_f64`) and buffers of other
//! backends still go through host memory.

use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use burn::backend::{Autodiff, Cuda};
use burn::tensor::Tensor;
use burn_cubecl::cubecl::cuda::CudaRuntime;
use burn_cubecl::CubeBackend;
use cudarc::driver::{CudaContext, CudaStream, DevicePtr, DevicePtrMut, DeviceSlice, SyncOnDrop};
use cudarc::nccl::{Comm, Id, ReduceOp};

use super::tcp::Tcp;
use super::{via_host, Collective, DeviceBuffer, Flat, Rendezvous};

/// The un-fused backend under `Cuda`'s fusion: its tensors own the CubeCL buffers.
type CudaInner = CubeBackend<CudaRuntime, f32, i32, u8>;

/// A CubeCL buffer's device memory as cudarc's NCCL calls take it. Ordering is done by the
/// caller (host synchronisation on both sides), so the guards are no-ops.
struct CubeMemory {
    ptr: u64,
    len: usize,
    stream: Arc<CudaStream>,
}

impl DeviceSlice<f32> for CubeMemory {
    fn len(&self) -> usize {
        self.len
    }
    fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }
}

impl DevicePtr<f32> for CubeMemory {
    fn device_ptr<'a>(&'a self, _stream: &'a CudaStream) -> (cudarc::driver::sys::CUdeviceptr, SyncOnDrop<'a>) {
        (self.ptr, SyncOnDrop::Sync(None))
    }
}

impl DevicePtrMut<f32> for CubeMemory {
    fn device_ptr_mut<'a>(&'a mut self, _stream: &'a CudaStream) -> (cudarc::driver::sys::CUdeviceptr, SyncOnDrop<'a>) {
        (self.ptr, SyncOnDrop::Sync(None))
    }
}

/// The `Cuda` tensor of a buffer, if it is one (directly or under autodiff).
fn cuda_tensor(buf: &mut dyn DeviceBuffer) -> Option<Tensor<Cuda, 1>> {
    let any = buf.as_any();
    if let Some(Flat(t)) = any.downcast_ref::<Flat<Cuda>>() {
        return Some(t.clone());
    }
    any.downcast_ref::<Flat<Autodiff<Cuda>>>().map(|Flat(t)| t.clone().inner())
}

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

impl Nccl {
    /// Run `op` on the device memory of `t` (a contiguous f32 CUDA tensor), in place.
    fn on_device(
        &mut self,
        t: Tensor<Cuda, 1>,
        what: &str,
        op: impl FnOnce(&Comm, &mut CubeMemory) -> Result<()>,
    ) -> Result<()> {
        let rank = self.comm.rank();
        let err = |stage: &str, e: String| anyhow!("rank {rank}: {what}: {stage}: {e}");
        let len = t.dims()[0];
        if len == 0 {
            return Ok(());
        }
        // Drains the fusion stream that produces `t`; `t` itself stays registered (we hold a
        // clone), so the result is read through it afterwards.
        let fused = t.into_primitive().tensor();
        let cube = fused.client.clone().resolve_tensor_float::<CudaInner>(fused);
        if !cube.is_contiguous() {
            bail!("rank {rank}: {what}: bucket is not contiguous");
        }
        // Pins the allocation while held; the pointer includes the handle's offset.
        let resource =
            cube.client.get_resource(cube.handle.clone()).map_err(|e| err("device pointer", format!("{e:?}")))?;
        let mut memory = CubeMemory { ptr: resource.resource().ptr, len, stream: self.stream.clone() };
        // CubeCL's kernels that wrote the bucket are done before NCCL reads it.
        burn_cubecl::cubecl::future::block_on(cube.client.sync()).map_err(|e| err("CubeCL sync", format!("{e:?}")))?;
        op(&self.comm, &mut memory)?;
        // NCCL is done before any CubeCL kernel reads the bucket again.
        self.stream.synchronize().map_err(|e| err("synchronize", format!("{e:?}")))?;
        drop(resource);
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
    fn all_reduce_sum_device(&mut self, buf: &mut dyn DeviceBuffer, what: &str) -> Result<()> {
        // A buffer of another backend (bf16-pure training, say): through host memory.
        let Some(t) = cuda_tensor(buf) else { return via_host(buf, |host| self.all_reduce_sum(host, what)) };
        let rank = self.comm.rank();
        self.on_device(t, what, |comm, memory| {
            comm.all_reduce_in_place(memory, &ReduceOp::Sum)
                .map(|_| ())
                .map_err(|e| anyhow!("rank {rank}: {what}: NCCL all-reduce: {e:?}"))
        })
    }
    fn broadcast_device(&mut self, buf: &mut dyn DeviceBuffer, what: &str) -> Result<()> {
        let Some(t) = cuda_tensor(buf) else { return via_host(buf, |host| self.broadcast(host, what)) };
        let rank = self.comm.rank();
        self.on_device(t, what, |comm, memory| {
            comm.broadcast_in_place(memory, 0)
                .map(|_| ())
                .map_err(|e| anyhow!("rank {rank}: {what}: NCCL broadcast: {e:?}"))
        })
    }
}
