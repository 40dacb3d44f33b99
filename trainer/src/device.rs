//! Backend selection: the pure-Rust CPU backend (burn-flex) always; Burn's wgpu backend (the
//! first adapter wgpu finds: Vulkan, Metal or DX12; lavapipe as a software GPU in CI) with the
//! default feature `wgpu`; CUDA with `--features cuda`. Both GPU backends run CubeCL kernels
//! through the fusion compiler with autotuning, as production does.

use std::str::FromStr;

use anyhow::{bail, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    Cpu,
    Cuda(usize),
    /// wgpu's default adapter (`CUBECL_WGPU_DEFAULT_DEVICE=Cpu|DiscreteGpu(N)|…` picks another).
    Wgpu,
}

impl FromStr for DeviceChoice {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            "wgpu" => Ok(Self::Wgpu),
            other => match other.strip_prefix("cuda:").map(str::parse) {
                Some(Ok(index)) => Ok(Self::Cuda(index)),
                _ => bail!("unknown device '{other}' (use cpu, wgpu, cuda or cuda:N)"),
            },
        }
    }
}

impl DeviceChoice {
    /// CUDA's ordinal, if this is a CUDA device.
    pub fn cuda_ordinal(self) -> Option<usize> {
        match self {
            Self::Cuda(index) => Some(index),
            _ => None,
        }
    }
}

/// Whether `B` runs CubeCL kernels (wgpu, CUDA) rather than burn-flex on the CPU.
pub fn is_cubecl<B: burn::tensor::backend::Backend>(device: &B::Device) -> bool {
    !B::name(device).to_lowercase().contains("flex")
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

/// A clear error instead of wgpu's panic when no adapter exists (on Linux without a GPU driver:
/// `apt-get install mesa-vulkan-drivers` gives lavapipe, a Vulkan device on the CPU). Logs the
/// adapter that will be used.
#[cfg(feature = "wgpu")]
pub fn check_wgpu() -> Result<()> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapters = futures_lite::future::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    if adapters.is_empty() {
        bail!("wgpu: no adapter found (no Vulkan, Metal or DX12 device); on Debian/Ubuntu without a GPU, `apt-get install mesa-vulkan-drivers` provides lavapipe, a Vulkan device on the CPU");
    }
    for adapter in &adapters {
        let info = adapter.get_info();
        tracing::debug!(name = %info.name, backend = ?info.backend, kind = ?info.device_type, "wgpu adapter");
    }
    Ok(())
}

#[cfg(not(feature = "wgpu"))]
pub fn check_wgpu() -> Result<()> {
    bail!("this binary was built without wgpu; rebuild with `--features wgpu` (a default feature)")
}

/// The CubeCL backends without the fusion compiler, for `golden-check --no-fusion` (fusion is a
/// compile-time wrapper, so these are distinct types).
#[cfg(feature = "wgpu")]
pub type WgpuUnfused = burn::backend::wgpu::CubeBackend<burn::backend::wgpu::WgpuRuntime, f32, i32, u32>;
#[cfg(feature = "cuda")]
pub type CudaUnfused = burn_cubecl::CubeBackend<burn::cubecl::cuda::CudaRuntime, f32, i32, u8>;

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
            #[cfg(feature = "wgpu")]
            $crate::device::DeviceChoice::Wgpu => {
                $crate::device::check_wgpu()?;
                type $b = burn::backend::Wgpu;
                let $device = burn::backend::wgpu::WgpuDevice::DefaultDevice;
                $body
            }
            #[cfg(not(feature = "wgpu"))]
            $crate::device::DeviceChoice::Wgpu => {
                anyhow::bail!("this binary was built without wgpu; rebuild with `--features wgpu`")
            }
        }
    }};
}
