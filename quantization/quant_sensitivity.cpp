// quantize-sensitivity and accuracy-aware fallback: trials of subset quantization.
#include "quantization/quant_sensitivity.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "compress/base/error.h"
#include "compress/runtime/executor.h"
#include "compress/train/eval.h"
#include "quantization/fold_batchnorm.h"

namespace compress {

namespace {

// Logits of `graph` on `data`'s inputs, batch by batch, on `device`.
Tensor Logits(const Graph& graph, const TensorDataset& data, int64_t batch_size,
              const c10::Device& device) {
  torch::NoGradGuard no_grad;
  Graph g = graph.Clone();
  g.To(device);
  Executor exec(g);
  std::vector<Tensor> out;
  DataLoader loader(data, batch_size, /*shuffle=*/false, /*seed=*/0);
  Tensor x, y;
  while (loader.Next(x, y)) out.push_back(exec.Run({x.to(device)})[0].detach().to(torch::kCPU));
  return torch::cat(out);
}

}  // namespace

Graph QuantVariants::Quantized(const std::set<std::string>& fp32_layers,
                             const std::string& reason) const {
  Graph g = prepared->Clone();
  const QdqPlan plan = PlanQdqWithout(g, full, fp32_layers, reason);
  ApplyQdq(g, plan, params, qdq);
  return g;
}

double QuantTrials::Measure(const Graph& graph) const {
  if (top1) return Evaluate(graph, validation, batch_size, device).top1;
  return SqnrDb(reference, Logits(graph, validation, batch_size, device));
}

std::vector<std::string> QuantVariants::LayerNames() const {
  std::vector<std::string> names;
  for (const auto& l : full.layers) names.push_back(prepared->nodes[l.node].name);
  return names;
}

QuantVariants PrepareVariants(const Graph& prepared, const QuantizeOptions& options,
                              const PassContext& ctx, const std::string& pass) {
  CheckQuantizable(prepared, ctx, pass);
  QuantVariants v;
  v.prepared = &prepared;
  v.full = PlanQdq(prepared, options.layers);
  if (v.full.layers.empty()) {
    throw Error(ErrorKind::kRecipe, pass + ": no layer can be quantized");
  }
  // Calibrate every planned value itself: a subset plan may calibrate a value that the
  // full plan shares.
  QdqPlan every = v.full;
  for (auto& a : every.activations) a.share.clear();
  const CalibrationBatches batches = ContextCalibrationBatches(ctx, options.samples, nullptr);
  v.params = Calibrate(prepared, every, batches, options.calibration, options.percentile,
                       options.activations);
  v.qdq.activation_type = options.activations;
  v.qdq.per_channel = options.per_channel;
  v.qdq.target = options.target;
  return v;
}

QuantTrials PrepareTrials(const Graph& prepared, const QuantizeOptions& options,
                          const PassContext& ctx, int64_t eval_samples, QuantMetric metric,
                          const std::string& pass) {
  CheckQuantizable(prepared, ctx, pass);
  const TensorDataset& val = ctx.data->validation;
  if (val.size() == 0) {
    throw Error(ErrorKind::kRecipe, pass + ": measuring layers needs the validation split "
                                           "(data.validation_size > 0)");
  }
  QuantTrials t;
  static_cast<QuantVariants&>(t) = PrepareVariants(prepared, options, ctx, pass);
  const int64_t n = eval_samples > 0 ? std::min(eval_samples, val.size()) : val.size();
  t.validation = val.Slice(0, n);
  const bool labels = t.validation.size() > 0 && HasLabels(t.validation);
  if (metric == QuantMetric::kTop1 && !labels) {
    throw Error(ErrorKind::kRecipe, pass + ": metric top1 needs a labelled validation split");
  }
  t.top1 = metric == QuantMetric::kTop1 || (metric == QuantMetric::kAuto && labels);
  t.batch_size = std::max<int64_t>(1, ctx.batch_size);
  t.device = ctx.device;
  if (!t.top1) t.reference = Logits(prepared, t.validation, t.batch_size, t.device);
  return t;
}

std::vector<QuantSensitivityRow> ScanSensitivity(const QuantTrials& trials) {
  const std::vector<std::string> layers = trials.LayerNames();
  const std::set<std::string> all(layers.begin(), layers.end());
  std::vector<QuantSensitivityRow> rows;
  for (const auto& layer : layers) {
    QuantSensitivityRow row;
    row.layer = layer;
    std::set<std::string> others = all;
    others.erase(layer);
    row.only_this = trials.Measure(trials.Quantized(others, "sensitivity scan"));
    row.all_but_this = trials.Measure(trials.Quantized({layer}, "sensitivity scan"));
    rows.push_back(row);
  }
  return rows;
}

std::set<std::string> AccuracyAwareFallback(const QuantTrials& trials, double fp32_metric,
                                            double max_drop, int64_t max_trials,
                                            std::vector<FallbackTrial>* log) {
  const double target = fp32_metric - max_drop;
  auto trial = [&](const std::set<std::string>& fp32) {
    FallbackTrial t;
    t.fp32_layers.assign(fp32.begin(), fp32.end());
    t.metric = trials.Measure(trials.Quantized(fp32, "accuracy-aware trial"));
    t.met = t.metric >= target;
    log->push_back(t);
    return t;
  };
  std::set<std::string> fp32;
  FallbackTrial best = trial(fp32);
  std::set<std::string> best_set;
  if (best.met) return best_set;
  // Rank: the layer whose return to FP32 alone recovers the most goes back first.
  std::vector<std::pair<double, std::string>> ranked;
  for (const auto& layer : trials.LayerNames()) {
    const double m = trials.Measure(trials.Quantized({layer}, "accuracy-aware ranking"));
    ranked.push_back({m, layer});
  }
  std::stable_sort(ranked.begin(), ranked.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  for (const auto& [gain, layer] : ranked) {
    if (static_cast<int64_t>(log->size()) >= max_trials) break;
    fp32.insert(layer);
    const FallbackTrial t = trial(fp32);
    if (t.metric > best.metric) {
      best = t;
      best_set = fp32;
    }
    if (t.met) return fp32;
  }
  return best_set;  // never none: the best model found
}

std::unique_ptr<Pass> QuantizeSensitivityPass::Create(OptionReader& r) {
  QuantSensitivityOptions o;
  ReadQuantizeOptions(r, o.quantize);
  r.Read("eval_samples", o.eval_samples, 0, 1 << 20,
         "validation samples per measurement (0 = the whole split)");
  r.ReadEnum("metric", o.metric,
             {{"auto", QuantMetric::kAuto}, {"top1", QuantMetric::kTop1}, {"sqnr", QuantMetric::kSqnr}},
             "what a trial measures: validation top-1, output SQNR against FP32 (dB), or auto "
             "(top-1 when the validation split has labels)");
  return std::make_unique<QuantizeSensitivityPass>(o);
}

PassResult QuantizeSensitivityPass::Run(Graph& graph, PassContext& ctx) {
  PassResult result;
  Graph prepared = graph.Clone();  // the model itself is left as it was
  if (options_.quantize.fold_batchnorm) FoldBatchNorm(prepared, nullptr);
  const QuantTrials trials = PrepareTrials(prepared, options_.quantize, ctx,
                                           options_.eval_samples, options_.metric,
                                           "quantize-sensitivity");
  result.quant_metric = trials.top1 ? "val_top1" : "sqnr_db";
  result.stats["fp32"] = trials.top1 ? trials.Measure(prepared) : 200.0;
  result.stats["all_int8"] = trials.Measure(trials.Quantized({}, ""));
  result.stats["eval_samples"] = static_cast<double>(trials.validation.size());
  result.quant_sensitivity = ScanSensitivity(trials);
  result.skipped = trials.full.skipped;
  std::string worst;
  double worst_gain = -1e300;
  for (const auto& row : result.quant_sensitivity) {
    if (row.all_but_this > worst_gain) {
      worst_gain = row.all_but_this;
      worst = row.layer;
    }
  }
  ctx.log("quantize-sensitivity: " + std::to_string(result.quant_sensitivity.size()) +
          " layers scanned (" + result.quant_metric + "); keeping " + worst +
          " in FP32 helps most");
  return result;
}

}  // namespace compress
