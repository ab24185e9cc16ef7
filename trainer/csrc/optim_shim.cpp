// The trainer's optimizers on libtorch's fused multi-tensor kernels (trainer/src/fused.rs), and pinning.
//
// `at::_fused_sgd_`, `at::_fused_adam_` and `at::_fused_adamw_` update a whole list of parameters (and
// their state) in one kernel per list, on CPU and CUDA; they are what `torch.optim` runs with
// `fused=True`. tch generates no bindings for ops over tensor lists, so these three calls are bridged
// here. Errors come back as a malloc'd message, as in c10d_shim.cpp; no C++ exception crosses into Rust.

#include <ATen/ATen.h>
#include <ATen/ops/_fused_adam.h>
#include <ATen/ops/_fused_adamw.h>
#include <ATen/ops/_fused_sgd.h>

#include <vector>

#include "c10d_shim.h"

using dlcv::guarded;

extern "C" {

// torch.optim.SGD's update of n parameters: d = g + wd * p; buf = momentum * buf + d (buf = d on the
// first step); d = nesterov ? d + momentum * buf : buf; p -= lr * d. With momentum 0, `bufs` is unused.
char* dlcv_fused_sgd(void* const* params, void* const* grads, void* const* bufs, size_t n, double weight_decay, double momentum,
                     double lr, int nesterov, int first_step) {
  return guarded([&] {
    auto p = dlcv::tensors_of(params, n);
    auto g = dlcv::tensors_of(grads, n);
    std::vector<at::Tensor> b = momentum != 0.0 ? dlcv::tensors_of(bufs, n) : std::vector<at::Tensor>{};
    at::_fused_sgd_(p, g, b, weight_decay, momentum, lr, /*dampening=*/0.0, nesterov != 0, /*maximize=*/false, first_step != 0);
  });
}

// torch.optim.Adam's (decoupled = 0) or AdamW's (decoupled = 1) update of n parameters at the step
// count held by the 0-d float tensor `step` (already advanced to this step).
char* dlcv_fused_adam(void* const* params, void* const* grads, void* const* exp_avgs, void* const* exp_avg_sqs, size_t n, void* step,
                      double lr, double beta1, double beta2, double weight_decay, double eps, int decoupled) {
  return guarded([&] {
    auto p = dlcv::tensors_of(params, n);
    auto g = dlcv::tensors_of(grads, n);
    auto m = dlcv::tensors_of(exp_avgs, n);
    auto v = dlcv::tensors_of(exp_avg_sqs, n);
    std::vector<at::Tensor> steps(n, *static_cast<at::Tensor*>(step));
    std::vector<at::Tensor> none;
    if (decoupled != 0) {
      at::_fused_adamw_(p, g, m, v, none, steps, lr, beta1, beta2, weight_decay, eps, /*amsgrad=*/false, /*maximize=*/false);
    } else {
      at::_fused_adam_(p, g, m, v, none, steps, lr, beta1, beta2, weight_decay, eps, /*amsgrad=*/false, /*maximize=*/false);
    }
  });
}

// `t.pin_memory()`, a copy in page-locked memory from libtorch's caching host allocator. tch binds
// only the form with a device argument, which libtorch 2.11 deprecates with a warning on each call.
char* dlcv_pin_memory(void* t, void** out) {
  return guarded([&] { *out = new at::Tensor(static_cast<at::Tensor*>(t)->pin_memory()); });
}

}  // extern "C"
