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
