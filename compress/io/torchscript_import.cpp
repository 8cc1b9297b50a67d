// TorchScript import: walks a frozen (or traced) TorchScript graph in order and
// rewrites it into compress::Graph nodes with ONNX semantics.
//
// How folding works: the importer runs the model while it walks it, at two batch
// sizes at once ("lanes": the given batch b and b + 1). Every TorchScript value is
// either static (known at import: ints, lists, weights, shapes; one IValue per lane),
// a graph value (a tensor our graph computes; its concrete tensor per lane comes from
// running our kernel), a list holding graph values, or poison (produced by an op we
// cannot map). Shape queries (aten::size, len, dim...) and all arithmetic on static
// values are evaluated by the TorchScript operator itself on both lanes, so a value
// that differs between the lanes is known to depend on the batch size: control flow
// or weights that depend on it are refused, and a reshape target gets -1 or 0 exactly
// where the batch flows, never a folded constant.
//
// The op mappers are in torchscript_import_ops.cpp; torchscript_importer.h declares
// what they share with this file.
#include "compress/io/torchscript_import.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/csrc/jit/frontend/tracer.h>
#include <torch/csrc/jit/ir/constants.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/passes/freeze_module.h>
#include <torch/nn/module.h>
#include <torch/script.h>

#include <array>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <unordered_map>

#include "compress/base/limits.h"
#include "compress/ir/graph_limits.h"
#include "compress/io/torchscript_importer.h"
#include "compress/io/zip_directory.h"
#include "compress/runtime/executor.h"
#include "compress/runtime/ops.h"

namespace compress {

namespace {

namespace jit = torch::jit;

std::string FirstLine(const std::string& s) {
  std::string line = s.substr(0, s.find('\n'));
  while (!line.empty() && (line.back() == ' ' || line.back() == '\r')) line.pop_back();
  return line;
}

// The first non-empty line of an exception message (LibTorch appends backtraces).
std::string WhatOf(const std::exception& e) {
  std::string what = e.what();
  if (auto* c10e = dynamic_cast<const c10::Error*>(&e)) what = c10e->what_without_backtrace();
  // TORCH_CHECK's invitation to file an enhancement request is not the user's business.
  const size_t invite = what.find("  (Could this error message be improved?");
  if (invite != std::string::npos) what.erase(invite);
  size_t start = what.find_first_not_of(" \n\r\t");
  return start == std::string::npos ? "(no message)" : FirstLine(what.substr(start));
}

// "model.py:12:8" for scripted code; the innermost Python frame for traced code.
std::string Where(const jit::Node* n) {
  jit::SourceRange range = n->sourceRange();
  if (!range.source()) return "";
  // Loaded archives carry the serialized code; debug info maps it to the original.
  if (auto original = range.findSourceRangeThatGenerated()) range = *original;
  if (auto flc = range.file_line_col()) {
    return std::get<0>(*flc) + ":" + std::to_string(std::get<1>(*flc)) + ":" +
           std::to_string(std::get<2>(*flc));
  }
  std::string text(range.token_text());
  return FirstLine(text);
}

// The module path of the layer a node belongs to ("layer1.0.conv1"), or "".
std::string LayerOf(const jit::Node* n) {
  // Traced modules: scope "__module.layer1/__module.layer1.0/__module.layer1.0.conv1".
  std::string scope = n->scopeName();
  if (!scope.empty()) {
    auto slash = scope.rfind('/');
    std::string last = slash == std::string::npos ? scope : scope.substr(slash + 1);
    const std::string prefix = "__module.";
    if (last.rfind(prefix, 0) == 0) last = last.substr(prefix.size());
    if (!last.empty() && last != "__module") return last;
  }
  // Scripted modules, inlined by freezing: the call stack names module instances.
  if (auto cs = n->callstack()) {
    std::string path;
    for (const auto& entry : (*cs)->vec()) {
      const auto& info = std::get<2>(entry);
      // "SELF" marks a method call on the same module (e.g. conv's _conv_forward).
      if (!info || info->instance_name().empty() || info->instance_name() == "SELF") continue;
      path += (path.empty() ? "" : ".") + info->instance_name();
    }
    return path;
  }
  return "";
}

bool SameIValue(const c10::IValue& a, const c10::IValue& b) {
  if (a.isTensor() && b.isTensor()) {
    const Tensor& x = a.toTensor();
    const Tensor& y = b.toTensor();
    if (x.is_same(y)) return true;
    return x.sizes() == y.sizes() && x.scalar_type() == y.scalar_type() && at::equal(x, y);
  }
  if (a.isNone() || b.isNone()) return a.isNone() && b.isNone();
  if (a.isInt() && b.isInt()) return a.toInt() == b.toInt();
  if (a.isDouble() && b.isDouble()) return a.toDouble() == b.toDouble();
  if (a.isBool() && b.isBool()) return a.toBool() == b.toBool();
  if (a.isString() && b.isString()) return a.toStringRef() == b.toStringRef();
  if (a.isIntList() && b.isIntList()) return a.toIntVector() == b.toIntVector();
  if (a.isDevice() && b.isDevice()) return a.toDevice() == b.toDevice();
  if (a.isList() && b.isList()) {
    auto x = a.toListRef();
    auto y = b.toListRef();
    if (x.size() != y.size()) return false;
    for (size_t i = 0; i < x.size(); ++i) {
      if (!SameIValue(x[i], y[i])) return false;
    }
    return true;
  }
  if (a.isTuple() && b.isTuple()) {
    const auto& x = a.toTupleRef().elements();
    const auto& y = b.toTupleRef().elements();
    if (x.size() != y.size()) return false;
    for (size_t i = 0; i < x.size(); ++i) {
      if (!SameIValue(x[i], y[i])) return false;
    }
    return true;
  }
  return a.isSameIdentity(b);
}

bool IsInplace(const std::string& kind) {
  auto colon = kind.rfind(':');
  std::string op = kind.substr(colon + 1);
  return op.size() > 1 && op.back() == '_' && op.rfind("__", 0) != 0;
}

// Ops that read only the metadata of a graph tensor; evaluated on the lanes.
bool IsShapeQuery(const std::string& kind) {
  static const std::set<std::string> kQueries = {
      "aten::size",  "aten::dim",       "aten::len",        "aten::numel",
      "prim::device", "prim::dtype",    "prim::layout",     "prim::is_cuda",
      "aten::__is__", "aten::__isnot__", "prim::is_quantized", "aten::is_floating_point",
      "prim::requires_grad", "prim::shape", "aten::sym_size", "prim::is_mkldnn",
      "aten::is_contiguous", "prim::is_sparse"};
  return kQueries.count(kind) != 0;
}

}  // namespace

namespace ts_import {

// ---- naming -----------------------------------------------------------------------

// The name the nodes and constants of jit node `n` are derived from: its layer, else
// the layer a parameter's name gives, else its op kind ("relu", "add").
const std::string& Importer::BaseName(jit::Node* n) {
  auto it = base_names_.find(n);
  if (it != base_names_.end()) return it->second;
  std::string base = LayerOf(n);
  if (base.empty()) {
    for (auto* in : n->inputs()) {
      auto e = env_.find(in);
      if (e != env_.end() && e->second.IsStaticTensor() && !e->second.hint.empty()) {
        const std::string& hint = e->second.hint;
        auto dot = hint.rfind('.');
        base = dot == std::string::npos ? hint : hint.substr(0, dot);
        break;
      }
    }
  }
  if (base.empty()) {
    std::string kind = Kind(n);
    base = kind.substr(kind.rfind(':') + 1);
    while (!base.empty() && base.back() == '_') base.pop_back();
    while (!base.empty() && base.front() == '_') base.erase(0, 1);
  }
  return base_names_[n] = base;
}

std::string Importer::Initializer(jit::Node* n, const std::string& role, const Tensor& value) {
  const std::string name = Fresh(BaseName(n) + "." + role);
  graph_.initializers[name].value = value;
  lanes_[name] = {value, value};
  return name;
}

std::string Importer::Scalar(jit::Node* n, double value, at::ScalarType dtype) {
  Tensor t = torch::scalar_tensor(value, torch::TensorOptions().dtype(dtype));
  Node node;
  node.name = Fresh(BaseName(n) + ".const");
  node.op_type = "Constant";
  node.attrs["value"] = t;
  node.outputs = {node.name};
  lanes_[node.name] = {t, t};
  graph_.nodes.push_back(std::move(node));
  return graph_.nodes.back().name;
}

std::string Importer::Param(jit::Node* n, size_t i, const std::string& role,
                            Tensor (*transform)(const Tensor&)) {
  const Val& v = V(n, i);
  if (v.kind == Val::kTensor) {
    if (transform) throw Unmappable{"weight " + std::to_string(i) + " is computed by the graph"};
    return v.name;
  }
  if (!v.IsStaticTensor()) {
    throw Unmappable{"argument " + std::to_string(i) + " is not a tensor"};
  }
  if (v.batch_dep) throw Unmappable{"weight " + std::to_string(i) + " depends on the batch size"};
  const Tensor& t = v.lane[0].toTensor();
  const std::string layer = BaseName(n);
  const auto key = std::make_pair(static_cast<const void*>(t.unsafeGetTensorImpl()), layer + "." + role);
  auto it = params_.find(key);
  if (it != params_.end()) return it->second;  // the same layer uses it again
  // Frozen graphs pool equal constants across layers: every layer gets its own copy.
  Tensor value = t.detach().clone();
  if (transform) value = transform(value).contiguous();
  const std::string name = Initializer(n, role, value);
  params_[key] = name;
  return name;
}

std::string Importer::TensorIn(jit::Node* n, size_t i, const std::string& role) {
  const Val& v = V(n, i);
  if (v.kind == Val::kTensor) return v.name;
  if (v.IsStaticTensor()) {
    std::string r = role;
    if (!v.hint.empty()) r = v.hint.substr(v.hint.rfind('.') + 1);
    return Param(n, i, r);
  }
  throw Unmappable{"argument " + std::to_string(i) + " is not a tensor"};
}

// ---- running ----------------------------------------------------------------------

void Importer::ShapeError(jit::Node* n, const Node& node, const std::string& what) const {
  const std::string at = Where(n);
  throw Error(ErrorKind::kUsage,
              where_ + ": input shape " + input_desc_ + " does not fit the model: " +
                  node.Describe() + " (" + Kind(n) + (at.empty() ? "" : " at " + at) +
                  ") failed: " + what);
}

std::vector<std::string> Importer::Emit(jit::Node* n, const std::string& op_type,
                                        const std::vector<std::string>& inputs,
                                        std::map<std::string, AttrValue> attrs,
                                        int num_outputs) {
  const OpSpec* spec = FindOp(op_type);
  if (spec == nullptr) {
    throw Error(ErrorKind::kInternal, "importer emits op " + op_type + " missing from the registry");
  }
  Node node;
  const std::string& base = BaseName(n);
  node.name = Fresh(names_.Taken(base) ? base + "/" + op_type : base);
  node.op_type = op_type;
  node.inputs = inputs;
  node.attrs = std::move(attrs);
  for (int k = 0; k < num_outputs; ++k) {
    node.outputs.push_back(num_outputs == 1 ? node.name : node.name + ":" + std::to_string(k));
    names_.Reserve(node.outputs.back());
  }
  std::array<std::vector<Tensor>, 2> results;
  for (int l = 0; l < NumLanes(); ++l) {
    std::vector<Tensor> args;
    for (const auto& in : inputs) args.push_back(in.empty() ? Tensor() : lanes_.at(in)[l]);
    KernelContext ctx{node, args, 17, false};
    try {
      torch::NoGradGuard no_grad;
      results[l] = spec->run(ctx);
    } catch (const Error& e) {
      ShapeError(n, node, e.what());
    } catch (const std::exception& e) {
      ShapeError(n, node, WhatOf(e));
    }
  }
  for (int k = 0; k < num_outputs; ++k) {
    Tensor a = results[0].at(k);
    Tensor b = dynamic_ ? results[1].at(k) : a;
    if (a.dim() != b.dim()) {
      throw Unmappable{"the rank of its result depends on the batch size"};
    }
    lanes_[node.outputs[k]] = {a, b};
  }
  graph_.nodes.push_back(std::move(node));
  return graph_.nodes.back().outputs;
}

c10::IValue Importer::LaneValue(const Val& v, int l) const {
  switch (v.kind) {
    case Val::kStatic:
      return v.lane[l];
    case Val::kTensor:
      return lanes_.at(v.name)[l];
    case Val::kList: {
      std::vector<c10::IValue> items;
      bool all_tensors = true;
      for (const auto& item : v.items) {
        items.push_back(LaneValue(item, l));
        all_tensors &= items.back().isTensor();
      }
      if (v.is_tuple) return c10::ivalue::Tuple::create(std::move(items));
      if (all_tensors) {
        c10::List<at::Tensor> list;
        for (auto& item : items) list.push_back(item.toTensor());
        return list;
      }
      throw Unmappable{"a list mixing graph tensors and other values"};
    }
    case Val::kPoison:
      break;
  }
  throw Error(ErrorKind::kInternal, "poisoned value reached evaluation");
}

bool Importer::BatchDependent(const Val& v) const {
  switch (v.kind) {
    case Val::kStatic: return v.batch_dep;
    case Val::kTensor: return dynamic_;
    case Val::kList:
      for (const auto& item : v.items) {
        if (BatchDependent(item)) return true;
      }
      return false;
    case Val::kPoison: return false;
  }
  return false;
}

std::vector<std::array<c10::IValue, 2>> Importer::RunOriginal(jit::Node* n) {
  bool dep = false;
  for (auto* in : n->inputs()) dep |= BatchDependent(Get(in));
  const bool inplace = IsInplace(Kind(n));
  std::vector<std::array<c10::IValue, 2>> outs(n->outputs().size());
  for (int l = 0; l < (dep ? 2 : 1); ++l) {
    jit::Stack stack;
    for (auto* in : n->inputs()) {
      c10::IValue iv = LaneValue(Get(in), l);
      // Our kernels may return other strides than PyTorch's (a Transpose is a view, and
      // contiguous() is an alias here): give view-like ops dense tensors.
      if (iv.isTensor() && Get(in).kind == Val::kTensor) iv = iv.toTensor().contiguous();
      // In-place ops must not touch weights or our lane tensors.
      if (inplace && iv.isTensor()) iv = iv.toTensor().clone();
      stack.push_back(std::move(iv));
    }
    try {
      torch::NoGradGuard no_grad;
      n->getOperation()(stack);
    } catch (const std::exception& e) {
      const std::string at = Where(n);
      throw Error(ErrorKind::kUsage, where_ + ": input shape " + input_desc_ +
                                         " does not fit the model: " + Kind(n) +
                                         (n->outputs().empty() ? "" : " -> " + n->output(0)->type()->str()) +
                                         (at.empty() ? "" : " at " + at) + " failed: " + WhatOf(e));
    }
    if (stack.size() != outs.size()) {
      throw Error(ErrorKind::kInternal, Kind(n) + " returned " + std::to_string(stack.size()) +
                                            " values, expected " + std::to_string(outs.size()));
    }
    for (size_t k = 0; k < outs.size(); ++k) outs[k][l] = stack[k];
  }
  if (!dep) {
    for (auto& o : outs) o[1] = o[0];
  }
  return outs;
}

void Importer::EvalStatic(jit::Node* n) {
  bool dep = false;
  for (auto* in : n->inputs()) dep |= BatchDependent(Get(in));
  auto outs = RunOriginal(n);
  for (size_t k = 0; k < outs.size(); ++k) {
    Bind(n->output(k), Val::Static(outs[k][0], outs[k][1],
                                   dep && !SameIValue(outs[k][0], outs[k][1])));
  }
}

void Importer::EvalContainer(jit::Node* n) {
  const std::string kind = Kind(n);
  bool dep = false;
  for (auto* in : n->inputs()) dep |= BatchDependent(Get(in));
  std::vector<std::array<c10::IValue, 2>> outs(n->outputs().size());
  for (int l = 0; l < 2; ++l) {
    std::vector<c10::IValue> items;
    for (auto* in : n->inputs()) items.push_back(Get(in).lane[l]);
    if (kind == "prim::ListConstruct") {
      auto list_type = n->output()->type()->cast<c10::ListType>();
      c10::impl::GenericList list(list_type ? list_type->getElementType() : c10::AnyType::get());
      for (auto& item : items) list.push_back(std::move(item));
      outs[0][l] = std::move(list);
    } else if (kind == "prim::TupleConstruct") {
      outs[0][l] = c10::ivalue::Tuple::create(std::move(items));
    } else {
      const c10::IValue& c = items.at(0);
      std::vector<c10::IValue> elems;
      if (c.isTuple()) {
        elems = c.toTupleRef().elements().vec();
      } else {
        for (const auto& e : c.toListRef()) elems.push_back(e);
      }
      if (elems.size() != outs.size()) {
        throw Error(ErrorKind::kUsage, where_ + ": input shape " + input_desc_ +
                                           " does not fit the model: " + kind + " of " +
                                           std::to_string(elems.size()) + " values into " +
                                           std::to_string(outs.size()));
      }
      for (size_t k = 0; k < elems.size(); ++k) outs[k][l] = elems[k];
    }
  }
  for (size_t k = 0; k < outs.size(); ++k) {
    Bind(n->output(k), Val::Static(outs[k][0], outs[k][1],
                                   dep && !SameIValue(outs[k][0], outs[k][1])));
  }
}

void Importer::Report(jit::Node* n, const std::string& reason) {
  const std::string kind = Kind(n);
  if (!unsupported_kinds_.insert(kind + reason).second) return;
  const std::string at = Where(n);
  std::string detail = at.empty() ? "" : "at " + at;
  if (!reason.empty()) detail += (detail.empty() ? "" : ": ") + reason;
  unsupported_.emplace_back(kind, detail);
}

void Importer::CheckNode(jit::Node* n) {
  if (n->outputs().empty()) return;
  const Val& mine = Get(n->output(0));
  if (mine.kind != Val::kTensor) return;
  auto ref = RunOriginal(n);
  if (!ref[0][0].isTensor()) return;
  const Tensor& want = ref[0][0].toTensor();
  const Tensor& got = lanes_.at(mine.name)[0];
  const double scale = std::max(1.0, want.abs().max().item<double>());
  if (want.sizes() != got.sizes() ||
      (got - want).abs().max().item<double>() > 1e-4 * scale) {
    throw Error(ErrorKind::kInternal,
                where_ + ": " + Kind(n) + " (" + Where(n) + ") mapped to '" + mine.name +
                    "' differs from TorchScript: shape " + ShapeString(got.sizes().vec()) +
                    " vs " + ShapeString(want.sizes().vec()));
  }
}

// ---- the walk ---------------------------------------------------------------------

void Importer::WalkBlock(jit::Block* b) {
  for (jit::Node* n : b->nodes()) Visit(n);
}

void Importer::VisitIf(jit::Node* n) {
  const Val& cond = V(n, 0);
  if (cond.kind == Val::kPoison) return Poison(n);
  if (cond.kind != Val::kStatic || !cond.lane[0].isBool()) {
    Report(n, "the condition is computed from tensor data");
    return Poison(n);
  }
  if (cond.batch_dep) {
    Report(n, "the condition depends on the batch size");
    return Poison(n);
  }
  jit::Block* taken = n->blocks().at(cond.lane[0].toBool() ? 0 : 1);
  WalkBlock(taken);
  for (size_t k = 0; k < n->outputs().size(); ++k) Bind(n->output(k), Get(taken->outputs()[k]));
}

void Importer::VisitLoop(jit::Node* n) {
  // prim::Loop(max_trip_count, cond, carried...) with block (iter, carried...) ->
  // (cond, carried...): unrolled when the trip count and condition are constants.
  const Val& trips = V(n, 0);
  const Val& cond0 = V(n, 1);
  if (trips.kind != Val::kStatic || cond0.kind != Val::kStatic || trips.batch_dep ||
      cond0.batch_dep) {
    Report(n, "a loop whose trip count is not a constant");
    return Poison(n);
  }
  const int64_t max_trips = trips.lane[0].toInt();
  bool cond = cond0.lane[0].toBool();
  std::vector<Val> carried;
  for (size_t i = 2; i < n->inputs().size(); ++i) carried.push_back(V(n, i));
  jit::Block* body = n->blocks()[0];
  constexpr int64_t kMaxUnroll = 100000;
  for (int64_t it = 0; cond && it < max_trips; ++it) {
    if (it >= kMaxUnroll) {
      Report(n, "a loop of more than 100000 iterations");
      return Poison(n);
    }
    Bind(body->inputs()[0], Val::Static(it, it, false));
    for (size_t k = 0; k < carried.size(); ++k) Bind(body->inputs()[k + 1], carried[k]);
    WalkBlock(body);
    const Val& c = Get(body->outputs()[0]);
    if (c.kind != Val::kStatic || c.batch_dep) {
      Report(n, "a loop whose condition is not a constant");
      return Poison(n);
    }
    cond = c.lane[0].toBool();
    for (size_t k = 0; k < carried.size(); ++k) carried[k] = Get(body->outputs()[k + 1]);
  }
  for (size_t k = 0; k < n->outputs().size(); ++k) Bind(n->output(k), carried[k]);
}

void Importer::Visit(jit::Node* n) {
  const std::string kind = Kind(n);
  if (n->kind() == c10::prim::Constant) {
    c10::optional<c10::IValue> iv = jit::toIValue(n->output());
    if (!iv) {
      Report(n, "a constant of an unsupported type");
      return Poison(n);
    }
    Val v = Val::Static(*iv, *iv, false);
    const std::string debug = n->output()->debugName();
    if (iv->isTensor() && debug.rfind("self.", 0) == 0) v.hint = debug.substr(5);
    return Bind(n->output(), std::move(v));
  }
  if (kind == "prim::If") return VisitIf(n);
  if (kind == "prim::Loop") return VisitLoop(n);
  for (auto* in : n->inputs()) {
    if (Get(in).kind != Val::kPoison) continue;
    // Its producer is reported already; an op we could not map anyway is reported too,
    // so one error lists every unmapped op.
    if (!Mappers().count(kind) && !IsShapeQuery(kind) && kind.rfind("prim::", 0) != 0) {
      Report(n, "");
    }
    return Poison(n);
  }
  bool has_graph_values = false;
  for (auto* in : n->inputs()) has_graph_values |= Get(in).kind != Val::kStatic;

  // Lists and tuples that hold graph values stay symbolic.
  if (kind == "prim::ListConstruct" || kind == "prim::TupleConstruct") {
    if (has_graph_values) {
      Val list;
      list.kind = Val::kList;
      list.is_tuple = kind == "prim::TupleConstruct";
      for (auto* in : n->inputs()) list.items.push_back(Get(in));
      return Bind(n->output(), std::move(list));
    }
  } else if ((kind == "prim::ListUnpack" || kind == "prim::TupleUnpack") &&
             V(n, 0).kind == Val::kList) {
    const Val list = V(n, 0);
    if (list.items.size() != n->outputs().size()) {
      throw Error(ErrorKind::kInternal, kind + ": " + std::to_string(list.items.size()) +
                                            " items for " + std::to_string(n->outputs().size()) +
                                            " outputs");
    }
    for (size_t k = 0; k < list.items.size(); ++k) Bind(n->output(k), list.items[k]);
    return;
  } else if ((kind == "aten::__getitem__" || kind == "prim::TupleIndex") &&
             V(n, 0).kind == Val::kList) {
    const Val list = V(n, 0);
    const Val& index = V(n, 1);
    if (index.kind != Val::kStatic || index.batch_dep) {
      Report(n, "an index that is not a constant");
      return Poison(n);
    }
    int64_t i = index.lane[0].toInt();
    if (i < 0) i += static_cast<int64_t>(list.items.size());
    return Bind(n->output(), list.items.at(i));
  } else if (kind == "prim::GetAttr") {
    const Val& obj = V(n, 0);
    if (obj.kind == Val::kStatic && obj.lane[0].isObject()) {
      c10::IValue attr = obj.lane[0].toObjectRef().getAttr(n->s(c10::attr::name));
      Val v = Val::Static(attr, attr, false);
      if (attr.isTensor()) v.hint = n->s(c10::attr::name);
      return Bind(n->output(), std::move(v));
    }
  } else if (kind == "prim::RaiseException") {
    std::string message = n->inputs().empty() || V(n, 0).kind != Val::kStatic ||
                                  !V(n, 0).lane[0].isString()
                              ? "the model raised an exception"
                              : V(n, 0).lane[0].toStringRef();
    const std::string at = Where(n);
    throw Error(ErrorKind::kUsage, where_ + ": input shape " + input_desc_ +
                                       " does not fit the model: " + message +
                                       (at.empty() ? "" : " (at " + at + ")"));
  } else if (kind == "aten::warn" || kind == "prim::Print") {
    return;
  } else if (kind == "prim::Uninitialized") {
    return Bind(n->output(), Val::Static(c10::IValue(), c10::IValue(), false));
  } else if (kind == "prim::CallMethod" || kind == "prim::CallFunction") {
    Report(n, "a call that freezing did not inline");
    return Poison(n);
  }

  MapOrFold(n, kind, has_graph_values);
}

// The node is none of the cases above: folded on the lanes when all its inputs are
// static, else rewritten by its mapper (or, if a shape query, evaluated on the lanes).
void Importer::MapOrFold(jit::Node* n, const std::string& kind, bool has_graph_values) {
  if (!has_graph_values) {
    // Container ops have no schema in traced graphs; build those values here.
    if (kind == "prim::ListConstruct" || kind == "prim::TupleConstruct" ||
        kind == "prim::ListUnpack" || kind == "prim::TupleUnpack") {
      return EvalContainer(n);
    }
    return EvalStatic(n);
  }

  auto mapper = Mappers().find(kind);
  if (mapper != Mappers().end()) {
    try {
      mapper->second(*this, n);
    } catch (const Unmappable& u) {
      Report(n, u.reason);
      return Poison(n);
    }
    // An in-place op rebinds its target: later uses of the old value see the result.
    if (IsInplace(kind) && !n->outputs().empty()) Bind(n->input(0), Get(n->output(0)));
    if (options_.check_nodes) CheckNode(n);
    return;
  }
  if (IsShapeQuery(kind)) return EvalStatic(n);
  Report(n, "");
  Poison(n);
}

// ---- driver -----------------------------------------------------------------------

Graph Importer::Run(jit::Graph& g, const std::vector<GraphArg>& args) {
  dynamic_ = options_.dynamic_batch;
  graph_.name = std::filesystem::path(where_).stem().string();
  if (graph_.name.empty()) graph_.name = "module";
  if (g.inputs().size() != args.size()) {
    throw Error(ErrorKind::kInternal, "graph arguments do not match");
  }
  // Step 1: inputs. Lane 0 runs at the given batch size, lane 1 at one more.
  auto gen = at::detail::createCPUGenerator(0x5eed);
  size_t input_index = 0;
  for (size_t i = 0; i < args.size(); ++i) {
    const GraphArg& a = args[i];
    const jit::Value* v = g.inputs()[i];
    if (a.kind == GraphArg::kSelf) {
      Bind(v, Val::Static(a.self, a.self, false));
    } else if (a.kind == GraphArg::kParam) {
      Val p = Val::Static(a.param, a.param, false);
      p.hint = a.name;
      Bind(v, std::move(p));
    } else {
      std::string name = a.name;
      if (names_.Taken(name)) name = name + "_" + std::to_string(input_index);
      names_.Reserve(name);
      if (a.shape.empty()) {
        throw Error(ErrorKind::kUsage, where_ + ": input '" + name + "' needs a shape with a batch dimension");
      }
      std::vector<int64_t> shape0 = a.shape, shape1 = a.shape;
      if (dynamic_) shape1[0] += 1;
      Tensor t0 = at::randn(shape0, gen);
      Tensor t1 = dynamic_ ? at::randn(shape1, gen) : t0;
      lanes_[name] = {t0, t1};
      std::vector<int64_t> dims = a.shape;
      if (dynamic_) dims[0] = kDynamicDim;
      graph_.inputs.push_back(ValueInfo{name, at::kFloat, dims});
      input_desc_ += (input_desc_.empty() ? "" : ", ") + name + "=" + ShapeString(a.shape);
      BindGraph(v, name);
      ++input_index;
    }
  }

  // Step 2: the walk.
  if (std::getenv("MCOMPRESS_DUMP_TORCHSCRIPT")) std::cerr << g;  // debugging aid
  WalkBlock(g.block());
  if (!unsupported_.empty()) {
    std::string msg = where_ + ": cannot import: unsupported TorchScript op";
    msg += unsupported_.size() > 1 ? "s: " : ": ";
    for (size_t i = 0; i < unsupported_.size(); ++i) {
      msg += (i ? "; " : "") + unsupported_[i].first +
             (unsupported_[i].second.empty() ? "" : " (" + unsupported_[i].second + ")");
    }
    msg += ". Hint: rewrite these parts with supported ops (see `mcompress import --help`), "
           "or export the model to ONNX with its tensors' shapes fixed.";
    throw Error(ErrorKind::kUnsupported, msg);
  }

  // Step 3: outputs (tuples and lists are flattened).
  std::vector<std::string> outputs;
  std::function<void(const Val&)> collect = [&](const Val& v) {
    if (v.kind == Val::kTensor) {
      outputs.push_back(v.name);
    } else if (v.kind == Val::kList) {
      for (const auto& item : v.items) collect(item);
    } else {
      throw Error(ErrorKind::kUnsupported,
                  where_ + ": the model returns a value that does not depend on its inputs");
    }
  };
  for (auto* out : g.outputs()) collect(Get(out));
  Finish(outputs);
  return std::move(graph_);
}

void Importer::Finish(const std::vector<std::string>& outputs) {
  // Output values get the names "output" / "output_<k>"; an input or a value returned
  // twice goes through an Identity.
  std::set<std::string> taken;
  std::map<std::string, std::string> rename;
  for (size_t k = 0; k < outputs.size(); ++k) {
    const std::string want = outputs.size() == 1 ? "output" : "output_" + std::to_string(k);
    const std::string& value = outputs[k];
    const int producer = graph_.ProducerIndex(value);
    std::string final_name = want;
    if (producer < 0 || taken.count(value) || names_.Taken(want)) {
      Node id;
      id.name = Fresh(want);
      final_name = id.name;
      id.op_type = "Identity";
      id.inputs = {rename.count(value) ? rename[value] : value};
      id.outputs = {final_name};
      graph_.nodes.push_back(id);
    } else {
      rename[value] = want;
      names_.Reserve(want);
    }
    taken.insert(value);
    graph_.outputs.push_back(ValueInfo{final_name, Dtype(value), std::nullopt});
  }
  for (auto& node : graph_.nodes) {
    for (auto& name : node.inputs) {
      if (rename.count(name)) name = rename[name];
    }
    for (auto& name : node.outputs) {
      if (rename.count(name)) name = rename[name];
    }
  }

  // Dead code: nodes whose results only fed folded shape queries.
  std::set<std::string> live;
  for (const auto& out : graph_.outputs) live.insert(out.name);
  std::vector<Node> kept;
  for (auto it = graph_.nodes.rbegin(); it != graph_.nodes.rend(); ++it) {
    bool used = false;
    for (const auto& o : it->outputs) used |= live.count(o) != 0;
    if (!used) continue;
    for (const auto& in : it->inputs) live.insert(in);
    kept.push_back(std::move(*it));
  }
  graph_.nodes.assign(std::make_move_iterator(kept.rbegin()), std::make_move_iterator(kept.rend()));
  for (auto it = graph_.initializers.begin(); it != graph_.initializers.end();) {
    it = live.count(it->first) ? std::next(it) : graph_.initializers.erase(it);
  }
  lanes_.clear();

  graph_.opset = min_opset_;
  graph_.metadata["source"] = where_;
  graph_.metadata["importer"] = "mcompress torchscript";
  ValidateGraph(graph_, where_, ErrorKind::kInternal);
  CheckGraphLimits(graph_, where_);
  InferShapes(graph_);
}

}  // namespace ts_import

// ---- entry points -------------------------------------------------------------------

namespace {

using ts_import::GraphArg;
using ts_import::Importer;

std::string SanitizeInputName(const std::string& debug, size_t index) {
  std::string name = debug;
  auto dot = name.find('.');
  if (dot != std::string::npos) name = name.substr(0, dot);
  if (name.empty() || std::isdigit(static_cast<unsigned char>(name[0]))) {
    name = "input_" + std::to_string(index);
  }
  return name;
}

}  // namespace

void CheckTorchScriptFile(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    throw Error(ErrorKind::kIo, path + ": no such file");
  }
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) throw Error(ErrorKind::kIo, "cannot read " + path + ": " + ec.message());
  CheckModelBytes(static_cast<int64_t>(size), path);
  const std::string hint =
      "; save models with torch.jit.script(model).save(path) or "
      "torch.jit.trace(model, example).save(path)";
  char magic[4] = {};
  {
    std::ifstream in(path, std::ios::binary);
    in.read(magic, sizeof magic);
    // A zip archive starts with a record, or with the end record when it is empty.
    const std::string m(magic, 4);
    if (!in || (m != std::string("PK\x03\x04", 4) && m != std::string("PK\x05\x06", 4))) {
      throw Error(ErrorKind::kIo,
                  path + ": not a TorchScript file (not a zip archive, which TorchScript files are)" +
                      hint);
    }
  }
  // The archive's directory, read by us: LibTorch's reader (PyTorchStreamReader) leaks its
  // state when its constructor throws on a malformed archive (found by fuzz_torchscript),
  // so it sees only archives whose directory is sound and holds what torch.jit.save writes.
  const ZipDirectory dir = ReadZipDirectory(path);
  auto refuse = [&](const std::string& why, bool with_hint) {
    throw Error(ErrorKind::kIo, path + ": not a TorchScript file (" + why + ")" + (with_hint ? hint : ""));
  };
  if (!dir.problem.empty()) refuse("a broken zip archive: " + dir.problem, false);
  if (dir.names.empty()) refuse("an empty zip archive", true);
  // torch.jit.save puts every record in one folder (named after the file); LibTorch
  // takes the folder from the first record.
  const size_t slash = dir.names[0].find('/');
  if (slash == std::string::npos || slash == 0) {
    refuse("a zip archive whose records are not in a folder, as torch.jit.save writes them", true);
  }
  const std::string folder = dir.names[0].substr(0, slash + 1);
  bool data = false, code = false, version = false;
  for (const auto& name : dir.names) {
    if (name.compare(0, folder.size(), folder) != 0) continue;
    const std::string r = name.substr(folder.size());
    data = data || r == "data.pkl";
    code = code || r.rfind("code/", 0) == 0;
    version = version || r == "version" || r == ".data/version";
  }
  if (!data) refuse("a zip archive without data.pkl", true);
  if (!code) refuse("written by torch.save: it has no code/", true);
  if (!version) refuse("a zip archive without the version record torch.jit.save writes", true);
}

Graph ImportTorchScript(const std::string& path,
                        const std::vector<std::vector<int64_t>>& input_shapes,
                        const TorchScriptImportOptions& options) {
  CheckTorchScriptFile(path);
  torch::jit::Module module;
  try {
    // On the CPU on purpose: the importer only reads the frozen weights out of the
    // module into the graph's initializers; the run moves the graph to its device
    // (Graph::To in the passes that compute), so a file saved from a GPU loads on a
    // machine without one.
    module = torch::jit::load(path, torch::kCPU);
  } catch (const std::exception& e) {
    throw Error(ErrorKind::kIo,
                path + ": not a readable TorchScript file (" + WhatOf(e) +
                    "); save models with torch.jit.script(model).save(path) or "
                    "torch.jit.trace(model, example).save(path), not torch.save");
  }
  torch::jit::Module frozen;
  try {
    module.eval();
    frozen = torch::jit::freeze_module(module);
  } catch (const std::exception& e) {
    throw Error(ErrorKind::kUnsupported, path + ": cannot freeze the module: " + WhatOf(e));
  }
  auto method = frozen.find_method("forward");
  if (!method) throw Error(ErrorKind::kUnsupported, path + ": the module has no forward method");
  std::shared_ptr<jit::Graph> g = method->graph();

  // forward(self, inputs...): one shape per tensor argument.
  const size_t num_inputs = g->inputs().size() - 1;
  std::string arg_names;
  for (size_t i = 1; i < g->inputs().size(); ++i) {
    arg_names += (i > 1 ? ", " : "") + SanitizeInputName(g->inputs()[i]->debugName(), i - 1);
  }
  if (input_shapes.size() != num_inputs) {
    throw Error(ErrorKind::kUsage, path + ": forward takes " + std::to_string(num_inputs) +
                                       " input" + (num_inputs == 1 ? "" : "s") + " (" + arg_names +
                                       "), got " + std::to_string(input_shapes.size()) +
                                       " input shape" + (input_shapes.size() == 1 ? "" : "s"));
  }
  std::vector<GraphArg> args;
  GraphArg self;
  self.kind = GraphArg::kSelf;
  self.self = frozen._ivalue();
  args.push_back(self);
  for (size_t i = 0; i < num_inputs; ++i) {
    const jit::Value* v = g->inputs()[i + 1];
    GraphArg a;
    a.kind = GraphArg::kInput;
    a.shape = input_shapes[i];
    a.name = i < options.input_names.size() ? options.input_names[i]
                                            : SanitizeInputName(v->debugName(), i);
    if (!v->type()->cast<c10::TensorType>()) {
      throw Error(ErrorKind::kUnsupported, path + ": forward argument '" + a.name + "' is a " +
                                               v->type()->str() + "; only tensor inputs are supported");
    }
    for (auto d : a.shape) {
      if (d <= 0) {
        throw Error(ErrorKind::kUsage, path + ": input '" + a.name + "' shape " +
                                           ShapeString(a.shape) + " has a non-positive dim");
      }
    }
    if (a.shape.empty()) {
      throw Error(ErrorKind::kUsage, path + ": input '" + a.name + "' needs a shape with a batch dimension");
    }
    args.push_back(a);
  }
  Importer importer(path, options);
  return importer.Run(*g, args);
}

Graph ImportModule(torch::nn::Module& module, const ForwardFn& forward,
                   const std::vector<Tensor>& example_inputs,
                   const TorchScriptImportOptions& options) {
  const bool was_training = module.is_training();
  module.eval();
  // Parameters and buffers enter the trace as extra inputs, so the traced graph refers
  // to them by position and we can name them; the forward ignores those inputs.
  std::vector<std::pair<std::string, Tensor>> named;
  for (const auto& p : module.named_parameters(/*recurse=*/true)) named.emplace_back(p.key(), p.value());
  for (const auto& b : module.named_buffers(/*recurse=*/true)) named.emplace_back(b.key(), b.value());
  jit::Stack stack;
  for (const auto& x : example_inputs) stack.push_back(x);
  for (const auto& [name, t] : named) stack.push_back(t);
  const size_t num_inputs = example_inputs.size();
  std::shared_ptr<jit::Graph> g;
  try {
    auto traced = jit::tracer::trace(
        stack,
        [&](jit::Stack in) -> jit::Stack {
          std::vector<Tensor> xs;
          for (size_t i = 0; i < num_inputs; ++i) xs.push_back(in[i].toTensor());
          jit::Stack out;
          for (auto& y : forward(xs)) out.push_back(y);
          return out;
        },
        [](const torch::autograd::Variable&) { return std::string(); }, /*strict=*/false);
    g = traced.first->graph;
  } catch (const Error&) {
    if (was_training) module.train();
    throw;
  } catch (const std::exception& e) {
    if (was_training) module.train();
    throw Error(ErrorKind::kUnsupported, "tracing the module failed: " + WhatOf(e));
  }
  if (was_training) module.train();

  std::vector<GraphArg> args;
  for (size_t i = 0; i < g->inputs().size(); ++i) {
    GraphArg a;
    if (i < num_inputs) {
      a.kind = GraphArg::kInput;
      a.shape = example_inputs[i].sizes().vec();
      a.name = i < options.input_names.size() ? options.input_names[i]
                                              : (num_inputs == 1 ? "input" : "input_" + std::to_string(i));
    } else {
      a.kind = GraphArg::kParam;
      a.name = named.at(i - num_inputs).first;
      a.param = named.at(i - num_inputs).second;
    }
    args.push_back(a);
  }
  Importer importer("traced module", options);
  return importer.Run(*g, args);
}

}  // namespace compress
