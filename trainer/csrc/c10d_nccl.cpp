// The NCCL process group, compiled only when the CUDA and NCCL headers exist (trainer/build.rs).
#include "c10d_shim.h"

#include <chrono>

#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

extern "C" char* dlcv_group_nccl(dlcv::Store* store, int rank, int world, int64_t timeout_ms, dlcv::Group** out) {
  try {
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = std::chrono::milliseconds(timeout_ms);
    auto group = c10::make_intrusive<c10d::ProcessGroupNCCL>(store->store, rank, world, opts);
    *out = new dlcv::Group{group};
    return nullptr;
  } catch (const std::exception& e) {
    return dlcv::error_message(e);
  } catch (...) {
    return dlcv::error_message("unknown C++ exception");
  }
}
