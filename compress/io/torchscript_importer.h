// Internal to compress/io: not part of the public API, include it only from files in
// this folder (it is installed only because every header under compress/ is). The
// TorchScript importer behind ImportTorchScript and ImportModule, shared by
// torchscript_import.cpp (naming, running, the walk, the driver) and
// torchscript_import_ops.cpp (the op mappers and their table).
#pragma once

#include <torch/csrc/jit/ir/ir.h>
#include <torch/script.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "compress/io/torchscript_import.h"
#include "compress/ir/graph.h"

namespace compress::ts_import {

namespace jit = torch::jit;

// A node's op kind ("aten::conv2d").
inline std::string Kind(const jit::Node* n) { return n->kind().toQualString(); }

// Why a node with a known kind cannot be mapped (recorded with the op kind). Thrown by
// the accessors and the mappers; the walk reports it and poisons the node's outputs.
struct Unmappable {
  std::string reason;
};

// A TorchScript value during the walk: static, a graph value, a list or poison (see
// "How folding works" in torchscript_import.cpp).
struct Val {
  enum Kind { kStatic, kTensor, kList, kPoison };
  Kind kind = kPoison;
  std::array<c10::IValue, 2> lane;  // kStatic: the value at each batch size
  bool batch_dep = false;           // kStatic: differs between the batch sizes
  std::string hint;                 // kStatic tensor: a parameter name ("conv1.weight")
  std::string name;                 // kTensor: the graph value
  std::vector<Val> items;           // kList
  bool is_tuple = false;            // kList

  static Val Static(c10::IValue a, c10::IValue b, bool dep) {
    Val v;
    v.kind = kStatic;
    v.lane = {std::move(a), std::move(b)};
    v.batch_dep = dep;
    return v;
  }
  static Val Graph(const std::string& name) {
    Val v;
    v.kind = kTensor;
    v.name = name;
    return v;
  }
  bool IsStaticTensor() const { return kind == kStatic && lane[0].isTensor(); }
  bool IsNone() const { return kind == kStatic && lane[0].isNone(); }
};

// One graph argument of the TorchScript graph.
struct GraphArg {
  enum Kind { kSelf, kInput, kParam } kind = kInput;
  c10::IValue self;             // kSelf: the module object
  std::vector<int64_t> shape;   // kInput
  std::string name;             // kInput: graph input name; kParam: parameter name
  Tensor param;                 // kParam
};

// One import: construct, call Run once. The mappers read a node's arguments through
// the accessors, emit graph nodes and bind the node's outputs.
class Importer {
 public:
  Importer(std::string where, const TorchScriptImportOptions& options)
      : where_(std::move(where)), options_(options) {}

  Graph Run(jit::Graph& g, const std::vector<GraphArg>& args);

  // ---- accessors for mappers --------------------------------------------------------
  const Val& V(const jit::Node* n, size_t i) const { return Get(n->input(i)); }
  bool IsNone(const jit::Node* n, size_t i) const {
    return i >= n->inputs().size() || V(n, i).IsNone();
  }
  const c10::IValue& StaticArg(const jit::Node* n, size_t i) const {
    const Val& v = V(n, i);
    if (v.kind != Val::kStatic) {
      throw Unmappable{"argument " + std::to_string(i) + " is computed by the graph, expected a constant"};
    }
    if (v.batch_dep) {
      throw Unmappable{"argument " + std::to_string(i) + " depends on the batch size"};
    }
    return v.lane[0];
  }
  int64_t Int(const jit::Node* n, size_t i) const {
    const c10::IValue& v = StaticArg(n, i);
    if (v.isInt()) return v.toInt();
    if (v.isBool()) return v.toBool();
    throw Unmappable{"argument " + std::to_string(i) + " is not an int"};
  }
  double Double(const jit::Node* n, size_t i) const {
    const c10::IValue& v = StaticArg(n, i);
    if (v.isDouble()) return v.toDouble();
    if (v.isInt()) return static_cast<double>(v.toInt());
    if (v.isBool()) return v.toBool();
    throw Unmappable{"argument " + std::to_string(i) + " is not a number"};
  }
  bool Bool(const jit::Node* n, size_t i) const { return Int(n, i) != 0; }
  std::vector<int64_t> Ints(const jit::Node* n, size_t i) const {
    const c10::IValue& v = StaticArg(n, i);
    if (v.isInt()) return {v.toInt()};
    if (v.isIntList()) return v.toIntVector();
    throw Unmappable{"argument " + std::to_string(i) + " is not an int list"};
  }
  std::string Str(const jit::Node* n, size_t i) const {
    const c10::IValue& v = StaticArg(n, i);
    if (v.isString()) return v.toStringRef();
    throw Unmappable{"argument " + std::to_string(i) + " is not a string"};
  }
  bool IsGraphValue(const jit::Node* n, size_t i) const { return V(n, i).kind == Val::kTensor; }

  // The graph tensor of input i: a graph value, or a static tensor as an initializer
  // named `<layer>.<role>`.
  std::string TensorIn(jit::Node* n, size_t i, const std::string& role = "const");
  // A weight: a static tensor (cloned into an initializer `<layer>.<role>`, shared
  // when the same layer uses the same tensor twice) or a graph value. `transform`
  // (e.g. a transpose) applies to the stored tensor.
  std::string Param(jit::Node* n, size_t i, const std::string& role,
                    Tensor (*transform)(const Tensor&) = nullptr);
  // A new initializer named `<layer>.<role>` (made unique).
  std::string Initializer(jit::Node* n, const std::string& role, const Tensor& value);
  // A scalar Constant node (not an initializer, so never trained) of `dtype`.
  std::string Scalar(jit::Node* n, double value, at::ScalarType dtype);
  // An int64 list as an initializer (shapes, axes, sizes).
  std::string Int64s(jit::Node* n, const std::string& role, const std::vector<int64_t>& v) {
    return Initializer(n, role, torch::tensor(v, torch::kLong));
  }

  // Shape and dtype of a graph value at lane `l`.
  std::vector<int64_t> Shape(const std::string& value, int l = 0) const {
    return lanes_.at(value)[l].sizes().vec();
  }
  int64_t Rank(const std::string& value) const { return lanes_.at(value)[0].dim(); }
  at::ScalarType Dtype(const std::string& value) const {
    return lanes_.at(value)[0].scalar_type();
  }
  int NumLanes() const { return dynamic_ ? 2 : 1; }

  // Adds a node for jit node `n` and runs it on both lanes; returns its outputs.
  std::vector<std::string> Emit(jit::Node* n, const std::string& op_type,
                                const std::vector<std::string>& inputs,
                                std::map<std::string, AttrValue> attrs = {},
                                int num_outputs = 1);
  std::string Emit1(jit::Node* n, const std::string& op_type,
                    const std::vector<std::string>& inputs,
                    std::map<std::string, AttrValue> attrs = {}) {
    return Emit(n, op_type, inputs, std::move(attrs))[0];
  }
  // Runs the TorchScript op of `n` itself on the lanes (for the shapes it produces).
  std::vector<std::array<c10::IValue, 2>> RunOriginal(jit::Node* n);

  void Bind(const jit::Value* v, Val val) { env_[v] = std::move(val); }
  void BindGraph(const jit::Value* v, const std::string& name) { Bind(v, Val::Graph(name)); }
  void Alias(jit::Node* n, size_t input = 0) { Bind(n->output(0), V(n, input)); }
  void NoteOpset(int64_t opset) { min_opset_ = std::max(min_opset_, opset); }

 private:
  const Val& Get(const jit::Value* v) const {
    auto it = env_.find(v);
    if (it == env_.end()) {
      throw Error(ErrorKind::kInternal, where_ + ": TorchScript value %" + v->debugName() +
                                            " is used before it is defined");
    }
    return it->second;
  }
  void WalkBlock(jit::Block* b);
  void Visit(jit::Node* n);
  void VisitIf(jit::Node* n);
  void VisitLoop(jit::Node* n);
  void MapOrFold(jit::Node* n, const std::string& kind, bool has_graph_values);
  void EvalStatic(jit::Node* n);
  void EvalContainer(jit::Node* n);
  void Poison(jit::Node* n) {
    for (auto* o : n->outputs()) Bind(o, Val());
  }
  void Report(jit::Node* n, const std::string& reason);
  void CheckNode(jit::Node* n);
  c10::IValue LaneValue(const Val& v, int l) const;
  bool BatchDependent(const Val& v) const;
  std::string Fresh(const std::string& base) { return names_.Fresh(base); }
  const std::string& BaseName(jit::Node* n);
  [[noreturn]] void ShapeError(jit::Node* n, const Node& node, const std::string& what) const;
  void Finish(const std::vector<std::string>& outputs);

  std::string where_;
  TorchScriptImportOptions options_;
  bool dynamic_ = true;
  Graph graph_;
  std::unordered_map<const jit::Value*, Val> env_;
  std::unordered_map<std::string, std::array<Tensor, 2>> lanes_;  // every graph value
  NameSource names_;  // every node, value and initializer name given so far
  std::unordered_map<const jit::Node*, std::string> base_names_;
  std::map<std::pair<const void*, std::string>, std::string> params_;  // (impl, layer) -> name
  std::set<const void*> param_impls_;
  std::vector<std::pair<std::string, std::string>> unsupported_;  // kind, "where: reason"
  std::set<std::string> unsupported_kinds_;
  std::string input_desc_;  // "x=[1,3,224,224]"
  int64_t min_opset_ = 13;
};

// A mapper rewrites jit node `n` into graph nodes and binds its outputs, or throws
// Unmappable. Mappers() is their table by op kind (torchscript_import_ops.cpp).
using MapFn = void (*)(Importer&, jit::Node*);
const std::map<std::string, MapFn>& Mappers();

}  // namespace compress::ts_import
