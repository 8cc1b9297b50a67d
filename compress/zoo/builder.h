// GraphBuilder: constructs graphs in C++ (the zoo, tests, C++ callers) with
// PyTorch's default layer initialisation, reproducible from a seed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "compress/ir/graph.h"

namespace compress {

class GraphBuilder {
 public:
  explicit GraphBuilder(std::string graph_name, uint64_t seed = 0, int64_t opset = 13);

  // Declares a runtime input; use kDynamicDim for the batch dimension.
  std::string Input(const std::string& name, const std::vector<int64_t>& dims,
                    at::ScalarType dtype = at::kFloat);
  // Adds a named initializer (the name must be unique).
  std::string Constant(const std::string& name, const Tensor& value);
  // Adds a node; returns its output names (`num_outputs` of them, derived from the
  // node name). An empty `name` gets a fresh one from the op type; a given name is
  // used as is and must be unique (Build validates). Layers below name their
  // initializers "<name>.weight" / "<name>.bias".
  std::vector<std::string> Op(const std::string& op_type,
                              const std::vector<std::string>& inputs,
                              std::map<std::string, AttrValue> attrs = {},
                              int num_outputs = 1, const std::string& name = "");
  // Single-output shorthand.
  std::string Op1(const std::string& op_type, const std::vector<std::string>& inputs,
                  std::map<std::string, AttrValue> attrs = {},
                  const std::string& name = "");

  // Layers with PyTorch's default init (kaiming_uniform(a=sqrt(5)) for weights, i.e.
  // U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and the same bound for biases).
  std::string Conv(const std::string& x, int64_t in_channels, int64_t out_channels,
                   int64_t kernel, int64_t stride = 1, int64_t pad = 0,
                   int64_t groups = 1, bool bias = true, const std::string& name = "");
  // Fully connected: y = x W^T + b as Gemm(transB=1); x must be 2-D.
  std::string Linear(const std::string& x, int64_t in_features, int64_t out_features,
                     bool bias = true, const std::string& name = "");
  // BatchNormalization with gamma=1, beta=0, mean=0, var=1, eps=1e-5, momentum=0.9
  // (ONNX momentum: running = running*momentum + batch*(1-momentum)).
  std::string BatchNorm(const std::string& x, int64_t channels, const std::string& name = "");

  // Marks `value` as a graph output.
  void Output(const std::string& value, at::ScalarType dtype = at::kFloat);
  // Renames node output `value` to `name` (everywhere it is used) and marks it as a
  // graph output.
  void Output(const std::string& name, const std::string& value,
              at::ScalarType dtype = at::kFloat);

  // Validates, infers shapes (inputs must have known shapes) and returns the graph.
  Graph Build();

 private:
  std::string FreshName(const std::string& base) { return names_.Fresh(base); }
  Tensor Uniform(const std::vector<int64_t>& shape, double bound);

  Graph graph_;
  uint64_t seed_;
  uint64_t draws_ = 0;
  NameSource names_;  // every input, initializer, node and value name so far
};

}  // namespace compress
