// quantize: fold BatchNorm -> plan QDQ -> calibrate with the observer -> insert QDQ.
#include "quantization/quantize.h"

#include <torch/torch.h>

#include <cmath>

#include "compress/runtime/executor.h"
#include "quantization/fold_batchnorm.h"

namespace compress {

std::map<std::string, AffineParams> Calibrate(const Graph& graph, const QdqPlan& plan,
                                              const std::vector<Tensor>& batches,
                                              CalibrationMethod method, double percentile,
                                              at::ScalarType activation_type) {
  torch::NoGradGuard no_grad;
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
  for (const auto& x : batches) exec.Run({x});
  if (method != CalibrationMethod::kMinMax) {
    exec.SetObserver(values, [&](const std::string& v, const Tensor& t) {
      calibrators.at(v).ObserveHistogram(t);
    });
    for (const auto& x : batches) exec.Run({x});
  }
  std::map<std::string, AffineParams> params;
  for (const auto& [v, c] : calibrators) {
    const auto [lo, hi] = c.Range(method, percentile, activation_type);
    params[v] = AsymmetricParams(lo, hi, activation_type);
  }
  return params;
}

std::unique_ptr<Pass> QuantizePass::Create(OptionReader& r) {
  QuantizeOptions o;
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
  return std::make_unique<QuantizePass>(o);
}

PassResult QuantizePass::Run(Graph& graph, PassContext& ctx) {
  PassResult result;
  if (HasQuantization(graph)) {
    throw Error(ErrorKind::kRecipe,
                "quantize: the model already holds QuantizeLinear/DequantizeLinear nodes");
  }
  if (ctx.data == nullptr || ctx.data->train.size() == 0) {
    throw Error(ErrorKind::kRecipe, "quantize: calibration needs the training split; none loaded");
  }
  if (graph.inputs.size() != 1) {
    throw Error(ErrorKind::kUnsupported, "quantize: calibration supports models with one input; "
                                         "this one has " + std::to_string(graph.inputs.size()));
  }
  if (options_.fold_batchnorm) {
    result.stats["batchnorms_folded"] = static_cast<double>(FoldBatchNorm(graph, &result.skipped));
  }
  const QdqPlan plan = PlanQdq(graph, options_.layers);
  for (const auto& s : plan.skipped) result.skipped.push_back(s);

  const int64_t n = options_.samples > 0 ? options_.samples : ctx.calibration_samples;
  const TensorDataset subset = CalibrationSubset(ctx.data->train, n, ctx.seed);
  std::vector<Tensor> batches;
  for (int64_t at = 0; at < subset.size(); at += ctx.batch_size) {
    batches.push_back(subset.Slice(at, ctx.batch_size).inputs.to(ctx.device));
  }
  const at::ScalarType act = options_.activations;
  const auto params = Calibrate(graph, plan, batches, options_.calibration, options_.percentile, act);

  // How far fake quantization moves the outputs, on the first calibration batch.
  torch::NoGradGuard no_grad;
  const Tensor before = Executor(graph).Run({batches.front()})[0].detach().clone();
  QdqOptions qo;
  qo.activation_type = act;
  qo.per_channel = options_.per_channel;
  qo.target = options_.target;
  const int64_t inserted = ApplyQdq(graph, plan, params, qo);
  const Tensor after = Executor(graph).Run({batches.front()})[0].detach();
  const double rel = (after - before).norm().item<double>() /
                     std::max(1e-12, before.norm().item<double>());

  result.changed = true;
  result.stats["layers_quantized"] = static_cast<double>(plan.layers.size());
  result.stats["activations_quantized"] = static_cast<double>(plan.activations.size());
  result.stats["qdq_nodes"] = static_cast<double>(inserted);
  result.stats["calibration_samples"] = static_cast<double>(subset.size());
  result.stats["weight_qmax"] = static_cast<double>(WeightQmax(options_.target));
  result.stats["output_rel_error"] = rel;
  if (before.dim() == 2 && before.size(1) > 1) {
    result.stats["calibration_top1_agreement"] =
        (before.argmax(1) == after.argmax(1)).to(torch::kDouble).mean().item<double>();
  }
  ctx.log("quantize: " + std::to_string(plan.layers.size()) + " layers int8, " +
          std::to_string(plan.activations.size()) + " activations " + DtypeName(act) +
          ", weights " + Int8TargetName(options_.target) + " [-" +
          std::to_string(WeightQmax(options_.target)) + ", " +
          std::to_string(WeightQmax(options_.target)) + "], calibrated (" +
          CalibrationMethodName(options_.calibration) + ") on " + std::to_string(subset.size()) +
          " samples; output relative error " + std::to_string(rel));
  return result;
}

}  // namespace compress
