//! libtorch's fused multi-tensor optimizer kernels (`_fused_sgd_`, `_fused_adam_`, `_fused_adamw_`,
//! what `torch.optim` runs with `fused=True`), bridged by `csrc/optim_shim.cpp` because tch has no
//! bindings for ops over tensor lists. One call updates a whole list of parameters and their state:
//! one kernel per list instead of two to four per parameter. Also `pin_memory` without tch's deprecated
//! device argument. Only this file, `streams` and `dist::ffi` are `unsafe`.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void};

use tch::Tensor;

use crate::dist::ffi::result;

extern "C" {
    fn dlcv_fused_sgd(
        params: *const *mut c_void,
        grads: *const *mut c_void,
        bufs: *const *mut c_void,
        n: usize,
        weight_decay: f64,
        momentum: f64,
        lr: f64,
        nesterov: c_int,
        first_step: c_int,
    ) -> *mut c_char;
    fn dlcv_fused_adam(
        params: *const *mut c_void,
        grads: *const *mut c_void,
        exp_avgs: *const *mut c_void,
        exp_avg_sqs: *const *mut c_void,
        n: usize,
        step: *mut c_void,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
        decoupled: c_int,
    ) -> *mut c_char;
    fn dlcv_pin_memory(t: *mut c_void, out: *mut *mut c_void) -> *mut c_char;
}

/// A copy of `t` in page-locked (pinned) host memory, for an asynchronous copy to a GPU. (tch binds
/// only `pin_memory(device)`, whose device argument libtorch 2.11 deprecates with a warning each call.)
pub fn pin_memory(t: &Tensor) -> Result<Tensor, String> {
    let mut out = std::ptr::null_mut();
    // SAFETY: a live at::Tensor, read only; the shim writes `out` (a new heap at::Tensor) only on success.
    result(unsafe { dlcv_pin_memory(t.as_ptr() as *mut c_void, &mut out) })?;
    // SAFETY: `out` is a heap at::Tensor we now own, as tch's handles are.
    Ok(unsafe { Tensor::from_ptr(out.cast()) })
}

/// The handles the shim reads: it copies each `at::Tensor` (sharing its storage) and writes the
/// storage, never the handle.
fn handles(ts: &[Tensor]) -> Vec<*mut c_void> {
    ts.iter().map(|t| t.as_ptr() as *mut c_void).collect()
}

/// torch.optim.SGD's rule on every tensor of `params` at once (see `csrc/optim_shim.cpp`); `bufs`
/// holds one momentum buffer per parameter unless `momentum` is 0. On the first step the buffers'
/// contents are not read: they become the (decayed) gradients.
#[allow(clippy::too_many_arguments)]
pub fn sgd(
    params: &[Tensor],
    grads: &[Tensor],
    bufs: &[Tensor],
    weight_decay: f64,
    momentum: f64,
    lr: f64,
    nesterov: bool,
    first_step: bool,
) -> Result<(), String> {
    assert_eq!(params.len(), grads.len(), "one gradient per parameter");
    if momentum != 0.0 {
        assert_eq!(params.len(), bufs.len(), "one momentum buffer per parameter");
    }
    let (p, g, b) = (handles(params), handles(grads), handles(bufs));
    // SAFETY: every pointer is a live at::Tensor borrowed for the call; the lists are as long as
    // `n` says (the buffer list is only read when momentum is not 0, and then it is checked above).
    result(unsafe { dlcv_fused_sgd(p.as_ptr(), g.as_ptr(), b.as_ptr(), p.len(), weight_decay, momentum, lr, nesterov as c_int, first_step as c_int) })
}

/// torch.optim.Adam's (or, `decoupled`, AdamW's) rule on every tensor of `params` at once; `step` is
/// a 0-d float tensor on the parameters' device holding the step count this update is.
#[allow(clippy::too_many_arguments)]
pub fn adam(
    params: &[Tensor],
    grads: &[Tensor],
    exp_avgs: &[Tensor],
    exp_avg_sqs: &[Tensor],
    step: &Tensor,
    lr: f64,
    (beta1, beta2, eps): (f64, f64, f64),
    weight_decay: f64,
    decoupled: bool,
) -> Result<(), String> {
    let n = params.len();
    assert!(grads.len() == n && exp_avgs.len() == n && exp_avg_sqs.len() == n, "one gradient and two moments per parameter");
    let (p, g, m, v) = (handles(params), handles(grads), handles(exp_avgs), handles(exp_avg_sqs));
    // SAFETY: as in `sgd`; `step` is a live at::Tensor that the kernels only read.
    result(unsafe {
        dlcv_fused_adam(
            p.as_ptr(),
            g.as_ptr(),
            m.as_ptr(),
            v.as_ptr(),
            n,
            step.as_ptr() as *mut c_void,
            lr,
            beta1,
            beta2,
            weight_decay,
            eps,
            decoupled as c_int,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinning_copies_or_says_why_not() {
        let t = Tensor::from_slice(&[1u8, 2, 3, 250]).view([2, 2]);
        match pin_memory(&t) {
            // a machine with a GPU: the same values, in page-locked memory
            Ok(p) => {
                assert!(p.equal(&t));
                assert_eq!(p.size(), [2, 2]);
            }
            // no CUDA here: libtorch's reason, as text, and no crash
            Err(why) => assert!(!why.is_empty()),
        }
    }
}
