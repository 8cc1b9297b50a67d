// ONNX import and export of compress::Graph (near 1:1: the IR follows ONNX operator
// semantics), and the TensorProto files of ONNX's backend tests (input_0.pb, ...).
// Only the default ONNX domain is read; every op must be in the registry (ops.h).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "compress/ir/graph.h"

namespace compress {

// Reads an ONNX model file into a Graph: nodes (empty names become "<op>_<index>"),
// attributes, initializers (raw or typed data; sparse initializers densified), graph
// inputs (initializers excluded), outputs and value_info with shapes (symbolic or
// missing dims become kDynamicDim), the default-domain opset and metadata_props.
// Throws compress::Error: kIo for an unreadable, truncated or corrupt file or an
// invalid graph; kUnsupported for ops not in the registry (one error listing every
// such op type with a node using it), other domains, external data, non-tensor types
// or element types LibTorch has no dtype for.
Graph LoadOnnx(const std::string& path);
// As LoadOnnx, from the serialized bytes of a ModelProto; `where` names the source in
// error messages.
Graph ParseOnnx(const std::string& bytes, const std::string& where);

struct OnnxExportOptions {
  int64_t opset = 13;  // default-domain opset written; never below graph.opset
  std::string producer_name = "mcompress";
  std::string producer_version;  // empty: this library's version
  // Written as metadata_props "mcompress.recipe_hash" (over any graph.metadata entry
  // of that key) when not empty.
  std::string recipe_hash;
  // Initializers with at least sparse_min_zeros of their elements zero are written as
  // sparse_initializer (SparseTensorProto: values [NNZ] + int64 linear indices [NNZ],
  // ONNX IR spec, onnx.proto) when that is smaller than the dense TensorProto.
  // Tensors of rank 0 and bool tensors stay dense. Signed zeros are not kept (-0 is 0).
  bool sparse = true;
  double sparse_min_zeros = 0.5;
  bool check = true;  // run ONNX shape inference + checker on the result
};

// Serializes `graph` as an ONNX ModelProto (IR version 8). Initializers are written
// as little-endian raw_data (dense, or sparse per options), dynamic dims as dim_param
// "N". The same graph always gives the same bytes. With options.check, a model the
// ONNX checker (after strict shape inference) rejects throws
// compress::Error(kInternal, "exported ONNX fails the checker: ...").
std::string SerializeOnnx(const Graph& graph, const OnnxExportOptions& options = {});
// SerializeOnnx, then writes `path` atomically (a temporary file renamed over it).
// Throws compress::Error(kIo) naming the path when it cannot be written; never leaves
// a partial file.
void SaveOnnx(const Graph& graph, const std::string& path,
              const OnnxExportOptions& options = {});

// Runs ONNX shape inference and the ONNX checker on a model file. Throws
// compress::Error(kIo) naming the file with the checker's message (or the protobuf
// parse failure).
void CheckOnnx(const std::string& path);

// A serialized TensorProto file (the ONNX backend-test format). Loading returns a CPU
// tensor; saving writes raw_data (any device, any layout) atomically. Errors as above.
Tensor LoadTensorProto(const std::string& path);
void SaveTensorProto(const Tensor& tensor, const std::string& path,
                     const std::string& name = "");

// What a model file uses, without checking it against the registry (for `inspect`,
// and for the conformance test to decide which backend tests we claim).
struct OnnxModelInfo {
  int64_t opset = 0;                  // default-domain opset (0 when not imported)
  std::vector<std::string> op_types;  // distinct, first-use order; "domain:Op" outside
                                      // the default domain; includes subgraph nodes
  // Features LoadOnnx cannot represent (other domains, subgraphs, non-tensor or
  // unsupported element types, external data), one readable line each; empty when
  // the model is representable.
  std::vector<std::string> unrepresentable;
};
// Throws compress::Error(kIo) for an unreadable or corrupt file.
OnnxModelInfo InspectOnnx(const std::string& path);

// One node of a model file as written: its name (possibly empty), domain (empty or
// "ai.onnx" for the default one) and op type.
struct OnnxNodeInfo {
  std::string name, domain, op_type;
};
// The top-level graph's nodes in file order, with no check of ops or domains: for
// files other runtimes write (ONNX Runtime's optimized graphs hold com.microsoft ops
// that LoadOnnx refuses). Throws compress::Error(kIo) for an unreadable or corrupt file.
std::vector<OnnxNodeInfo> ListOnnxNodes(const std::string& path);

}  // namespace compress
