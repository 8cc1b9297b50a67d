// compress::Graph, the one model form every importer produces and every pass and
// exporter consumes. Nodes follow ONNX operator semantics; weights are named
// initializers held as tensors (any device) with the annotations passes decide.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include "compress/base/error.h"

namespace compress {

using Tensor = at::Tensor;

// A dimension whose size is not fixed by the model (the batch dimension).
constexpr int64_t kDynamicDim = -1;

// An ONNX attribute value. Floats are held as double; ints as int64.
using AttrValue = std::variant<int64_t, double, std::string, std::vector<int64_t>,
                               std::vector<double>, std::vector<std::string>, Tensor>;

struct Node {
  std::string name;
  std::string op_type;
  std::string domain;                // "" is the default ONNX domain
  std::vector<std::string> inputs;   // "" marks an omitted optional input
  std::vector<std::string> outputs;  // "" marks an omitted optional output
  std::map<std::string, AttrValue> attrs;

  bool HasInput(size_t i) const { return i < inputs.size() && !inputs[i].empty(); }
  bool HasAttr(const std::string& key) const { return attrs.count(key) != 0; }

  // Typed attribute access. The one-argument forms throw compress::Error naming the
  // node when the attribute is missing; all forms throw when its type is wrong.
  int64_t GetInt(const std::string& key) const;
  int64_t GetInt(const std::string& key, int64_t fallback) const;
  double GetFloat(const std::string& key) const;
  double GetFloat(const std::string& key, double fallback) const;
  std::string GetString(const std::string& key, const std::string& fallback) const;
  std::vector<int64_t> GetInts(const std::string& key,
                               const std::vector<int64_t>& fallback = {}) const;
  std::vector<double> GetFloats(const std::string& key,
                                const std::vector<double>& fallback = {}) const;
  const Tensor& GetTensor(const std::string& key) const;

  // "Conv 'conv1'" — how errors name a node.
  std::string Describe() const;
};

// Static type and shape of a named value. dims use kDynamicDim for symbolic sizes;
// no shape at all (unknown rank) is std::nullopt.
struct ValueInfo {
  std::string name;
  at::ScalarType dtype = at::kFloat;
  std::optional<std::vector<int64_t>> shape;
};

// Quantization parameters a pass attaches to an initializer. axis < 0 means
// per-tensor; otherwise scale/zero_point have one entry per slice along axis.
struct QuantParams {
  Tensor scale;
  Tensor zero_point;
  int64_t axis = -1;
  int bits = 8;
  bool is_signed = true;
};

struct Initializer {
  Tensor value;
  Tensor mask;                       // undefined when dense; else same shape, 0/1
  std::optional<QuantParams> quant;  // set when a pass decided quantization
};

class Graph {
 public:
  std::string name = "graph";
  int64_t opset = 13;  // default-domain opset the nodes follow
  std::vector<ValueInfo> inputs;   // runtime inputs only (initializers are separate)
  std::vector<ValueInfo> outputs;
  std::vector<Node> nodes;         // kept in topological order (Validate checks it)
  std::map<std::string, Initializer> initializers;
  std::map<std::string, ValueInfo> value_info;  // shapes of intermediate values
  std::map<std::string, std::string> metadata;  // written to ONNX metadata_props

  // Deep copy: tensors are cloned, so passes on the copy never touch this graph.
  Graph Clone() const;
  // Multiplies every masked initializer by its mask, in place (no autograd): called
  // after each optimizer step so pruned weights stay zero.
  void ApplyMasks();
  // Moves every initializer (and mask/quant tensors) to `device`.
  void To(const c10::Device& device);

  // A check of one node that Validate runs before checking the node's inputs; it
  // throws compress::Error (message prefixed with `prefix`) to reject the node. The
  // runtime's op table supplies one (ValidateGraph, compress/runtime/ops.h).
  using NodeCheck = std::function<void(const Node& node, const std::string& prefix)>;

  // Structural validation: throws compress::Error of `kind` naming the first node that
  // uses a value nobody defines, uses a value before it is produced (a cycle or a wrong
  // order), or defines a value twice (and whatever `check` rejects). `where` (e.g. a
  // file name) prefixes the message. Whether the ops exist and have the right arity is
  // the runtime's to say: call ValidateGraph for the full check.
  void Validate(const std::string& where = "", ErrorKind kind = ErrorKind::kInternal,
                const NodeCheck& check = {}) const;

  // Re-sorts nodes topologically (stable: keeps the original order where possible).
  // Throws compress::Error naming a node on a cycle.
  void TopologicalSort();

  bool IsInitializer(const std::string& value) const {
    return initializers.count(value) != 0;
  }
  // The initializer tensor; throws if `value` is not an initializer.
  Tensor& Weight(const std::string& value);
  const Tensor& Weight(const std::string& value) const;

  // Index of the node producing `value` in nodes, or -1 (graph input / initializer).
  int ProducerIndex(const std::string& value) const;
  // Indices of nodes that read `value`, in node order.
  std::vector<int> ConsumerIndices(const std::string& value) const;
  // Shape info of any value (graph input/output, intermediate, initializer).
  std::optional<ValueInfo> FindValue(const std::string& value) const;

  // ---- graph surgery, shared by every pass (ONNX Runtime's graph_utils) ----
  // Whether `value` is one of the graph's outputs.
  bool IsOutput(const std::string& value) const;
  // Every node input reading `from` reads `to` instead (graph outputs are untouched).
  void ReplaceUses(const std::string& from, const std::string& to);
  // Removes the nodes flagged in `remove` (one flag per node, order kept), then those of
  // `candidates` that are initializers nobody reads any more. Does not validate: call
  // ValidateGraph (compress/runtime/ops.h) after the surgery is complete.
  void RemoveNodes(const std::vector<bool>& remove, const std::set<std::string>& candidates = {});
  // Removes nodes none of whose outputs is read by another node or is a graph output,
  // repeatedly, then initializers nobody reads. Returns the number of nodes removed.
  int64_t RemoveDeadNodes();

  // Names of initializers an optimizer should train: floating point, and not a
  // BatchNormalization running statistic, Q/DQ scale/zero point, Clip bound,
  // Dropout ratio or FakeQuantize zero point (or scale without learn_scale=1). Sorted.
  std::vector<std::string> TrainableNames() const;
  // The tensors of TrainableNames(), sharing storage with the graph.
  std::vector<Tensor> Parameters() const;
  // Number of elements over all initializers / over TrainableNames().
  int64_t NumParameters() const;

  // Stable text form: inputs, initializers (shape, dtype, sparsity, bits), nodes with
  // attributes and output shapes, outputs. Tests may assert on it.
  std::string Dump() const;
};

// Fresh names for values, nodes and initializers a pass adds: `base` itself when nobody
// uses it, else base_1, base_2, ... (the first free one). Seeded with every name of a
// graph, or empty and fed with Reserve as names are created (GraphBuilder).
class NameSource {
 public:
  NameSource() = default;
  explicit NameSource(const Graph& graph);
  // Marks `name` as used.
  void Reserve(const std::string& name);
  bool Taken(const std::string& name) const { return used_.count(name) != 0; }
  // A name not used yet, reserved before it is returned.
  std::string Fresh(const std::string& base);

 private:
  std::set<std::string> used_;
  std::map<std::string, int> next_;  // per base: the suffix to try first
};

// `info`'s shape with every dynamic dim set to `dynamic_size` (sample inputs, shape
// inference). Throws compress::Error of `kind`, "<where>: input '<name>' has no known
// shape", when it has none.
std::vector<int64_t> ConcreteShape(const ValueInfo& info, int64_t dynamic_size,
                                   const std::string& where, ErrorKind kind);

// Readable name of a dtype ("float32", "int64", ...).
std::string DtypeName(at::ScalarType t);
// "[N,3,224,224]" ("?" for an unknown shape, "N" for a dynamic dim).
std::string ShapeString(const std::optional<std::vector<int64_t>>& shape);

}  // namespace compress
