//! CUDA side streams and device events through c10's device-generic API (`csrc/stream_shim.cpp`), for
//! copying the next batch while the current step computes ([`crate::batches::DeviceBatches`]) and for
//! timing a step's phases on the device ([`crate::step::Profile`]). tch exposes neither streams nor
//! events. Every call here is for a CUDA device; on a libtorch without CUDA each returns an error.
//! Only this file, `fused` and `dist::ffi` are `unsafe`.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void};

use tch::Tensor;

use crate::dist::ffi::result;

extern "C" {
    fn dlcv_pool_stream(index: c_int, out: *mut i64) -> *mut c_char;
    fn dlcv_exchange_stream(s: *const i64, prev: *mut i64) -> *mut c_char;
    fn dlcv_event_record(index: c_int, timing: c_int, out: *mut *mut c_void) -> *mut c_char;
    fn dlcv_event_block(event: *mut c_void, index: c_int) -> *mut c_char;
    fn dlcv_event_elapsed_ms(earlier: *mut c_void, later: *mut c_void, ms: *mut f64) -> *mut c_char;
    fn dlcv_event_free(event: *mut c_void);
    fn dlcv_record_stream(t: *mut c_void) -> *mut c_char;
}

/// A (high-priority) stream from libtorch's pool on CUDA device `index`, other than the default one the step runs on.
pub struct SideStream {
    packed: [i64; 3],
}

impl SideStream {
    pub fn new(index: usize) -> Result<Self, String> {
        let mut packed = [0i64; 3];
        // SAFETY: the shim writes three i64 into `packed` and nothing else.
        result(unsafe { dlcv_pool_stream(index as c_int, packed.as_mut_ptr()) })?;
        Ok(Self { packed })
    }

    /// Makes this the current stream of its device until the returned scope is dropped: the copies
    /// and kernels queued meanwhile run on it.
    pub fn enter(&self) -> Result<StreamScope, String> {
        let mut prev = [0i64; 3];
        // SAFETY: both arrays hold three i64; the shim reads one and writes the other.
        result(unsafe { dlcv_exchange_stream(self.packed.as_ptr(), prev.as_mut_ptr()) })?;
        Ok(StreamScope { prev, _thread: std::marker::PhantomData })
    }
}

/// While alive, a side stream is current; dropping it puts the previous stream back. The current
/// stream is the thread's, so a scope stays on the thread that made it (not `Send`).
pub struct StreamScope {
    prev: [i64; 3],
    _thread: std::marker::PhantomData<*const ()>,
}

impl Drop for StreamScope {
    fn drop(&mut self) {
        let mut ignored = [0i64; 3];
        // SAFETY: as in `SideStream::enter`. Putting back a stream that was current a moment ago
        // cannot fail unless CUDA itself has, and the next CUDA call reports that.
        if let Err(e) = result(unsafe { dlcv_exchange_stream(self.prev.as_ptr(), ignored.as_mut_ptr()) }) {
            tracing::error!("could not restore the current CUDA stream: {e}");
        }
    }
}

/// An event recorded on a CUDA stream: a point in its queue that another stream can wait for or that
/// can be timed against another event.
pub struct DeviceEvent {
    ptr: *mut c_void,
}

impl DeviceEvent {
    /// Recorded now on the current stream of CUDA device `index`; `timing` makes it measurable with
    /// [`DeviceEvent::elapsed_ms`] (at a small cost, so copies' events go without).
    pub fn record(index: usize, timing: bool) -> Result<Self, String> {
        let mut ptr = std::ptr::null_mut();
        // SAFETY: the shim writes `ptr` (a new heap c10::Event) only on success.
        result(unsafe { dlcv_event_record(index as c_int, timing as c_int, &mut ptr) })?;
        Ok(Self { ptr })
    }

    /// Makes the current stream of CUDA device `index` wait (on the device; the host goes on) for the
    /// work queued before this event on its stream.
    pub fn block_current(&self, index: usize) -> Result<(), String> {
        // SAFETY: `ptr` is the live event this value owns.
        result(unsafe { dlcv_event_block(self.ptr, index as c_int) })
    }

    /// Milliseconds on the device from this event to `later` (both timing events); waits for `later`.
    pub fn elapsed_ms(&self, later: &DeviceEvent) -> Result<f64, String> {
        let mut ms = 0.0;
        // SAFETY: two live events owned by their values; the shim writes `ms` only.
        result(unsafe { dlcv_event_elapsed_ms(self.ptr, later.ptr, &mut ms) })?;
        Ok(ms)
    }
}

impl Drop for DeviceEvent {
    fn drop(&mut self) {
        // SAFETY: freed once, by the shim that allocated it.
        unsafe { dlcv_event_free(self.ptr) }
    }
}

/// `t.record_stream(current stream)`: a tensor allocated on a side stream is now also used on the
/// current one, so the caching allocator must not reuse its memory before that stream is done with it.
pub fn record_stream(t: &Tensor) -> Result<(), String> {
    // SAFETY: a live at::Tensor, read only.
    result(unsafe { dlcv_record_stream(t.as_ptr() as *mut c_void) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_gpu_the_calls_fail_with_a_message_instead_of_crashing() {
        if tch::Cuda::is_available() {
            return;
        }
        // libtorch_cuda may be linked (its guard implementation then answers "no CUDA GPUs") or not
        // ("not linked with support for cuda devices"): either way an error, not an abort.
        assert!(SideStream::new(0).is_err());
        assert!(DeviceEvent::record(0, true).is_err());
    }
}
