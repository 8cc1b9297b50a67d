// `quantize`: post-training static INT8 quantization. Folds BatchNorm, plans the QDQ
// layout (quantization/qdq.h), calibrates activation ranges on a subset of the training
// split with the executor's observer (no graph rewrite while calibrating), then rewrites
// the graph into QDQ form: int8 per-channel weights, int32 biases, uint8 (or int8)
// per-tensor activations. The result runs in our executor as the fake-quant reference
// and exports as ONNX QDQ that ONNX Runtime executes with integer kernels.
#pragma once

#include <memory>
#include <string>

#include "compress/pass/options.h"
#include "compress/pass/pass.h"
#include "compress/pass/layer_select.h"
#include "quantization/qdq.h"
#include "quantization/quant_math.h"

namespace compress {

struct QuantizeOptions {
  CalibrationMethod calibration = CalibrationMethod::kMinMax;
  double percentile = 99.99;           // for calibration = percentile
  int64_t samples = 0;                 // calibration samples; 0 = recipe's data.calibration_samples
  at::ScalarType activations = at::kByte;  // kByte (uint8) or kChar (int8), asymmetric per tensor
  bool per_channel = true;             // symmetric int8 weights per output channel, else per tensor
  bool fold_batchnorm = true;
  // Integer range of the weights (quantization/int8_target.h): portable [-64, 64] runs
  // right on every CPU; full_range [-127, 127] only where the kernels have dot products.
  Int8Target target = Int8Target::kPortable;
  LayerFilter layers;                   // layers left out stay float
};

// Calibrated parameters of every planned value with no `share`, from `batches` run
// through `graph` (eval mode, no autograd) on the batches' device.
std::map<std::string, AffineParams> Calibrate(const Graph& graph, const QdqPlan& plan,
                                              const std::vector<Tensor>& batches,
                                              CalibrationMethod method, double percentile,
                                              at::ScalarType activation_type);

class QuantizePass : public Pass {
 public:
  explicit QuantizePass(QuantizeOptions options) : options_(std::move(options)) {}
  static std::unique_ptr<Pass> Create(OptionReader& options);
  PassResult Run(Graph& graph, PassContext& ctx) override;

 private:
  QuantizeOptions options_;
};

}  // namespace compress
