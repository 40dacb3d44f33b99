//! `trainer collective-check`: correctness and speed of this job's collective (NCCL on CUDA, TCP
//! on CPU), even at world size 1, for the GPU machine's check script and for new clusters.
//! Every rank contributes integer-valued floats, so the expected sums are exact in f32 whatever
//! order NCCL adds them in. Timed: the all-reduce of a device-resident bucket, the path the
//! gradients take (`Collective::all_reduce_sum_device`), at each `--elems` size.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::device::DeviceChoice;
use crate::dist::{tcp::Tcp, Collective, DeviceBuffer, Flat, Rendezvous};

pub struct CheckArgs {
    pub device: DeviceChoice,
    /// Bucket sizes to time, in f32 elements.
    pub elems: Vec<usize>,
    pub rounds: usize,
    pub timeout_s: u64,
}

/// `cuda` means `cuda:LOCAL_RANK` (one GPU per process).
pub fn rank_device(device: DeviceChoice) -> Result<DeviceChoice> {
    let rv = Rendezvous::from_env(|k| std::env::var(k).ok())?;
    Ok(match device {
        DeviceChoice::Cuda(0) => DeviceChoice::Cuda(rv.local_rank),
        other => other,
    })
}

fn value(rank: usize, i: usize) -> f32 {
    ((i * 7 + rank * 13) % 1024) as f32
}

fn open(rv: &Rendezvous, device: DeviceChoice, timeout: Duration) -> Result<(Box<dyn Collective>, &'static str)> {
    if cfg!(not(feature = "cuda")) && matches!(device, DeviceChoice::Cuda(_)) {
        bail!("this binary was built without CUDA; rebuild with `--features cuda`");
    }
    if let DeviceChoice::Cuda(i) = device {
        crate::device::check_cuda(i)?; // before joining the others: fail alone, and clearly
    }
    let tcp = Tcp::connect(rv, "collective-check", timeout)?;
    match device {
        // wgpu has no collective library: its ranks exchange through host memory like the CPU's.
        DeviceChoice::Cpu | DeviceChoice::Wgpu => Ok((Box::new(tcp), "tcp")),
        #[cfg(feature = "cuda")]
        DeviceChoice::Cuda(i) => Ok((Box::new(crate::dist::nccl::Nccl::connect(rv, i, tcp)?), "nccl")),
        #[cfg(not(feature = "cuda"))]
        DeviceChoice::Cuda(_) => unreachable!("refused above"),
    }
}

fn bucket<B: Backend>(rank: usize, elems: usize, device: &B::Device) -> Flat<B> {
    let values: Vec<f32> = (0..elems).map(|i| value(rank, i)).collect();
    Flat(Tensor::from_data(TensorData::new(values, [elems]), device))
}

/// Median seconds of `rounds` device-bucket all-reduces of `elems` (after one untimed call).
fn time_device<B: Backend>(c: &mut dyn Collective, elems: usize, rounds: usize, device: &B::Device) -> Result<f64> {
    let mut buf = bucket::<B>(c.rank(), elems, device);
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds + 1 {
        c.barrier("check timing")?;
        let start = Instant::now();
        c.all_reduce_sum_device(&mut buf, "check timing")?;
        B::sync(device).map_err(|e| anyhow::anyhow!("device sync: {e:?}"))?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.remove(0); // the first call sets up buffers and connections
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

pub fn run<B: Backend>(device_handle: &B::Device, args: CheckArgs) -> Result<()> {
    if args.elems.is_empty() || args.elems.contains(&0) || args.rounds == 0 {
        bail!("--elems and --rounds must be positive");
    }
    let rv = Rendezvous::from_env(|k| std::env::var(k).ok())?;
    let device = args.device;
    let (mut coll, backend) = open(&rv, device, Duration::from_secs(args.timeout_s))?;
    let (rank, world) = (rv.rank, rv.world);

    // Correctness: a device bucket summed and broadcast, host f32 and f64 sums.
    let n = args.elems[0];
    let mut buf = bucket::<B>(rank, n, device_handle);
    coll.all_reduce_sum_device(&mut buf, "check all-reduce")?;
    let sums = buf.read()?;
    let wrong = (0..n).filter(|&i| sums[i] != (0..world).map(|r| value(r, i)).sum::<f32>()).count();
    let mut b = bucket::<B>(rank, 1000, device_handle);
    coll.broadcast_device(&mut b, "check broadcast")?;
    let b = b.read()?;
    let mut host: Vec<f32> = (0..1000).map(|i| value(rank, i)).collect();
    coll.all_reduce_sum(&mut host, "check host all-reduce")?;
    let wrong_host = (0..1000).filter(|&i| host[i] != (0..world).map(|r| value(r, i)).sum::<f32>()).count();
    let wrong_bcast = (0..1000).filter(|&i| b[i] != value(0, i)).count();
    let mut f = [rank as f64 + 0.25];
    coll.all_reduce_sum_f64(&mut f, "check f64")?;
    let f64_ok = f[0] == (0..world).map(|r| r as f64 + 0.25).sum::<f64>();
    if wrong > 0 || wrong_bcast > 0 || wrong_host > 0 || !f64_ok {
        bail!("rank {rank}: {backend} gave {wrong} wrong device sums of {n}, {wrong_host} wrong host sums, {wrong_bcast} wrong broadcast values, f64 sum ok: {f64_ok}");
    }

    for &elems in &args.elems {
        let median = time_device::<B>(coll.as_mut(), elems, args.rounds, device_handle)?;
        let bytes = (elems * 4) as f64;
        // NCCL's conventions: algorithm bandwidth, and bus bandwidth 2(n-1)/n of it for all-reduce.
        let algbw = bytes / median / 1e9;
        let busbw = algbw * if world > 1 { 2.0 * (world - 1) as f64 / world as f64 } else { 0.0 };
        if rank == 0 {
            println!(
                "collective-check: {backend} world {world}: sums and broadcast correct; device bucket of {elems} f32 ({:.1} MB) all-reduce median {:.3} ms over {} rounds, algbw {algbw:.2} GB/s, busbw {busbw:.2} GB/s",
                bytes / 1e6,
                median * 1e3,
                args.rounds
            );
            println!(
                "{}",
                serde_json::json!({
                    "check": "collective", "backend": backend, "world": world, "device": format!("{device:?}"),
                    "buffer": "device", "elems": elems, "correct": true, "median_ms": median * 1e3,
                    "algbw_gb_s": algbw, "busbw_gb_s": busbw, "rounds": args.rounds,
                })
            );
        }
    }
    Ok(())
}
