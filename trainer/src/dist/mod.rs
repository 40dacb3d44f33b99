//! Data-parallel collectives, the only thing the training step knows about other ranks.
//!
//! Implementations: [`Single`] (one process), [`local::InProcess`] (threads; unit tests),
//! [`tcp::Tcp`] (one process per rank over TCP, rank 0 the hub: CPU runs and the launcher's
//! tests) and, with `--features cuda`, NCCL through cudarc (`nccl.rs`); every multi-rank one runs
//! under a [`watchdog::Watchdog`]. Sums are taken in rank order, so a reduction is deterministic.

pub mod ddp;
pub mod local;
#[cfg(feature = "cuda")]
pub mod nccl;
pub mod tcp;
pub mod watchdog;

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

/// A flat f32 tensor on the training device: a gradient bucket, or the state being broadcast.
/// Collectives that reach device memory (NCCL) work on it in place; the others read it to the
/// host and write the result back ([`Collective::all_reduce_sum_device`]'s default).
pub trait DeviceBuffer {
    /// Its values in host memory (a device-to-host copy).
    fn read(&self) -> Result<Vec<f32>>;
    /// Replace its values with `values` (a host-to-device copy).
    fn write(&mut self, values: Vec<f32>);
    /// The tensor itself, for collectives that know its backend (NCCL downcasts to `Flat<Cuda>`).
    fn as_any(&mut self) -> &mut dyn std::any::Any;
}

/// A 1-D tensor of any backend as a [`DeviceBuffer`].
pub struct Flat<B: Backend>(pub Tensor<B, 1>);

impl<B: Backend> DeviceBuffer for Flat<B> {
    fn read(&self) -> Result<Vec<f32>> {
        self.0.clone().into_data().convert::<f32>().to_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))
    }
    fn write(&mut self, values: Vec<f32>) {
        let n = values.len();
        self.0 = Tensor::from_data(TensorData::new(values, [n]), &self.0.device());
    }
    fn as_any(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

/// Run a host collective `op` on `buf`'s values: read to the host, `op`, written back.
pub fn via_host(buf: &mut dyn DeviceBuffer, op: impl FnOnce(&mut [f32]) -> Result<()>) -> Result<()> {
    let mut host = buf.read()?;
    op(&mut host)?;
    buf.write(host);
    Ok(())
}

/// What every rank of a job can do together.
pub trait Collective {
    fn rank(&self) -> usize;
    fn world(&self) -> usize;
    /// Element-wise sum over ranks, result on every rank. `what` names the operation in errors.
    fn all_reduce_sum(&mut self, buf: &mut [f32], what: &str) -> Result<()>;
    fn all_reduce_sum_f64(&mut self, buf: &mut [f64], what: &str) -> Result<()>;
    /// Rank 0's `buf` on every rank.
    fn broadcast(&mut self, buf: &mut [f32], what: &str) -> Result<()>;
    fn barrier(&mut self, what: &str) -> Result<()> {
        self.all_reduce_sum(&mut [], what)
    }
    /// Element-wise sum over ranks of a device buffer, in place. This default goes through host
    /// memory (TCP, in-process: the CPU path, deterministic); NCCL works on device memory.
    fn all_reduce_sum_device(&mut self, buf: &mut dyn DeviceBuffer, what: &str) -> Result<()> {
        via_host(buf, |host| self.all_reduce_sum(host, what))
    }
    /// Rank 0's device buffer on every rank (default through host memory, as above).
    fn broadcast_device(&mut self, buf: &mut dyn DeviceBuffer, what: &str) -> Result<()> {
        via_host(buf, |host| self.broadcast(host, what))
    }
    fn is_main(&self) -> bool {
        self.rank() == 0
    }
}

/// World size 1: every collective is the identity.
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn world(&self) -> usize {
        1
    }
    fn all_reduce_sum(&mut self, _: &mut [f32], _: &str) -> Result<()> {
        Ok(())
    }
    fn all_reduce_sum_f64(&mut self, _: &mut [f64], _: &str) -> Result<()> {
        Ok(())
    }
    fn broadcast(&mut self, _: &mut [f32], _: &str) -> Result<()> {
        Ok(())
    }
}

/// This process's place in the job, from torchrun, SLURM or Open MPI variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendezvous {
    pub rank: usize,
    pub world: usize,
    pub local_rank: usize,
    pub local_world: usize,
    pub master_addr: String,
    pub master_port: u16,
}

impl Rendezvous {
    /// `RANK`/`WORLD_SIZE`/`LOCAL_RANK`/`LOCAL_WORLD_SIZE`/`MASTER_ADDR`/`MASTER_PORT`
    /// (torchrun), else `SLURM_PROCID`/`SLURM_NTASKS`/`SLURM_LOCALID`, else
    /// `OMPI_COMM_WORLD_*`, else a single process.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let num = |k: &str| -> Result<Option<usize>> {
            get(k).map(|v| v.trim().parse::<usize>().with_context(|| format!("{k}={v} is not a number"))).transpose()
        };
        let (rank, world, local_rank, local_world) = if let (Some(r), Some(w)) = (num("RANK")?, num("WORLD_SIZE")?) {
            (r, w, num("LOCAL_RANK")?.unwrap_or(r), num("LOCAL_WORLD_SIZE")?.unwrap_or(w))
        } else if let (Some(r), Some(w)) = (num("SLURM_PROCID")?, num("SLURM_NTASKS")?) {
            (r, w, num("SLURM_LOCALID")?.unwrap_or(0), num("SLURM_NTASKS_PER_NODE")?.unwrap_or(w))
        } else if let (Some(r), Some(w)) = (num("OMPI_COMM_WORLD_RANK")?, num("OMPI_COMM_WORLD_SIZE")?) {
            (r, w, num("OMPI_COMM_WORLD_LOCAL_RANK")?.unwrap_or(0), num("OMPI_COMM_WORLD_LOCAL_SIZE")?.unwrap_or(w))
        } else {
            (0, 1, 0, 1)
        };
        if world == 0 || rank >= world {
            bail!("rank {rank} is not in a world of {world}");
        }
        let master_addr = get("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".into());
        let master_port = match get("MASTER_PORT") {
            Some(p) => p.trim().parse().with_context(|| format!("MASTER_PORT={p} is not a port"))?,
            None => 29500,
        };
        if world > 1 && get("MASTER_ADDR").is_none() && local_world != world {
            bail!("a multi-node job needs MASTER_ADDR (rank 0's host)");
        }
        Ok(Self { rank, world, local_rank, local_world, master_addr, master_port })
    }
}

/// Mean-reduce `buf` over ranks.
pub fn all_reduce_mean(c: &mut dyn Collective, buf: &mut [f32], what: &str) -> Result<()> {
    c.all_reduce_sum(buf, what)?;
    let w = c.world() as f32;
    if w > 1.0 {
        for v in buf.iter_mut() {
            *v /= w;
        }
    }
    Ok(())
}

/// This process's collective: [`Single`] alone, else TCP on CPU and NCCL on CUDA (or as
/// `distributed.backend` says). Fails with the rank and cause if a peer never shows up.
pub fn connect(
    rv: &Rendezvous,
    cfg: &crate::config::RunConfig,
    cuda_ordinal: Option<usize>,
) -> Result<Box<dyn Collective>> {
    if rv.world == 1 {
        return Ok(Box::new(Single));
    }
    let timeout = std::time::Duration::from_secs(cfg.distributed.timeout_s);
    let tcp = tcp::Tcp::connect(rv, &cfg.hash(), timeout)?;
    let backend = cfg.distributed.backend.as_str();
    // TCP has its own deadlines (with better messages), so its watchdog is only a backstop.
    let (inner, watchdog_after): (Box<dyn Collective>, _) = match (backend, cuda_ordinal) {
        ("tcp", _) | ("auto", None) => (Box::new(tcp), timeout * 2),
        ("nccl", None) => bail!("distributed.backend = \"nccl\" needs training.device = \"cuda\""),
        #[cfg(feature = "cuda")]
        ("nccl" | "auto", Some(ordinal)) => (Box::new(nccl::Nccl::connect(rv, ordinal, tcp)?), timeout),
        #[cfg(not(feature = "cuda"))]
        ("nccl" | "auto", Some(_)) => bail!("NCCL needs a binary built with --features cuda"),
        (other, _) => bail!("distributed.backend = \"{other}\": use auto, tcp or nccl"),
    };
    Ok(Box::new(watchdog::Watchdog::exit_on_expiry(inner, watchdog_after)))
}
