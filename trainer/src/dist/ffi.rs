//! The raw bindings of `csrc/c10d_shim.cpp` and their safe owners. Only this file is `unsafe`.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void, CStr, CString};

use tch::Tensor;

#[repr(C)]
struct RawStore {
    _private: [u8; 0],
}

#[repr(C)]
struct RawGroup {
    _private: [u8; 0],
}

extern "C" {
    fn dlcv_string_free(s: *mut c_char);
    fn dlcv_store_connect(
        host: *const c_char,
        port: u16,
        is_server: c_int,
        world: c_int,
        timeout_ms: i64,
        prefix: *const c_char,
        out: *mut *mut RawStore,
    ) -> *mut c_char;
    fn dlcv_store_free(s: *mut RawStore);
    fn dlcv_group_gloo(
        store: *mut RawStore,
        rank: c_int,
        world: c_int,
        timeout_ms: i64,
        threads: c_int,
        interface: *const c_char,
        out: *mut *mut RawGroup,
    ) -> *mut c_char;
    fn dlcv_group_nccl(store: *mut RawStore, rank: c_int, world: c_int, timeout_ms: i64, out: *mut *mut RawGroup) -> *mut c_char;
    fn dlcv_group_free(g: *mut RawGroup);
    fn dlcv_allreduce(g: *mut RawGroup, tensors: *const *mut c_void, n: usize, timeout_ms: i64) -> *mut c_char;
    fn dlcv_broadcast(g: *mut RawGroup, tensors: *const *mut c_void, n: usize, root: c_int, timeout_ms: i64) -> *mut c_char;
    fn dlcv_barrier(g: *mut RawGroup, timeout_ms: i64) -> *mut c_char;
    fn dlcv_allreduce_autograd(g: *mut RawGroup, x: *mut c_void, timeout_ms: i64, out: *mut *mut c_void) -> *mut c_char;
}

/// The shim's result: `Err(message)` when it returned one.
pub(crate) fn result(msg: *mut c_char) -> Result<(), String> {
    if msg.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null result is a NUL-terminated string the shim malloc'd for us.
    let text = unsafe { CStr::from_ptr(msg) }.to_string_lossy().trim().to_string();
    // SAFETY: freed once, by the allocator that made it.
    unsafe { dlcv_string_free(msg) };
    Err(text)
}

fn c_string(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{s:?} holds a NUL byte"))
}

/// A c10d key-value store (a `TCPStore` under a `PrefixStore`).
pub struct Store(*mut RawStore);

// SAFETY: c10d stores are used from any thread by PyTorch; ours is only moved, not shared.
unsafe impl Send for Store {}

impl Store {
    pub fn connect(host: &str, port: u16, server: bool, world: usize, timeout_ms: i64, prefix: &str) -> Result<Self, String> {
        let (host, prefix) = (c_string(host)?, c_string(prefix)?);
        let mut out = std::ptr::null_mut();
        // SAFETY: valid C strings and an out pointer; the shim writes `out` only on success.
        result(unsafe { dlcv_store_connect(host.as_ptr(), port, server as c_int, world as c_int, timeout_ms, prefix.as_ptr(), &mut out) })?;
        Ok(Self(out))
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // SAFETY: made by dlcv_store_connect, freed once.
        unsafe { dlcv_store_free(self.0) }
    }
}

/// A c10d process group (Gloo or NCCL).
pub struct Group(*mut RawGroup);

// SAFETY: as Store.
unsafe impl Send for Group {}
// SAFETY: c10d backends are thread-safe (PyTorch's DDP reducer calls them from autograd's threads);
// the group is shared with the autograd function of `allreduce_autograd`.
unsafe impl Sync for Group {}

impl Group {
    pub fn gloo(store: &Store, rank: usize, world: usize, timeout_ms: i64, threads: usize, interface: &str) -> Result<Self, String> {
        let interface = c_string(interface)?;
        let mut out = std::ptr::null_mut();
        // SAFETY: a live store, a C string and an out pointer written only on success.
        result(unsafe { dlcv_group_gloo(store.0, rank as c_int, world as c_int, timeout_ms, threads as c_int, interface.as_ptr(), &mut out) })?;
        Ok(Self(out))
    }

    pub fn nccl(store: &Store, rank: usize, world: usize, timeout_ms: i64) -> Result<Self, String> {
        let mut out = std::ptr::null_mut();
        // SAFETY: as gloo.
        result(unsafe { dlcv_group_nccl(store.0, rank as c_int, world as c_int, timeout_ms, &mut out) })?;
        Ok(Self(out))
    }

    /// Sums every tensor across the group, in place.
    pub fn allreduce(&self, tensors: &mut [Tensor], timeout_ms: i64) -> Result<(), String> {
        let ptrs: Vec<*mut c_void> = tensors.iter_mut().map(|t| t.as_mut_ptr() as *mut c_void).collect();
        // SAFETY: each pointer is a live at::Tensor owned by `tensors`, borrowed mutably for the call;
        // the shim waits for every collective before returning.
        result(unsafe { dlcv_allreduce(self.0, ptrs.as_ptr(), ptrs.len(), timeout_ms) })
    }

    /// Overwrites every tensor with rank `root`'s.
    pub fn broadcast(&self, tensors: &mut [Tensor], root: usize, timeout_ms: i64) -> Result<(), String> {
        let ptrs: Vec<*mut c_void> = tensors.iter_mut().map(|t| t.as_mut_ptr() as *mut c_void).collect();
        // SAFETY: as allreduce.
        result(unsafe { dlcv_broadcast(self.0, ptrs.as_ptr(), ptrs.len(), root as c_int, timeout_ms) })
    }

    /// The sum of `x` over the group as a new tensor whose gradient is the sum over the group of
    /// its gradient (the backward pass runs that all-reduce); `x` is left unchanged.
    pub fn allreduce_autograd(&self, x: &Tensor, timeout_ms: i64) -> Result<Tensor, String> {
        let mut input = x.shallow_clone();
        let mut out = std::ptr::null_mut();
        // SAFETY: a live group and at::Tensor; the shim writes `out` (a new heap at::Tensor) only on
        // success, and its autograd node holds the group, which outlives every backward pass of the
        // run (the trainer drops it last).
        result(unsafe { dlcv_allreduce_autograd(self.0, input.as_mut_ptr() as *mut c_void, timeout_ms, &mut out) })?;
        // SAFETY: `out` is a heap at::Tensor we now own, as tch's handles are.
        Ok(unsafe { Tensor::from_ptr(out.cast()) })
    }

    pub fn barrier(&self, timeout_ms: i64) -> Result<(), String> {
        // SAFETY: a live group.
        result(unsafe { dlcv_barrier(self.0, timeout_ms) })
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: made by dlcv_group_*, freed once.
        unsafe { dlcv_group_free(self.0) }
    }
}

/// Sends SIGTERM to process `pid` (a rank started by the launcher).
pub fn terminate(pid: u32) {
    // SAFETY: kill(2) with a child's pid and a valid signal number; failure (it already exited) is harmless.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
}
