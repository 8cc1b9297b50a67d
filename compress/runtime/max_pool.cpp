// Training-time 2x2/stride-2 max pooling (the zoo's pools). LibTorch 1.13's NCHW kernel
// walks each window with an int64 index per output; here one loop over a pair of input
// rows computes the maxima and the winner (0..3), vectorised, and the backward writes
// all four gradient slots of each window, so no zero-filled buffer and no scatter.
// The winner is an int32, as wide as the floats: with a byte the vectoriser needs 16+
// outputs per row (lenet5's rows have 14 and 5) and the loop ran scalar, 7x slower.
// Baseline SSE2 vectors, no wider clones: rows this short fill 4 lanes, not 8 or 16.
#include "compress/runtime/max_pool.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <cstdint>

namespace compress {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// One output row: windows (r0[2j], r0[2j+1], r1[2j], r1[2j+1]) in LibTorch's scan order.
// LibTorch's rule, `if (val > max || isnan(val))` from a start of (-inf, first element):
// a strict maximum moves the winner, a tie keeps the earlier, every NaN moves it (so the
// last NaN wins and the value is NaN). Starting from the first element instead of -inf
// gives the same winner and value in every case (an all -inf window keeps element 0).
template <bool kWinner>
void ForwardRow(const float* __restrict r0, const float* __restrict r1, float* __restrict y,
                int32_t* __restrict winner, int64_t ow) {
  for (int64_t j = 0; j < ow; ++j) {
    const float a = r0[2 * j], b = r0[2 * j + 1], c = r1[2 * j], d = r1[2 * j + 1];
    float m = a;
    int32_t k = 0;
    const bool tb = (b > m) | (b != b);
    m = tb ? b : m;
    k = tb ? 1 : k;
    const bool tc = (c > m) | (c != c);
    m = tc ? c : m;
    k = tc ? 2 : k;
    const bool td = (d > m) | (d != d);
    m = td ? d : m;
    k = td ? 3 : k;
    y[j] = m;
    if constexpr (kWinner) winner[j] = k;
  }
}

// The gradient of one output row into its two input rows: g to the winner, 0 elsewhere.
// Written as four selects into temporaries, then four stores: GCC 12 vectorises this
// form (75 us for lenet5's first pool, one thread) but not a select in each store
// (860 us).
void BackwardRow(const float* __restrict g, const int32_t* __restrict winner, float* __restrict d0,
                 float* __restrict d1, int64_t ow) {
  for (int64_t j = 0; j < ow; ++j) {
    const int32_t k = winner[j];
    const float v = g[j];
    const float t0 = k == 0 ? v : 0.0f;
    const float t1 = k == 1 ? v : 0.0f;
    const float t2 = k == 2 ? v : 0.0f;
    const float t3 = k == 3 ? v : 0.0f;
    d0[2 * j] = t0;
    d0[2 * j + 1] = t1;
    d1[2 * j] = t2;
    d1[2 * j + 1] = t3;
  }
}

// fn(output_row) for every output row of every (n, c) plane, in parallel.
template <typename Fn>
void ForEachOutputRow(int64_t rows, int64_t ow, const Fn& fn) {
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 14) / std::max<int64_t>(ow, 1));
  at::parallel_for(0, rows, grain, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) fn(r);
  });
}

// y = max_pool2d(x, 2, 2), and each window's winner when `winner` is defined.
void Forward(const at::Tensor& x, const at::Tensor& y, const at::Tensor& winner) {
  const int64_t w = x.size(3), ow = y.size(3);
  const float* xp = x.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  int32_t* kp = winner.defined() ? winner.data_ptr<int32_t>() : nullptr;
  // Output row r of all planes: plane r / oh, row r % oh; its input rows start at 2r*w.
  ForEachOutputRow(y.numel() / std::max<int64_t>(ow, 1), ow, [&](int64_t r) {
    const float* r0 = xp + 2 * r * w;
    if (kp != nullptr) {
      ForwardRow<true>(r0, r0 + w, yp + r * ow, kp + r * ow, ow);
    } else {
      ForwardRow<false>(r0, r0 + w, yp + r * ow, nullptr, ow);
    }
  });
}

at::Tensor PooledLike(const at::Tensor& x, at::ScalarType dtype) {
  return at::empty({x.size(0), x.size(1), x.size(2) / 2, x.size(3) / 2}, x.options().dtype(dtype));
}

class MaxPool2x2Function : public torch::autograd::Function<MaxPool2x2Function> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x) {
    const at::Tensor xc = x.contiguous();
    at::Tensor y = PooledLike(xc, at::kFloat);
    at::Tensor winner = PooledLike(xc, at::kInt);
    Forward(xc, y, winner);
    ctx->save_for_backward({winner});
    ctx->saved_data["input_sizes"] = xc.sizes().vec();
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor winner = ctx->get_saved_variables()[0];
    const at::Tensor g = grads[0].contiguous();
    const auto sizes = ctx->saved_data["input_sizes"].toIntVector();
    const int64_t w = sizes[3], ow = w / 2;
    at::Tensor dx = at::empty(sizes, g.options());
    const float* gp = g.data_ptr<float>();
    const int32_t* kp = winner.data_ptr<int32_t>();
    float* dp = dx.data_ptr<float>();
    ForEachOutputRow(winner.numel() / std::max<int64_t>(ow, 1), ow, [&](int64_t r) {
      float* d0 = dp + 2 * r * w;
      BackwardRow(gp + r * ow, kp + r * ow, d0, d0 + w, ow);
    });
    return {dx};
  }
};

}  // namespace

bool MaxPool2x2Applies(const at::Tensor& x) {
  return x.dim() == 4 && x.device().is_cpu() && x.scalar_type() == at::kFloat &&
         x.size(2) > 0 && x.size(3) > 0 && x.size(2) % 2 == 0 && x.size(3) % 2 == 0 &&
         x.size(0) > 0 && x.size(1) > 0;
}

at::Tensor MaxPool2x2(const at::Tensor& x) {
  if (at::GradMode::is_enabled() && x.requires_grad()) return MaxPool2x2Function::apply(x);
  const at::Tensor xc = x.contiguous();
  at::Tensor y = PooledLike(xc, at::kFloat);
  Forward(xc, y, at::Tensor());
  return y;
}

}  // namespace compress
