// quantize's latency_fallback (see latency_fallback.h).
#include "quantization/latency_fallback.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "compress/base/error.h"
#include "compress/base/file_util.h"
#include "compress/dist/dist.h"
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

namespace {

std::string Fmt(double v, int decimals, const char* unit) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f%s", decimals, v, unit);
  return buf;
}
std::string Ms(double ms) { return Fmt(ms, 3, " ms"); }
std::string Pct(double fraction) { return Fmt(100 * fraction, 1, "%"); }

// The first calibration batch's rows, repeated as needed to `rows`, on the CPU: the
// input latency_fallback times the models on.
Tensor TimedInput(const CalibrationBatches& batches, int64_t rows) {
  const Tensor first = batches.batch(0).detach().to(at::kCPU);
  const Tensor index = at::arange(rows, at::TensorOptions().dtype(at::kLong)).remainder(first.size(0));
  return first.index_select(0, index).contiguous();
}

// `scan()` on the main rank only, its result broadcast to the others (data-parallel
// runs: timing on every rank at once would measure the ranks' contention, and every rank
// must make the same choice); a plain run calls it. `layers` are the variants' layer
// names, the same on every rank (same graph, same options): rows travel as indices.
LatencyFallbackResult ScanOnMainRank(const PassContext& ctx, const std::vector<std::string>& layers,
                                     const std::function<LatencyFallbackResult()>& scan) {
  if (!ctx.comm || !ctx.comm->distributed()) return scan();
  const bool main = ctx.comm->is_main();
  LatencyFallbackResult r;
  if (main) r = scan();
  std::vector<Tensor> count{at::full({1}, static_cast<double>(r.trials.size()), at::kDouble)};
  ctx.comm->Broadcast(count, 0, "latency_fallback rows");
  const int64_t n = static_cast<int64_t>(count[0].to(at::kCPU).item<double>());
  // [int8, fp32, chosen, confirmed], then per row [step, layer index, ms, saving, fp32].
  constexpr int64_t kRow = 5;
  std::vector<Tensor> packed{at::zeros({4 + kRow * n}, at::kDouble)};
  if (main) {
    double* p = packed[0].data_ptr<double>();
    p[0] = r.int8_ms, p[1] = r.fp32_ms, p[2] = r.chosen_ms, p[3] = r.confirmed;
    for (int64_t k = 0; k < n; ++k) {
      const LatencyTrial& t = r.trials[static_cast<size_t>(k)];
      double* row = p + 4 + kRow * k;
      row[0] = static_cast<double>(t.step);
      row[1] = static_cast<double>(std::find(layers.begin(), layers.end(), t.layer) - layers.begin());
      row[2] = t.ms, row[3] = t.saving, row[4] = t.fp32;
    }
  }
  ctx.comm->Broadcast(packed, 0, "latency_fallback choice");
  if (main) return r;
  const Tensor cpu = packed[0].to(at::kCPU);
  const double* p = cpu.data_ptr<double>();
  r.int8_ms = p[0], r.fp32_ms = p[1], r.chosen_ms = p[2], r.confirmed = p[3] != 0;
  for (int64_t k = 0; k < n; ++k) {
    const double* row = p + 4 + kRow * k;
    const auto index = static_cast<size_t>(row[1]);
    if (index >= layers.size()) {
      throw Error(ErrorKind::kInternal, "latency_fallback: rank 0 sent layer " +
                                            std::to_string(index) + " of " +
                                            std::to_string(layers.size()));
    }
    LatencyTrial t;
    t.step = static_cast<int64_t>(row[0]);
    t.layer = layers[index];
    t.ms = row[2], t.saving = row[3], t.fp32 = row[4] != 0;
    if (t.fp32 && r.confirmed) r.fp32_layers.insert(t.layer);
    r.trials.push_back(t);
  }
  return r;
}

}  // namespace

std::set<std::string> ChooseForLatency(const QuantVariants& variants,
                                       const std::set<std::string>& fp32,
                                       const LatencyFallbackOptions& l, const PassContext& ctx,
                                       const CalibrationBatches& batches, const std::string& pass,
                                       PassResult& result) {
  const LatencyFallbackResult r = ScanOnMainRank(ctx, variants.LayerNames(), [&] {
    return LatencyFallback(variants, fp32, l.min_saving,
                           OrtLatencyMeasure(l, TimedInput(batches, l.batch)));
  });
  result.latency_trials = r.trials;
  result.stats["ort_int8_ms"] = r.int8_ms;
  result.stats["ort_fp32_ms"] = r.fp32_ms;
  result.stats["ort_chosen_ms"] = r.chosen_ms;
  result.stats["layers_fp32_for_latency"] = static_cast<double>(r.fp32_layers.size());
  result.stats["latency_confirmed"] = r.confirmed ? 1 : 0;
  std::string outcome;
  for (const auto& layer : r.fp32_layers) outcome += (outcome.empty() ? "" : ", ") + layer;
  if (!outcome.empty()) {
    outcome = "kept FP32: " + outcome + " (" + Ms(r.chosen_ms) + ")";
  } else if (variants.LayerNames().size() <= fp32.size() + 1) {
    outcome = "one INT8 layer, which stays INT8";
  } else if (std::any_of(r.trials.begin(), r.trials.end(),
                         [&](const LatencyTrial& t) { return t.saving >= l.min_saving; })) {
    outcome = "the scan's savings did not hold up side by side; every layer stays INT8";
  } else {
    outcome = "no layer saves " + Pct(l.min_saving) + " in FP32; every layer stays INT8";
  }
  ctx.log(pass + ": latency_fallback (ONNX Runtime, batch " + std::to_string(l.batch) + ", " +
          std::to_string(l.threads) + " thread(s)): all INT8 " + Ms(r.int8_ms) + ", FP32 " +
          Ms(r.fp32_ms) + "; " + outcome);
  return r.fp32_layers;
}

void LabelLatencySkips(QdqPlan& plan, const std::set<std::string>& for_latency,
                       const PassResult& result) {
  for (auto& skipped : plan.skipped) {
    if (!for_latency.count(skipped.layer)) continue;
    for (const auto& t : result.latency_trials) {
      if (t.fp32 && t.layer == skipped.layer) {
        skipped.reason = "kept FP32 by latency_fallback: the model runs " + Pct(t.saving) +
                         " faster in ONNX Runtime with it FP32";
      }
    }
  }
}

}  // namespace compress
