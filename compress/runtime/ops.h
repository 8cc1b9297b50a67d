// The op registry: one table mapping each supported ONNX op type to its LibTorch
// kernel. The executor, graph validation, importers and the conformance test all read
// this table; adding an op is one kernel function plus one row.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "compress/ir/graph.h"

namespace compress {

// Sums a tensor over the replicas of a data-parallel run, differentiably (its gradient
// is the sum of the replicas' gradients): synchronised BatchNorm's batch statistics.
using ReplicaSum = std::function<Tensor(const Tensor&)>;

struct KernelContext {
  const Node& node;
  const std::vector<Tensor>& inputs;  // undefined tensors for omitted optional inputs
  int64_t opset;                      // default-domain opset of the graph
  bool training;
  // Set in training mode of a data-parallel run with synchronised BatchNorm: batch
  // statistics are over the global batch (every replica's slice), not this one's.
  const ReplicaSum* replica_sum = nullptr;
};

using KernelFn = std::vector<Tensor> (*)(const KernelContext& ctx);

// What passes may assume about an op without knowing it (bit flags in OpSpec::traits),
// so channel grouping and QDQ planning read the table instead of keeping op lists.
enum OpTrait : unsigned {
  // Unary, elementwise: output channel c depends only on input channel c.
  kChannelwise = 1u << 0,
  // Binary, elementwise with broadcasting (Add, Sub, Mul, Div).
  kElementwiseBinary = 1u << 1,
  // A pool over the spatial dims of an NC... input: channels stay on axis 1.
  kChannelPool = 1u << 2,
  // Order-preserving selection or reshape: the output takes values of the input only,
  // so it keeps the input's quantization grid (scale and zero point).
  kSharesInputGrid = 1u << 3,
};

struct OpSpec {
  const char* op_type;
  KernelFn run;
  int min_inputs;
  int max_inputs;
  int min_outputs;
  int max_outputs;
  unsigned traits = 0;  // OpTrait flags
};

// Every supported op, sorted by op_type.
const std::vector<OpSpec>& OpRegistry();
// The spec for a default-domain op type, or nullptr.
const OpSpec* FindOp(const std::string& op_type);
// The spec for a node: default-domain ops from the table, and the training-only ops of
// kInternalDomain (compress/runtime/fake_quant.h); nullptr for anything else.
const OpSpec* FindNodeOp(const Node& node);
// Whether default-domain `op_type` is in the table with `trait` (false when unknown).
bool HasTrait(const std::string& op_type, OpTrait trait);

// Graph::Validate plus, per node, the op table's verdict: an op of another domain or
// not in the table throws compress::Error(kUnsupported) naming the node; an input or
// output count outside the op's range throws an Error of `kind`.
void ValidateGraph(const Graph& graph, const std::string& where = "",
                   ErrorKind kind = ErrorKind::kInternal);

}  // namespace compress
