// Internal to compress/io: not part of the public API, include it only from files in
// this folder (it is installed only because every header under compress/ is). The
// TorchScript exporter behind GraphToTorchScript, shared by torchscript_export.cpp
// (names, per-node emission, Run) and torchscript_int8.cpp (the real INT8 plan).
#pragma once

#include <torch/script.h>

#include <cstddef>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "compress/io/torchscript_export.h"
#include "compress/ir/graph.h"

namespace compress::torchscript_detail {

// Resolves `torch.*` to aten ops and `quantized.*` to LibTorch's quantized ops, for
// Module::define.
std::shared_ptr<torch::jit::Resolver> MakeExportResolver();

// `name` made a fresh identifier: [A-Za-z0-9_], no leading digit, not reserved, not
// in `taken`, not one of our `_mc_` helper names. Inserts it into `taken`.
std::string FreshIdent(const std::string& name, const std::string& fallback,
                       std::set<std::string>& taken);

// An exception's message without LibTorch's C++ backtrace.
std::string WhatOf(const std::exception& e);

// Static window of a conv/pool (NOTSET / VALID): begin/end pads; nullopt for SAME_*.
struct StaticWindow {
  std::vector<int64_t> strides, dilations, pads, begin, end;
  int auto_pad = 0;  // 0 NOTSET, 1 SAME_UPPER, 2 SAME_LOWER, 3 VALID
  bool Symmetric(const std::vector<int64_t>& kernel, bool limit_half_kernel) const {
    for (size_t i = 0; i < kernel.size(); ++i) {
      if (begin[i] != end[i]) return false;
      if (limit_half_kernel && begin[i] > ((kernel[i] - 1) * dilations[i] + 1) / 2) return false;
    }
    return true;
  }
};

// The window attributes of a conv/pool `node` with `n` spatial dims. Throws
// compress::Error(kIo) naming the node when they do not match `n` or auto_pad is unknown.
StaticWindow WindowOf(const Node& node, size_t n);

// Per-tensor (scale, zero point) of a Q/DQ node as static tensors, or a reason.
std::string PerTensorParams(const Graph& g, const Node& qdq, Tensor* scale, Tensor* zp);

// One Conv/Gemm that runs with real INT8 kernels.
struct Int8Layer {
  int node = -1;     // the Conv/Gemm
  int relu = -1;     // fused Relu, or -1
  int bias_add = -1; // MatMul only: the Add of its bias, or -1
  int q_in = -1;     // QuantizeLinear whose DequantizeLinear feeds the layer
  int q_out = -1;    // QuantizeLinear of the layer's (or Relu's) output
  Tensor qweight;    // quantized weight (per-channel or per-tensor)
  Tensor bias;       // float bias, or undefined
  double out_scale = 0;
  int64_t out_zp = 0;
};

// Ops between two real QuantizeLinear nodes that LibTorch runs on quantized tensors
// as they are: DQ(q) -> MaxPool/Flatten/Reshape/Relu... -> Q.
struct QuantizedChain {
  int source_q = -1;     // the real QuantizeLinear whose tensor enters the chain
  std::vector<int> ops;  // the passthrough nodes, in order
  bool requantize = false;
  double scale = 0;      // the end QuantizeLinear's parameters
  int64_t zp = 0;
};

// An Add of two quantized tensors run by quantized::add[_relu]: DQ(qa) + DQ(qb) ->
// [Relu] -> Q, with qa and qb real QuantizeLinear nodes.
struct QuantizedAdd {
  int node = -1, relu = -1, qa = -1, qb = -1, q_out = -1;
  double scale = 0;
  int64_t zp = 0;
};

// One export: construct, call Run once. `graph` and `options` must outlive it.
class Exporter {
 public:
  Exporter(const Graph& graph, const TorchScriptExportOptions& options)
      : graph_(graph),
        options_(options),
        module_(c10::QualifiedName("__torch__.mcompress.ExportedGraph")) {}

  torch::jit::Module Run(TorchScriptExportResult* result);

 private:
  // An op's emitter: writes the statements of one node.
  using Emitter = void (Exporter::*)(const Node&);

  // -- Run's steps
  std::string Signature();
  std::vector<bool> LiveNodes() const;
  void EmitRealQuantize(int i, const std::vector<bool>& live);
  std::string EmitQuantizedChain(const Node& end_q, const QuantizedChain& c);
  void DefineForward(const std::string& signature);

  // -- names and values
  std::string Ref(const std::string& value);
  std::string Define(const std::string& value);
  std::string AttrFor(const std::string& initializer);
  std::string BufferFor(const std::string& hint, const Tensor& t);
  std::optional<Tensor> Static(const std::string& value) const;
  std::optional<at::ScalarType> DtypeOf(const std::string& value) const;
  std::optional<int64_t> RankOf(const std::string& value) const;
  std::string IntsArg(const Node& node, size_t input);
  std::string OptRef(const Node& node, size_t input);
  std::string Use(const std::string& helper);
  [[noreturn]] void Unsupported(const Node& node, const std::string& what) const;
  void Emit(const std::string& line) { body_ << "    " << line << "\n"; }
  std::string In(const Node& node, size_t i) { return Ref(node.inputs.at(i)); }
  std::string Out(const Node& node, size_t i = 0) { return Define(node.outputs.at(i)); }

  // -- nodes: EmitNode dispatches through FindEmitter's table, one row per op type.
  static Emitter FindEmitter(const std::string& op_type);
  void EmitNode(const Node& node);
  void EmitUnary(const Node& node, const std::string& fn);
  void EmitAddSubMul(const Node& node);
  void EmitDiv(const Node& node);
  void EmitRelu(const Node& node);
  void EmitSigmoid(const Node& node);
  void EmitTanh(const Node& node);
  void EmitErf(const Node& node);
  void EmitHardSwish(const Node& node);
  void EmitLeakyRelu(const Node& node);
  void EmitHardSigmoid(const Node& node);
  void EmitGelu(const Node& node);
  void EmitClip(const Node& node);
  void EmitBatchNormalization(const Node& node);
  void EmitConv(const Node& node);
  void EmitPool(const Node& node);  // MaxPool, AveragePool
  void EmitGlobalAveragePool(const Node& node);
  void EmitGemm(const Node& node);
  void EmitMatMul(const Node& node);
  void EmitFlatten(const Node& node);
  void EmitReshape(const Node& node);
  void EmitTranspose(const Node& node);
  void EmitSqueeze(const Node& node);  // Squeeze, Unsqueeze
  void EmitConcat(const Node& node);
  void EmitSplit(const Node& node);
  void EmitSlice(const Node& node);
  void EmitSoftmax(const Node& node);
  void EmitLayerNormalization(const Node& node);
  void EmitDropout(const Node& node);
  void EmitIdentity(const Node& node);
  void EmitConstant(const Node& node);
  void EmitQuantize(const Node& node);
  void EmitDequantize(const Node& node);
  std::string PerAxis(const Node& node, const std::string& param, const std::string& x);
  std::string QuantizedOf(int q_node);

  // -- real INT8 plan (torchscript_int8.cpp)
  void PlanInt8(TorchScriptExportResult* result);
  std::string MatchInt8(int index, Int8Layer* layer);
  std::string BiasOf(const std::string& value, Tensor* bias) const;
  std::string PackLayer(const Int8Layer& layer);
  void PlanChains();
  void PlanAdds(TorchScriptExportResult* result);
  std::string MatchAdd(int index, QuantizedAdd* add) const;
  int QuantizedSource(const std::string& value) const;
  bool Passthrough(const Node& node) const;

  const Graph& graph_;
  const TorchScriptExportOptions& options_;
  torch::jit::Module module_;
  std::ostringstream body_;
  std::set<std::string> helpers_;
  std::set<std::string> attr_names_, local_names_;
  std::map<std::string, std::string> value_expr_;  // value -> TorchScript expression
  std::map<std::string, std::string> attr_of_;     // initializer -> attribute
  c10::Dict<std::string, std::string> initializer_names_;
  std::set<std::string> trainable_;
  // Real INT8 plan.
  std::map<int, Int8Layer> layer_at_q_out_;        // q_out node -> layer
  std::set<int> skipped_;                          // nodes folded into an INT8 layer
  std::set<int> real_q_;                           // Q nodes producing quantized tensors
  std::map<int, std::string> quantized_var_;       // real Q node -> its quantized tensor
  std::map<int, std::string> packed_attr_;         // INT8 layer node -> packed weights
  std::set<int> absorbed_dq_;                      // DQ nodes only INT8 layers read
  std::map<int, QuantizedChain> chain_at_q_;       // end Q node -> its chain
  std::map<int, QuantizedAdd> add_at_q_out_;       // q_out node -> quantized Add
  torch::jit::Module packer_{c10::QualifiedName("__torch__.mcompress.Packer")};
  bool packer_ready_ = false;
};

}  // namespace compress::torchscript_detail
