// Side streams and device events for the trainer's input path and its profile (trainer/src/streams.rs).
//
// Everything goes through c10's device-generic Stream and Event, so no CUDA header is needed to build
// this: on a CUDA device libtorch_cuda's registered guard implementation does the work, and on a
// libtorch without CUDA each call returns an error message instead. Errors come back as a malloc'd
// message, as in c10d_shim.cpp; no C++ exception crosses into Rust. A stream travels as its three
// packed fields (id, device index, device type), c10's own `pack3`.

#include <ATen/ATen.h>
#include <c10/core/Event.h>
#include <c10/core/Stream.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include "c10d_shim.h"

using dlcv::guarded;

namespace {

const c10::impl::VirtualGuardImpl& cuda() {
  static const c10::impl::VirtualGuardImpl impl(c10::DeviceType::CUDA);
  return impl;
}

c10::Device cuda_device(int index) {
  return c10::Device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(index));
}

void pack(const c10::Stream& s, int64_t out[3]) {
  auto d = s.pack3();
  out[0] = d.stream_id;
  out[1] = d.device_index;
  out[2] = static_cast<int64_t>(d.device_type);
}

c10::Stream unpack(const int64_t s[3]) {
  return c10::Stream::unpack3(s[0], static_cast<c10::DeviceIndex>(s[1]), static_cast<c10::DeviceType>(s[2]));
}

}  // namespace

extern "C" {

// A high-priority stream from libtorch's pool of CUDA device `index` (`torch.cuda.Stream(priority=-1)`):
// the low-priority pool, handed out round-robin, is where NCCL's streams come from too, and sharing
// one would put the input copies behind the gradients' all-reduces.
char* dlcv_pool_stream(int index, int64_t out[3]) {
  return guarded([&] { pack(cuda().getStreamFromGlobalPool(cuda_device(index), /*isHighPriority=*/true), out); });
}

// Makes `s` the current stream of its device (work queued from now on goes there); writes the stream
// it replaces to `prev`, to be put back the same way.
char* dlcv_exchange_stream(const int64_t s[3], int64_t prev[3]) {
  return guarded([&] { pack(cuda().exchangeStream(unpack(s)), prev); });
}

// A new event recorded on the current stream of CUDA device `index`; with `timing`, one that
// `dlcv_event_elapsed_ms` can measure (cudaEventDefault rather than cudaEventDisableTiming).
char* dlcv_event_record(int index, int timing, void** out) {
  return guarded([&] {
    auto* e = new c10::Event(c10::DeviceType::CUDA, timing != 0 ? c10::EventFlag::BACKEND_DEFAULT : c10::EventFlag::PYTORCH_DEFAULT);
    try {
      e->record(cuda().getStream(cuda_device(index)));
    } catch (...) {
      delete e;
      throw;
    }
    *out = e;
  });
}

// Makes the current stream of CUDA device `index` wait, on the device and not on the host, until the
// stream `event` was recorded on reaches it.
char* dlcv_event_block(void* event, int index) {
  return guarded([&] { static_cast<c10::Event*>(event)->block(cuda().getStream(cuda_device(index))); });
}

// Milliseconds between two timing events, waiting on the host for `later` to complete.
char* dlcv_event_elapsed_ms(void* earlier, void* later, double* ms) {
  return guarded([&] {
    auto* b = static_cast<c10::Event*>(later);
    b->synchronize();
    *ms = static_cast<c10::Event*>(earlier)->elapsedTime(*b);
  });
}

void dlcv_event_free(void* event) {
  delete static_cast<c10::Event*>(event);
}

// `t.record_stream(current stream of t's device)`: tells the caching allocator that the memory of a
// tensor made on a side stream is also used on the current one, so that it is not handed out again
// before that stream's work on it is done.
char* dlcv_record_stream(void* t) {
  return guarded([&] {
    auto& tensor = *static_cast<at::Tensor*>(t);
    tensor.record_stream(cuda().getStream(tensor.device()));
  });
}

}  // extern "C"
