// quantize-qat: calibrate -> insert FakeQuantize -> train -> read the trained
// parameters -> remove FakeQuantize -> the QDQ form of quantize.
#include "quantization/qat.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "compress/base/error.h"
#include "compress/pass/train_context.h"
#include "compress/runtime/executor.h"
#include "compress/runtime/fake_quant.h"
#include "compress/runtime/ops.h"
#include "quantization/fold_batchnorm.h"
#include "quantization/quant_sensitivity.h"

namespace compress {

namespace {

// LSQ's N for an activation: the values per sample (all dims but the batch); 1 when
// the shape is unknown.
int64_t FeaturesPerSample(const Graph& graph, const std::string& value) {
  auto info = graph.FindValue(value);
  if (!info || !info->shape || info->shape->empty()) return 1;
  int64_t n = 1;
  for (size_t d = 1; d < info->shape->size(); ++d) n *= std::max<int64_t>(1, (*info->shape)[d]);
  return n;
}

Tensor FloatScalar(double v, const c10::Device& device) {
  return torch::scalar_tensor(v, torch::dtype(torch::kFloat).device(device));
}

// The scale initializers that receive gradients.
std::vector<std::string> LearnedScales(const FakeQuantLayout& layout, bool learn) {
  std::vector<std::string> names;
  if (!learn) return names;
  for (const auto& a : layout.activations) names.push_back(a.scale);
  for (const auto& w : layout.weights) {
    if (!w.scale.empty()) names.push_back(w.scale);
  }
  return names;
}

// Smallest scale a learned step may take: LSQ's update can push a scale through zero.
constexpr double kMinScale = 1e-8;

}  // namespace

FakeQuantLayout InsertFakeQuant(Graph& graph, const QdqPlan& plan,
                                const std::map<std::string, AffineParams>& params,
                                const QatOptions& options) {
  torch::NoGradGuard no_grad;
  if (options.learn_scales && ShapesMissing(graph)) InferShapes(graph);  // LSQ's N
  const QuantizeOptions& q = options.quantize;
  const QuantRange act = RangeOf(q.activations);
  const int64_t wqmax = WeightQmax(q.target);
  const c10::Device device = graph.initializers.empty()
                                 ? c10::Device(c10::kCPU)
                                 : graph.initializers.begin()->second.value.device();
  NameSource names(graph);
  const std::vector<Node> original = graph.nodes;
  FakeQuantLayout layout;
  auto fake_quant = [&](const std::string& in, const std::string& out, int64_t qmin,
                        int64_t qmax) {
    Node n{names.Fresh(in + "_FakeQuantize"), "FakeQuantize", kInternalDomain, {in}, {out}, {}};
    n.attrs["qmin"] = qmin;
    n.attrs["qmax"] = qmax;
    n.attrs["clipped"] = static_cast<int64_t>(options.clipped_ste ? 1 : 0);
    n.attrs["learn_scale"] = static_cast<int64_t>(options.learn_scales ? 1 : 0);
    layout.nodes.insert(n.name);
    return n;
  };

  // Activations: after their producer, with the calibrated parameters.
  std::map<std::string, Node> after;
  for (const auto& a : plan.activations) {
    if (!a.share.empty()) continue;
    auto it = params.find(a.value);
    if (it == params.end()) {
      throw Error(ErrorKind::kInternal, "quantize-qat: no calibrated parameters for " + a.value);
    }
    FakeQuantLayout::Activation entry{a.value, names.Fresh(a.value + "_qat_scale"),
                                      names.Fresh(a.value + "_qat_zero_point"),
                                      ClipScaleBound(graph, a.value, it->second.zero_point, act)};
    graph.initializers[entry.scale].value = FloatScalar(static_cast<float>(it->second.scale), device);
    graph.initializers[entry.zero_point].value =
        FloatScalar(static_cast<double>(it->second.zero_point), device);
    const std::string out = names.Fresh(a.value + "_fake_quantized");
    graph.ReplaceUses(a.value, out);
    Node n = fake_quant(a.value, out, act.qmin, act.qmax);
    n.inputs.push_back(entry.scale);
    n.inputs.push_back(entry.zero_point);
    if (entry.scale_max > 0) n.attrs["scale_max"] = static_cast<double>(entry.scale_max);
    n.attrs["grad_scale"] = LsqGradScale(
        FeaturesPerSample(graph, a.value),
        static_cast<double>(std::max<int64_t>(1, act.qmax - it->second.zero_point)));
    if (auto info = graph.FindValue(a.value)) graph.value_info[out] = ValueInfo{out, info->dtype, info->shape};
    after.emplace(a.value, std::move(n));
    layout.activations.push_back(entry);
  }

  // Weights: read through FakeQuantize nodes placed first.
  std::vector<Node> nodes;
  for (const auto& l : plan.layers) {
    if (std::any_of(layout.weights.begin(), layout.weights.end(),
                    [&](const FakeQuantLayout::Weight& w) { return w.weight == l.weight; })) {
      continue;
    }
    const Initializer& init = graph.initializers.at(l.weight);
    Tensor w = init.value.detach();
    if (init.mask.defined()) w = w * init.mask.to(w.device());
    FakeQuantLayout::Weight entry{l.weight, "", q.per_channel ? WeightAxis(original[l.node], w) : -1};
    const std::string out = names.Fresh(l.weight + "_fake_quantized");
    graph.ReplaceUses(l.weight, out);
    Node n = fake_quant(l.weight, out, -wqmax, wqmax);
    if (entry.axis >= 0) n.attrs["axis"] = entry.axis;
    if (options.learn_scales) {
      entry.scale = names.Fresh(l.weight + "_qat_scale");
      const std::string zp = names.Fresh(l.weight + "_qat_zero_point");
      const Tensor scale = SymmetricWeightScale(w, entry.axis, static_cast<double>(wqmax));
      graph.initializers[entry.scale].value = scale.contiguous();
      graph.initializers[zp].value = torch::zeros_like(scale);
      n.inputs.push_back(entry.scale);
      n.inputs.push_back(zp);
      n.attrs["grad_scale"] =
          LsqGradScale(w.numel() / std::max<int64_t>(1, scale.numel()), static_cast<double>(wqmax));
    }
    graph.value_info[out] = ValueInfo{out, w.scalar_type(), w.sizes().vec()};
    nodes.push_back(std::move(n));
    layout.weights.push_back(entry);
  }

  // Node order: weight nodes, graph inputs' nodes, then each node and its outputs'.
  auto emit = [&](const std::string& value) {
    auto it = after.find(value);
    if (it == after.end()) return;
    nodes.push_back(std::move(it->second));
    after.erase(it);
  };
  for (const auto& in : graph.inputs) emit(in.name);
  for (Node& n : graph.nodes) {
    const std::vector<std::string> outs = n.outputs;
    nodes.push_back(std::move(n));
    for (const auto& o : outs) emit(o);
  }
  if (!after.empty()) {
    throw Error(ErrorKind::kInternal, "quantize-qat: planned value " + after.begin()->first +
                                          " is not produced by any node or graph input");
  }
  graph.nodes = std::move(nodes);
  ValidateGraph(graph, "quantize-qat");
  return layout;
}

TrainedQuantParams ReadTrainedParams(const Graph& graph, const FakeQuantLayout& layout) {
  torch::NoGradGuard no_grad;
  TrainedQuantParams out;
  auto check = [](const Tensor& s, const std::string& what) {
    if (!torch::isfinite(s).all().item<bool>() || !(s > 0).all().item<bool>()) {
      throw Error(ErrorKind::kNumeric, "quantize-qat: the scale of " + what +
                                           " is not finite and positive after training");
    }
  };
  for (const auto& a : layout.activations) {
    const Tensor s = graph.Weight(a.scale);
    check(s, a.value);
    AffineParams p;
    p.scale = static_cast<float>(s.item<double>());
    if (a.scale_max > 0) p.scale = std::min(p.scale, static_cast<double>(a.scale_max));
    p.zero_point = static_cast<int64_t>(std::llround(graph.Weight(a.zero_point).item<double>()));
    out.activations[a.value] = p;
  }
  for (const auto& w : layout.weights) {
    if (w.scale.empty()) continue;
    const Tensor s = graph.Weight(w.scale).detach().clone();
    check(s, w.weight);
    out.weight_scales[w.weight] = s;
  }
  return out;
}

void RemoveFakeQuant(Graph& graph, const FakeQuantLayout& layout) {
  std::vector<bool> remove(graph.nodes.size(), false);
  std::set<std::string> unused;
  for (size_t i = 0; i < graph.nodes.size(); ++i) {
    const Node n = graph.nodes[i];
    if (layout.nodes.count(n.name) == 0) continue;
    remove[i] = true;
    for (size_t k = 1; k < n.inputs.size(); ++k) unused.insert(n.inputs[k]);
    graph.ReplaceUses(n.outputs[0], n.inputs[0]);
    graph.value_info.erase(n.outputs[0]);
  }
  graph.RemoveNodes(remove, unused);
  ValidateGraph(graph, "quantize-qat");
}

std::unique_ptr<Pass> QuantizeQatPass::Create(OptionReader& r) {
  QatOptions o;
  ReadQuantizeOptions(r, o.quantize);
  ReadLatencyFallbackOptions(r, o.quantize.latency);
  // Fine-tuning defaults: a short, gentle run from the calibrated model.
  o.train.batch_size = 0;
  o.train.optimizer.name = "adam";
  o.train.optimizer.lr = 1e-4;
  o.train.lr_schedule.name = "cosine";
  ReadTrainOptions(r, o.train, "epochs");
  r.Read("learn_scales", o.learn_scales,
         "learn weight and activation step sizes (LSQ, Esser et al. 2020) instead of fixing them");
  r.ReadEnum("ste", o.clipped_ste, {{"clipped", true}, {"pass_through", false}},
             "straight-through gradient: zero where a value saturates (clipped) or everywhere 1");
  r.Read("observer_epochs", o.observer_epochs, 0, 100000,
         "epochs during which activation ranges follow a moving-average min/max observer "
         "before they freeze (0 = the calibrated ranges throughout)");
  r.Read("observer_momentum", o.observer_momentum, 0.0, 1.0,
         "weight of each batch in the observer's moving average");
  if (o.learn_scales && o.observer_epochs > 0) {
    r.AddProblem("observer_epochs", "learned scales are not observed; set observer_epochs to 0 "
                                    "or learn_scales to false");
  }
  // Declared even when absent, so `mcompress passes` lists distill.temperature etc.
  OptionReader distill = r.Object(
      "distill", "distil while training: the distill pass's loss options (temperature, alpha, "
                 "features, attention) against the recipe's teachers, else the baseline");
  DistillLossOptions loss;
  ReadDistillLossOptions(distill, loss);
  distill.Finish();
  if (r.Contains("distill")) o.distill = loss;
  return std::make_unique<QuantizeQatPass>(o);
}

namespace {

// Moving-average min/max of the activations during the first observer_epochs epochs;
// after each step the scales and zero points follow the averaged ranges.
class RangeObserver {
 public:
  // `comm`: data parallelism; each batch's range is then the global batch's (the
  // ranks' minima and maxima reduced), so every rank keeps the same averages.
  RangeObserver(const FakeQuantLayout& layout, const QatOptions& options, Communicator* comm)
      : layout_(layout), momentum_(options.observer_momentum),
        type_(options.quantize.activations), epochs_(options.observer_epochs), comm_(comm) {}

  bool enabled() const { return epochs_ > 0; }
  void StartEpoch(int64_t epoch) { observing_ = epoch < epochs_; }
  void Observe(const std::string& value, const Tensor& t) {
    if (!observing_) return;
    const auto [lo_t, hi_t] = torch::aminmax(t.detach());
    double lo = lo_t.item<double>(), hi = hi_t.item<double>();
    if (comm_ != nullptr && comm_->distributed()) {
      Tensor m = torch::tensor({-lo, hi}, torch::kDouble);
      comm_->AllReduce(m, Communicator::Op::kMax, "QAT activation range of " + value);
      lo = -m[0].item<double>();
      hi = m[1].item<double>();
    }
    if (!std::isfinite(lo) || !std::isfinite(hi)) {
      throw Error(ErrorKind::kNumeric, "quantize-qat: " + value + " is NaN or Inf in training");
    }
    auto it = ranges_.find(value);
    if (it == ranges_.end()) {
      ranges_[value] = {lo, hi};
    } else {
      it->second.first += momentum_ * (lo - it->second.first);
      it->second.second += momentum_ * (hi - it->second.second);
    }
  }
  void Apply(Graph& graph) const {
    if (!observing_) return;
    for (const auto& a : layout_.activations) {
      auto it = ranges_.find(a.value);
      if (it == ranges_.end()) continue;
      const AffineParams p = AsymmetricParams(it->second.first, it->second.second, type_);
      graph.initializers.at(a.scale).value.fill_(static_cast<float>(p.scale));
      graph.initializers.at(a.zero_point).value.fill_(static_cast<double>(p.zero_point));
    }
  }
  std::vector<std::string> values() const {
    std::vector<std::string> v;
    for (const auto& a : layout_.activations) v.push_back(a.value);
    return v;
  }

 private:
  const FakeQuantLayout& layout_;
  double momentum_;
  at::ScalarType type_;
  int64_t epochs_;
  Communicator* comm_;
  bool observing_ = false;
  std::map<std::string, std::pair<double, double>> ranges_;
};

// Learned scales stay finite and positive: a NaN stops the run naming the scale and
// step; a scale pushed below kMinScale is clamped to it.
void KeepScalesPositive(Graph& graph, const std::vector<std::string>& scales, int64_t step) {
  for (const auto& name : scales) {
    Tensor& s = graph.initializers.at(name).value;
    if (!torch::isfinite(s).all().item<bool>()) {
      throw Error(ErrorKind::kNumeric, "quantize-qat: learned scale " + name +
                                           " is not finite after step " + std::to_string(step) +
                                           " (lower the learning rate?)");
    }
    s.clamp_min_(kMinScale);
  }
}

// quantize-qat's `distill`: the fake-quantized graph becomes the student of `teachers`
// (DistillTeachers: those the distill pass would use); its objective replaces the
// cross-entropy in `t` (after the range observer's hooks) and each finished epoch's sums
// go to `epochs`. Every check runs here, before the first step. t.batch_size must be
// resolved (> 0).
std::unique_ptr<DistillObjective> AttachDistillation(Graph& graph, PassContext& ctx,
                                                     const std::vector<TeacherRef>& teachers,
                                                     DistillLossOptions loss, TrainOptions& t,
                                                     std::vector<DistillEpoch>& epochs) {
  CheckNoAugmentation(t, loss.where);
  const TensorDataset& train = ctx.data->train;
  graph.To(ctx.device);
  loss.label_smoothing = t.label_smoothing;
  const Tensor sample =
      train.Slice(0, t.batch_size).Materialized().inputs.to(ctx.device);
  auto objective =
      std::make_unique<DistillObjective>(graph, teachers, loss, sample, ctx.device, ctx.seed);
  FitLabels(train, loss, *objective, t);
  objective->CacheTeacherLogits(train, t.batch_size);
  DistillObjective* o = objective.get();
  auto before = t.before_epoch;
  t.before_epoch = [o, before, &epochs](int64_t epoch) {
    if (before) before(epoch);
    if (epoch > 0) epochs.push_back(o->TakeEpoch());
  };
  AttachDistillObjective(*objective, t);
  return objective;
}

double RelativeError(const Tensor& a, const Tensor& b) {
  return (a - b).norm().item<double>() / std::max(1e-12, b.norm().item<double>());
}

}  // namespace

PassResult QuantizeQatPass::Run(Graph& graph, PassContext& ctx) {
  PassResult result;
  CheckQuantizable(graph, ctx, "quantize-qat");
  // Without a teacher to distil from, fail before calibrating.
  const std::vector<TeacherRef> teachers =
      options_.distill ? DistillTeachers(ctx, options_.distill->where) : std::vector<TeacherRef>{};
  const QuantizeOptions& q = options_.quantize;
  if (q.fold_batchnorm) {
    result.stats["batchnorms_folded"] = static_cast<double>(FoldBatchNorm(graph, &result.skipped));
  }
  int64_t drawn = 0;
  const CalibrationBatches batches = ContextCalibrationBatches(ctx, q.samples, &drawn);

  // Step 1: the plan. With latency_fallback, the layers whose INT8 form is slower in ONNX
  // Runtime stay FP32, measured on the calibrated (PTQ) model before training: training
  // changes weights and scales, not which kernels run.
  std::set<std::string> for_latency;
  const QdqPlan plan = [&] {
    QdqPlan p = PlanQdq(graph, q.layers);
    if (!q.latency.enabled || p.layers.empty()) return p;
    const QuantVariants variants = PrepareVariants(graph, q, ctx, "quantize-qat");
    for_latency = ChooseForLatency(variants, {}, q.latency, ctx, batches, "quantize-qat", result);
    if (for_latency.empty()) return p;
    p = PlanQdqWithout(graph, p, for_latency, "kept FP32 by latency_fallback");
    LabelLatencySkips(p, for_latency, result);
    return p;
  }();
  for (const auto& s : plan.skipped) result.skipped.push_back(s);
  // (latency_fallback always leaves one layer INT8.)
  if (plan.layers.empty()) {
    throw Error(ErrorKind::kRecipe, "quantize-qat: no layer to quantize (every weighted layer "
                                    "is excluded or cannot be quantized); nothing to train");
  }

  // Step 2: the PTQ starting point.
  const auto params = Calibrate(graph, plan, batches, q.calibration, q.percentile, q.activations);

  // Step 3: train with fake quantization (against the teachers with `distill`).
  const FakeQuantLayout layout = InsertFakeQuant(graph, plan, params, options_);
  const std::vector<std::string> learned = LearnedScales(layout, options_.learn_scales);
  RangeObserver observer(layout, options_, ctx.comm.get());
  TrainOptions t = options_.train;
  if (t.batch_size == 0) t.batch_size = ctx.batch_size;
  if (observer.enabled()) {
    t.before_epoch = [&](int64_t epoch) { observer.StartEpoch(epoch); };
    t.observe = observer.values();
    t.observer = [&](const std::string& v, const Tensor& x) { observer.Observe(v, x); };
  }
  t.after_step = [&](int64_t step) {
    KeepScalesPositive(graph, learned, step);
    observer.Apply(graph);
  };
  std::vector<DistillEpoch> distill_epochs;
  const std::unique_ptr<DistillObjective> objective =
      options_.distill
          ? AttachDistillation(graph, ctx, teachers, *options_.distill, t, distill_epochs)
          : nullptr;
  const TrainResult trained_run = TrainInContext(graph, ctx, t);
  AddTrainStats(trained_run, result);
  if (objective) {
    distill_epochs.push_back(objective->TakeEpoch());
    AddDistillStats(*objective, *options_.distill, distill_epochs, result);
  }

  // Step 4: the QDQ form with the trained weights and scales (the same layers as trained).
  torch::NoGradGuard no_grad;
  const Tensor first = batches.batch(0).to(ctx.device);
  const Tensor fake_quant_out = Executor(graph).Run({first})[0].detach().clone();
  const TrainedQuantParams trained = ReadTrainedParams(graph, layout);
  RemoveFakeQuant(graph, layout);
  const QdqPlan final_plan =
      for_latency.empty() ? PlanQdq(graph, q.layers)
                          : PlanQdqWithout(graph, PlanQdq(graph, q.layers), for_latency,
                                           "kept FP32 by latency_fallback");
  QdqOptions qo;
  qo.activation_type = q.activations;
  qo.per_channel = q.per_channel;
  qo.target = q.target;
  qo.weight_scales = trained.weight_scales;
  const int64_t inserted = ApplyQdq(graph, final_plan, trained.activations, qo);
  const Tensor qdq_out = Executor(graph).Run({first})[0].detach();
  // The exported model against the model as trained: only bias rounding differs.
  const double rel = RelativeError(qdq_out, fake_quant_out);

  result.changed = true;
  result.stats["layers_quantized"] = static_cast<double>(final_plan.layers.size());
  result.stats["activations_quantized"] = static_cast<double>(final_plan.activations.size());
  result.stats["qdq_nodes"] = static_cast<double>(inserted);
  result.stats["calibration_samples"] = static_cast<double>(drawn);
  result.stats["learned_scales"] = static_cast<double>(learned.size());
  result.stats["weight_qmax"] = static_cast<double>(WeightQmax(q.target));
  result.stats["qdq_vs_trained_rel_error"] = rel;
  ctx.log("quantize-qat: " + std::to_string(final_plan.layers.size()) + " layers int8 (" +
          Int8TargetName(q.target) + "), " + std::to_string(trained_run.epochs.size()) +
          " epochs of fake-quantized training" +
          (options_.learn_scales ? " with learned scales" : "") +
          (objective ? ", distilled (" + DescribeDistillation(*objective, *options_.distill) +
                           "; final KD loss " + std::to_string(distill_epochs.back().kd) + ")"
                     : std::string()) +
          "; QDQ form vs trained model: relative error " + std::to_string(rel));
  return result;
}

}  // namespace compress
