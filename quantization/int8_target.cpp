// INT8 targets: the static int16 pair proof over a QDQ graph, re-quantization of
// weights into a target's range, and the reference u8 x s8 GEMM with and without the
// saturating pair step of non-VNNI x86 kernels.
#include "quantization/int8_target.h"

#include <torch/torch.h>

#include <algorithm>
#include <set>

#include "compress/runtime/cpu_info.h"
#include "compress/base/error.h"

namespace compress {

namespace {

// "62,985"
std::string Grouped(int64_t v) {
  std::string s = std::to_string(v);
  for (int at = static_cast<int>(s.size()) - 3; at > (s[0] == '-' ? 1 : 0); at -= 3) {
    s.insert(static_cast<size_t>(at), ",");
  }
  return s;
}

// The node producing `value` when it is a DequantizeLinear, else -1.
int DequantizeProducer(const Graph& graph, const std::string& value) {
  const int p = graph.ProducerIndex(value);
  return p >= 0 && graph.nodes[p].op_type == "DequantizeLinear" ? p : -1;
}

int64_t ChannelAxis(const Node& node, const Tensor& w) {
  if (node.op_type == "Conv") return 0;
  if (node.op_type == "Gemm") return node.GetInt("transB", 0) != 0 ? 0 : 1;
  return w.dim() - 1;  // MatMul [.., K, N]: one output per column
}

// Per-channel max |q| of `q` along `axis` (axis < 0: one value), as float.
Tensor ChannelAbsMax(const Tensor& q, int64_t axis) {
  const Tensor a = q.to(torch::kFloat).abs();
  if (axis < 0 || q.dim() == 0) return a.max();
  return a.movedim(axis, 0).reshape({q.size(axis), -1}).amax(1);
}

// A DequantizeLinear's scale/zero-point broadcast shape for its input `q`.
Tensor AlongAxis(const Tensor& t, const Node& dq, const Tensor& q) {
  if (t.dim() == 0 || t.numel() == 1) return t.reshape({});
  int64_t axis = dq.GetInt("axis", 1);
  if (axis < 0) axis += q.dim();
  std::vector<int64_t> shape(q.dim(), 1);
  shape[axis] = -1;
  return t.reshape(shape);
}

}  // namespace

const std::vector<std::pair<std::string, Int8Target>>& Int8Targets() {
  static const std::vector<std::pair<std::string, Int8Target>> targets = {
      {"portable", Int8Target::kPortable}, {"full_range", Int8Target::kFullRange}};
  return targets;
}

const char* Int8TargetName(Int8Target target) {
  for (const auto& [name, t] : Int8Targets()) {
    if (t == target) return name.c_str();
  }
  throw Error(ErrorKind::kInternal, "unnamed INT8 target");
}

std::vector<std::string> Int8TargetNames() {
  std::vector<std::string> names;
  for (const auto& [name, t] : Int8Targets()) names.push_back(name);
  return names;
}

Int8Target ParseInt8Target(const std::string& name) {
  for (const auto& [n, t] : Int8Targets()) {
    if (n == name) return t;
  }
  throw Error(ErrorKind::kUsage,
              "unknown INT8 target \"" + name + "\"; expected portable or full_range");
}

int64_t WeightQmax(Int8Target target) {
  return target == Int8Target::kPortable ? kPortableWeightMax : kFullRangeWeightMax;
}

std::vector<Int8Layer> FindInt8Layers(const Graph& graph) {
  std::vector<Int8Layer> layers;
  for (size_t i = 0; i < graph.nodes.size(); ++i) {
    const Node& node = graph.nodes[i];
    if (node.op_type != "Conv" && node.op_type != "Gemm" && node.op_type != "MatMul") continue;
    if (!node.HasInput(0) || !node.HasInput(1)) continue;
    const int w = DequantizeProducer(graph, node.inputs[1]);
    const int x = DequantizeProducer(graph, node.inputs[0]);
    if (w < 0 || x < 0) continue;
    const std::string& q = graph.nodes[w].inputs[0];
    if (!graph.IsInitializer(q) || graph.Weight(q).scalar_type() != at::kChar) continue;
    if (graph.IsInitializer(graph.nodes[x].inputs[0])) continue;
    Int8Layer l;
    l.node = static_cast<int>(i);
    l.weight_dq = w;
    l.input_dq = x;
    l.weight = q;
    l.channel_axis = ChannelAxis(node, graph.Weight(q));
    layers.push_back(l);
  }
  return layers;
}

std::string PairBound::Describe() const {
  return layer + " channel " + std::to_string(channel) + ": " + std::to_string(kU8CodeMax) +
         " x " + std::to_string(weight_pair) + " = " + Grouped(worst_sum) +
         (saturates() ? " > " : " <= ") + Grouped(kInt16Max);
}

std::vector<PairBound> Int8PairBounds(const Graph& graph) {
  torch::NoGradGuard no_grad;
  std::vector<PairBound> bounds;
  for (const Int8Layer& l : FindInt8Layers(graph)) {
    const Tensor q = graph.Weight(l.weight).cpu();
    const Tensor a = q.to(torch::kInt).abs();
    Tensor rows = q.dim() == 0 ? a.reshape({1, 1})
                               : a.movedim(l.channel_axis, 0).reshape({q.size(l.channel_axis), -1});
    // The two largest codes of a channel: the worst pair any kernel layout can form.
    const Tensor pair = rows.size(1) >= 2 ? std::get<0>(rows.topk(2, 1)).sum(1)
                                          : rows.select(1, 0);
    PairBound b;
    b.layer = graph.nodes[l.node].name;
    b.channel = pair.argmax().item<int64_t>();
    b.weight_pair = pair.max().item<int64_t>();
    b.worst_sum = kU8CodeMax * b.weight_pair;
    bounds.push_back(b);
  }
  return bounds;
}

std::string Int8TargetCheck::Warning() const {
  if (saturating.empty()) return "";
  std::string s = std::string(Int8TargetName(target)) + " INT8 weights: " +
                  std::to_string(saturating.size()) + " of " + std::to_string(layers) +
                  " integer layers can exceed int16 in u8*s8 product pairs on x86 CPUs "
                  "without VNNI/AMX (";
  for (size_t i = 0; i < saturating.size() && i < 3; ++i) {
    s += (i ? "; " : "") + saturating[i].Describe();
  }
  if (saturating.size() > 3) s += "; and " + std::to_string(saturating.size() - 3) + " more";
  return s + "); results are right only where the kernels have dot products (VNNI, AMX, ARM)";
}

Int8TargetCheck CheckInt8Target(const Graph& graph, const std::string& where) {
  Int8TargetCheck check;
  const std::vector<PairBound> bounds = Int8PairBounds(graph);
  check.layers = static_cast<int64_t>(bounds.size());
  for (const auto& b : bounds) {
    if (b.saturates()) check.saturating.push_back(b);
  }
  auto it = graph.metadata.find(kInt8TargetKey);
  if (it != graph.metadata.end()) {
    check.declared = true;
    try {
      check.target = ParseInt8Target(it->second);
    } catch (const Error& e) {
      throw Error(ErrorKind::kIo, where + ": metadata " + kInt8TargetKey + ": " + e.what());
    }
  } else {
    check.target = check.saturating.empty() ? Int8Target::kPortable : Int8Target::kFullRange;
  }
  if (check.target == Int8Target::kPortable && !check.saturating.empty()) {
    throw Error(ErrorKind::kNumeric,
                where + ": declared INT8 target portable, but " +
                    check.saturating.front().Describe() +
                    " (a pair of u8*s8 products exceeds int16 on x86 kernels without VNNI; "
                    "portable weights must stay within +-" +
                    std::to_string(kPortableWeightMax) + ")");
  }
  return check;
}

std::string SaturationHint(const Int8TargetCheck& check, bool runtime_saturates) {
  if (!runtime_saturates || check.saturating.empty()) return "";
  return "; this CPU's INT8 kernels add u8*s8 product pairs into a saturating int16 (" +
         CpuInt8Summary() + ") and the model's weights are full-range (" +
         check.saturating.front().Describe() +
         "): quantize with \"target\": \"portable\" (the default) or re-export with "
         "mcompress export --target portable";
}

int64_t RetargetInt8(Graph& graph, Int8Target target) {
  torch::NoGradGuard no_grad;
  const double qmax = static_cast<double>(WeightQmax(target));
  const std::vector<Int8Layer> layers = FindInt8Layers(graph);
  std::set<std::string> done;
  int64_t changed = 0;
  for (const Int8Layer& l : layers) {
    if (done.count(l.weight) != 0) continue;
    done.insert(l.weight);
    const Node dq = graph.nodes[l.weight_dq];
    const Tensor q = graph.Weight(l.weight);
    const std::string scale_name = dq.inputs[1];
    if (dq.HasInput(2) && graph.Weight(dq.inputs[2]).ne(0).any().item<bool>()) {
      throw Error(ErrorKind::kUnsupported,
                  dq.Describe() + ": weights with a non-zero zero point cannot be re-quantized "
                                  "to another INT8 target (symmetric weights expected)");
    }
    const Tensor scale = graph.Weight(scale_name).to(torch::kFloat);
    const bool per_channel = scale.numel() > 1;
    int64_t axis = per_channel ? dq.GetInt("axis", 1) : -1;
    if (per_channel && axis < 0) axis += q.dim();
    const Tensor factor = torch::clamp_min(ChannelAbsMax(q, axis) / qmax, 1.0).reshape(scale.sizes());
    if (!factor.gt(1.0).any().item<bool>()) continue;
    if (graph.ConsumerIndices(scale_name).size() != 1) {
      throw Error(ErrorKind::kUnsupported, dq.Describe() + ": its scale '" + scale_name +
                                               "' is shared with other nodes; cannot re-quantize");
    }
    // The same float32 arithmetic QuantizeLinear performs, on the dequantized weights.
    const Tensor new_scale = (scale * factor).to(torch::kFloat).contiguous();
    const Tensor w = q.to(torch::kFloat) * AlongAxis(scale, dq, q);
    graph.Weight(l.weight) =
        torch::clamp(torch::round(w / AlongAxis(new_scale, dq, q)), -qmax, qmax).to(torch::kChar);
    graph.Weight(scale_name) = new_scale;
    // Biases of every layer reading this weight: int32 at input_scale * weight_scale.
    for (const Int8Layer& user : layers) {
      if (user.weight != l.weight) continue;
      const Node& node = graph.nodes[user.node];
      const int b = node.op_type == "MatMul" || !node.HasInput(2)
                        ? -1 : DequantizeProducer(graph, node.inputs[2]);
      if (b < 0) continue;
      const Node& bdq = graph.nodes[b];
      if (!graph.IsInitializer(bdq.inputs[0]) || graph.Weight(bdq.inputs[0]).scalar_type() != at::kInt) continue;
      const float x_scale = graph.Weight(graph.nodes[user.input_dq].inputs[1]).item<float>();
      Tensor& bq = graph.Weight(bdq.inputs[0]);
      Tensor& bscale = graph.Weight(bdq.inputs[1]);
      const Tensor new_bscale = (new_scale * x_scale).reshape(bscale.sizes()).contiguous();
      bq = torch::round(bq.to(torch::kDouble) * bscale.to(torch::kDouble) /
                        new_bscale.to(torch::kDouble)).to(torch::kInt);
      bscale = new_bscale;
    }
    ++changed;
  }
  graph.metadata[kInt8TargetKey] = Int8TargetName(target);
  return changed;
}

Tensor U8S8GemmReference(const Tensor& a, const Tensor& w, bool saturate_pairs) {
  TORCH_CHECK(a.dim() == 2 && w.dim() == 2 && a.size(1) == w.size(1),
              "U8S8GemmReference: expected a [M,K] and w [N,K]");
  Tensor ai = a.to(torch::kInt);
  Tensor wi = w.to(torch::kInt);
  if (ai.size(1) % 2 != 0) {
    ai = torch::constant_pad_nd(ai, {0, 1});
    wi = torch::constant_pad_nd(wi, {0, 1});
  }
  const int64_t m = ai.size(0), n = wi.size(0), k2 = ai.size(1) / 2;
  // [M, N, K/2]: the sum of each adjacent pair of products (vpmaddubsw's int16 lane).
  Tensor pairs = (ai.view({m, 1, k2, 2}) * wi.view({1, n, k2, 2})).sum(3);
  if (saturate_pairs) pairs = pairs.clamp(-kInt16Max - 1, kInt16Max);
  return pairs.sum(2).to(torch::kInt);
}

}  // namespace compress
