// Limits on untrusted model files (docs/security.md): a file, a tensor or a graph above
// them is refused with one Error(kIo) naming the file, the quantity and the limit,
// before anything of that size is allocated.
#pragma once

#include <cstdint>
#include <string>

namespace compress {

struct Limits {
  // Bytes of one model file (ONNX or TorchScript). 2 GiB is also protobuf's ceiling for
  // one message, so ONNX files above it could not be parsed in any case.
  int64_t max_model_bytes = int64_t{2} << 30;
  // Elements of one tensor a model declares (an initializer, a sparse initializer's dense
  // shape, a tensor attribute, a static value shape): 2^32 is 16 GiB of float32.
  int64_t max_tensor_elements = int64_t{1} << 32;
  // Nodes of one graph, and its depth (the longest chain of nodes, input to output).
  int64_t max_graph_nodes = int64_t{1} << 20;
  int64_t max_graph_depth = int64_t{1} << 16;
};

// The limits in force. Set them (SetLimits) before loading models; they are read, never
// written, while models load, so concurrent loads are safe.
const Limits& CurrentLimits();
void SetLimits(const Limits& limits);

// `base` with each limit whose environment variable is set replaced by its value:
// MCOMPRESS_MAX_MODEL_BYTES, MCOMPRESS_MAX_TENSOR_ELEMENTS, MCOMPRESS_MAX_GRAPH_NODES,
// MCOMPRESS_MAX_GRAPH_DEPTH (positive integers). Throws Error(kUsage) for any other value.
Limits LimitsFromEnvironment(Limits base = {});

// The environment variable that sets the limit named by its field: "max_model_bytes"
// -> "MCOMPRESS_MAX_MODEL_BYTES", for messages.
std::string LimitVariable(const std::string& field);

// Throws Error(kIo) "<where>: <what> is <size> bytes, above the limit of <max> bytes
// (MCOMPRESS_MAX_MODEL_BYTES)" when `bytes` exceeds max_model_bytes.
void CheckModelBytes(int64_t bytes, const std::string& where);

}  // namespace compress
