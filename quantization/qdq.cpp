// QDQ planning (structure only), insertion (with calibrated parameters) and removal.
#include "quantization/qdq.h"

#include <torch/torch.h>

#include <algorithm>
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

// Per-channel axis of a layer's weight: the output channels.
int64_t WeightAxis(const Node& node, const Tensor& w) {
  if (node.op_type == "Conv") return 0;
  if (node.op_type == "Gemm") return node.GetInt("transB", 0) != 0 ? 0 : 1;
  return w.dim() - 1;  // MatMul: [.., K, N]
}

Tensor ScalarOf(double v, at::ScalarType type, const c10::Device& device) {
  return torch::scalar_tensor(v, torch::dtype(type).device(device));
}

}  // namespace

QdqPlan PlanQdq(const Graph& graph, const LayerFilter& filter) {
  QdqPlan plan;
  std::vector<WeightedLayer> selected = SelectLayers(graph, filter, "quantize", &plan.skipped);
  std::map<int, bool> layer_nodes;
  for (const auto& l : selected) {
    const Node& node = graph.nodes[l.node];
    const std::string why = LayerProblem(graph, node);
    if (!why.empty()) {
      plan.skipped.push_back({node.name, why});
      continue;
    }
    plan.layers.push_back(l);
    layer_nodes[l.node] = true;
  }

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
  return plan;
}

int64_t ApplyQdq(Graph& graph, const QdqPlan& plan,
                 const std::map<std::string, AffineParams>& params, const QdqOptions& options) {
  torch::NoGradGuard no_grad;
  NameSource names(graph);
  const std::vector<Node> original = graph.nodes;  // names as planned, before rewiring
  const at::ScalarType act = options.activation_type;
  RangeOf(act);  // throws for an unsupported type
  // New initializers live where the graph's do (device-agnostic: CPU or CUDA).
  const c10::Device device = graph.initializers.empty()
                                 ? c10::Device(c10::kCPU)
                                 : graph.initializers.begin()->second.value.device();

  // Scale / zero-point initializers of each calibrated value; shared values reuse them.
  std::map<std::string, std::pair<std::string, std::string>> qparam_names;
  std::map<std::string, AffineParams> value_params;
  std::map<std::string, std::vector<Node>> inserts;
  int64_t inserted = 0;
  for (const auto& a : plan.activations) {
    std::pair<std::string, std::string> qp;
    if (a.share.empty()) {
      auto it = params.find(a.value);
      if (it == params.end()) {
        throw Error(ErrorKind::kInternal, "quantize: no calibrated parameters for " + a.value);
      }
      qp = {names.Fresh(a.value + "_scale"), names.Fresh(a.value + "_zero_point")};
      graph.initializers[qp.first].value =
          ScalarOf(static_cast<float>(it->second.scale), at::kFloat, device);
      graph.initializers[qp.second].value =
          ScalarOf(static_cast<double>(it->second.zero_point), act, device);
      value_params[a.value] = it->second;
    } else {
      qp = qparam_names.at(a.share);
      value_params[a.value] = value_params.at(a.share);
    }
    qparam_names[a.value] = qp;
    const std::string q = names.Fresh(a.value + "_quantized");
    const std::string dq = names.Fresh(a.value + "_dequantized");
    graph.ReplaceUses(a.value, dq);
    Node qn{names.Fresh(a.value + "_QuantizeLinear"), "QuantizeLinear", "", {a.value, qp.first, qp.second}, {q}, {}};
    Node dn{names.Fresh(a.value + "_DequantizeLinear"), "DequantizeLinear", "", {q, qp.first, qp.second}, {dq}, {}};
    auto info = graph.FindValue(a.value);
    if (info && info->shape) {
      graph.value_info[q] = ValueInfo{q, act, info->shape};
      graph.value_info[dq] = ValueInfo{dq, at::kFloat, info->shape};
    }
    inserts[a.value].push_back(std::move(qn));
    inserts[a.value].push_back(std::move(dn));
    inserted += 2;
  }

  // Weights and biases: int8 / int32 initializers under their own names, read through
  // DequantizeLinear nodes placed first.
  std::vector<Node> leading;
  std::set<std::string> done;
  auto dequantize_init = [&](const std::string& name, const Tensor& q, const Tensor& scale,
                             int64_t axis, at::ScalarType zp_type) {
    Initializer& init = graph.initializers.at(name);
    const std::vector<int64_t> shape = q.sizes().vec();
    init.value = q;
    init.mask = Tensor();
    init.quant.reset();
    const std::string s = names.Fresh(name + "_scale");
    const std::string zp = names.Fresh(name + "_zero_point");
    graph.initializers[s].value = scale.to(torch::kFloat).contiguous();
    graph.initializers[zp].value = torch::zeros(scale.sizes(), scale.options().dtype(zp_type));
    const std::string out = names.Fresh(name + "_dequantized");
    graph.ReplaceUses(name, out);
    Node dn{names.Fresh(name + "_DequantizeLinear"), "DequantizeLinear", "", {name, s, zp}, {out}, {}};
    if (axis >= 0 && scale.dim() == 1) dn.attrs["axis"] = axis;
    graph.value_info[out] = ValueInfo{out, at::kFloat, shape};
    leading.push_back(std::move(dn));
    done.insert(name);
    ++inserted;
  };
  for (const auto& l : plan.layers) {
    const Node& node = original[l.node];
    if (done.count(l.weight) != 0) continue;
    const double x_scale = value_params.at(node.inputs[0]).scale;
    Initializer& winit = graph.initializers.at(l.weight);
    Tensor w = winit.value.detach();
    if (winit.mask.defined()) w = w * winit.mask.to(w.device());
    const int64_t axis = options.per_channel ? WeightAxis(node, w) : -1;
    std::string bias;
    if (node.op_type != "MatMul" && node.HasInput(2) && graph.IsInitializer(node.inputs[2]) &&
        done.count(node.inputs[2]) == 0) {
      const Tensor& b = graph.Weight(node.inputs[2]);
      const int64_t channels = axis >= 0 ? w.size(axis) : 1;
      if (b.dim() == 1 && at::isFloatingType(b.scalar_type()) &&
          (axis < 0 || b.size(0) == channels)) {
        bias = node.inputs[2];
      }
    }
    Tensor min_scale;
    if (!bias.empty()) {
      min_scale = BiasMinWeightScale(graph.Weight(bias), x_scale);
      if (axis < 0) min_scale = min_scale.max();
    }
    const WeightQuant wq = QuantizeWeightSymmetric(w, axis, min_scale, WeightQmax(options.target));
    if (!bias.empty()) {
      const Tensor bq = QuantizeBias(graph.Weight(bias), x_scale, wq.scale, node.Describe());
      const Tensor bscale = wq.scale * static_cast<float>(x_scale);
      dequantize_init(bias, bq, bscale, axis >= 0 ? 0 : -1, at::kInt);
    }
    dequantize_init(l.weight, wq.q, wq.scale, axis, at::kChar);
  }

  // Re-assemble the node list: weight DQs first, then each node followed by the Q/DQ
  // pairs of its quantized outputs (graph inputs' pairs go first).
  std::vector<Node> nodes = std::move(leading);
  auto emit = [&](const std::string& value) {
    auto it = inserts.find(value);
    if (it == inserts.end()) return;
    for (auto& n : it->second) nodes.push_back(std::move(n));
    inserts.erase(it);
  };
  for (const auto& in : graph.inputs) emit(in.name);
  for (Node& n : graph.nodes) {
    std::vector<std::string> outs = n.outputs;
    nodes.push_back(std::move(n));
    for (const auto& o : outs) emit(o);
  }
  if (!inserts.empty()) {
    throw Error(ErrorKind::kInternal, "quantize: planned value " + inserts.begin()->first +
                                          " is not produced by any node or graph input");
  }
  graph.nodes = std::move(nodes);
  graph.metadata[kInt8TargetKey] = Int8TargetName(options.target);
  ValidateGraph(graph, "quantize");
  return inserted;
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
