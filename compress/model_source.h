// Where models come from and how the CLI runs them on tensor files: "zoo:<name>" or
// an ONNX file path (TorchScript arrives with the interop issue).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "compress/graph.h"

namespace compress {

// "zoo:<name>" builds a zoo model from `seed`; a path ending in .onnx is loaded.
// Anything else is a kUsage error naming the accepted forms.
Graph LoadModel(const std::string& spec, uint64_t seed = 0);

// Runs `graph` (eval mode, no autograd) on inputs read from ONNX TensorProto files
// (one per graph input, in order) and writes output_<k>.pb files into `out_dir`
// (created if missing). Returns the written paths.
std::vector<std::string> InferTensorFiles(const Graph& graph,
                                          const std::vector<std::string>& input_files,
                                          const std::string& out_dir);

}  // namespace compress
