// The C interface between the trainer's Rust code (trainer/src/dist/ffi.rs) and libtorch's c10d.
//
// Every function that can fail returns NULL on success or a malloc'd message (free it with
// dlcv_string_free); C++ exceptions never cross into Rust. Tensors are tch's handles: an `at::Tensor*`.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

namespace dlcv {

struct Store {
  c10::intrusive_ptr<c10d::Store> store;
};

struct Group {
  c10::intrusive_ptr<c10d::Backend> backend;
};

// A malloc'd copy of an exception's message (without libtorch's C++ backtrace).
char* error_message(const std::exception& e);
char* error_message(const char* what);

// Runs `body`, turning any exception into a message (NULL when it returns).
template <typename F>
char* guarded(F&& body) {
  try {
    body();
    return nullptr;
  } catch (const std::exception& e) {
    return error_message(e);
  } catch (...) {
    return error_message("unknown C++ exception");
  }
}

// tch's handles (`at::Tensor*`) as tensors: copying a handle shares the storage, so what libtorch
// writes lands in the Rust tensors.
inline std::vector<at::Tensor> tensors_of(void* const* tensors, size_t n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    out.push_back(*static_cast<at::Tensor*>(tensors[i]));
  }
  return out;
}

}  // namespace dlcv

extern "C" {
char* dlcv_group_nccl(dlcv::Store* store, int rank, int world, int64_t timeout_ms, dlcv::Group** out);
}
