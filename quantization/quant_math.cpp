// Quantization math: affine parameters, symmetric per-channel weights, int32 biases and
// the streaming range calibrators (min-max, percentile, MSE, entropy).
#include "quantization/quant_math.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "compress/base/error.h"
#include "compress/ir/graph.h"

namespace compress {
namespace {

// What a zero bin of P or Q becomes before the divergence (ONNX Runtime and MXNet's
// entropy calibrators smooth with the same constant).
constexpr double kEntropyEps = 1e-4;

// KL(P || Q) of the candidate of `i` bins over h[0, n) (see EntropyThresholdBin in the
// header); `prefix[k]` = h[0] + ... + h[k - 1]; `p` and `q` are scratch of size >= i.
double CandidateDivergence(const double* h, int64_t n, const double* prefix, int64_t i,
                           int64_t levels, std::vector<double>& p, std::vector<double>& q) {
  const double total = prefix[n], kept = prefix[i];
  // With bins [0, i - 1) empty, P and Q would both be all in bin i - 1 (or Q undefined):
  // a divergence of 0 for clipping every value to one point. Not a candidate.
  if (!(prefix[i - 1] > 0)) return std::numeric_limits<double>::infinity();
  // Reference P: the first i bins, the clipped outliers added to the last one.
  std::copy(h, h + i, p.begin());
  p[i - 1] += total - kept;
  // Candidate Q: the first i bins merged into `levels` groups, bin j in group
  // floor(j * levels / i), i.e. group g = [ceil(g * i / levels), ceil((g + 1) * i / levels));
  // each group's mass goes evenly to its bins that are non-zero in P.
  for (int64_t g = 0; g < levels; ++g) {
    const int64_t begin = (g * i + levels - 1) / levels;
    const int64_t end = ((g + 1) * i + levels - 1) / levels;
    int64_t nonzero = 0;
    for (int64_t j = begin; j < end; ++j) nonzero += p[j] > 0;
    const double share = nonzero > 0 ? (prefix[end] - prefix[begin]) / nonzero : 0.0;
    for (int64_t j = begin; j < end; ++j) q[j] = p[j] > 0 ? share : 0.0;
  }
  // Normalise (P sums to total, Q to kept), zeros -> eps, renormalise by 1 + zeros * eps.
  // With a = P' * sp and b = Q' * sq: KL = sum(a/sp * ln(a/b * sq/sp))
  //                                      = sum(a ln(a/b)) / sp + ln(sq/sp), as sum(a) = sp.
  int64_t p_zeros = 0, q_zeros = 0;
  double sum = 0;
  for (int64_t j = 0; j < i; ++j) {
    const double a = p[j] > 0 ? p[j] / total : kEntropyEps;
    const double b = q[j] > 0 ? q[j] / kept : kEntropyEps;
    p_zeros += !(p[j] > 0);
    q_zeros += !(q[j] > 0);
    if (p[j] > 0 || q[j] > 0) sum += a * std::log(a / b);
  }
  const double sp = 1.0 + static_cast<double>(p_zeros) * kEntropyEps;
  const double sq = 1.0 + static_cast<double>(q_zeros) * kEntropyEps;
  return sum / sp + std::log(sq / sp);
}

// The histogram as contiguous CPU doubles with its prefix sums (prefix[k] = sum of the
// first k bins).
struct Prefixed {
  Tensor counts;
  std::vector<double> prefix;
};
Prefixed PrefixSums(const Tensor& histogram) {
  Prefixed out;
  out.counts = histogram.detach().to(torch::kCPU, torch::kDouble).flatten().contiguous();
  const int64_t n = out.counts.numel();
  const double* h = out.counts.data_ptr<double>();
  out.prefix.assign(n + 1, 0.0);
  for (int64_t k = 0; k < n; ++k) out.prefix[k + 1] = out.prefix[k] + h[k];
  return out;
}

void CheckLevels(int64_t levels) {
  if (levels < 1) {
    throw Error(ErrorKind::kInternal,
                "entropy calibration: levels " + std::to_string(levels) + " < 1");
  }
}

// Entropy clip of the positive side of a histogram of `c[0, bins)` over [lo, hi] (hi > 0):
// the upper end of the range, in (0, hi]. The side's bins count outward from the bin
// holding 0, of which only the part above 0 counts; a histogram that starts above 0 is
// preceded by empty bins down to 0. So that the side stays O(bins) even for data far from
// 0, more than 2 * bins such bins are merged `merge` at a time.
double PositiveEntropyClip(const double* c, int64_t bins, double lo, double hi, int64_t levels) {
  const double width = (hi - lo) / static_cast<double>(bins);
  const double zero_at = -lo / width;  // where 0 lies, in bins from lo
  const double k0d = std::floor(zero_at);
  const double grid = static_cast<double>(bins) - k0d;  // bins from the one holding 0 on
  if (!(grid >= 1) || !(grid < 1e15)) return hi;
  const int64_t k0 = static_cast<int64_t>(k0d);
  const double max_side = 2.0 * static_cast<double>(bins);
  const int64_t merge = grid <= max_side ? 1 : static_cast<int64_t>(std::ceil(grid / max_side));
  const int64_t n = static_cast<int64_t>(std::ceil(grid / static_cast<double>(merge)));
  Tensor side = torch::zeros({n}, torch::kDouble);
  double* s = side.data_ptr<double>();
  for (int64_t k = std::max<int64_t>(k0, 0); k < bins; ++k) {
    const double part = k == k0 ? k0d + 1.0 - zero_at : 1.0;  // the share above 0
    s[(k - k0) / merge] += c[k] * part;
  }
  // Values at 0 are exact whatever the range (0 is a level), but a spike of them (ReLU
  // zeros, pruned channels) spread over the first group of Q would dominate every
  // divergence and push the clip down to the fewest bins. So bin 0 takes its
  // neighbour's count (as NVIDIA's pytorch-quantization entropy calibrator does); this
  // also evens out the share of the bin split at 0.
  if (n > 1) s[0] = s[1];
  const int64_t chosen = EntropyThresholdBin(side, levels);
  // The outer edge of side bin chosen - 1.
  const double clip = lo + static_cast<double>(k0 + chosen * merge) * width;
  return std::clamp(clip, 0.0, hi);
}

// Entropy range of a histogram over [lo, hi] (see RangeCalibrator::Range): each side
// clipped on its own, with all `levels` for a one-sided histogram and half each otherwise.
std::pair<double, double> EntropyRange(const Tensor& histogram, double lo, double hi,
                                       int64_t levels) {
  const Tensor h = histogram.to(torch::kDouble).contiguous();
  const int64_t bins = h.numel();
  const bool positive = hi > 0, negative = lo < 0;
  const int64_t side_levels = positive && negative ? levels / 2 : levels;
  double clip_lo = 0, clip_hi = 0;
  if (positive) clip_hi = PositiveEntropyClip(h.data_ptr<double>(), bins, lo, hi, side_levels);
  if (negative) {
    // The negative side is the positive side of -x: the bins reversed over [-hi, -lo].
    const Tensor mirrored = h.flip(0).contiguous();
    clip_lo = -PositiveEntropyClip(mirrored.data_ptr<double>(), bins, -hi, -lo, side_levels);
  }
  return {std::min(clip_lo, 0.0), std::max(clip_hi, 0.0)};
}

}  // namespace

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
      {"mse", CalibrationMethod::kMse},
      {"entropy", CalibrationMethod::kEntropy}};
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

int64_t EntropyThresholdBin(const Tensor& histogram, int64_t levels) {
  CheckLevels(levels);
  const Prefixed h = PrefixSums(histogram);
  const int64_t n = h.counts.numel();
  if (n <= levels || !(h.prefix[n] > 0)) return n;
  std::vector<double> p(n), q(n);
  int64_t best_bins = n;
  double best = std::numeric_limits<double>::infinity();
  for (int64_t i = levels; i <= n; ++i) {
    const double kl =
        CandidateDivergence(h.counts.data_ptr<double>(), n, h.prefix.data(), i, levels, p, q);
    if (kl < best) {
      best = kl;
      best_bins = i;
    }
  }
  return best_bins;
}

double EntropyDivergence(const Tensor& histogram, int64_t bins, int64_t levels) {
  CheckLevels(levels);
  const Prefixed h = PrefixSums(histogram);
  const int64_t n = h.counts.numel();
  if (bins < levels || bins > n) {
    throw Error(ErrorKind::kInternal, "entropy calibration: candidate of " +
                                          std::to_string(bins) + " bins outside [" +
                                          std::to_string(levels) + ", " + std::to_string(n) + "]");
  }
  std::vector<double> p(bins), q(bins);
  return CandidateDivergence(h.counts.data_ptr<double>(), n, h.prefix.data(), bins, levels, p, q);
}

std::pair<double, double> RangeCalibrator::Range(CalibrationMethod method, double percentile,
                                                 at::ScalarType type) const {
  double lo = std::min(min_, 0.0), hi = std::max(max_, 0.0);
  if (method == CalibrationMethod::kMinMax || !histogram_.defined()) return {lo, hi};
  if (method == CalibrationMethod::kEntropy) {
    const QuantRange r = RangeOf(type);
    return EntropyRange(histogram_, lo_, hi_, r.qmax - r.qmin + 1);
  }
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
