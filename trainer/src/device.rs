//! Device names as users type them (`cpu`, `cuda`, `cuda:N`) and their checked translation to tch.

use std::fmt;
use std::str::FromStr;

/// A device request, parsed but not yet checked against the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "DeviceRepr", into = "String")]
pub enum DeviceSpec {
    Cpu,
    /// `cuda` is `Cuda(0)`.
    Cuda(usize),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeviceError {
    #[error("unknown device '{0}': expected 'cpu', 'cuda' or 'cuda:N' (N = 0, 1, ...)")]
    Invalid(String),
    #[error("device '{requested}' was requested but {reason}")]
    Unavailable { requested: String, reason: String },
}

impl FromStr for DeviceSpec {
    type Err = DeviceError;
    fn from_str(s: &str) -> Result<Self, DeviceError> {
        match models::cli::parse_device_name(s) {
            Some(None) => Ok(Self::Cpu),
            Some(Some(i)) => Ok(Self::Cuda(i)),
            None => Err(DeviceError::Invalid(s.to_string())),
        }
    }
}

/// How configs may write a device: `"cuda:1"`, or a bare GPU index `1` (as in `devices = [0, 1]`).
#[derive(serde::Deserialize)]
#[serde(untagged)]
enum DeviceRepr {
    Index(usize),
    Name(String),
}

impl TryFrom<DeviceRepr> for DeviceSpec {
    type Error = DeviceError;
    fn try_from(r: DeviceRepr) -> Result<Self, DeviceError> {
        match r {
            DeviceRepr::Index(i) => Ok(Self::Cuda(i)),
            DeviceRepr::Name(s) => s.parse(),
        }
    }
}

impl TryFrom<String> for DeviceSpec {
    type Error = DeviceError;
    fn try_from(s: String) -> Result<Self, DeviceError> {
        s.parse()
    }
}

impl From<DeviceSpec> for String {
    fn from(d: DeviceSpec) -> String {
        d.to_string()
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl DeviceSpec {
    /// The tch device, after checking that this machine has it. Never falls back to the CPU silently.
    pub fn resolve(self) -> Result<tch::Device, DeviceError> {
        match self {
            Self::Cpu => Ok(tch::Device::Cpu),
            Self::Cuda(i) => {
                let unavailable = |reason: String| DeviceError::Unavailable { requested: self.to_string(), reason };
                if !cfg!(libtorch_cuda) {
                    return Err(unavailable(format!("this binary was built against a libtorch without CUDA ({})", crate::LIBTORCH_VERSION)));
                }
                if !tch::Cuda::is_available() {
                    return Err(unavailable("libtorch finds no usable CUDA device (no NVIDIA driver or GPU on this machine)".into()));
                }
                let count = tch::Cuda::device_count() as usize;
                if i >= count {
                    return Err(unavailable(format!("this machine has {count} CUDA device(s) (cuda:0..cuda:{})", count - 1)));
                }
                Ok(tch::Device::Cuda(i))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_user_spellings() {
        assert_eq!("cpu".parse(), Ok(DeviceSpec::Cpu));
        assert_eq!("CUDA".parse(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceSpec::Cuda(3)));
        assert_eq!(DeviceSpec::Cuda(2).to_string(), "cuda:2");
        for bad in ["cuda:", "cuda:x", "tpu", "cuda:-1", ""] {
            assert!(matches!(bad.parse::<DeviceSpec>(), Err(DeviceError::Invalid(_))), "{bad}");
        }
    }

    #[test]
    fn cpu_always_resolves() {
        assert_eq!(DeviceSpec::Cpu.resolve(), Ok(tch::Device::Cpu));
    }

    #[test]
    fn cuda_request_without_gpu_is_an_error_not_a_fallback() {
        if tch::Cuda::is_available() {
            return; // covered by the GPU tests instead
        }
        let err = DeviceSpec::Cuda(0).resolve().unwrap_err();
        assert!(matches!(err, DeviceError::Unavailable { .. }));
        assert!(err.to_string().contains("cuda:0"), "{err}");
    }

    #[test]
    #[ignore = "needs a CUDA GPU: run with `make test-gpu`"]
    fn cuda_resolves_and_computes_on_a_gpu() {
        let dev = DeviceSpec::Cuda(0).resolve().expect("a CUDA device");
        let x = tch::Tensor::ones([4, 4], (tch::Kind::Float, dev));
        assert_eq!(x.sum(tch::Kind::Float).double_value(&[]), 16.0);
    }
}
