// Which layers INT8 hurts: `quantize-sensitivity` (a per-layer scan, into the report)
// and the accuracy-aware mode of `quantize` (max_accuracy_drop: layers return to FP32,
// most harmful first, until the validation target holds). Both quantize copies of the
// prepared (BN-folded) model with a subset of its planned layers and measure each copy
// on the validation split: top-1 when it has labels, else the output SQNR against the
// FP32 model.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "compress/pass/pass.h"
#include "quantization/qdq.h"
#include "quantization/quantize.h"

namespace compress {

enum class QuantMetric { kAuto, kTop1, kSqnr };

// The prepared (BN-folded) model, its full plan and a calibration that serves any
// subset of its layers: what every trial, and quantize's latency_fallback, builds from.
struct QuantVariants {
  const Graph* prepared = nullptr;  // BN-folded float model
  QdqPlan full;                     // every layer INT8
  std::map<std::string, AffineParams> params;  // every value of `full`, shared ones too
  QdqOptions qdq;

  // The prepared model with every planned layer INT8 except `fp32_layers`.
  Graph Quantized(const std::set<std::string>& fp32_layers, const std::string& reason) const;
  // Names of the planned layers, in plan order.
  std::vector<std::string> LayerNames() const;
};

// Plans `prepared` with options.layers and calibrates every planned value (shared ones
// on their own too, so any subset plan finds its parameters) on ctx's calibration
// batches. Throws Error(kRecipe) with `pass` when no layer can be quantized.
QuantVariants PrepareVariants(const Graph& prepared, const QuantizeOptions& options,
                              const PassContext& ctx, const std::string& pass);

// Variants and how trials are measured.
struct QuantTrials : QuantVariants {
  TensorDataset validation;  // the measuring subset
  bool top1 = true;          // measure validation top-1, else output SQNR (dB)
  Tensor reference;          // FP32 logits on `validation` (for SQNR)
  int64_t batch_size = 128;
  c10::Device device = c10::Device(c10::kCPU);

  // The metric of `graph` on `validation` (top-1 as a fraction, or SQNR in dB).
  double Measure(const Graph& graph) const;
};

// Prepares trials: PrepareVariants, and draws `eval_samples` (0 = all) of the
// validation split. `metric` kAuto picks top-1 when the split has labels (targets >= 0).
// Throws Error(kRecipe) with `pass` for an empty validation split or kTop1 without
// labels.
QuantTrials PrepareTrials(const Graph& prepared, const QuantizeOptions& options,
                          const PassContext& ctx, int64_t eval_samples, QuantMetric metric,
                          const std::string& pass);

// Per layer: the metric with only that layer INT8 and with all but that layer INT8.
std::vector<QuantSensitivityRow> ScanSensitivity(const QuantTrials& trials);

// Accuracy-aware quantization: the FP32 model's metric minus `max_drop` is the target.
// Trial 0 quantizes every layer; while the target is missed, the layer whose return to
// FP32 helps most (the highest all-but-this metric) goes back to FP32, one per trial,
// up to `max_trials` trials. Returns the FP32 set of the first trial that meets the
// target, else of the best trial; `log` receives every trial.
std::set<std::string> AccuracyAwareFallback(const QuantTrials& trials, double fp32_metric,
                                            double max_drop, int64_t max_trials,
                                            std::vector<FallbackTrial>* log);

struct QuantSensitivityOptions {
  QuantizeOptions quantize;
  int64_t eval_samples = 2000;  // validation samples per measurement; 0 = all
  QuantMetric metric = QuantMetric::kAuto;
};

// `quantize-sensitivity`: the scan as a report table; the model is left as it was.
class QuantizeSensitivityPass : public Pass {
 public:
  explicit QuantizeSensitivityPass(QuantSensitivityOptions options)
      : options_(std::move(options)) {}
  static std::unique_ptr<Pass> Create(OptionReader& options);
  PassResult Run(Graph& graph, PassContext& ctx) override;

 private:
  QuantSensitivityOptions options_;
};

}  // namespace compress
