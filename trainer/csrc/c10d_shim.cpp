// The trainer's bridge to libtorch's c10d (the engine under PyTorch's DistributedDataParallel):
// TCPStore rendezvous, ProcessGroupGloo, and the collectives data-parallel training needs.
// Compiled by trainer/build.rs against the libtorch the trainer links; see c10d_shim.h.
#include "c10d_shim.h"

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

namespace dlcv {

char* error_message(const char* what) {
  size_t n = std::strlen(what);
  char* out = static_cast<char*>(std::malloc(n + 1));
  if (out != nullptr) {
    std::memcpy(out, what, n + 1);
  }
  return out;
}

char* error_message(const std::exception& e) {
  if (auto* c10 = dynamic_cast<const c10::Error*>(&e)) {
    return error_message(c10->what_without_backtrace());
  }
  return error_message(e.what());
}

}  // namespace dlcv

using dlcv::guarded;
using dlcv::tensors_of;

// Waits for every piece of work, in order; the first failure is rethrown after all were waited on
// (or timed out), so no collective is left running on buffers the caller frees.
static void wait_all(std::vector<c10::intrusive_ptr<c10d::Work>>& work, int64_t timeout_ms) {
  std::exception_ptr first;
  for (auto& w : work) {
    try {
      if (!w->wait(std::chrono::milliseconds(timeout_ms))) {
        throw std::runtime_error("timed out after " + std::to_string(timeout_ms) + " ms");
      }
    } catch (...) {
      if (!first) {
        first = std::current_exception();
      }
    }
  }
  if (first) {
    std::rethrow_exception(first);
  }
}

// Sums one tensor across the group, in place, and waits.
static void allreduce_one(dlcv::Group* g, at::Tensor& t, int64_t timeout_ms) {
  c10d::AllreduceOptions opts;
  opts.reduceOp = c10d::ReduceOp(c10d::ReduceOp::SUM);
  opts.timeout = std::chrono::milliseconds(timeout_ms);
  std::vector<at::Tensor> one{t};
  std::vector<c10::intrusive_ptr<c10d::Work>> work{g->backend->allreduce(one, opts)};
  wait_all(work, timeout_ms);
}

// The all-reduce as a differentiable function, as torch.distributed.nn.functional.all_reduce is:
// y = sum over ranks of x, so the gradient of every rank's x is the sum over ranks of y's gradient
// (another all-reduce, run by the autograd engine during backward). SyncBatchNorm's statistics go
// through it. The group is held by pointer: the trainer keeps it alive for the whole run.
struct AllreduceSum : public torch::autograd::Function<AllreduceSum> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, int64_t group, int64_t timeout_ms) {
    ctx->saved_data["group"] = group;
    ctx->saved_data["timeout_ms"] = timeout_ms;
    at::Tensor out = x.contiguous().clone();
    allreduce_one(reinterpret_cast<dlcv::Group*>(group), out, timeout_ms);
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::variable_list grads) {
    auto* g = reinterpret_cast<dlcv::Group*>(ctx->saved_data["group"].toInt());
    at::Tensor grad = grads[0].contiguous().clone();
    allreduce_one(g, grad, ctx->saved_data["timeout_ms"].toInt());
    return {grad, at::Tensor(), at::Tensor()};
  }
};

extern "C" {

void dlcv_string_free(char* s) { std::free(s); }

// A TCPStore at host:port (the server when `is_server`, which waits for `world` clients), seen
// through the key prefix `prefix`.
char* dlcv_store_connect(const char* host, uint16_t port, int is_server, int world, int64_t timeout_ms, const char* prefix,
                         dlcv::Store** out) {
  return guarded([&] {
    c10d::TCPStoreOptions opts;
    opts.port = port;
    opts.isServer = is_server != 0;
    opts.numWorkers = static_cast<size_t>(world);
    // not waiting here: forming the process group waits for every rank (with the timeout) anyway
    opts.waitWorkers = false;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    auto store = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), tcp);
    *out = new dlcv::Store{store};
  });
}

void dlcv_store_free(dlcv::Store* s) { delete s; }

// A Gloo process group over the store. `interface` (may be empty) names the network interface to
// use, as GLOO_SOCKET_IFNAME does for PyTorch; otherwise the host name's address, else loopback.
char* dlcv_group_gloo(dlcv::Store* store, int rank, int world, int64_t timeout_ms, int threads, const char* interface,
                      dlcv::Group** out) {
  return guarded([&] {
    auto opts = c10d::ProcessGroupGloo::Options::create(std::chrono::milliseconds(timeout_ms));
    std::string ifname(interface);
    if (ifname.empty()) {
      opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    } else {
      size_t start = 0;
      while (start <= ifname.size()) {
        size_t end = ifname.find(',', start);
        if (end == std::string::npos) end = ifname.size();
        if (end > start) {
          opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname.substr(start, end - start)));
        }
        start = end + 1;
      }
    }
    if (threads > 0) {
      opts->threads = threads;
    }
    auto group = c10::make_intrusive<c10d::ProcessGroupGloo>(store->store, rank, world, opts);
    *out = new dlcv::Group{group};
  });
}

void dlcv_group_free(dlcv::Group* g) { delete g; }

// Sums each tensor across the group, in place (Gloo has no average); all are started before
// any is waited on, so Gloo's threads or NCCL's stream pipeline them.
char* dlcv_allreduce(dlcv::Group* g, void* const* tensors, size_t n, int64_t timeout_ms) {
  return guarded([&] {
    auto ts = tensors_of(tensors, n);
    c10d::AllreduceOptions opts;
    opts.reduceOp = c10d::ReduceOp(c10d::ReduceOp::SUM);
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    std::vector<c10::intrusive_ptr<c10d::Work>> work;
    for (auto& t : ts) {
      std::vector<at::Tensor> one{t};
      work.push_back(g->backend->allreduce(one, opts));
    }
    wait_all(work, timeout_ms);
  });
}

// Copies each tensor of rank `root` into the same tensor of every other rank.
char* dlcv_broadcast(dlcv::Group* g, void* const* tensors, size_t n, int root, int64_t timeout_ms) {
  return guarded([&] {
    auto ts = tensors_of(tensors, n);
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    std::vector<c10::intrusive_ptr<c10d::Work>> work;
    for (auto& t : ts) {
      std::vector<at::Tensor> one{t};
      work.push_back(g->backend->broadcast(one, opts));
    }
    wait_all(work, timeout_ms);
  });
}

// A new tensor (written to *out as a heap at::Tensor, tch's handle): the sum of `x` over the
// group, differentiable (see AllreduceSum). A failure in the backward all-reduce surfaces as the
// error of the backward call.
char* dlcv_allreduce_autograd(dlcv::Group* g, void* x, int64_t timeout_ms, void** out) {
  return guarded([&] {
    at::Tensor y = AllreduceSum::apply(*static_cast<at::Tensor*>(x), reinterpret_cast<int64_t>(g), timeout_ms);
    *out = new at::Tensor(std::move(y));
  });
}

char* dlcv_barrier(dlcv::Group* g, int64_t timeout_ms) {
  return guarded([&] {
    c10d::BarrierOptions opts;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    std::vector<c10::intrusive_ptr<c10d::Work>> work{g->backend->barrier(opts)};
    wait_all(work, timeout_ms);
  });
}

#ifndef DLCV_WITH_NCCL
char* dlcv_group_nccl(dlcv::Store*, int, int, int64_t, dlcv::Group**) {
  return dlcv::error_message(
      "this trainer was built without NCCL (the CUDA crt/CCCL headers or nccl.h were missing at build time; "
      "`trainer doctor` says which)");
}
#endif

}  // extern "C"
