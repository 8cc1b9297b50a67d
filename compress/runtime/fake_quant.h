// Fake quantization with straight-through gradients, for quantization-aware training.
// The forward pass is exactly DequantizeLinear(QuantizeLinear(x)) of ONNX (round half to
// even, saturate to [qmin, qmax], float32 scale), so a model trained with it computes what
// its exported QDQ form computes. The backward pass replaces round() by the identity
// (the straight-through estimator, Bengio et al. 2013):
//   - plain STE: dL/dx = dL/dy everywhere;
//   - clipped STE: dL/dx = dL/dy inside the range, 0 where x saturates;
//   - learned step size (LSQ, Esser et al., ICLR 2020, eq. 3): when the scale requires a
//     gradient, dy/ds = round(x/s) - x/s inside the range and (q - z) at the saturated
//     end q in {qmin, qmax}, summed per scale and multiplied by a gradient scale g
//     (the paper's g = 1 / sqrt(N * Qp): N elements per scale, Qp = qmax - z).
//
// In graphs the function is the op `FakeQuantize` of the domain kInternalDomain, which
// only quantize-qat inserts and removes: it never reaches an exported file.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace compress {

using Tensor = at::Tensor;

// The domain of the executor's training-only ops (never written to ONNX).
inline constexpr const char* kInternalDomain = "com.mcompress";

struct FakeQuantSpec {
  int64_t axis = -1;  // the channel axis of a per-channel scale; -1: one scale
  double qmin = 0, qmax = 255;
  bool clipped = true;     // clipped STE (zero gradient outside the range) or plain
  double grad_scale = 1;   // LSQ's g, applied to the scale's gradient
  // > 0: the scale is used as min(scale, scale_max) (no gradient above it), so a learned
  // scale cannot outgrow the range of the Clip before it (see ClipScaleBound in qdq.h).
  double scale_max = 0;
};

// y = (clamp(round(x / s) + z, qmin, qmax) - z) * s with the gradients above (s being
// min(scale, spec.scale_max) when scale_max > 0). `scale`
// and `zero_point` are scalars or 1-D along spec.axis; the zero point is a float tensor
// holding integers and never receives a gradient. `scale` receives one only when it
// requires grad.
Tensor FakeQuantizeSte(const Tensor& x, const Tensor& scale, const Tensor& zero_point,
                    const FakeQuantSpec& spec);

// The symmetric per-channel (spec.axis >= 0) or per-tensor weight scale of ApplyQdq:
// max|w| / qmax, 1 where a channel is all zero. No gradient.
Tensor SymmetricWeightScale(const Tensor& w, int64_t axis, double qmax);

// LSQ's gradient scale 1 / sqrt(N * Qp) for a tensor of `elements_per_scale` values
// quantized with a positive range of `qp` steps.
double LsqGradScale(int64_t elements_per_scale, double qp);

}  // namespace compress
