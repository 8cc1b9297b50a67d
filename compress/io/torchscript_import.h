// TorchScript -> compress::Graph: loads a TorchScript file (or traces a C++
// torch::nn::Module) and maps its aten ops to our ONNX-semantics ops, folding
// everything the static input shape decides. The batch dimension stays dynamic.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "compress/ir/graph.h"

namespace torch::nn {
class Module;
}  // namespace torch::nn

namespace compress {

struct TorchScriptImportOptions {
  // Dim 0 of every input is the batch: kDynamicDim in the graph, and nothing the
  // importer folds may depend on it (checked by importing at two batch sizes).
  bool dynamic_batch = true;
  // Graph input names; default: the model's argument names ("x", "input", ...).
  std::vector<std::string> input_names;
  // Debugging aid: runs each original TorchScript op beside the ops it maps to and
  // throws kInternal naming the node on the first mismatch beyond 1e-4.
  bool check_nodes = false;
};

// The front door of ImportTorchScript, before LibTorch's loader sees the file: it is a
// regular file within Limits::max_model_bytes, a well-formed zip archive, and holds
// what torch.jit.save writes (data.pkl and code/); a torch.save file (data.pkl without
// code/) is named as such. Throws Error(kIo) naming the file. docs/security.md: passing
// this does not make a TorchScript file safe; it is a program.
void CheckTorchScriptFile(const std::string& path);

// Loads the TorchScript module at `path` on the CPU (eval mode, frozen with
// torch::jit::freeze_module so BatchNorm stays a layer) and imports its forward for
// float32 inputs of `input_shapes` (one per forward argument, batch first).
// Initializers are named after the layer using them ("layer1.0.conv1.weight").
// Throws compress::Error: kIo for a missing, truncated or non-TorchScript file;
// kUsage when the shapes do not fit the model (naming the input and shape);
// kUnsupported listing every op kind without a mapping, with source locations.
Graph ImportTorchScript(const std::string& path,
                        const std::vector<std::vector<int64_t>>& input_shapes,
                        const TorchScriptImportOptions& options = {});

// Runs the model on the inputs and returns its outputs (a tuple/list output is
// flattened). The forward of a C++ module, seen by the tracer.
using ForwardFn = std::function<std::vector<Tensor>(const std::vector<Tensor>& inputs)>;

// Traces `forward` (which calls `module`) with LibTorch's C++ tracer on
// `example_inputs` and imports the traced graph, so C++ pipelines compress their own
// models. The module's parameters and buffers become initializers under their own
// names ("conv1.weight"). The module is traced in eval mode; its train/eval mode is
// restored afterwards. Errors as ImportTorchScript.
Graph ImportModule(torch::nn::Module& module, const ForwardFn& forward,
                   const std::vector<Tensor>& example_inputs,
                   const TorchScriptImportOptions& options = {});

// Shorthand for a module with a single-tensor `forward(x)`.
template <typename ModuleT>
Graph ImportModule(ModuleT& module, const Tensor& example_input,
                   const TorchScriptImportOptions& options = {}) {
  return ImportModule(
      module, [&module](const std::vector<Tensor>& in) { return std::vector<Tensor>{module.forward(in[0])}; },
      {example_input}, options);
}

}  // namespace compress
