//! Backend selection: the pure-Rust CPU backend (burn-flex) always, CUDA with `--features cuda`.

use std::str::FromStr;

use anyhow::{bail, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            other => match other.strip_prefix("cuda:").map(str::parse) {
                Some(Ok(index)) => Ok(Self::Cuda(index)),
                _ => bail!("unknown device '{other}' (use cpu, cuda or cuda:N)"),
            },
        }
    }
}

/// A clear error instead of a panic deep in the backend when `cuda:index` cannot be used: no
/// driver library, a driver that fails to start, or fewer GPUs than the index.
#[cfg(feature = "cuda")]
pub fn check_cuda(index: usize) -> Result<()> {
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        bail!("cuda:{index}: the CUDA driver library (libcuda.so) cannot be loaded: no NVIDIA driver on this machine, or it is not on the library path");
    }
    cudarc::driver::result::init()
        .map_err(|e| anyhow::anyhow!("cuda:{index}: the CUDA driver failed to start: {e:?}"))?;
    let count = cudarc::driver::result::device::get_count()
        .map_err(|e| anyhow::anyhow!("cuda:{index}: cannot count GPUs: {e:?}"))? as usize;
    if index >= count {
        bail!(
            "cuda:{index}: only {count} GPU(s) visible (CUDA_VISIBLE_DEVICES={})",
            std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_else(|_| "unset".into())
        );
    }
    Ok(())
}

#[cfg(not(feature = "cuda"))]
pub fn check_cuda(_index: usize) -> Result<()> {
    bail!("this binary was built without CUDA; rebuild with `--features cuda`")
}

/// Run `$body` with `B` bound to the chosen backend and `$device` to its device.
#[macro_export]
macro_rules! with_backend {
    ($choice:expr, |$b:ident, $device:ident| $body:expr) => {{
        match $choice {
            $crate::device::DeviceChoice::Cpu => {
                type $b = burn::backend::Flex;
                let $device = burn::backend::flex::FlexDevice;
                $body
            }
            #[cfg(feature = "cuda")]
            $crate::device::DeviceChoice::Cuda(index) => {
                $crate::device::check_cuda(index)?;
                type $b = burn::backend::Cuda;
                let $device = burn::backend::cuda::CudaDevice::new(index);
                $body
            }
            #[cfg(not(feature = "cuda"))]
            $crate::device::DeviceChoice::Cuda(_) => {
                anyhow::bail!("this binary was built without CUDA; rebuild with `--features cuda`")
            }
        }
    }};
}
