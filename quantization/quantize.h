// `quantize`: post-training static INT8 quantization. Folds BatchNorm, plans the QDQ
// layout (quantization/qdq.h), calibrates activation ranges on a subset of the training
// split with the executor's observer (no graph rewrite while calibrating), then rewrites
// the graph into QDQ form: int8 per-channel weights, int32 biases, uint8 (or int8)
// per-tensor activations. The result runs in our executor as the fake-quant reference
// and exports as ONNX QDQ that ONNX Runtime executes with integer kernels.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "compress/pass/options.h"
#include "compress/pass/pass.h"
#include "compress/pass/layer_select.h"
#include "quantization/latency_fallback.h"
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
  // Empirical bias correction (Nagel et al. 2019, "Data-Free Quantization", sec. 4.2):
  // each quantized layer's bias absorbs the mean output shift its weight rounding causes,
  // (W - W_q) E[x], with E[x] per input channel from the calibration data.
  bool bias_correction = false;
  // Accuracy-aware mode when >= 0: layers return to FP32, most harmful first, until the
  // validation top-1 is at most this far (a fraction) below the FP32 model's, within
  // `max_trials` trials (0 = one per layer); the best model found is kept either way.
  double max_accuracy_drop = -1;
  int64_t max_trials = 0;
  int64_t eval_samples = 0;  // validation samples per trial; 0 = the whole split
  // Layers whose INT8 form is slower in ONNX Runtime stay FP32 (after the accuracy-aware
  // mode's choice, when both are on); quantization/latency_fallback.h.
  LatencyFallbackOptions latency;
};

// Declares the PTQ options (calibration, activations, weights, fold_batchnorm, target,
// layers) on `r`; quantize-qat reads the same ones for its initial calibration.
void ReadQuantizeOptions(OptionReader& r, QuantizeOptions& options);

// Calibration inputs produced on demand, one batch at a time, so that memory does not
// grow with the number of samples: `batch(k)` for k in [0, count) gives the k-th batch
// on the device to calibrate on. Histogram methods walk them twice.
struct CalibrationBatches {
  int64_t count = 0;
  std::function<Tensor(int64_t k)> batch;
};

// `batches` moved, one batch at a time, to the device `graph` computes on (its
// initializers'; the CPU for a graph without any): calibration and bias correction run
// where the graph is, whichever device the batches were drawn for.
CalibrationBatches OnGraphDevice(const Graph& graph, const CalibrationBatches& batches);

// The calibration batches of a pass: `samples` (0 = ctx.calibration_samples) drawn with
// ctx's seed from the training split, gathered per batch of ctx.batch_size.
CalibrationBatches ContextCalibrationBatches(const PassContext& ctx, int64_t samples,
                                             int64_t* drawn);

// Calibrated parameters of every planned value with no `share`, from the batches run
// through `graph` (eval mode, no autograd) on the graph's device (OnGraphDevice).
std::map<std::string, AffineParams> Calibrate(const Graph& graph, const QdqPlan& plan,
                                              const CalibrationBatches& batches,
                                              CalibrationMethod method, double percentile,
                                              at::ScalarType activation_type);
// The same over batches already in memory (tests, small inputs).
std::map<std::string, AffineParams> Calibrate(const Graph& graph, const QdqPlan& plan,
                                              const std::vector<Tensor>& batches,
                                              CalibrationMethod method, double percentile,
                                              at::ScalarType activation_type);

// Bias correction (QuantizeOptions::bias_correction) of the layers of `plan`, with the
// activation parameters `params` (for the bias-driven minimum weight scale, so the
// correction uses the weights ApplyQdq will write). Returns the number of biases
// corrected; layers without a float bias (and MatMul) are left alone.
int64_t CorrectBiases(Graph& graph, const QdqPlan& plan,
                      const std::map<std::string, AffineParams>& params,
                      const CalibrationBatches& batches, const QdqOptions& options);

// The checks quantize and quantize-qat share before touching the graph: no Q/DQ yet,
// a training split to calibrate on, one graph input. `pass` names the pass in errors.
void CheckQuantizable(const Graph& graph, const PassContext& ctx, const std::string& pass);

class QuantizePass : public Pass {
 public:
  explicit QuantizePass(QuantizeOptions options) : options_(std::move(options)) {}
  static std::unique_ptr<Pass> Create(OptionReader& options);
  PassResult Run(Graph& graph, PassContext& ctx) override;

 private:
  QuantizeOptions options_;
};

}  // namespace compress
