// The real-INT8 plan of the TorchScript exporter: which quantized Conv/Gemm/MatMul
// layers, Adds and passthrough chains run on LibTorch's quantized kernels (the rest
// stays fake-quant), with the layers' weights packed once by the selected engine.
#include "compress/io/torchscript_exporter.h"

#include <torch/torch.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace compress::torchscript_detail {

namespace {

// The node producing `value` if it is `op_type`, else nullptr.
const Node* ProducerOf(const Graph& g, const std::string& value, const std::string& op_type,
                       int* index = nullptr) {
  const int p = g.ProducerIndex(value);
  if (p < 0 || g.nodes[p].op_type != op_type) return nullptr;
  if (index) *index = p;
  return &g.nodes[p];
}

// Same-valued scale/zero point (per-tensor): true when both refer to equal tensors.
bool SameTensor(const Tensor& a, const Tensor& b) {
  return a.defined() && b.defined() && a.sizes() == b.sizes() &&
         a.scalar_type() == b.scalar_type() && at::equal(a.cpu(), b.cpu());
}

}  // namespace

// Per-tensor (scale, zero point) of a Q/DQ node as static tensors, or a reason.
std::string PerTensorParams(const Graph& g, const Node& qdq, Tensor* scale, Tensor* zp) {
  auto it = g.initializers.find(qdq.inputs[1]);
  if (it == g.initializers.end()) return "its scale is not an initializer";
  *scale = it->second.value;
  if (scale->numel() != 1) return "its activation scale is not per-tensor";
  if (!qdq.HasInput(2)) {
    *zp = torch::zeros({}, torch::kByte);
    return "";
  }
  auto zit = g.initializers.find(qdq.inputs[2]);
  if (zit == g.initializers.end()) return "its zero point is not an initializer";
  *zp = zit->second.value;
  if (zp->numel() != 1) return "its activation zero point is not per-tensor";
  return "";
}

// A static 1-D bias as float: an initializer, or DequantizeLinear of initializers
// (computed as the DequantizeLinear kernel does). Returns why not, or "".
std::string Exporter::BiasOf(const std::string& value, Tensor* bias) const {
  const Graph& g = graph_;
  if (const Node* dq_b = ProducerOf(g, value, "DequantizeLinear")) {
    for (size_t i = 0; i < dq_b->inputs.size(); ++i) {
      if (dq_b->HasInput(i) && !g.IsInitializer(dq_b->inputs[i])) {
        return "bias quantization parameters are not initializers";
      }
    }
    const Tensor bq = g.Weight(dq_b->inputs[0]).to(torch::kCPU);
    const Tensor bs = g.Weight(dq_b->inputs[1]).to(torch::kCPU);
    Tensor bz = dq_b->HasInput(2) ? g.Weight(dq_b->inputs[2]).to(torch::kCPU) : torch::zeros_like(bs);
    *bias = (bq.to(bs.scalar_type()) - bz.to(bs.scalar_type())) * bs;
  } else if (g.IsInitializer(value)) {
    *bias = g.Weight(value).to(torch::kCPU);
  } else {
    return "bias is computed at run time";
  }
  if (bias->dim() != 1) return "bias is not 1-D";
  *bias = bias->to(torch::kFloat).contiguous();
  return "";
}

std::string Exporter::MatchInt8(int index, Int8Layer* layer) {
  const Graph& g = graph_;
  const Node& node = g.nodes[index];
  const bool conv = node.op_type == "Conv";
  const bool matmul = node.op_type == "MatMul";
  layer->node = index;
  // Weight: DequantizeLinear of an int8 initializer with zero zero points.
  const Node* dq_w = ProducerOf(g, node.inputs[1], "DequantizeLinear");
  if (!dq_w) return "weight is not read through DequantizeLinear";
  if (!g.IsInitializer(dq_w->inputs[0]) || !g.IsInitializer(dq_w->inputs[1]) ||
      (dq_w->HasInput(2) && !g.IsInitializer(dq_w->inputs[2]))) {
    return "weight quantization parameters are not initializers";
  }
  const Tensor& wq = g.Weight(dq_w->inputs[0]);
  if (wq.scalar_type() != at::kChar) return "weight is " + DtypeName(wq.scalar_type()) + ", not int8";
  const Tensor w_scale = g.Weight(dq_w->inputs[1]).to(torch::kCPU);
  Tensor w_zp = dq_w->HasInput(2) ? g.Weight(dq_w->inputs[2]).to(torch::kCPU) : torch::zeros_like(w_scale, torch::kChar);
  if (w_zp.ne(0).any().item<bool>()) return "weight zero point is not zero (the INT8 kernels need symmetric weights)";
  const bool per_channel = w_scale.dim() == 1 && w_scale.numel() > 1;
  // Output channels: dim 0 of Conv/Gemm weights, dim 1 of MatMul's [K, N].
  const int64_t channel_axis = matmul ? 1 : 0;
  if (per_channel) {
    int64_t axis = dq_w->GetInt("axis", 1);
    if (axis < 0) axis += wq.dim();
    if (axis != channel_axis) {
      return "weight is quantized along axis " + std::to_string(axis) + ", not " + std::to_string(channel_axis);
    }
    if (w_scale.numel() != wq.size(channel_axis)) return "weight scale count does not match the output channels";
  }
  // Layer attributes the quantized kernels cover.
  if (conv) {
    if (wq.dim() != 4) return "only 2-D convolutions have an INT8 kernel";
    const StaticWindow w = WindowOf(node, 2);
    if (w.auto_pad == 1 || w.auto_pad == 2) return "auto_pad SAME";
    std::vector<int64_t> kernel(wq.sizes().begin() + 2, wq.sizes().end());
    if (!w.Symmetric(kernel, false)) return "asymmetric padding";
  } else if (matmul) {
    if (wq.dim() != 2) return "weight is not 2-D";
  } else {
    if (node.GetInt("transA", 0) != 0 || node.GetInt("transB", 0) != 1 ||
        node.GetFloat("alpha", 1.0) != 1.0 || node.GetFloat("beta", 1.0) != 1.0) {
      return "Gemm is not a fully connected layer (transA=0, transB=1, alpha=beta=1)";
    }
    if (wq.dim() != 2) return "weight is not 2-D";
  }
  // Activation: DequantizeLinear(QuantizeLinear(x)) per tensor, uint8.
  const Node* dq_x = ProducerOf(g, node.inputs[0], "DequantizeLinear");
  if (!dq_x) return "input is not read through DequantizeLinear";
  int q_in = -1;
  const Node* q_x = ProducerOf(g, dq_x->inputs[0], "QuantizeLinear", &q_in);
  if (!q_x) return "input DequantizeLinear does not read a QuantizeLinear";
  Tensor xs, xz, dxs, dxz;
  std::string why = PerTensorParams(g, *q_x, &xs, &xz);
  if (!why.empty()) return "input QuantizeLinear: " + why;
  why = PerTensorParams(g, *dq_x, &dxs, &dxz);
  if (!why.empty()) return "input DequantizeLinear: " + why;
  if (!SameTensor(xs, dxs) || !SameTensor(xz, dxz)) return "input Q/DQ pair uses different parameters";
  if (xz.scalar_type() != at::kByte) {
    return "activation is " + DtypeName(xz.scalar_type()) + " (the INT8 kernels take uint8 activations)";
  }
  layer->q_in = q_in;
  // Bias: float, or DequantizeLinear of int32 (per channel or per tensor).
  if (node.HasInput(2) && !matmul) {
    why = BiasOf(node.inputs[2], &layer->bias);
    if (!why.empty()) return why;
  }
  // Output: [Relu] then QuantizeLinear, nothing else reading the float values.
  auto only_consumer = [&](const std::string& value) -> int {
    std::vector<int> c = g.ConsumerIndices(value);
    if (c.size() != 1 || g.IsOutput(value)) return -1;
    return c[0];
  };
  int next = only_consumer(node.outputs[0]);
  if (next < 0 && g.IsOutput(node.outputs[0])) {
    return "its output is a graph output, kept float (no output scale to requantize to)";
  }
  if (next < 0) return "output is read by more than a QuantizeLinear";
  if (matmul && g.nodes[next].op_type == "Add") {
    // MatMul + bias, as a fully connected layer is often written.
    const Node& add = g.nodes[next];
    const std::string other = add.inputs[0] == node.outputs[0] ? add.inputs[1] : add.inputs[0];
    why = BiasOf(other, &layer->bias);
    if (!why.empty()) return "MatMul's Add: " + why;
    if (layer->bias.size(0) != wq.size(1)) return "MatMul's Add is not a bias per output channel";
    layer->bias_add = next;
    next = only_consumer(add.outputs[0]);
    if (next < 0) return "output is read by more than a QuantizeLinear";
  }
  if (g.nodes[next].op_type == "Relu") {
    layer->relu = next;
    next = only_consumer(g.nodes[next].outputs[0]);
    if (next < 0) return "Relu output is read by more than a QuantizeLinear";
  }
  if (g.nodes[next].op_type != "QuantizeLinear") return "output is not quantized (no QuantizeLinear after it)";
  Tensor ys, yz;
  why = PerTensorParams(g, g.nodes[next], &ys, &yz);
  if (!why.empty()) return "output QuantizeLinear: " + why;
  if (yz.scalar_type() != at::kByte) return "output is quantized to " + DtypeName(yz.scalar_type()) + ", not uint8";
  layer->q_out = next;
  layer->out_scale = ys.to(torch::kCPU).item<float>();
  layer->out_zp = yz.to(torch::kCPU).item<int64_t>();
  // The quantized weight, [out, in...] as the kernels take it.
  const Tensor w_int8 = (matmul ? wq.t() : wq).to(torch::kCPU).contiguous();
  if (per_channel) {
    layer->qweight = at::_make_per_channel_quantized_tensor(
        w_int8, w_scale.to(torch::kDouble), w_zp.to(torch::kLong), 0);
  } else {
    layer->qweight = at::_make_per_tensor_quantized_tensor(w_int8, w_scale.item<double>(), 0);
  }
  return "";
}

// Packs the weight of `layer` with the selected engine and stores it as a module
// attribute; returns the attribute name. The engine's errors propagate (c10::Error).
std::string Exporter::PackLayer(const Int8Layer& layer) {
  const Node& node = graph_.nodes[layer.node];
  if (!packer_ready_) {
    packer_.define(R"(
def pack_conv(self, w: Tensor, b: Optional[Tensor], stride: List[int], padding: List[int], dilation: List[int], groups: int):
    return quantized.conv2d_prepack(w, b, stride, padding, dilation, groups)
def pack_linear(self, w: Tensor, b: Optional[Tensor]):
    return quantized.linear_prepack(w, b)
)", MakeExportResolver());
    packer_ready_ = true;
  }
  c10::IValue bias = layer.bias.defined() ? c10::IValue(layer.bias) : c10::IValue();
  c10::IValue packed;
  if (node.op_type == "Conv") {
    const StaticWindow w = WindowOf(node, 2);
    packed = packer_.run_method("pack_conv", layer.qweight, bias, w.strides, w.begin, w.dilations,
                                node.GetInt("group", 1));
  } else {
    packed = packer_.run_method("pack_linear", layer.qweight, bias);
  }
  const std::string attr = FreshIdent(node.name + "_packed", "packed", attr_names_);
  module_.register_attribute(attr, packed.type(), packed);
  return attr;
}

// The whole plan: matches each quantized Conv/Gemm/MatMul against the INT8 kernels
// (packing those that fit, recording why the others fall back), then the quantized
// Adds, the DequantizeLinear nodes no float code reads, and the passthrough chains.
void Exporter::PlanInt8(TorchScriptExportResult* result) {
  const Graph& g = graph_;
  for (int i = 0; i < static_cast<int>(g.nodes.size()); ++i) {
    const Node& node = g.nodes[i];
    if (node.op_type != "Conv" && node.op_type != "Gemm" && node.op_type != "MatMul") continue;
    // Only quantized layers (weight read through DequantizeLinear) are candidates.
    if (!ProducerOf(g, node.inputs[1], "DequantizeLinear")) continue;
    Int8Layer layer;
    std::string why = MatchInt8(i, &layer);
    if (why.empty()) {
      // Packing is the engine's verdict on what it supports (e.g. some grouped convs).
      try {
        packed_attr_[i] = PackLayer(layer);
      } catch (const c10::Error& e) {
        std::string what = WhatOf(e);
        why = "the " + options_.qengine + " engine rejects it: " + what.substr(0, what.find('\n'));
      }
    }
    if (!why.empty()) {
      result->fallback_layers.emplace_back(node.name, why);
      continue;
    }
    result->int8_layers.push_back(node.name);
    layer_at_q_out_[layer.q_out] = layer;
    skipped_.insert(layer.node);
    if (layer.relu >= 0) skipped_.insert(layer.relu);
    if (layer.bias_add >= 0) skipped_.insert(layer.bias_add);
    real_q_.insert(layer.q_in);
    real_q_.insert(layer.q_out);
  }
  PlanAdds(result);
  std::map<std::string, size_t> position;
  for (size_t i = 0; i < g.nodes.size(); ++i) position[g.nodes[i].name] = i;
  std::sort(result->int8_layers.begin(), result->int8_layers.end(),
            [&](const std::string& a, const std::string& b) { return position[a] < position[b]; });
  // DequantizeLinear nodes whose only readers are INT8 nodes, reading them where they
  // take a quantized tensor (a layer's activation, an Add's operands), are not
  // computed at all.
  std::map<int, size_t> quantized_operands;  // INT8 node -> how many leading inputs
  for (const auto& [q, layer] : layer_at_q_out_) quantized_operands[layer.node] = 1;
  for (const auto& [q, add] : add_at_q_out_) quantized_operands[add.node] = 2;
  for (int q : real_q_) {
    for (int d : g.ConsumerIndices(g.nodes[q].outputs[0])) {
      const Node& dq = g.nodes[d];
      if (dq.op_type != "DequantizeLinear" || g.IsOutput(dq.outputs[0])) continue;
      bool all_int8 = true;
      for (int c : g.ConsumerIndices(dq.outputs[0])) {
        auto it = quantized_operands.find(c);
        for (size_t k = 0; k < g.nodes[c].inputs.size(); ++k) {
          if (g.nodes[c].inputs[k] != dq.outputs[0]) continue;
          if (it == quantized_operands.end() || k >= it->second) all_int8 = false;
        }
      }
      if (all_int8) absorbed_dq_.insert(d);
    }
  }
  PlanChains();
}

// The QuantizeLinear whose tensor `value` dequantizes with the same per-tensor uint8
// parameters, or -1. Any such Q can produce a real quantized tensor (the kernels take
// quint8), whether or not an INT8 layer reads it already.
int Exporter::QuantizedSource(const std::string& value) const {
  const Node* dq = ProducerOf(graph_, value, "DequantizeLinear");
  if (!dq) return -1;
  int q = -1;
  if (!ProducerOf(graph_, dq->inputs[0], "QuantizeLinear", &q)) return -1;
  Tensor qs, qz, ds, dz;
  if (!PerTensorParams(graph_, graph_.nodes[q], &qs, &qz).empty() ||
      !PerTensorParams(graph_, *dq, &ds, &dz).empty() || !SameTensor(qs, ds) ||
      !SameTensor(qz, dz) || qz.scalar_type() != at::kByte) {
    return -1;
  }
  return q;
}

// Whether the Add at `index` runs as quantized.add[_relu]: both operands quantized
// tensors, the result read only by ([Relu] then) a per-tensor uint8 QuantizeLinear that
// no other INT8 node computes. Returns why not, or "".
std::string Exporter::MatchAdd(int index, QuantizedAdd* add) const {
  const Graph& g = graph_;
  const Node& node = g.nodes[index];
  add->node = index;
  add->qa = QuantizedSource(node.inputs[0]);
  add->qb = QuantizedSource(node.inputs[1]);
  if (add->qa < 0 || add->qb < 0) {
    return std::string("its ") + (add->qa < 0 ? "first" : "second") +
           " operand is not a per-tensor uint8 Q/DQ pair";
  }
  auto only_reader = [&](const std::string& value) -> int {
    std::vector<int> c = g.ConsumerIndices(value);
    return c.size() == 1 && !g.IsOutput(value) ? c[0] : -1;
  };
  int next = only_reader(node.outputs[0]);
  if (next >= 0 && g.nodes[next].op_type == "Relu") {
    add->relu = next;
    next = only_reader(g.nodes[next].outputs[0]);
  }
  if (next < 0 || g.nodes[next].op_type != "QuantizeLinear") {
    return "its result is read by more than a QuantizeLinear (or is a graph output)";
  }
  if (layer_at_q_out_.count(next) || add_at_q_out_.count(next) || chain_at_q_.count(next)) {
    return "its QuantizeLinear is computed by another INT8 node";
  }
  Tensor s, z;
  const std::string why = PerTensorParams(g, g.nodes[next], &s, &z);
  if (!why.empty()) return "output QuantizeLinear: " + why;
  if (z.scalar_type() != at::kByte) return "its result is quantized to " + DtypeName(z.scalar_type()) + ", not uint8";
  add->q_out = next;
  add->scale = s.to(torch::kCPU).item<float>();
  add->zp = z.to(torch::kCPU).item<int64_t>();
  return "";
}

// Quantized Adds (both operands read through DequantizeLinear, as residual blocks in
// QDQ form are) on LibTorch's quantized add, in graph order so residual blocks chain;
// the ones that cannot are listed as fallbacks with why.
void Exporter::PlanAdds(TorchScriptExportResult* result) {
  const Graph& g = graph_;
  for (int i = 0; i < static_cast<int>(g.nodes.size()); ++i) {
    const Node& node = g.nodes[i];
    if (node.op_type != "Add" || !ProducerOf(g, node.inputs[0], "DequantizeLinear") ||
        !ProducerOf(g, node.inputs[1], "DequantizeLinear")) {
      continue;
    }
    QuantizedAdd add;
    const std::string why = MatchAdd(i, &add);
    if (!why.empty()) {
      result->fallback_layers.emplace_back(node.name, why);
      continue;
    }
    add_at_q_out_[add.q_out] = add;
    skipped_.insert(i);
    if (add.relu >= 0) skipped_.insert(add.relu);
    real_q_.insert({add.qa, add.qb, add.q_out});
    result->int8_layers.push_back(node.name);
  }
}

// Ops that give the same values on a quantized tensor (max and reshapes commute with
// the monotonic dequantization), with the attributes LibTorch's quantized kernels take.
bool Exporter::Passthrough(const Node& node) const {
  if (node.op_type == "Relu" || node.op_type == "Flatten") return true;
  if (node.op_type == "Reshape") return Static(node.inputs[1]).has_value();
  if (node.op_type != "MaxPool" || node.outputs.size() > 1) return false;
  const std::vector<int64_t> kernel = node.GetInts("kernel_shape");
  if (kernel.size() != 2) return false;
  const StaticWindow w = WindowOf(node, 2);
  return w.auto_pad != 1 && w.auto_pad != 2 && w.Symmetric(kernel, true);
}

// Finds DQ(real Q) -> passthrough ops -> real Q chains whose intermediate values have
// no other reader: the end Q's tensor is computed from the source Q's tensor without
// leaving the quantized domain (re-quantized only when the parameters differ).
void Exporter::PlanChains() {
  const Graph& g = graph_;
  for (int q : std::set<int>(real_q_)) {
    for (int d : g.ConsumerIndices(g.nodes[q].outputs[0])) {
      const Node& dq = g.nodes[d];
      if (dq.op_type != "DequantizeLinear" || absorbed_dq_.count(d)) continue;
      Tensor qs, qz, ds, dz;
      if (!PerTensorParams(g, g.nodes[q], &qs, &qz).empty() ||
          !PerTensorParams(g, dq, &ds, &dz).empty() || !SameTensor(qs, ds) || !SameTensor(qz, dz)) {
        continue;
      }
      QuantizedChain chain;
      chain.source_q = q;
      std::string value = dq.outputs[0];
      int end = -1;
      while (true) {
        std::vector<int> readers = g.ConsumerIndices(value);
        if (readers.size() != 1 || g.IsOutput(value)) break;
        const Node& next = g.nodes[readers[0]];
        if (next.inputs[0] != value) break;
        if (next.op_type == "QuantizeLinear") {
          if (real_q_.count(readers[0]) && !layer_at_q_out_.count(readers[0]) && !chain.ops.empty()) {
            end = readers[0];
          }
          break;
        }
        if (!Passthrough(next)) break;
        chain.ops.push_back(readers[0]);
        value = next.outputs[0];
      }
      if (end < 0 || chain_at_q_.count(end)) continue;
      Tensor es, ez;
      PerTensorParams(g, g.nodes[end], &es, &ez);
      chain.scale = es.to(torch::kCPU).item<float>();
      chain.zp = ez.to(torch::kCPU).item<int64_t>();
      chain.requantize = !SameTensor(es, qs) || !SameTensor(ez, qz);
      skipped_.insert(d);
      skipped_.insert(chain.ops.begin(), chain.ops.end());
      chain_at_q_[end] = chain;
    }
  }
}

}  // namespace compress::torchscript_detail
