//! `trainer doctor`: what libtorch this binary uses and which devices it can train on, proven by a
//! small computation on each device rather than by flags alone.

use crate::device::DeviceSpec;
use serde::Serialize;
use tch::{Kind, Tensor};

#[derive(Debug, Serialize)]
pub struct Report {
    pub libtorch_version: &'static str,
    pub libtorch_dir: &'static str,
    pub linked_torch_cuda: bool,
    pub cuda_available: bool,
    pub cuda_devices: i64,
    pub cudnn_available: bool,
    pub mkl: bool,
    pub cpu_threads: i32,
    /// Multi-process training: the c10d back ends this binary was built with.
    pub gloo: bool,
    /// `Ok(())` when the NCCL bridge was built, else why not.
    #[serde(serialize_with = "serialize_nccl")]
    pub nccl: Result<(), &'static str>,
    /// The device that was checked, and what the probe computation on it gave.
    pub device: String,
    #[serde(serialize_with = "models::cli::serialize_check")]
    pub device_check: Result<String, String>,
}

/// A 3x3 convolution of an all-ones 1x1x5x5 image with an all-ones kernel: the centre is 9.
fn probe(device: tch::Device) -> Result<String, String> {
    let x = Tensor::ones([1, 1, 5, 5], (Kind::Float, device));
    let w = Tensor::ones([1, 1, 3, 3], (Kind::Float, device));
    let y = x.f_conv2d(&w, None::<Tensor>, [1, 1], [0, 0], [1, 1], 1).map_err(|e| e.to_string())?;
    let centre = y.double_value(&[0, 0, 1, 1]);
    if centre == 9.0 {
        Ok(format!("conv2d on {device:?} gives 9 as it should"))
    } else {
        Err(format!("conv2d on {device:?} gave {centre}, expected 9"))
    }
}

pub fn run(device: DeviceSpec) -> Report {
    let device_check = device.resolve().map_err(|e| e.to_string()).and_then(probe);
    Report {
        libtorch_version: crate::LIBTORCH_VERSION,
        libtorch_dir: env!("DLCV_LIBTORCH_DIR"),
        linked_torch_cuda: cfg!(libtorch_cuda),
        cuda_available: tch::Cuda::is_available(),
        cuda_devices: tch::Cuda::device_count(),
        cudnn_available: tch::Cuda::cudnn_is_available(),
        mkl: tch::utils::has_mkl(),
        cpu_threads: tch::get_num_threads(),
        gloo: true,
        nccl: crate::dist::nccl_built(),
        device: device.to_string(),
        device_check,
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "libtorch        {} ({})", self.libtorch_version, self.libtorch_dir)?;
        writeln!(f, "torch_cuda      {}", if self.linked_torch_cuda { "linked" } else { "not in this libtorch" })?;
        writeln!(f, "CUDA            {} ({} device(s), cuDNN {})", yes(self.cuda_available), self.cuda_devices, yes(self.cudnn_available))?;
        writeln!(f, "CPU             {} threads, MKL {}", self.cpu_threads, yes(self.mkl))?;
        match self.nccl {
            Ok(()) => writeln!(f, "c10d            gloo, nccl (multi-process training: torchrun or --nproc)")?,
            Err(why) => writeln!(f, "c10d            gloo only; nccl not built: {why}")?,
        }
        match &self.device_check {
            Ok(msg) => write!(f, "device {:<8} ok: {msg}", self.device),
            Err(msg) => write!(f, "device {:<8} FAILED: {msg}", self.device),
        }
    }
}

fn serialize_nccl<S: serde::Serializer>(v: &Result<(), &'static str>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Ok(()) => s.serialize_str("built"),
        Err(why) => s.serialize_str(&format!("not built: {why}")),
    }
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_probe_computes() {
        let r = super::run(crate::device::DeviceSpec::Cpu);
        assert_eq!(r.device_check.as_deref(), Ok("conv2d on Cpu gives 9 as it should"));
        assert!(r.libtorch_version.starts_with("2.11.0"), "{}", r.libtorch_version);
    }
}
