// Quantization math: affine parameters, symmetric per-channel weights, int32 biases and
// the streaming range calibrators.
#include "quantization/quant_math.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "compress/base/error.h"
#include "compress/ir/graph.h"

namespace compress {

QuantRange RangeOf(at::ScalarType type) {
  switch (type) {
    case at::kByte: return {0, 255};
    case at::kChar: return {-128, 127};
    case at::kInt: return {std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max()};
    default:
      throw Error(ErrorKind::kUnsupported,
                  "quantization to " + DtypeName(type) + " is not supported (uint8, int8, int32)");
  }
}

AffineParams AsymmetricParams(double min, double max, at::ScalarType type) {
  const QuantRange r = RangeOf(type);
  min = std::min(min, 0.0);
  max = std::max(max, 0.0);
  AffineParams p;
  // The scale is stored as float32; compute everything from that rounded value.
  p.scale = static_cast<float>((max - min) / static_cast<double>(r.qmax - r.qmin));
  if (!(p.scale > 0) || !std::isfinite(p.scale)) p.scale = 1.0;
  const double zp = std::nearbyint(static_cast<double>(r.qmin) - min / p.scale);
  p.zero_point = static_cast<int64_t>(std::clamp(zp, static_cast<double>(r.qmin),
                                                 static_cast<double>(r.qmax)));
  return p;
}

WeightQuant QuantizeWeightSymmetric(const Tensor& w, int64_t axis, const Tensor& min_scale,
                                    int64_t qmax) {
  if (qmax < 1 || qmax > 127) {
    throw Error(ErrorKind::kInternal, "QuantizeWeightSymmetric: qmax " + std::to_string(qmax) +
                                          " outside [1, 127]");
  }
  torch::NoGradGuard no_grad;
  const Tensor wf = w.detach().to(torch::kFloat);
  WeightQuant out;
  out.axis = axis;
  Tensor absmax;
  if (axis >= 0) {
    std::vector<int64_t> reduce;
    for (int64_t d = 0; d < wf.dim(); ++d) {
      if (d != axis) reduce.push_back(d);
    }
    absmax = reduce.empty() ? wf.abs() : wf.abs().amax(reduce);
  } else {
    absmax = wf.abs().max();
  }
  Tensor scale = absmax / static_cast<float>(qmax);
  if (min_scale.defined()) scale = torch::maximum(scale, min_scale.to(scale.options()));
  scale = torch::where(scale > 0, scale, torch::ones_like(scale));
  out.scale = scale.contiguous();
  Tensor s = scale;
  if (axis >= 0) {
    std::vector<int64_t> shape(wf.dim(), 1);
    shape[axis] = -1;
    s = scale.reshape(shape);
  }
  // The same float32 arithmetic QuantizeLinear performs: round half to even, saturate.
  out.q = torch::clamp(torch::round(wf / s), -qmax, qmax).to(torch::kChar);
  return out;
}

Tensor BiasMinWeightScale(const Tensor& bias, double input_scale) {
  return bias.detach().to(torch::kDouble).abs() / (input_scale * std::ldexp(1.0, 30));
}

Tensor QuantizeBias(const Tensor& bias, double input_scale, const Tensor& weight_scale,
                    const std::string& where) {
  torch::NoGradGuard no_grad;
  // The bias scale as the runtime sees it: a float32 product.
  const Tensor bscale = (weight_scale.to(torch::kFloat) * static_cast<float>(input_scale));
  const Tensor q = torch::round(bias.detach().to(torch::kDouble) / bscale.to(torch::kDouble));
  const double limit = std::ldexp(1.0, 31) - 1;
  if (q.numel() > 0 && q.abs().max().item<double>() > limit) {
    throw Error(ErrorKind::kNumeric, where + ": bias does not fit int32 at input scale " +
                                         std::to_string(input_scale) +
                                         "; the weight scale must be raised");
  }
  return q.to(torch::kInt);
}

Tensor FakeQuantize(const Tensor& x, const AffineParams& p, at::ScalarType type) {
  const QuantRange r = RangeOf(type);
  const float s = static_cast<float>(p.scale);
  Tensor q = torch::clamp(torch::round(x / s) + static_cast<double>(p.zero_point),
                          static_cast<double>(r.qmin), static_cast<double>(r.qmax));
  return (q - static_cast<double>(p.zero_point)) * s;
}

// ---- calibration -------------------------------------------------------------------

const std::vector<std::pair<std::string, CalibrationMethod>>& CalibrationMethods() {
  static const std::vector<std::pair<std::string, CalibrationMethod>> methods = {
      {"minmax", CalibrationMethod::kMinMax},
      {"percentile", CalibrationMethod::kPercentile},
      {"mse", CalibrationMethod::kMse}};
  return methods;
}

const std::string& CalibrationMethodName(CalibrationMethod method) {
  for (const auto& [name, m] : CalibrationMethods()) {
    if (m == method) return name;
  }
  throw Error(ErrorKind::kInternal, "unnamed calibration method");
}

void RangeCalibrator::ObserveRange(const Tensor& x, const std::string& where) {
  if (x.numel() == 0) return;
  const Tensor xf = x.detach().to(torch::kFloat);
  const auto [lo, hi] = torch::aminmax(xf);
  const double a = lo.item<double>(), b = hi.item<double>();
  if (!std::isfinite(a) || !std::isfinite(b)) {
    throw Error(ErrorKind::kNumeric, where + ": calibration data produces NaN or Inf (range [" +
                                         std::to_string(a) + ", " + std::to_string(b) + "])");
  }
  min_ = count_ == 0 ? a : std::min(min_, a);
  max_ = count_ == 0 ? b : std::max(max_, b);
  count_ += x.numel();
}

void RangeCalibrator::ObserveHistogram(const Tensor& x) {
  if (x.numel() == 0 || !(max_ > min_)) return;
  if (!histogram_.defined()) {
    lo_ = min_;
    hi_ = max_;
    histogram_ = torch::zeros({bins_}, torch::kDouble);
  }
  const Tensor xf = x.detach().to(torch::kFloat).flatten();
  histogram_ += torch::histc(xf, bins_, lo_, hi_).to(torch::kDouble).cpu();
}

double HistogramQuantMse(const Tensor& histogram, double lo, double hi, double clip_lo,
                         double clip_hi, at::ScalarType type) {
  const int64_t bins = histogram.numel();
  const double width = (hi - lo) / static_cast<double>(bins);
  const Tensor centers =
      torch::arange(bins, torch::kDouble) * width + (lo + 0.5 * width);
  const AffineParams p = AsymmetricParams(clip_lo, clip_hi, type);
  const Tensor dq = FakeQuantize(centers, p, type);
  return (histogram * (centers - dq).square()).sum().item<double>() /
         std::max(1.0, histogram.sum().item<double>());
}

std::pair<double, double> RangeCalibrator::Range(CalibrationMethod method, double percentile,
                                                 at::ScalarType type) const {
  double lo = std::min(min_, 0.0), hi = std::max(max_, 0.0);
  if (method == CalibrationMethod::kMinMax || !histogram_.defined()) return {lo, hi};
  const int64_t bins = histogram_.numel();
  const double width = (hi_ - lo_) / static_cast<double>(bins);
  if (method == CalibrationMethod::kPercentile) {
    // Clip each tail so that (100 - percentile)% of the values fall outside it.
    const Tensor cum = histogram_.cumsum(0);
    const double total = cum[-1].item<double>();
    const double tail = total * (100.0 - percentile) / 100.0;
    const auto* c = cum.data_ptr<double>();
    int64_t top = bins - 1;
    while (top > 0 && total - c[top - 1] <= tail) --top;
    int64_t bottom = 0;
    while (bottom < bins - 1 && c[bottom] <= tail) ++bottom;
    hi = std::min(hi, lo_ + static_cast<double>(top + 1) * width);
    lo = std::max(lo, lo_ + static_cast<double>(bottom) * width);
    return {std::min(lo, 0.0), std::max(hi, 0.0)};
  }
  // MSE: shrink the observed range by r = k / 128 and keep the least squared error.
  double best = std::numeric_limits<double>::infinity();
  std::pair<double, double> best_range{lo, hi};
  for (int k = 128; k >= 16; --k) {
    const double r = k / 128.0;
    const double mse = HistogramQuantMse(histogram_, lo_, hi_, lo * r, hi * r, type);
    if (mse < best) {
      best = mse;
      best_range = {lo * r, hi * r};
    }
  }
  return best_range;
}

}  // namespace compress
