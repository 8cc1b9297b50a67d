// quantize's `latency_fallback`: layers whose INT8 form is slower in ONNX Runtime than
// their FP32 form stay FP32. INT8 does not pay everywhere: a first conv over one input
// channel, or layers so small that the Quantize/Dequantize around them cost more than the
// integer kernel saves (bench/RESULTS.md: lenet5's INT8 QDQ file runs 0.27x as fast as
// FP32 at batch 32). Whether it pays is a property of the runtime and the CPU, so it is
// measured, not modelled, greedily: a scan exports the model and, for each layer still
// INT8, the model with that layer FP32 too, and times them side by side in one ONNX
// Runtime process; the layer whose return to FP32 saves most goes to FP32 when it saves
// at least `min_saving` of that scan's starting latency, and the next scan starts from
// there (so a layer that pays in FP32 only once its neighbour is, their Q/DQ pair
// disappearing, is found too), until no layer saves enough. A final side-by-side run of
// the chosen model against the all-INT8 one must confirm the saving, else every layer
// stays INT8. A model with n layers takes at most n scans (n + 1 - k models in scan k).
#pragma once

#include <functional>
#include <set>
#include <string>
#include <vector>

#include "compress/ir/graph.h"
#include "compress/pass/options.h"
#include "compress/report/report.h"

namespace compress {

struct QuantVariants;       // quantization/quant_sensitivity.h (which includes quantize.h)
struct CalibrationBatches;  // quantization/quantize.h
struct QdqPlan;             // quantization/qdq.h
struct PassContext;
struct PassResult;

struct LatencyFallbackOptions {
  bool enabled = false;  // the recipe names "latency_fallback"
  int64_t batch = 32;    // rows of the timed input (calibration samples, repeated as needed)
  int64_t threads = 1;   // ONNX Runtime intra-op threads: the deployment's
  int64_t rounds = 5;    // side-by-side rounds (CompareOrtLatency)
  int64_t runs = 20;     // timed runs per model and round
  int64_t warmup = 5;
  double min_saving = 0.05;  // a layer stays FP32 when that saves this share of the latency
};

// Reads the `latency_fallback` object of quantize's options (enabled when present).
void ReadLatencyFallbackOptions(OptionReader& r, LatencyFallbackOptions& o);

// Median latency in ms of each model, measured side by side (same order).
using LatencyMeasure = std::function<std::vector<double>(const std::vector<const Graph*>& models)>;

// Exports each model to a temporary ONNX file and times them with CompareOrtLatency on
// `input` (one batch, on the CPU), with `o`'s threads, rounds, runs and warm-up.
LatencyMeasure OrtLatencyMeasure(const LatencyFallbackOptions& o, const Tensor& input);

struct LatencyFallbackResult {
  std::set<std::string> fp32_layers;  // the layers to keep FP32 for latency (new ones only)
  std::vector<LatencyTrial> trials;   // per scan (LatencyTrial::step), a row per layer timed
  // From the confirming comparison when one ran, else from the scan: medians in ms.
  double int8_ms = 0, fp32_ms = 0, chosen_ms = 0;
  bool confirmed = false;  // a layer was chosen and the confirming run showed the saving
};

// The scans and decision described above, over the layers of `variants` not already in
// `fp32` (which stay FP32 in every model timed). `measure` times the models.
LatencyFallbackResult LatencyFallback(const QuantVariants& variants,
                                      const std::set<std::string>& fp32, double min_saving,
                                      const LatencyMeasure& measure);

// latency_fallback as quantize and quantize-qat run it: LatencyFallback with ONNX Runtime
// timing on the first calibration batch (repeated to l.batch rows), on the main rank only
// in a data-parallel run (its choice broadcast, so every rank quantizes the same layers).
// Returns the layers to keep FP32 besides `fp32`; the scan's rows go into
// result.latency_trials, its medians into result.stats (ort_int8_ms, ort_fp32_ms,
// ort_chosen_ms, layers_fp32_for_latency, latency_confirmed), one line into ctx.log.
std::set<std::string> ChooseForLatency(const QuantVariants& variants,
                                       const std::set<std::string>& fp32,
                                       const LatencyFallbackOptions& l, const PassContext& ctx,
                                       const CalibrationBatches& batches, const std::string& pass,
                                       PassResult& result);

// Says in plan.skipped why each layer of `for_latency` stayed FP32 (its measured saving).
void LabelLatencySkips(QdqPlan& plan, const std::set<std::string>& for_latency,
                       const PassResult& result);

}  // namespace compress
