// Linear on the CPU with its GEMMs split over LibTorch's intra-op threads. With OpenBLAS
// pinned to the calling thread (one thread pool: runtime_config.cpp), at::linear runs
// each GEMM on one core while the other cores wait; here each thread runs one slice.
#include "compress/runtime/linear.h"

#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include <algorithm>

#include "compress/runtime/runtime_config.h"

namespace compress {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Below about a million multiply-adds the slices cost more than they save (measured on
// 2 cores, AVX-512 OpenBLAS: 128x100x10 0.94x, 128x120x84 1.12x, 128x400x120 1.6x,
// 128x784x300 1.85x; bench/RESULTS.md "Every core, no page faults").
constexpr int64_t kMinMacs = int64_t{1} << 20;
// No slice thinner than this many rows (OpenBLAS's kernels work on blocks of rows).
constexpr int64_t kMinRows = 16;

int64_t Slices(int64_t rows, int64_t macs) {
  if (macs < kMinMacs || at::in_parallel_region()) return 1;
  return std::min<int64_t>(at::get_num_threads(), rows / kMinRows);
}

// fn(lo, hi) over [0, rows) in `slices` contiguous ranges, one per thread.
template <typename Fn>
void ForEachSlice(int64_t rows, int64_t slices, const Fn& fn) {
  if (slices <= 1) {
    fn(0, rows);
    return;
  }
  const int64_t step = (rows + slices - 1) / slices;
  // OpenMP's workers do not inherit the caller's grad mode, inference mode or autocast
  // (ATen's parallel_for does not carry thread-local state): carry them.
  const at::ThreadLocalState state;
  at::parallel_for(0, slices, 1, [&](int64_t begin, int64_t end) {
    const at::ThreadLocalStateGuard guard(state);
    for (int64_t s = begin; s < end; ++s) {
      const int64_t lo = s * step, hi = std::min(rows, lo + step);
      if (lo < hi) fn(lo, hi);
    }
  });
}

int64_t Macs(const at::Tensor& x, const at::Tensor& w) { return x.size(0) * x.size(1) * w.size(0); }

// y[lo:hi] = b + x[lo:hi] w^T per slice of rows (addmm's bias broadcast, as at::linear).
at::Tensor SlicedForward(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  at::Tensor y = at::empty({x.size(0), w.size(0)}, x.options());
  const at::Tensor wt = w.t();
  ForEachSlice(x.size(0), Slices(x.size(0), Macs(x, w)), [&](int64_t lo, int64_t hi) {
    at::Tensor out = y.narrow(0, lo, hi - lo);
    const at::Tensor rows = x.narrow(0, lo, hi - lo);
    if (b.defined()) {
      at::addmm_out(out, b, rows, wt);
    } else {
      at::mm_out(out, rows, wt);
    }
  });
  return y;
}

// dL/dx = gy w by rows of x, and dL/dw = gy^T x by rows of w (no reduction across
// slices), each when its input needs it.
void SlicedBackward(AutogradContext* ctx, const at::Tensor& gy, at::Tensor* gx, at::Tensor* gw) {
  const auto saved = ctx->get_saved_variables();
  const at::Tensor& x = saved[0];
  const at::Tensor& w = saved[1];
  const int64_t macs = Macs(x, w);
  if (ctx->needs_input_grad(0)) {
    *gx = at::empty(x.sizes(), gy.options());
    ForEachSlice(x.size(0), Slices(x.size(0), macs), [&](int64_t lo, int64_t hi) {
      at::Tensor out = gx->narrow(0, lo, hi - lo);
      at::mm_out(out, gy.narrow(0, lo, hi - lo), w);
    });
  }
  if (ctx->needs_input_grad(1)) {
    *gw = at::empty(w.sizes(), gy.options());
    ForEachSlice(w.size(0), Slices(w.size(0), macs), [&](int64_t lo, int64_t hi) {
      at::Tensor out = gw->narrow(0, lo, hi - lo);
      at::mm_out(out, gy.narrow(1, lo, hi - lo).t(), x);
    });
  }
}

// With a bias and without: a custom function's inputs must all be defined tensors.
class SlicedLinearFunction : public torch::autograd::Function<SlicedLinearFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w,
                            const at::Tensor& b) {
    ctx->save_for_backward({x, w});
    ctx->saved_data["bias_sizes"] = b.sizes().vec();
    return SlicedForward(x, w, b);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    at::Tensor gx, gw, gb;
    SlicedBackward(ctx, grads[0], &gx, &gw);
    // As at::linear's addmm: the broadcast bias's gradient summed back to its shape.
    if (ctx->needs_input_grad(2)) {
      gb = grads[0].sum_to_size(ctx->saved_data["bias_sizes"].toIntVector());
    }
    return {gx, gw, gb};
  }
};

class SlicedMatMulFunction : public torch::autograd::Function<SlicedMatMulFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w) {
    ctx->save_for_backward({x, w});
    return SlicedForward(x, w, at::Tensor());
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    at::Tensor gx, gw;
    SlicedBackward(ctx, grads[0], &gx, &gw);
    return {gx, gw};
  }
};

bool Sliceable(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  if (x.dim() != 2 || w.dim() != 2 || x.size(1) != w.size(1)) return false;
  if (!x.device().is_cpu() || x.scalar_type() != at::kFloat || w.scalar_type() != at::kFloat ||
      !w.device().is_cpu()) {
    return false;
  }
  if (b.defined() && (b.scalar_type() != at::kFloat || !b.device().is_cpu() || b.dim() != 1)) {
    return false;
  }
  if (at::autocast::is_cpu_enabled() || at::autocast::is_enabled()) return false;
  if (!BlasOnCallingThread()) return false;
  return Slices(x.size(0), Macs(x, w)) > 1;
}

}  // namespace

at::Tensor Linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  if (!Sliceable(x, w, b)) return at::linear(x, w, b);
  const bool grad = at::GradMode::is_enabled() &&
                    (x.requires_grad() || w.requires_grad() || (b.defined() && b.requires_grad()));
  if (!grad) return SlicedForward(x, w, b);
  return b.defined() ? SlicedLinearFunction::apply(x, w, b) : SlicedMatMulFunction::apply(x, w);
}

}  // namespace compress
