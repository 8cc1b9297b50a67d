// Quantization math, free of graphs: affine scale/zero-point from a range, per-channel
// symmetric weight quantization, int32 bias quantization, and streaming range
// calibrators (min-max, percentile, MSE, entropy) with bounded memory.
//
// Conventions follow the ONNX QuantizeLinear/DequantizeLinear operators (opset 13):
//   q = saturate(round_half_even(x / scale) + zero_point),  x' = (q - zero_point) * scale.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace compress {

using Tensor = at::Tensor;

// The integer range of a quantized type: uint8 [0, 255], int8 [-128, 127],
// int32 [-2^31, 2^31 - 1]. Throws compress::Error(kUnsupported) for other types.
struct QuantRange {
  int64_t qmin = 0, qmax = 255;
};
QuantRange RangeOf(at::ScalarType type);

struct AffineParams {
  double scale = 1.0;
  int64_t zero_point = 0;
};

// Asymmetric (affine) parameters that map [min, max] onto `type`'s range. The range is
// first widened to contain 0 (so 0 is exact: zero padding and ReLU stay exact), then
// scale = (max - min) / (qmax - qmin), zero_point = round(qmin - min / scale) clamped
// (ONNX Runtime's quantizer and the ONNX spec use the same formulas). A range of
// width 0 (an all-zero tensor) gives scale 1.
AffineParams AsymmetricParams(double min, double max, at::ScalarType type);

// Symmetric int8 weight quantization per slice along `axis` (per-channel when axis >= 0,
// one scale for the whole tensor when axis < 0): scale = max|w| / qmax, zero point 0,
// values in [-qmax, qmax] so that negation is exact (the restricted range TensorRT uses
// with qmax 127; quantization/int8_target.h's portable target uses 64). An all-zero
// slice gets scale 1. `min_scale` (same length as the scales, or undefined) raises
// individual scales, e.g. so a bias fits int32.
struct WeightQuant {
  Tensor q;      // int8, same shape as w
  Tensor scale;  // float32 [channels] (or [] per-tensor)
  int64_t axis = -1;
};
WeightQuant QuantizeWeightSymmetric(const Tensor& w, int64_t axis,
                                    const Tensor& min_scale = Tensor(), int64_t qmax = 127);

// Bias for a quantized Conv/Gemm: int32 with scale input_scale * weight_scale (per
// output channel) and zero point 0, as ONNX Runtime's QLinearConv/QGemm fusions expect.
// Throws compress::Error(kNumeric) naming `where` if a value does not fit int32 (call
// BiasMinWeightScale first to prevent it).
Tensor QuantizeBias(const Tensor& bias, double input_scale, const Tensor& weight_scale,
                    const std::string& where);

// The smallest weight scale per channel for which the bias still fits int32 with margin:
// |b| / (input_scale * 2^30).
Tensor BiasMinWeightScale(const Tensor& bias, double input_scale);

// Fake quantization of `x` with the given parameters (float result), the composition
// DequantizeLinear(QuantizeLinear(x)). For tests and error estimates.
Tensor FakeQuantize(const Tensor& x, const AffineParams& p, at::ScalarType type);

// ---- calibration -------------------------------------------------------------------

// How a value's range is chosen from the data it takes during calibration.
enum class CalibrationMethod {
  kMinMax,      // the observed minimum and maximum
  kPercentile,  // clip each tail at `percentile` of the observed values
  kMse,         // the clipping range that minimises the quantization error (MSE)
  kEntropy,     // the clipping range that minimises the KL divergence (TensorRT's entropy)
};
// The recipe names of the methods ("minmax", "percentile", "mse", "entropy"), in listing
// order.
const std::vector<std::pair<std::string, CalibrationMethod>>& CalibrationMethods();
const std::string& CalibrationMethodName(CalibrationMethod method);

// Streams the values of one tensor over calibration batches in two passes: the first
// records min/max (ObserveRange), the second fills a fixed-size histogram over that range
// (ObserveHistogram; needed by percentile, MSE and entropy). Memory is O(bins) regardless
// of how much data is seen.
class RangeCalibrator {
 public:
  explicit RangeCalibrator(int64_t bins = 2048) : bins_(bins) {}

  // Pass 1. NaN/Inf values raise compress::Error(kNumeric) naming `where`.
  void ObserveRange(const Tensor& x, const std::string& where);
  // Pass 2 (after all ObserveRange calls).
  void ObserveHistogram(const Tensor& x);

  bool NeedsHistogram(CalibrationMethod method) const { return method != CalibrationMethod::kMinMax; }
  bool empty() const { return count_ == 0; }
  double min() const { return min_; }
  double max() const { return max_; }

  // The chosen range [lo, hi] (always containing 0, never wider than the observed range
  // widened to 0) for `method`. `percentile` is in (0, 100], used by kPercentile; `type`
  // is the target quantized type, used by kMse and kEntropy.
  //
  // kEntropy chooses the two ends separately, each by EntropyThresholdBin on its own
  // side of the histogram: the bins above 0 and, mirrored, those below, counted outward
  // from the bin holding 0 (whose count is split between the sides in proportion, then
  // set to its neighbour's: a spike of exact zeros, as after a ReLU, costs nothing to
  // quantize but would dominate every divergence). A histogram that starts above 0 is
  // preceded by empty bins down to 0 (merged when there are many, to stay O(bins)), as
  // the quantized range starts at 0. A tensor with values on one side only (a ReLU
  // output: lo == 0) gives that side all 256 levels of the type, which [0, hi] gets; a
  // signed tensor gives each side 128, the symmetric int8 setting of TensorRT (the
  // asymmetric range then shares its levels in proportion to the two ends). A side of
  // fewer bins than its levels keeps its observed end. Per-side ends rather than one
  // threshold on |x| let a narrow side be clipped as tightly as a wide one.
  std::pair<double, double> Range(CalibrationMethod method, double percentile,
                                  at::ScalarType type) const;

 private:
  int64_t bins_;
  int64_t count_ = 0;
  double min_ = 0, max_ = 0;
  Tensor histogram_;  // double [bins] over [lo_, hi_]
  double lo_ = 0, hi_ = 0;
};

// Expected squared quantization error of a histogram (bin counts over [lo, hi]) when
// values are fake-quantized to [clip_lo, clip_hi] with `type`; bin centers stand for
// their values. Pure; exposed for tests.
double HistogramQuantMse(const Tensor& histogram, double lo, double hi, double clip_lo,
                         double clip_hi, at::ScalarType type);

// Entropy calibration (Migacz, "8-bit Inference with TensorRT", GTC 2017; ONNX Runtime's
// entropy calibrator uses the same method) on one side of a histogram: `histogram`
// holds counts (>= 0) of magnitudes, bin 0 starting at 0 and the bins moving outward.
// A candidate of i bins clips at the outer edge of bin i - 1:
//   P = bins [0, i) with the clipped mass (bins >= i) added to bin i - 1;
//   Q = bins [0, i) without it, merged into `levels` groups (bin j in group
//       floor(j * levels / i)), each group's mass spread evenly over the bins of the
//       group that are non-zero in P;
// both are normalised, zeros are replaced by 1e-4 and both renormalised (the smoothing
// of the reference implementations), and the divergence is KL(P || Q) in nats; it is
// +inf when bins [0, i - 1) are empty (P and Q would both be a point mass at the clip,
// a divergence of 0 for clipping every value to one).
// EntropyThresholdBin returns the i in [levels, n] (n = histogram.numel()) with the
// least divergence (the smallest such i on ties), or n when n <= levels or the
// histogram is empty. Cost O(n^2): 4-20 ms for 2048 bins. Throws
// compress::Error(kInternal) when levels < 1.
int64_t EntropyThresholdBin(const Tensor& histogram, int64_t levels);
// The divergence of the candidate of `bins` bins; requires 1 <= levels <= bins <= n.
double EntropyDivergence(const Tensor& histogram, int64_t bins, int64_t levels);

}  // namespace compress
