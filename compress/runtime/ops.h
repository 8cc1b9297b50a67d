// The op registry: one table mapping each supported ONNX op type to its LibTorch
// kernel. The executor, graph validation, importers and the conformance test all read
// this table; adding an op is one kernel function plus one row.
#pragma once

#include <string>
#include <vector>

#include "compress/graph.h"

namespace compress {

struct KernelContext {
  const Node& node;
  const std::vector<Tensor>& inputs;  // undefined tensors for omitted optional inputs
  int64_t opset;                      // default-domain opset of the graph
  bool training;
};

using KernelFn = std::vector<Tensor> (*)(const KernelContext& ctx);

struct OpSpec {
  const char* op_type;
  KernelFn run;
  int min_inputs;
  int max_inputs;
  int min_outputs;
  int max_outputs;
};

// Every supported op, sorted by op_type.
const std::vector<OpSpec>& OpRegistry();
// The spec for a default-domain op type, or nullptr.
const OpSpec* FindOp(const std::string& op_type);

}  // namespace compress
