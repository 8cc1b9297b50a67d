// compress::Graph -> TorchScript: a torch::jit::Module whose forward computes what our
// Executor computes (eval mode), so a compressed model runs in plain LibTorch or
// Python without mcompress. Optionally runs quantized layers with LibTorch's real INT8
// kernels (quantized::conv2d / linear on packed weights).
#pragma once

#include <torch/script.h>

#include <string>
#include <utility>
#include <vector>

#include "compress/ir/graph.h"

namespace compress {

struct TorchScriptExportOptions {
  // "torchscript-int8": each DequantizeLinear(x) -> Conv/Gemm(DequantizeLinear(int8
  // weight), DequantizeLinear(int32 bias)) -> [Relu] -> QuantizeLinear pattern with
  // uint8 activations and symmetric weights becomes quantized::conv2d[_relu] /
  // quantized::linear[_relu] on weights packed once at export (MatMul with a [K,N]
  // weight, optionally followed by an Add of its bias, maps to linear too);
  // consecutive INT8 layers pass quantized tensors.
  // MaxPool/Flatten/Reshape/Relu between two such layers run on the quantized tensor.
  // Everything else stays fake-quant (float math, bit-exact with the Executor).
  bool real_int8 = false;
  // Quantized engine used to pack the weights: "onednn" or "qnnpack". Packed weights
  // are re-packed when the file is loaded, with the loader's engine, so the loader
  // must select the same one first: C++
  // `at::globalContext().setQEngine(at::QEngine::ONEDNN)`, Python
  // `torch.backends.quantized.engine = 'onednn'`.
  std::string qengine = "onednn";
};

struct TorchScriptExportResult {
  // Nodes that run with real INT8 kernels, in graph order: Conv/Gemm layers, and Adds
  // of two quantized tensors (DQ(a) + DQ(b) -> [Relu] -> Q: quantized::add[_relu]).
  std::vector<std::string> int8_layers;
  // {layer, reason}: quantized layers (a weight read through DequantizeLinear) kept as
  // fake-quant, in graph order. Always empty without real_int8. Callers print these.
  std::vector<std::pair<std::string, std::string>> fallback_layers;
};

// Builds a module whose forward(inputs...) returns the graph outputs (a Tensor, or a
// tuple for several) as the Executor does in eval mode. One statement per node, in
// graph order; helpers for ONNX semantics (Reshape 0/-1, auto_pad, Slice clamping...)
// are methods named `_mc_*`. The batch dimension (in fact every dimension) stays
// dynamic: nothing input-size dependent is folded at export.
// Initializers become parameters (trainable floats) or buffers (everything else, in
// their own dtype) under identifier-safe names; the attribute
// `mcompress_initializers` maps each attribute name back to the initializer name.
// Does not log. The current quantized engine is restored before returning.
// Throws compress::Error: kUnsupported naming the node (Node::Describe()) for an op
// or attribute TorchScript export does not cover (training-mode BatchNormalization or
// Dropout, MaxPool Indices output, dilated AveragePool, unsupported Constant forms,
// ops of other domains) or an unknown qengine; kInternal if LibTorch rejects the
// generated code (a bug here).
// Selects the quantized engine `name` ("onednn" or "qnnpack") for its lifetime and
// restores the previous one. Throws compress::Error(kUnsupported) for an unknown name or
// an engine this LibTorch lacks.
class ScopedQEngine {
 public:
  explicit ScopedQEngine(const std::string& name);
  ~ScopedQEngine();
  ScopedQEngine(const ScopedQEngine&) = delete;
  ScopedQEngine& operator=(const ScopedQEngine&) = delete;

 private:
  at::QEngine previous_;
};

torch::jit::Module GraphToTorchScript(const Graph& graph,
                                      const TorchScriptExportOptions& options = {},
                                      TorchScriptExportResult* result = nullptr);

// Name of the extra file in a saved module holding graph.metadata as a JSON object.
inline constexpr const char* kTorchScriptMetadataFile = "mcompress.json";

// GraphToTorchScript, then writes the module to `path` atomically (a temporary file
// beside it, renamed into place; never a half-written file), with graph.metadata in
// the extra file kTorchScriptMetadataFile. Throws as
// GraphToTorchScript (before anything is written), and compress::Error(kIo) naming
// `path` when it cannot be written.
TorchScriptExportResult SaveTorchScript(const Graph& graph, const std::string& path,
                                        const TorchScriptExportOptions& options = {});

}  // namespace compress
