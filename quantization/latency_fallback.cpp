// quantize's latency_fallback (see latency_fallback.h).
#include "quantization/latency_fallback.h"

#include <cmath>

#include "compress/base/error.h"
#include "compress/base/file_util.h"
#include "compress/io/onnx_io.h"
#include "compress/io/ort_runner.h"
#include "quantization/quant_sensitivity.h"

namespace compress {

void ReadLatencyFallbackOptions(OptionReader& r, LatencyFallbackOptions& o) {
  o.enabled = r.Contains("latency_fallback");
  OptionReader l = r.Object(
      "latency_fallback",
      "keep FP32 the layers whose INT8 form is slower in ONNX Runtime, timed side by side "
      "(present: on; {} takes the defaults)");
  l.Read("batch", o.batch, 1, 4096, "rows of the timed input (the deployment's batch size)");
  l.Read("threads", o.threads, 1, 256, "ONNX Runtime intra-op threads (the deployment's)");
  l.Read("rounds", o.rounds, 1, 1000, "side-by-side rounds over all the models timed");
  l.Read("runs", o.runs, 1, 100000, "timed runs of each model per round");
  l.Read("warmup", o.warmup, 0, 100000, "untimed runs of each model first");
  l.Read("min_saving", o.min_saving, 0.0, 0.99,
         "a layer stays FP32 when that saves at least this share of the all-INT8 latency");
  l.Finish();
}

LatencyMeasure OrtLatencyMeasure(const LatencyFallbackOptions& o, const Tensor& input) {
  OrtLatencyOptions ort;
  ort.threads = static_cast<int>(o.threads);
  ort.rounds = static_cast<int>(o.rounds);
  ort.runs = static_cast<int>(o.runs);
  ort.warmup = static_cast<int>(o.warmup);
  const Tensor x = input.detach().to(at::kCPU).contiguous();
  return [ort, x](const std::vector<const Graph*>& models) {
    TempDir dir("mcompress-latency");
    std::vector<std::string> paths;
    for (size_t k = 0; k < models.size(); ++k) {
      paths.push_back((dir.path() / ("model_" + std::to_string(k) + ".onnx")).string());
      SaveOnnx(*models[k], paths.back());
    }
    const OrtLatencyComparison c = CompareOrtLatency(paths, {x}, ort);
    std::vector<double> medians;
    for (const auto& m : c.models) medians.push_back(m.median_ms);
    return medians;
  };
}

namespace {

double Saving(double base_ms, double ms) { return base_ms > 0 ? (base_ms - ms) / base_ms : 0.0; }

std::vector<double> MeasureChecked(const LatencyMeasure& measure,
                                   const std::vector<const Graph*>& models) {
  std::vector<double> ms = measure(models);
  if (ms.size() != models.size()) {
    throw Error(ErrorKind::kInternal, "latency_fallback: " + std::to_string(ms.size()) +
                                          " latencies for " + std::to_string(models.size()) +
                                          " models");
  }
  for (double v : ms) {
    if (!std::isfinite(v) || v <= 0) {
      throw Error(ErrorKind::kNumeric, "latency_fallback: ONNX Runtime reported a latency of " +
                                           std::to_string(v) + " ms");
    }
  }
  return ms;
}

}  // namespace

LatencyFallbackResult LatencyFallback(const QuantVariants& variants,
                                      const std::set<std::string>& fp32, double min_saving,
                                      const LatencyMeasure& measure) {
  LatencyFallbackResult result;
  const std::string reason = "latency_fallback trial";
  const Graph all_int8 = variants.Quantized(fp32, reason);
  std::set<std::string> current = fp32;  // FP32 in the model each scan starts from
  std::set<std::string> chosen;
  Graph current_model;                  // that model once a layer went FP32
  const Graph* start = &all_int8;       // the model each scan starts from
  // Greedy: each scan times the current model, each remaining layer back in FP32, and
  // the float model side by side; the layer saving most goes to FP32 if it saves
  // min_saving, and the next scan starts from there (a layer may pay in FP32 only once
  // its neighbour is: their Q/DQ pair disappears). The last INT8 layer stays INT8: a
  // quantize stage yields a quantized model (the stats show when FP32 is faster still).
  for (int64_t step = 0;; ++step) {
    std::vector<std::string> candidates;
    for (const auto& layer : variants.LayerNames()) {
      if (!current.count(layer)) candidates.push_back(layer);
    }
    if (candidates.empty() || (step > 0 && candidates.size() == 1)) break;
    std::vector<Graph> models;
    models.reserve(candidates.size());
    for (const auto& layer : candidates) {
      std::set<std::string> with = current;
      with.insert(layer);
      models.push_back(variants.Quantized(with, reason));
    }
    std::vector<const Graph*> timed{start};
    for (const auto& m : models) timed.push_back(&m);
    timed.push_back(variants.prepared);
    const std::vector<double> ms = MeasureChecked(measure, timed);
    if (step == 0) {
      result.int8_ms = ms.front();
      result.fp32_ms = ms.back();
    }
    const size_t first_row = result.trials.size();
    size_t best = first_row;
    for (size_t k = 0; k < candidates.size(); ++k) {
      LatencyTrial t;
      t.step = step;
      t.layer = candidates[k];
      t.ms = ms[k + 1];
      t.saving = Saving(ms.front(), t.ms);
      if (k == 0 || t.saving > result.trials[best].saving) {
        best = result.trials.size();
      }
      result.trials.push_back(t);
    }
    if (candidates.size() == 1 || result.trials[best].saving < min_saving) break;
    result.trials[best].fp32 = true;
    current.insert(result.trials[best].layer);
    chosen.insert(result.trials[best].layer);
    current_model = std::move(models[best - first_row]);  // the next scan starts here
    start = &current_model;
  }
  result.chosen_ms = result.int8_ms;
  if (chosen.empty()) return result;

  // Confirm against the all-INT8 model side by side: each step was one comparison, and
  // steps' savings need not add up.
  const std::vector<double> confirm =
      MeasureChecked(measure, {&all_int8, &current_model, variants.prepared});
  result.int8_ms = confirm[0];
  result.chosen_ms = confirm[1];
  result.fp32_ms = confirm[2];
  if (Saving(result.int8_ms, result.chosen_ms) >= min_saving) {
    result.confirmed = true;
    result.fp32_layers = chosen;
  } else {
    for (auto& t : result.trials) t.fp32 = false;
    result.chosen_ms = result.int8_ms;
  }
  return result;
}

}  // namespace compress
