// QDQ planning (structure only), insertion (with calibrated parameters) and removal.
#include "quantization/qdq.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <set>

#include "compress/base/error.h"
#include "compress/runtime/ops.h"

namespace compress {

namespace {

// The value a layer's result is quantized at: after a single Relu/Clip consumer, so the
// runtime folds the activation into the integer kernel's output range.
std::string FusedTail(const Graph& graph, const std::string& value) {
  const std::vector<int> consumers = graph.ConsumerIndices(value);
  if (consumers.size() != 1 || graph.IsOutput(value)) return value;
  const Node& next = graph.nodes[consumers[0]];
  if ((next.op_type == "Relu" || next.op_type == "Clip") && next.inputs[0] == value) {
    return next.outputs[0];
  }
  return value;
}

// Why a selected weighted layer cannot be quantized; empty when it can.
std::string LayerProblem(const Graph& graph, const Node& node) {
  if (graph.IsInitializer(node.inputs[0])) return "its data input is an initializer";
  if (graph.IsOutput(node.inputs[0])) return "its data input is a graph output (kept float)";
  auto info = graph.FindValue(node.inputs[0]);
  if (info && !at::isFloatingType(info->dtype)) return "its data input is not floating point";
  if (node.op_type == "Gemm") {
    if (node.GetInt("transA", 0) != 0) return "Gemm with transA=1";
    if (node.GetFloat("alpha", 1.0) != 1.0 || node.GetFloat("beta", 1.0) != 1.0) {
      return "Gemm with alpha or beta other than 1";
    }
  }
  return "";
}

// Symmetric int8 weights with given (learned) scales, raised to `min_scale` where a
// bias needs it: q = saturate(round(w / scale)) in [-qmax, qmax]. A scale that is not
// finite and positive is a kNumeric error naming `where`.
WeightQuant QuantizeWeightWithScale(const Tensor& w, int64_t axis, const Tensor& scale,
                                    const Tensor& min_scale, int64_t qmax,
                                    const std::string& where) {
  Tensor s = scale.detach().to(w.device(), torch::kFloat).flatten();
  if (axis < 0) s = s.reshape({});
  const int64_t channels = axis >= 0 ? w.size(axis) : 1;
  if (s.numel() != channels) {
    throw Error(ErrorKind::kInternal, where + ": " + std::to_string(s.numel()) +
                                          " weight scales for " + std::to_string(channels) +
                                          " channels");
  }
  if (!torch::isfinite(s).all().item<bool>() || !(s > 0).all().item<bool>()) {
    throw Error(ErrorKind::kNumeric, where + ": a learned weight scale is not finite and positive");
  }
  if (min_scale.defined()) s = torch::maximum(s, min_scale.to(s.options()).reshape(s.sizes()));
  WeightQuant out;
  out.axis = axis;
  out.scale = s.contiguous();
  Tensor b = s;
  if (axis >= 0) {
    std::vector<int64_t> shape(w.dim(), 1);
    shape[axis] = -1;
    b = s.reshape(shape);
  }
  out.q = torch::clamp(torch::round(w.detach().to(torch::kFloat) / b), -qmax, qmax).to(torch::kChar);
  return out;
}

Tensor ScalarOf(double v, at::ScalarType type, const c10::Device& device) {
  return torch::scalar_tensor(v, torch::dtype(type).device(device));
}

}  // namespace

int64_t WeightAxis(const Node& node, const Tensor& w) {
  if (node.op_type == "Conv") return 0;
  if (node.op_type == "Gemm") return node.GetInt("transB", 0) != 0 ? 0 : 1;
  return w.dim() - 1;  // MatMul: [.., K, N]
}

namespace {

// The activations of `plan.layers` (see PlanQdq), appended to plan.activations.
void PlanActivations(const Graph& graph, QdqPlan& plan) {
  std::map<int, bool> layer_nodes;
  for (const auto& l : plan.layers) layer_nodes[l.node] = true;
  std::map<std::string, std::string> planned;  // value -> share ("" = calibrated)
  auto add = [&](const std::string& value, const std::string& share) {
    if (planned.count(value) != 0 || graph.IsOutput(value)) return;
    if (graph.IsInitializer(value)) return;
    auto info = graph.FindValue(value);
    if (info && !at::isFloatingType(info->dtype)) return;
    planned[value] = share;
    plan.activations.push_back({value, share});
  };
  auto root = [&](const std::string& value) {
    std::string v = value;
    while (!planned.at(v).empty()) v = planned.at(v);
    return v;
  };
  for (size_t i = 0; i < graph.nodes.size(); ++i) {
    const Node& node = graph.nodes[i];
    if (layer_nodes.count(static_cast<int>(i)) != 0) {
      add(node.inputs[0], "");
      add(FusedTail(graph, node.outputs[0]), "");
    } else if (node.op_type == "Add" && node.inputs.size() == 2 &&
               planned.count(node.inputs[0]) != 0 && planned.count(node.inputs[1]) != 0) {
      add(FusedTail(graph, node.outputs[0]), "");
    } else if ((node.op_type == "GlobalAveragePool" || node.op_type == "AveragePool") &&
               planned.count(node.inputs[0]) != 0) {
      add(node.outputs[0], "");
    } else if (HasTrait(node.op_type, kSharesInputGrid) && planned.count(node.inputs[0]) != 0 &&
               !node.outputs.empty()) {
      add(node.outputs[0], root(node.inputs[0]));
    }
  }
}

}  // namespace

QdqPlan PlanQdq(const Graph& graph, const LayerFilter& filter) {
  QdqPlan plan;
  std::vector<WeightedLayer> selected = SelectLayers(graph, filter, "quantize", &plan.skipped);
  for (const auto& l : selected) {
    const Node& node = graph.nodes[l.node];
    const std::string why = LayerProblem(graph, node);
    if (!why.empty()) {
      plan.skipped.push_back({node.name, why});
      continue;
    }
    plan.layers.push_back(l);
  }
  PlanActivations(graph, plan);
  return plan;
}

QdqPlan PlanQdqWithout(const Graph& graph, const QdqPlan& full,
                       const std::set<std::string>& fp32_layers, const std::string& reason) {
  QdqPlan plan;
  plan.skipped = full.skipped;
  for (const auto& l : full.layers) {
    const std::string& name = graph.nodes[l.node].name;
    if (fp32_layers.count(name) != 0) {
      plan.skipped.push_back({name, reason});
    } else {
      plan.layers.push_back(l);
    }
  }
  PlanActivations(graph, plan);
  return plan;
}

namespace {

// A scalar float initializer's value, when `value` is one.
std::optional<float> ScalarInitializer(const Graph& graph, const std::string& value) {
  if (value.empty() || !graph.IsInitializer(value)) return std::nullopt;
  const Tensor& t = graph.Weight(value);
  if (t.numel() != 1 || !at::isFloatingType(t.scalar_type())) return std::nullopt;
  return t.to(torch::kCPU).to(torch::kFloat).item<float>();
}

// The largest float32 s <= bound / steps with s * steps <= bound in float32 arithmetic.
float LargestScaleWithin(float bound, int64_t steps) {
  const float n = static_cast<float>(steps);
  float s = bound / n;
  while (s > 0 && s * n > bound) s = std::nextafter(s, 0.0f);
  return s;
}

}  // namespace

float ClipScaleBound(const Graph& graph, const std::string& value, int64_t zero_point,
                     QuantRange range) {
  const int p = graph.ProducerIndex(value);
  if (p < 0) return 0;
  const Node& clip = graph.nodes[p];
  if (clip.op_type != "Clip" || clip.outputs[0] != value) return 0;
  const std::optional<float> lo = clip.HasInput(1) ? ScalarInitializer(graph, clip.inputs[1]) : std::nullopt;
  const std::optional<float> hi = clip.HasInput(2) ? ScalarInitializer(graph, clip.inputs[2]) : std::nullopt;
  float bound = std::numeric_limits<float>::infinity();
  if (hi && range.qmax > zero_point) {
    if (*hi <= 0) return 0;
    bound = std::min(bound, LargestScaleWithin(*hi, range.qmax - zero_point));
  }
  if (zero_point > range.qmin) {  // the range reaches below 0: the clip's min bounds it
    // value_or rather than *lo: GCC 12's -Wmaybe-uninitialized misreads the latter here.
    const float low = lo.value_or(0.0f);
    if (low >= 0) return 0;  // no min input, or a min that leaves no negative range
    bound = std::min(bound, LargestScaleWithin(-low, zero_point - range.qmin));
  }
  return std::isfinite(bound) ? bound : 0;
}

namespace {

// The rewrite of ApplyQdq in three steps (activations, weights, node order), sharing
// the fresh names, the new nodes and the count of inserted nodes.
class QdqWriter {
 public:
  QdqWriter(Graph& graph, const QdqOptions& options)
      : graph_(graph),
        options_(options),
        names_(graph),
        // New initializers live where the graph's do (device-agnostic: CPU or CUDA).
        device_(graph.initializers.empty() ? c10::Device(c10::kCPU)
                                           : graph.initializers.begin()->second.value.device()) {}

  // Q -> DQ pairs after each planned activation; shared values reuse their root's
  // scale and zero-point initializers.
  void Activations(const QdqPlan& plan, const std::map<std::string, AffineParams>& params);
  // int8 weights and int32 biases of the planned layers, read through DequantizeLinear.
  // `original` is the node list as planned (the layers' node indices refer to it).
  void Weights(const QdqPlan& plan, const std::vector<Node>& original);
  // The node list: weight DQs first, then each node followed by the Q/DQ pairs of its
  // quantized outputs (graph inputs' pairs go first).
  void Assemble();
  int64_t inserted() const { return inserted_; }

 private:
  void DequantizeInitializer(const std::string& name, const Tensor& q, const Tensor& scale,
                             int64_t axis, at::ScalarType zp_type);

  Graph& graph_;
  const QdqOptions& options_;
  NameSource names_;
  c10::Device device_;
  std::map<std::string, AffineParams> value_params_;
  std::map<std::string, std::vector<Node>> inserts_;  // value -> its Q/DQ pair
  std::vector<Node> leading_;                          // weight/bias DQs
  std::set<std::string> done_;                         // initializers already quantized
  int64_t inserted_ = 0;
};

void QdqWriter::Activations(const QdqPlan& plan,
                            const std::map<std::string, AffineParams>& params) {
  const at::ScalarType act = options_.activation_type;
  std::map<std::string, std::pair<std::string, std::string>> qparam_names;
  for (const auto& a : plan.activations) {
    std::pair<std::string, std::string> qp;
    if (a.share.empty()) {
      auto it = params.find(a.value);
      if (it == params.end()) {
        throw Error(ErrorKind::kInternal, "quantize: no calibrated parameters for " + a.value);
      }
      AffineParams p = it->second;
      const float bound = ClipScaleBound(graph_, a.value, p.zero_point, RangeOf(act));
      if (bound > 0 && static_cast<float>(p.scale) > bound) p.scale = bound;
      qp = {names_.Fresh(a.value + "_scale"), names_.Fresh(a.value + "_zero_point")};
      graph_.initializers[qp.first].value =
          ScalarOf(static_cast<float>(p.scale), at::kFloat, device_);
      graph_.initializers[qp.second].value =
          ScalarOf(static_cast<double>(p.zero_point), act, device_);
      value_params_[a.value] = p;
    } else {
      qp = qparam_names.at(a.share);
      value_params_[a.value] = value_params_.at(a.share);
    }
    qparam_names[a.value] = qp;
    const std::string q = names_.Fresh(a.value + "_quantized");
    const std::string dq = names_.Fresh(a.value + "_dequantized");
    graph_.ReplaceUses(a.value, dq);
    Node qn{names_.Fresh(a.value + "_QuantizeLinear"), "QuantizeLinear", "", {a.value, qp.first, qp.second}, {q}, {}};
    Node dn{names_.Fresh(a.value + "_DequantizeLinear"), "DequantizeLinear", "", {q, qp.first, qp.second}, {dq}, {}};
    auto info = graph_.FindValue(a.value);
    if (info && info->shape) {
      graph_.value_info[q] = ValueInfo{q, act, info->shape};
      graph_.value_info[dq] = ValueInfo{dq, at::kFloat, info->shape};
    }
    inserts_[a.value].push_back(std::move(qn));
    inserts_[a.value].push_back(std::move(dn));
    inserted_ += 2;
  }
}

void QdqWriter::DequantizeInitializer(const std::string& name, const Tensor& q,
                                      const Tensor& scale, int64_t axis, at::ScalarType zp_type) {
  Initializer& init = graph_.initializers.at(name);
  const std::vector<int64_t> shape = q.sizes().vec();
  init.value = q;
  init.mask = Tensor();
  init.quant.reset();
  const std::string s = names_.Fresh(name + "_scale");
  const std::string zp = names_.Fresh(name + "_zero_point");
  graph_.initializers[s].value = scale.to(torch::kFloat).contiguous();
  graph_.initializers[zp].value = torch::zeros(scale.sizes(), scale.options().dtype(zp_type));
  const std::string out = names_.Fresh(name + "_dequantized");
  graph_.ReplaceUses(name, out);
  Node dn{names_.Fresh(name + "_DequantizeLinear"), "DequantizeLinear", "", {name, s, zp}, {out}, {}};
  if (axis >= 0 && scale.dim() == 1) dn.attrs["axis"] = axis;
  graph_.value_info[out] = ValueInfo{out, at::kFloat, shape};
  leading_.push_back(std::move(dn));
  done_.insert(name);
  ++inserted_;
}

void QdqWriter::Weights(const QdqPlan& plan, const std::vector<Node>& original) {
  for (const auto& l : plan.layers) {
    const Node& node = original[l.node];
    if (done_.count(l.weight) != 0) continue;
    const double x_scale = value_params_.at(node.inputs[0]).scale;
    Initializer& winit = graph_.initializers.at(l.weight);
    Tensor w = winit.value.detach();
    if (winit.mask.defined()) w = w * winit.mask.to(w.device());
    const int64_t axis = options_.per_channel ? WeightAxis(node, w) : -1;
    std::string bias;
    if (node.op_type != "MatMul" && node.HasInput(2) && graph_.IsInitializer(node.inputs[2]) &&
        done_.count(node.inputs[2]) == 0) {
      const Tensor& b = graph_.Weight(node.inputs[2]);
      const int64_t channels = axis >= 0 ? w.size(axis) : 1;
      if (b.dim() == 1 && at::isFloatingType(b.scalar_type()) &&
          (axis < 0 || b.size(0) == channels)) {
        bias = node.inputs[2];
      }
    }
    Tensor min_scale;
    if (!bias.empty()) {
      min_scale = BiasMinWeightScale(graph_.Weight(bias), x_scale);
      if (axis < 0) min_scale = min_scale.max();
    }
    const int64_t qmax = WeightQmax(options_.target);
    auto given = options_.weight_scales.find(l.weight);
    const WeightQuant wq =
        given == options_.weight_scales.end()
            ? QuantizeWeightSymmetric(w, axis, min_scale, qmax)
            : QuantizeWeightWithScale(w, axis, given->second, min_scale, qmax, node.Describe());
    if (!bias.empty()) {
      const Tensor bq = QuantizeBias(graph_.Weight(bias), x_scale, wq.scale, node.Describe());
      const Tensor bscale = wq.scale * static_cast<float>(x_scale);
      DequantizeInitializer(bias, bq, bscale, axis >= 0 ? 0 : -1, at::kInt);
    }
    DequantizeInitializer(l.weight, wq.q, wq.scale, axis, at::kChar);
  }
}

void QdqWriter::Assemble() {
  std::vector<Node> nodes = std::move(leading_);
  auto emit = [&](const std::string& value) {
    auto it = inserts_.find(value);
    if (it == inserts_.end()) return;
    for (auto& n : it->second) nodes.push_back(std::move(n));
    inserts_.erase(it);
  };
  for (const auto& in : graph_.inputs) emit(in.name);
  for (Node& n : graph_.nodes) {
    std::vector<std::string> outs = n.outputs;
    nodes.push_back(std::move(n));
    for (const auto& o : outs) emit(o);
  }
  if (!inserts_.empty()) {
    throw Error(ErrorKind::kInternal, "quantize: planned value " + inserts_.begin()->first +
                                          " is not produced by any node or graph input");
  }
  graph_.nodes = std::move(nodes);
}

}  // namespace

int64_t ApplyQdq(Graph& graph, const QdqPlan& plan,
                 const std::map<std::string, AffineParams>& params, const QdqOptions& options) {
  torch::NoGradGuard no_grad;
  RangeOf(options.activation_type);  // throws for an unsupported type
  const std::vector<Node> original = graph.nodes;  // names as planned, before rewiring
  QdqWriter writer(graph, options);
  writer.Activations(plan, params);
  writer.Weights(plan, original);
  writer.Assemble();
  graph.metadata[kInt8TargetKey] = Int8TargetName(options.target);
  ValidateGraph(graph, "quantize");
  return writer.inserted();
}

bool HasQuantization(const Graph& graph) {
  for (const auto& n : graph.nodes) {
    if (n.op_type == "QuantizeLinear" || n.op_type == "DequantizeLinear") return true;
  }
  return false;
}

void StripQuantization(Graph& graph) {
  torch::NoGradGuard no_grad;
  std::set<std::string> maybe_unused;
  std::vector<bool> remove(graph.nodes.size(), false);
  // Pass 1: DequantizeLinear of an initializer -> a float initializer of the same name.
  for (size_t i = 0; i < graph.nodes.size(); ++i) {
    const Node& n = graph.nodes[i];
    if (n.op_type != "DequantizeLinear" || !graph.IsInitializer(n.inputs[0])) continue;
    const Tensor& q = graph.Weight(n.inputs[0]);
    Tensor scale = graph.Weight(n.inputs[1]).to(torch::kFloat);
    Tensor zp = n.HasInput(2) ? graph.Weight(n.inputs[2]).to(torch::kFloat)
                              : torch::zeros({}, torch::kFloat);
    if (scale.dim() == 1 && scale.numel() > 1) {
      std::vector<int64_t> shape(q.dim(), 1);
      int64_t axis = n.GetInt("axis", 1);
      if (axis < 0) axis += q.dim();
      shape[axis] = -1;
      scale = scale.reshape(shape);
      zp = zp.reshape(shape);
    }
    const std::string out = n.outputs[0];
    const std::string name = n.inputs[0];
    graph.initializers.at(name).value = ((q.to(torch::kFloat) - zp) * scale).contiguous();
    for (size_t k = 1; k < n.inputs.size(); ++k) maybe_unused.insert(n.inputs[k]);
    remove[i] = true;
    graph.ReplaceUses(out, name);
    graph.value_info.erase(out);
  }
  // Pass 2: QuantizeLinear -> DequantizeLinear pairs of activations disappear.
  for (size_t i = 0; i < graph.nodes.size(); ++i) {
    const Node n = graph.nodes[i];
    if (n.op_type != "QuantizeLinear") continue;
    for (int c : graph.ConsumerIndices(n.outputs[0])) {
      const Node& dq = graph.nodes[c];
      if (dq.op_type != "DequantizeLinear" || dq.inputs[0] != n.outputs[0]) {
        throw Error(ErrorKind::kUnsupported,
                    "cannot remove quantization: the output of " + n.Describe() + " is read by " +
                        dq.Describe() + " (expected DequantizeLinear only)");
      }
      remove[c] = true;
      for (size_t k = 1; k < dq.inputs.size(); ++k) maybe_unused.insert(dq.inputs[k]);
      graph.ReplaceUses(dq.outputs[0], n.inputs[0]);
      graph.value_info.erase(dq.outputs[0]);
    }
    remove[i] = true;
    for (size_t k = 1; k < n.inputs.size(); ++k) maybe_unused.insert(n.inputs[k]);
    graph.value_info.erase(n.outputs[0]);
  }
  graph.metadata.erase(kInt8TargetKey);
  graph.RemoveNodes(remove, maybe_unused);
  ValidateGraph(graph, "strip quantization");
}

}  // namespace compress
