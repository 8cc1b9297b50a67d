// Where models come from and how the CLI runs them on tensor files: "zoo:<name>", an
// ONNX file path, or a TorchScript file (.pt/.pth/.ts) given its input shapes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "compress/ir/graph.h"

namespace compress {

struct ModelLoadOptions {
  uint64_t seed = 0;  // zoo models' initialisation
  // TorchScript files: the shape of each forward input, batch first (the batch stays
  // dynamic in the graph). Required for .pt/.pth/.ts, ignored otherwise.
  std::vector<std::vector<int64_t>> input_shapes;
};

// "zoo:<name>" builds a zoo model from `seed`; a path ending in .onnx is loaded; a
// path ending in .pt, .pth or .ts is imported as TorchScript (ImportTorchScript).
// Anything else, or TorchScript without input shapes, is a kUsage error naming the
// accepted forms.
// The model spec of a recipe run by a C++ program on a model it already has
// (RunRecipeOn, compress/engine/engine.h); data.dataset "caller" is its data twin.
// LoadModel refuses it: there is nothing to load.
inline constexpr const char* kCallerModel = "caller";

Graph LoadModel(const std::string& spec, const ModelLoadOptions& options);
Graph LoadModel(const std::string& spec, uint64_t seed = 0);

// True for the file names LoadModel imports as TorchScript.
bool IsTorchScriptPath(const std::string& spec);

// Parses "1,3,224,224" (or "1x3x224x224") into dims; throws compress::Error(kUsage)
// naming `text` when a dim is not a positive integer.
std::vector<int64_t> ParseShape(const std::string& text);

// Runs `graph` (eval mode, no autograd) on inputs read from ONNX TensorProto files
// (one per graph input, in order) and writes output_<k>.pb files into `out_dir`
// (created if missing). Returns the written paths.
std::vector<std::string> InferTensorFiles(const Graph& graph,
                                          const std::vector<std::string>& input_files,
                                          const std::string& out_dir);

}  // namespace compress
