// Fake quantization as a LibTorch autograd function (straight-through and LSQ gradients).
#include "compress/runtime/fake_quant.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace compress {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// `t` (a scalar or 1-D tensor of per-channel values) shaped to broadcast against a
// tensor of rank `rank` along `axis`.
Tensor Along(const Tensor& t, int64_t axis, int64_t rank) {
  if (axis < 0 || t.dim() == 0) return t.reshape({});
  std::vector<int64_t> shape(rank, 1);
  shape[axis] = -1;
  return t.reshape(shape);
}

// Sums `t` down to the shape of a scale along `axis` (all dims but axis; all dims for -1).
Tensor SumToScale(const Tensor& t, int64_t axis, const Tensor& like) {
  if (axis < 0 || like.dim() == 0) return t.sum().reshape(like.sizes());
  std::vector<int64_t> dims;
  for (int64_t d = 0; d < t.dim(); ++d) {
    if (d != axis) dims.push_back(d);
  }
  return (dims.empty() ? t : t.sum(dims)).reshape(like.sizes());
}

// The FakeQuantSpec fields both functions' backward passes read.
void SaveSpec(AutogradContext* ctx, int64_t axis, double qmin, double qmax, bool clipped,
              double grad_scale) {
  ctx->saved_data["axis"] = axis;
  ctx->saved_data["qmin"] = qmin;
  ctx->saved_data["qmax"] = qmax;
  ctx->saved_data["clipped"] = clipped;
  ctx->saved_data["grad_scale"] = grad_scale;
}

class FakeQuantFunction : public torch::autograd::Function<FakeQuantFunction> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& scale,
                        const Tensor& zero_point, int64_t axis, double qmin, double qmax,
                        bool clipped, double grad_scale) {
    const int64_t rank = x.dim();
    const Tensor s = Along(scale, axis, rank).to(x.scalar_type());
    const Tensor z = Along(zero_point, axis, rank).to(x.scalar_type());
    // The arithmetic of QuantizeLinear then DequantizeLinear (ops.cpp): x / s, round
    // half to even, + z, saturate; then (q - z) * s.
    const Tensor unclamped = torch::round(x / s) + z;
    const Tensor q = unclamped.clamp(qmin, qmax);
    ctx->save_for_backward({x, scale, zero_point});
    SaveSpec(ctx, axis, qmin, qmax, clipped, grad_scale);
    return (q - z) * s;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor& x = saved[0];
    const Tensor& scale = saved[1];
    const Tensor& zero_point = saved[2];
    const int64_t axis = ctx->saved_data["axis"].toInt();
    const double qmin = ctx->saved_data["qmin"].toDouble();
    const double qmax = ctx->saved_data["qmax"].toDouble();
    const bool clipped = ctx->saved_data["clipped"].toBool();
    const double grad_scale = ctx->saved_data["grad_scale"].toDouble();
    const Tensor& g = grads[0];
    const int64_t rank = x.dim();
    const Tensor s = Along(scale, axis, rank).to(x.scalar_type());
    const Tensor z = Along(zero_point, axis, rank).to(x.scalar_type());
    const Tensor v = x / s;
    const Tensor unclamped = torch::round(v) + z;
    const Tensor below = unclamped < qmin;
    const Tensor above = unclamped > qmax;
    const Tensor inside = torch::logical_not(torch::logical_or(below, above));

    Tensor grad_x = clipped ? g * inside.to(g.scalar_type()) : g;
    Tensor grad_scale_out;
    if (ctx->needs_input_grad(1)) {
      // LSQ: d y / d s = round(v) - v inside; (qmin - z) or (qmax - z) where saturated.
      Tensor d = torch::where(inside, torch::round(v) - v,
                              torch::where(below, qmin - z, qmax - z));
      grad_scale_out = SumToScale(g * d, axis, scale) * grad_scale;
      grad_scale_out = grad_scale_out.to(scale.scalar_type());
    }
    return {grad_x, grad_scale_out, Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

// ---- the fused CPU kernel ------------------------------------------------------------
//
// The composite function above runs six to ten memory-bound ATen ops per call and saves
// the float input for its backward. On a CPU float32 tensor one loop does the forward and
// records, one byte per element, whether the value fell inside the range: the clipped
// STE's backward is then one multiply, and nothing activation-sized but that byte is kept.

// Round half to even for |v| < 2^22 by the float32 addition of 1.5 * 2^23 (the sum lies
// in [2^23, 2^24], where float32's spacing is exactly 1, and IEEE addition rounds to
// nearest, ties to even; 1.5 * 2^23 is even, so the parity is the rounded value's).
// Larger |v| are not rounded exactly, but they stay beyond every 8-bit range (within 2 of
// v, same sign), so after the saturation the result is that of std::nearbyint, as are
// infinities and NaN (which pass through the two additions unchanged).
// Requires the default rounding mode and no -ffast-math (which would fold the two).
constexpr float kRoundShift = 12582912.0f;  // 1.5 * 2^23

inline float RoundHalfEven(float v) { return (v + kRoundShift) - kRoundShift; }

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
// One clone per vector width; the loader picks the widest the CPU has (an ifunc). The
// loops are elementwise IEEE float arithmetic, so every clone gives the same bits.
#define MCOMPRESS_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define MCOMPRESS_VECTOR_CLONES
#endif

// y = (clamp(rne(x / s) + z, qmin, qmax) - z) * s over one run sharing a scale, and where
// `inside` is not null, whether rne(x / s) + z lay within [qmin, qmax] (NaN counts as
// inside, as in the composite backward: its gradient passes).
MCOMPRESS_VECTOR_CLONES
void FakeQuantRun(const float* x, float* y, uint8_t* inside, int64_t n, float s, float z,
                  float qmin, float qmax) {
  if (inside != nullptr) {
    for (int64_t i = 0; i < n; ++i) {
      const float u = RoundHalfEven(x[i] / s) + z;
      float q = u < qmin ? qmin : u;
      q = q > qmax ? qmax : q;
      y[i] = (q - z) * s;
      inside[i] = static_cast<uint8_t>(!(u < qmin) & !(u > qmax));
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      const float u = RoundHalfEven(x[i] / s) + z;
      float q = u < qmin ? qmin : u;
      q = q > qmax ? qmax : q;
      y[i] = (q - z) * s;
    }
  }
}

// grad_x = g * inside (as floats: a NaN gradient stays NaN where it passes, and becomes
// NaN * 0 = NaN elsewhere, as the composite's multiply).
MCOMPRESS_VECTOR_CLONES
void MaskGradientRun(const float* g, const uint8_t* inside, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = g[i] * static_cast<float>(inside[i]);
}

// The LSQ backward over one run: grad_x (clipped or plain) and g * dy/ds, whose sum per
// scale ATen takes afterwards (the same sum the composite takes).
MCOMPRESS_VECTOR_CLONES
void LsqBackwardRun(const float* x, const float* g, float* grad_x, float* g_ds, int64_t n,
                    float s, float z, float qmin, float qmax, bool clipped) {
  const float below_d = qmin - z, above_d = qmax - z;
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i] / s;
    const float r = RoundHalfEven(v);
    const float u = r + z;
    const bool below = u < qmin, above = u > qmax;
    const bool in = !below & !above;
    const float d = in ? r - v : (below ? below_d : above_d);
    g_ds[i] = g[i] * d;
    grad_x[i] = clipped ? g[i] * static_cast<float>(in) : g[i];
  }
}

// Elements per parallel chunk: these loops are memory-bound, so a chunk is large enough
// to amortise a task and small enough for two cores to share an activation.
constexpr int64_t kGrain = 1 << 14;

// How a contiguous tensor splits into runs sharing one scale: `outer` x `channels` runs
// of `inner` elements (one run of numel elements for a single scale).
struct Runs {
  int64_t channels = 1, inner = 1;
};

Runs RunsOf(const Tensor& x, int64_t axis, int64_t scales) {
  Runs r;
  if (scales == 1) {
    r.inner = std::max<int64_t>(x.numel(), 1);
    return r;
  }
  r.channels = scales;
  for (int64_t d = axis + 1; d < x.dim(); ++d) r.inner *= x.size(d);
  return r;
}

// fn(offset, length, channel) over the runs of [0, numel), in parallel chunks.
template <typename Fn>
void ForEachRun(int64_t numel, const Runs& runs, const Fn& fn) {
  at::parallel_for(0, numel, kGrain, [&](int64_t b, int64_t e) {
    while (b < e) {
      const int64_t row = b / runs.inner;
      const int64_t end = std::min(e, (row + 1) * runs.inner);
      fn(b, end - b, row % runs.channels);
      b = end;
    }
  });
}

// The fused forward and backward for float32 on the CPU; same gradients as
// FakeQuantFunction (whose arithmetic the loops above repeat element by element).
class FusedFakeQuantFunction : public torch::autograd::Function<FusedFakeQuantFunction> {
 public:
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& scale,
                        const Tensor& zero_point, int64_t axis, double qmin, double qmax,
                        bool clipped, double grad_scale) {
    const Tensor xc = x.contiguous();
    const Tensor s = scale.contiguous(), z = zero_point.contiguous();
    const Runs runs = RunsOf(xc, axis, s.numel());
    const bool learn = scale.requires_grad();
    const bool keep_mask = !learn && clipped && x.requires_grad();
    Tensor y = torch::empty_like(xc);
    Tensor inside = keep_mask ? torch::empty(xc.sizes(), xc.options().dtype(torch::kByte)) : Tensor();
    const float* xp = xc.data_ptr<float>();
    float* yp = y.data_ptr<float>();
    uint8_t* mp = keep_mask ? inside.data_ptr<uint8_t>() : nullptr;
    const float* sp = s.data_ptr<float>();
    const float* zp = z.data_ptr<float>();
    const float lo = static_cast<float>(qmin), hi = static_cast<float>(qmax);
    ForEachRun(xc.numel(), runs, [&](int64_t at, int64_t n, int64_t c) {
      FakeQuantRun(xp + at, yp + at, mp == nullptr ? nullptr : mp + at, n, sp[c], zp[c], lo, hi);
    });
    if (learn) {
      ctx->save_for_backward({xc, scale, zero_point});
    } else {
      ctx->save_for_backward({inside});
    }
    SaveSpec(ctx, axis, qmin, qmax, clipped, grad_scale);
    ctx->saved_data["learn"] = learn;
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const bool clipped = ctx->saved_data["clipped"].toBool();
    const Tensor g = grads[0].contiguous();
    const float* gp = g.data_ptr<float>();
    if (!ctx->saved_data["learn"].toBool()) {
      Tensor grad_x = g;
      if (clipped) {
        const Tensor& inside = saved[0];
        grad_x = torch::empty_like(g);
        const uint8_t* mp = inside.data_ptr<uint8_t>();
        float* op = grad_x.data_ptr<float>();
        at::parallel_for(0, g.numel(), kGrain, [&](int64_t b, int64_t e) {
          MaskGradientRun(gp + b, mp + b, op + b, e - b);
        });
      }
      return {grad_x, Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
    }
    const Tensor& x = saved[0];
    const Tensor s = saved[1].contiguous(), z = saved[2].contiguous();
    const int64_t axis = ctx->saved_data["axis"].toInt();
    const float lo = static_cast<float>(ctx->saved_data["qmin"].toDouble());
    const float hi = static_cast<float>(ctx->saved_data["qmax"].toDouble());
    const Runs runs = RunsOf(x, axis, s.numel());
    Tensor grad_x = torch::empty_like(x);
    Tensor g_ds = torch::empty_like(x);
    const float* xp = x.data_ptr<float>();
    float* gxp = grad_x.data_ptr<float>();
    float* dp = g_ds.data_ptr<float>();
    const float* sp = s.data_ptr<float>();
    const float* zp = z.data_ptr<float>();
    ForEachRun(x.numel(), runs, [&](int64_t at, int64_t n, int64_t c) {
      LsqBackwardRun(xp + at, gp + at, gxp + at, dp + at, n, sp[c], zp[c], lo, hi, clipped);
    });
    Tensor grad_scale_out;
    if (ctx->needs_input_grad(1)) {
      grad_scale_out = SumToScale(g_ds, axis, saved[1]) * ctx->saved_data["grad_scale"].toDouble();
      grad_scale_out = grad_scale_out.to(saved[1].scalar_type());
    }
    return {grad_x, grad_scale_out, Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

// Whether the fused function computes this call: float32 on the CPU, and a scale that is
// one value or one per channel of `axis`.
bool Fusable(const Tensor& x, const Tensor& scale, const Tensor& zero_point, int64_t axis) {
  if (!x.device().is_cpu() || !scale.device().is_cpu() || !zero_point.device().is_cpu()) return false;
  if (x.scalar_type() != at::kFloat || scale.scalar_type() != at::kFloat ||
      zero_point.scalar_type() != at::kFloat) {
    return false;
  }
  if (scale.numel() != zero_point.numel() || scale.dim() > 1 || zero_point.dim() > 1) return false;
  if (scale.numel() == 1) return true;
  return axis >= 0 && axis < x.dim() && x.size(axis) == scale.numel();
}

}  // namespace

Tensor FakeQuantizeSte(const Tensor& x, const Tensor& scale, const Tensor& zero_point,
                    const FakeQuantSpec& spec) {
  // The bound outside the Function: clamp_max's own gradient is zero above it.
  const Tensor s = spec.scale_max > 0 ? scale.clamp_max(spec.scale_max) : scale;
  if (Fusable(x, s, zero_point, spec.axis)) {
    return FusedFakeQuantFunction::apply(x, s, zero_point, spec.axis, spec.qmin, spec.qmax,
                                         spec.clipped, spec.grad_scale);
  }
  return FakeQuantFunction::apply(x, s, zero_point, spec.axis, spec.qmin, spec.qmax,
                                  spec.clipped, spec.grad_scale);
}

Tensor SymmetricWeightScale(const Tensor& w, int64_t axis, double qmax) {
  torch::NoGradGuard no_grad;
  const Tensor a = w.detach().abs();
  Tensor absmax;
  if (axis >= 0) {
    std::vector<int64_t> dims;
    for (int64_t d = 0; d < a.dim(); ++d) {
      if (d != axis) dims.push_back(d);
    }
    absmax = dims.empty() ? a : a.amax(dims);
  } else {
    absmax = a.max();
  }
  // The float32 division of QuantizeWeightSymmetric (quant_math.cpp), so the scales agree.
  Tensor scale = absmax.to(torch::kFloat) / static_cast<float>(qmax);
  return torch::where(scale > 0, scale, torch::ones_like(scale));
}

double LsqGradScale(int64_t elements_per_scale, double qp) {
  return 1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(elements_per_scale, 1)) *
                         std::max(qp, 1.0));
}

}  // namespace compress
