// Fake quantization as a LibTorch autograd function (straight-through and LSQ gradients).
#include "compress/runtime/fake_quant.h"

#include <torch/torch.h>

#include <cmath>
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
    ctx->saved_data["axis"] = axis;
    ctx->saved_data["qmin"] = qmin;
    ctx->saved_data["qmax"] = qmax;
    ctx->saved_data["clipped"] = clipped;
    ctx->saved_data["grad_scale"] = grad_scale;
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

}  // namespace

Tensor FakeQuantizeSte(const Tensor& x, const Tensor& scale, const Tensor& zero_point,
                    const FakeQuantSpec& spec) {
  // The bound outside the Function: clamp_max's own gradient is zero above it.
  const Tensor s = spec.scale_max > 0 ? scale.clamp_max(spec.scale_max) : scale;
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
