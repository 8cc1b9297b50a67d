// quantize: fold BatchNorm -> plan QDQ -> calibrate with the observer -> insert QDQ.
#include "quantization/quantize.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <set>

#include "compress/dist/dist.h"
#include "compress/runtime/executor.h"
#include "quantization/fold_batchnorm.h"
#include "quantization/quant_sensitivity.h"

namespace compress {

CalibrationBatches OnGraphDevice(const Graph& graph, const CalibrationBatches& batches) {
  c10::Device device(c10::kCPU);
  for (const auto& [name, init] : graph.initializers) {
    if (init.value.defined()) {
      device = init.value.device();
      break;
    }
  }
  CalibrationBatches moved;
  moved.count = batches.count;
  moved.batch = [source = batches.batch, device](int64_t k) { return source(k).to(device); };
  return moved;
}

std::map<std::string, AffineParams> Calibrate(const Graph& graph, const QdqPlan& plan,
                                              const CalibrationBatches& drawn,
                                              CalibrationMethod method, double percentile,
                                              at::ScalarType activation_type) {
  torch::NoGradGuard no_grad;
  // quantize moves the graph to ctx.device first; quantize-qat calibrates before its
  // training moves it, quantize-sensitivity wherever the graph is: the batches follow.
  const CalibrationBatches batches = OnGraphDevice(graph, drawn);
  std::vector<std::string> values;
  std::map<std::string, RangeCalibrator> calibrators;
  for (const auto& a : plan.activations) {
    if (!a.share.empty()) continue;
    values.push_back(a.value);
    calibrators.emplace(a.value, RangeCalibrator());
  }
  Executor exec(graph);
  exec.SetTraining(false);
  exec.SetObserver(values, [&](const std::string& v, const Tensor& t) {
    calibrators.at(v).ObserveRange(t, "quantize: calibrating " + v);
  });
  for (int64_t k = 0; k < batches.count; ++k) exec.Run({batches.batch(k)});
  if (method != CalibrationMethod::kMinMax) {
    exec.SetObserver(values, [&](const std::string& v, const Tensor& t) {
      calibrators.at(v).ObserveHistogram(t);
    });
    for (int64_t k = 0; k < batches.count; ++k) exec.Run({batches.batch(k)});
  }
  std::map<std::string, AffineParams> params;
  for (const auto& [v, c] : calibrators) {
    const auto [lo, hi] = c.Range(method, percentile, activation_type);
    params[v] = AsymmetricParams(lo, hi, activation_type);
  }
  return params;
}

std::map<std::string, AffineParams> Calibrate(const Graph& graph, const QdqPlan& plan,
                                              const std::vector<Tensor>& batches,
                                              CalibrationMethod method, double percentile,
                                              at::ScalarType activation_type) {
  CalibrationBatches source;
  source.count = static_cast<int64_t>(batches.size());
  source.batch = [&batches](int64_t k) { return batches.at(k); };
  return Calibrate(graph, plan, source, method, percentile, activation_type);
}

CalibrationBatches ContextCalibrationBatches(const PassContext& ctx, int64_t samples,
                                             int64_t* drawn) {
  const TensorDataset& train = ctx.data->train;
  const int64_t n = samples > 0 ? samples : ctx.calibration_samples;
  // Indices only: each batch is gathered when it is run and freed after.
  const Tensor indices = CalibrationIndices(train, n, ctx.seed);
  if (indices.numel() == 0) {
    throw Error(ErrorKind::kRecipe, "calibration: 0 samples to calibrate on (the pass's "
                                    "\"samples\" and data.calibration_samples); expected >= 1");
  }
  const int64_t batch_size = std::max<int64_t>(1, ctx.batch_size);
  const c10::Device device = ctx.device;
  CalibrationBatches batches;
  batches.count = (indices.numel() + batch_size - 1) / batch_size;
  batches.batch = [&train, indices, batch_size, device](int64_t k) {
    const int64_t at = k * batch_size;
    const int64_t count = std::min(batch_size, indices.numel() - at);
    return train.Select(indices.narrow(0, at, count)).Materialized().inputs.to(device);
  };
  if (drawn != nullptr) *drawn = indices.numel();
  return batches;
}

void CheckQuantizable(const Graph& graph, const PassContext& ctx, const std::string& pass) {
  if (HasQuantization(graph)) {
    throw Error(ErrorKind::kRecipe,
                pass + ": the model already holds QuantizeLinear/DequantizeLinear nodes");
  }
  if (ctx.data == nullptr || ctx.data->train.size() == 0) {
    throw Error(ErrorKind::kRecipe, pass + ": calibration needs the training split; none loaded");
  }
  if (graph.inputs.size() != 1) {
    throw Error(ErrorKind::kUnsupported, pass + ": calibration supports models with one input; "
                                         "this one has " + std::to_string(graph.inputs.size()));
  }
}

void ReadQuantizeOptions(OptionReader& r, QuantizeOptions& o) {
  r.ReadEnum("calibration", o.calibration, CalibrationMethods(),
             "how activation ranges are chosen from the calibration data");
  r.Read("percentile", o.percentile, 90.0, 100.0,
         "calibration = percentile: the share of values kept inside the range (each tail)");
  r.Read("samples", o.samples, 0, 60000,
         "calibration samples from the training split (0 = data.calibration_samples)");
  r.ReadEnum("activations", o.activations, {{"uint8", at::kByte}, {"int8", at::kChar}},
             "activation type (asymmetric, per tensor)");
  r.ReadEnum("weights", o.per_channel, {{"per_channel", true}, {"per_tensor", false}},
             "weight scales (symmetric int8)");
  r.Read("fold_batchnorm", o.fold_batchnorm,
         "fold BatchNormalization into the preceding Conv/Gemm first");
  r.ReadEnum("target", o.target, Int8Targets(),
             "INT8 target: portable (weights in [-64, 64]: right on every x86 kernel, VNNI or "
             "not, and ARM) or full_range ([-127, 127]: only for VNNI/AMX/ARM/GPU deployment)");
  ReadLayerFilter(r, o.layers);
}

std::unique_ptr<Pass> QuantizePass::Create(OptionReader& r) {
  QuantizeOptions o;
  ReadQuantizeOptions(r, o);
  r.Read("bias_correction", o.bias_correction,
         "add (W - W_q) E[x] to each quantized layer's bias (empirical bias correction)");
  r.Read("max_accuracy_drop", o.max_accuracy_drop, -1.0, 1.0,
         "accuracy-aware mode when >= 0: most harmful layers return to FP32 until validation "
         "top-1 is at most this far (fraction) below FP32's; -1 = off");
  r.Read("max_trials", o.max_trials, 0, 100000,
         "accuracy-aware: most trials (0 = one per layer, plus all-INT8)");
  r.Read("eval_samples", o.eval_samples, 0, 1 << 20,
         "accuracy-aware: validation samples per trial (0 = the whole split)");
  ReadLatencyFallbackOptions(r, o.latency);
  if (o.bias_correction && o.max_accuracy_drop >= 0) {
    r.AddProblem("bias_correction", "bias correction with max_accuracy_drop is not supported "
                                    "(each trial would need its own corrected biases)");
  }
  return std::make_unique<QuantizePass>(o);
}

namespace {

// The layers to quantize and their activation parameters. Accuracy-aware mode runs its
// trials (quantization/quant_sensitivity.h) and keeps the FP32 layers it chose, then
// latency_fallback its scan; every trial goes into `result`.
QdqPlan ChoosePlan(Graph& graph, const QuantizeOptions& o, const PassContext& ctx,
                   const CalibrationBatches& batches, PassResult& result,
                   std::map<std::string, AffineParams>* params) {
  if (o.max_accuracy_drop < 0 && !o.latency.enabled) {
    QdqPlan plan = PlanQdq(graph, o.layers);
    *params = Calibrate(graph, plan, batches, o.calibration, o.percentile, o.activations);
    return plan;
  }
  QuantVariants variants;
  std::set<std::string> fp32_layers;
  if (o.max_accuracy_drop >= 0) {
    const QuantTrials trials =
        PrepareTrials(graph, o, ctx, o.eval_samples, QuantMetric::kTop1, "quantize");
    const double fp32 = trials.Measure(graph);
    const int64_t max_trials =
        o.max_trials > 0 ? o.max_trials : static_cast<int64_t>(trials.full.layers.size()) + 1;
    fp32_layers = AccuracyAwareFallback(trials, fp32, o.max_accuracy_drop, max_trials,
                                        &result.fallback_trials);
    result.quant_metric = "val_top1";
    result.stats["fp32_val_top1"] = fp32;
    double chosen = result.fallback_trials.front().metric;
    for (const auto& t : result.fallback_trials) {
      if (std::set<std::string>(t.fp32_layers.begin(), t.fp32_layers.end()) == fp32_layers) {
        chosen = t.metric;
      }
    }
    result.stats["int8_val_top1"] = chosen;
    result.stats["layers_kept_fp32"] = static_cast<double>(fp32_layers.size());
    result.stats["accuracy_target_met"] = fp32 - chosen <= o.max_accuracy_drop ? 1 : 0;
    variants = trials;
  } else {
    variants = PrepareVariants(graph, o, ctx, "quantize");
  }
  std::set<std::string> for_latency;
  if (o.latency.enabled) {
    for_latency = ChooseForLatency(variants, fp32_layers, o.latency, ctx, batches, "quantize", result);
  }
  *params = variants.params;
  std::set<std::string> all = fp32_layers;
  all.insert(for_latency.begin(), for_latency.end());
  QdqPlan plan = PlanQdqWithout(graph, variants.full, all,
                                "kept FP32 by accuracy-aware quantization (max_accuracy_drop)");
  LabelLatencySkips(plan, for_latency, result);
  return plan;
}

}  // namespace

PassResult QuantizePass::Run(Graph& graph, PassContext& ctx) {
  PassResult result;
  CheckQuantizable(graph, ctx, "quantize");
  // The graph on the run's device, as train, distill and quantize-qat leave it: in a
  // quantize-first recipe nothing has moved it there yet, and the calibration batches,
  // the accuracy-aware trials and the before/after check below all run on ctx.device.
  graph.To(ctx.device);
  if (options_.fold_batchnorm) {
    result.stats["batchnorms_folded"] = static_cast<double>(FoldBatchNorm(graph, &result.skipped));
  }
  int64_t drawn = 0;
  const CalibrationBatches batches = ContextCalibrationBatches(ctx, options_.samples, &drawn);
  std::map<std::string, AffineParams> params;
  const QdqPlan plan = ChoosePlan(graph, options_, ctx, batches, result, &params);
  for (const auto& s : plan.skipped) result.skipped.push_back(s);
  const at::ScalarType act = options_.activations;

  // How far fake quantization moves the outputs, on the first calibration batch.
  torch::NoGradGuard no_grad;
  const Tensor first = batches.batch(0);
  const Tensor before = Executor(graph).Run({first})[0].detach().clone();
  QdqOptions qo;
  qo.activation_type = act;
  qo.per_channel = options_.per_channel;
  qo.target = options_.target;
  if (options_.bias_correction) {
    result.stats["biases_corrected"] =
        static_cast<double>(CorrectBiases(graph, plan, params, batches, qo));
  }
  const int64_t inserted = ApplyQdq(graph, plan, params, qo);
  const Tensor after = Executor(graph).Run({first})[0].detach();
  const double rel = (after - before).norm().item<double>() /
                     std::max(1e-12, before.norm().item<double>());

  result.changed = true;
  result.stats["layers_quantized"] = static_cast<double>(plan.layers.size());
  result.stats["activations_quantized"] = static_cast<double>(plan.activations.size());
  result.stats["qdq_nodes"] = static_cast<double>(inserted);
  result.stats["calibration_samples"] = static_cast<double>(drawn);
  result.stats["weight_qmax"] = static_cast<double>(WeightQmax(options_.target));
  result.stats["output_rel_error"] = rel;
  if (before.dim() == 2 && before.size(1) > 1) {
    result.stats["calibration_top1_agreement"] =
        (before.argmax(1) == after.argmax(1)).to(torch::kDouble).mean().item<double>();
  }
  ctx.log("quantize: " + std::to_string(plan.layers.size()) + " layers int8, " +
          std::to_string(plan.activations.size()) + " activations " + DtypeName(act) +
          ", weights " + (options_.per_channel ? "per channel " : "per tensor ") +
          Int8TargetName(options_.target) + " [-" +
          std::to_string(WeightQmax(options_.target)) + ", " +
          std::to_string(WeightQmax(options_.target)) + "], calibrated (" +
          CalibrationMethodName(options_.calibration) + ") on " + std::to_string(drawn) +
          " samples; output relative error " + std::to_string(rel));
  return result;
}

}  // namespace compress
