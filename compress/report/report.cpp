// Per-layer and size statistics of a graph (LayerTable, ComputeSize) and the bytes a
// deployment of a report's final model stores. The report's JSON form is in
// report_json.cpp; its Markdown and HTML renderings in markdown.cpp and html.cpp.
#include "compress/report/report.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "compress/ir/graph.h"
#include "compress/report/tables.h"

namespace compress {

using report_detail::FinalStage;

namespace {

bool IsWeightedOp(const std::string& op) {
  return op == "Conv" || op == "Gemm" || op == "MatMul";
}

// The initializer a weighted node reads as its weight (input 1): directly, or through a
// DequantizeLinear of an initializer (QDQ form), in which case `via_dq` is set.
const std::string* LayerWeightName(const Graph& graph, const Node& node, bool* via_dq) {
  *via_dq = false;
  if (!IsWeightedOp(node.op_type) || !node.HasInput(1)) return nullptr;
  const std::string& w = node.inputs[1];
  if (graph.IsInitializer(w)) return &w;
  const int p = graph.ProducerIndex(w);
  if (p >= 0) {
    const Node& dq = graph.nodes[p];
    if (dq.op_type == "DequantizeLinear" && dq.HasInput(0) && graph.IsInitializer(dq.inputs[0])) {
      *via_dq = true;
      return &dq.inputs[0];
    }
  }
  return nullptr;
}

// The weight as the model computes with it: which elements of value with its pruning
// mask applied are non-zero.
at::Tensor NonzeroMask(const Initializer& init) {
  at::Tensor nz = init.value != 0;
  if (init.mask.defined()) nz = at::logical_and(nz, init.mask.to(init.value.device()) != 0);
  return nz;
}

int64_t CountNonzeros(const Initializer& init) {
  if (!init.value.defined() || init.value.numel() == 0) return 0;
  return NonzeroMask(init).sum().item<int64_t>();
}

// Bytes of a tensor in the smallest of three layouts for `elem_bytes`-byte values:
// dense; a bitmask (one bit per element) with the non-zeros; or Deep Compression's
// relative indices (Han et al., ICLR 2016, section 2: each non-zero stored with the
// 4-bit distance from the previous one, a filler zero entry where a distance exceeds
// 16). An estimate of a storage format, computed from the actual zeros: ONNX has none
// of these (its sparse initializers take an 8-byte index per non-zero).
// `nonzero`: NonzeroMask of the tensor.
int64_t CompactBytes(const at::Tensor& nonzero, int64_t elem_bytes) {
  const int64_t n = nonzero.numel();
  const int64_t dense = n * elem_bytes;
  if (n == 0) return 0;
  const at::Tensor positions = at::nonzero(nonzero.reshape({-1}).cpu()).reshape({-1});
  const int64_t nnz = positions.numel();
  const int64_t bitmask = (n + 7) / 8 + nnz * elem_bytes;
  // Distances from the previous non-zero (the first from position -1); a distance d
  // takes ceil(d / 16) entries: d - 1 zeros skipped, one filler per 16 positions.
  int64_t entries = 0;
  if (nnz > 0) {
    const at::Tensor prev = at::cat({at::full({1}, -1, positions.options()), positions.narrow(0, 0, nnz - 1)});
    entries = ((positions - prev + 15).div(16, "floor")).sum().item<int64_t>();
  }
  const int64_t relative = (entries * (8 * elem_bytes + 4) + 7) / 8;
  return std::min({dense, bitmask, relative});
}

int64_t Product(const std::vector<int64_t>& dims, size_t from) {
  int64_t p = 1;
  for (size_t i = from; i < dims.size(); ++i) {
    if (dims[i] < 0) return -1;  // symbolic
    p *= dims[i];
  }
  return p;
}

// Spatial output size of a Conv from its input shape and attributes, for graphs whose
// value_info lacks the output shape. -1 when unknown.
int64_t ConvSpatialFromInput(const Graph& graph, const Node& node, const at::Tensor& w) {
  auto in = graph.FindValue(node.inputs[0]);
  if (!in || !in->shape || in->shape->size() != static_cast<size_t>(w.dim())) return -1;
  const auto& x = *in->shape;
  const size_t n = x.size() - 2;
  const auto strides = node.GetInts("strides", std::vector<int64_t>(n, 1));
  const auto dil = node.GetInts("dilations", std::vector<int64_t>(n, 1));
  const auto pads = node.GetInts("pads", std::vector<int64_t>(2 * n, 0));
  const std::string auto_pad = node.GetString("auto_pad", "NOTSET");
  int64_t p = 1;
  for (size_t i = 0; i < n; ++i) {
    const int64_t in_i = x[2 + i];
    if (in_i < 0 || i >= strides.size()) return -1;
    int64_t out;
    if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
      out = (in_i + strides[i] - 1) / strides[i];
    } else {
      const int64_t k = w.size(2 + i);
      const int64_t d = i < dil.size() ? dil[i] : 1;
      const int64_t pad = auto_pad == "VALID" || pads.size() < 2 * n ? 0 : pads[i] + pads[n + i];
      out = (in_i + pad - d * (k - 1) - 1) / strides[i] + 1;
    }
    p *= out;
  }
  return p;
}

int64_t LayerMacs(const Graph& graph, const Node& node, const at::Tensor& w) {
  auto out = graph.FindValue(node.outputs.empty() ? std::string() : node.outputs[0]);
  const std::vector<int64_t>* out_dims = out && out->shape ? &*out->shape : nullptr;
  if (node.op_type == "Conv") {
    // out_C * prod(out spatial) * (in_C / group) * prod(kernel) = prod(spatial) * |W|.
    int64_t spatial = out_dims && out_dims->size() >= 2 ? Product(*out_dims, 2) : -1;
    if (spatial < 0) spatial = ConvSpatialFromInput(graph, node, w);
    return spatial < 0 ? 0 : spatial * w.numel();
  }
  if (node.op_type == "Gemm") {
    if (w.dim() != 2) return 0;
    const bool trans_b = node.GetInt("transB", 0) != 0;
    const int64_t k = trans_b ? w.size(1) : w.size(0);
    const int64_t m_out = trans_b ? w.size(0) : w.size(1);
    return m_out * k;  // one sample = one row of A
  }
  // MatMul: every output element after the batch dimension costs K multiply-adds.
  const int64_t k = w.dim() >= 2 ? w.size(w.dim() - 2) : (w.dim() == 1 ? w.size(0) : 0);
  if (out_dims && out_dims->size() >= 2) {
    const int64_t per_sample = Product(*out_dims, 1);
    return per_sample < 0 ? 0 : per_sample * k;
  }
  if (out_dims && out_dims->size() == 1) return k;  // [N] = [N,K] x [K]
  return w.dim() == 2 ? w.numel() : 0;              // unknown output: one row
}

}  // namespace

std::vector<LayerRow> LayerTable(const Graph& graph) {
  std::vector<LayerRow> rows;
  for (const Node& node : graph.nodes) {
    bool via_dq = false;
    const std::string* wname = LayerWeightName(graph, node, &via_dq);
    if (!wname) continue;
    const Initializer& init = graph.initializers.at(*wname);
    const at::Tensor& w = init.value;
    LayerRow row;
    row.name = node.name;
    row.op = node.op_type;
    row.weight = *wname;
    row.weight_shape = w.sizes().vec();
    row.params = w.numel();
    if (node.op_type != "MatMul" && node.HasInput(2) && graph.IsInitializer(node.inputs[2])) {
      row.params += graph.initializers.at(node.inputs[2]).value.numel();
    }
    row.sparsity = w.numel() == 0 ? 0.0
                                  : 1.0 - static_cast<double>(CountNonzeros(init)) /
                                              static_cast<double>(w.numel());
    row.bits = init.quant ? init.quant->bits : (via_dq ? 8 : 32);
    row.macs = LayerMacs(graph, node, w);
    rows.push_back(std::move(row));
  }
  return rows;
}

SizeStats ComputeSize(const Graph& graph) {
  // Weights the INT8 rule stores in one byte: layer weights and anything quantized.
  std::map<std::string, bool> layer_weight;
  SizeStats s;
  for (const Node& node : graph.nodes) {
    bool via_dq = false;
    if (const std::string* w = LayerWeightName(graph, node, &via_dq)) layer_weight[*w] = true;
  }
  for (const LayerRow& row : LayerTable(graph)) s.macs += row.macs;
  for (const auto& [name, init] : graph.initializers) {
    if (!init.value.defined()) continue;
    const int64_t n = init.value.numel();
    const at::Tensor nonzero = NonzeroMask(init);  // once: the count and the compact size
    const int64_t nnz = n == 0 ? 0 : nonzero.sum().item<int64_t>();
    const bool is_weight = layer_weight.count(name) != 0 || init.quant.has_value();
    // FP32 storage: 4 bytes per floating-point element (and per layer weight even when
    // held as int8 behind a DequantizeLinear); other dtypes keep their element size.
    const int64_t elem = at::isFloatingType(init.value.scalar_type()) || is_weight
                             ? 4
                             : static_cast<int64_t>(init.value.element_size());
    s.parameters += n;
    s.nonzeros += nnz;
    s.bytes_fp32 += n * elem;
    s.bytes_int8 += is_weight ? n : n * elem;
    // As stored (sparse where COO pays off), each tensor at its own element size: a
    // quantized weight's int8 bytes, so a quantized model's stored size is real.
    const int64_t stored = static_cast<int64_t>(init.value.element_size());
    s.bytes_sparse += std::min(n * stored, nnz * (stored + 8));
    s.bytes_compact += nnz == n ? n * stored : CompactBytes(nonzero, stored);
  }
  return s;
}

int64_t StoredBytes(const Report& r) {
  const SizeStats& s = FinalStage(r).size;
  bool quantized = false;
  for (const auto& l : r.layers) quantized |= l.bits < 32;
  int64_t best = std::min(s.bytes_fp32, s.bytes_sparse);
  if (quantized) best = std::min(best, s.bytes_int8);
  return best;
}

}  // namespace compress
