// TorchScript export: generates TorchScript source for the graph (one statement per
// node, mirroring the kernels of ops.cpp operand for operand so float results are
// bit-exact), registers initializers on a fresh torch::jit::Module and compiles the
// source into it with Module::define. Real INT8 layers (planned and packed in
// torchscript_int8.cpp) run on packed weights stored as module attributes (they
// serialize through the packed classes' pickling).
#include "compress/io/torchscript_export.h"

#include <nlohmann/json.hpp>

#include <torch/csrc/jit/frontend/resolver.h>
#include <torch/csrc/jit/frontend/sugared_value.h>
#include <torch/torch.h>

#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include "compress/io/torchscript_exporter.h"
#include "compress/io/torchscript_helpers.h"
#include "compress/runtime/ops.h"

namespace compress {

namespace {

namespace jit = torch::jit;

}  // namespace

namespace torchscript_detail {

namespace {

// Resolves `torch.*` to aten ops and `quantized.*` to LibTorch's quantized ops.
struct ExportResolver : public jit::Resolver {
  std::shared_ptr<jit::SugaredValue> resolveValue(const std::string& name,
                                                  jit::GraphFunction& m,
                                                  const jit::SourceRange& loc) override {
    if (name == "torch") return std::make_shared<jit::BuiltinModule>("aten");
    if (name == "quantized") return std::make_shared<jit::BuiltinModule>("quantized");
    return nullptr;
  }
  c10::TypePtr resolveType(const std::string& name, const jit::SourceRange& loc) override {
    return nullptr;
  }
};

// ---- literals ----------------------------------------------------------------------

std::string IntLit(int64_t v) {
  // TorchScript cannot spell INT64_MIN; Slice bounds this large clamp the same way.
  constexpr int64_t kBig = int64_t{1} << 62;
  return std::to_string(std::max(-kBig, v));
}

std::string IntsLit(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + IntLit(v[i]);
  return s + "]";
}

// A double exactly as C++ holds it (17 significant digits round-trip).
std::string FloatLit(double v) {
  if (std::isnan(v)) return "float(\"nan\")";
  if (std::isinf(v)) return v > 0 ? "float(\"inf\")" : "float(\"-inf\")";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  std::string s = buf;
  if (s.find_first_of(".eE") == std::string::npos) s += ".0";
  return s;
}

std::string BoolLit(bool b) { return b ? "True" : "False"; }

int DtypeCode(at::ScalarType t) { return static_cast<int>(t); }

const std::set<std::string>& Reserved() {
  static const std::set<std::string> kReserved = {
      "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class",
      "continue", "def", "del", "elif", "else", "except", "finally", "for", "from",
      "global", "if", "import", "in", "is", "lambda", "nonlocal", "not", "or", "pass",
      "raise", "return", "try", "while", "with", "yield", "self", "torch", "quantized",
      "Tensor", "List", "Tuple", "Optional", "Dict", "float", "int", "bool", "str",
      "list", "range", "len", "max", "min", "print", "math", "forward", "training",
      "Exception", "RuntimeError", "ops", "annotate", "isinstance", "mcompress_initializers"};
  return kReserved;
}

// Explicit pads for constant_pad_nd (last spatial dim first).
std::string PadList(const StaticWindow& w) {
  std::vector<int64_t> pad;
  for (size_t i = w.begin.size(); i-- > 0;) {
    pad.push_back(w.begin[i]);
    pad.push_back(w.end[i]);
  }
  return IntsLit(pad);
}

}  // namespace

// ---- shared with torchscript_int8.cpp (declared in torchscript_exporter.h) ----------

std::shared_ptr<jit::Resolver> MakeExportResolver() { return std::make_shared<ExportResolver>(); }

// `name` made a fresh identifier: [A-Za-z0-9_], no leading digit, not reserved, not
// in `taken`, not one of our `_mc_` helper names.
std::string FreshIdent(const std::string& name, const std::string& fallback,
                       std::set<std::string>& taken) {
  std::string s;
  for (char c : name) s += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  if (s.empty() || std::all_of(s.begin(), s.end(), [](char c) { return c == '_'; })) {
    s = fallback;
  }
  if (std::isdigit(static_cast<unsigned char>(s[0]))) s = fallback + "_" + s;
  if (s.rfind("_mc_", 0) == 0 || s.rfind("__", 0) == 0) s = fallback + s;
  std::string candidate = s;
  for (int i = 1; Reserved().count(candidate) || taken.count(candidate); ++i) {
    candidate = s + "_" + std::to_string(i);
  }
  taken.insert(candidate);
  return candidate;
}

// An exception's message without LibTorch's C++ backtrace.
std::string WhatOf(const std::exception& e) {
  if (auto* c10e = dynamic_cast<const c10::Error*>(&e)) return c10e->what_without_backtrace();
  return e.what();
}

StaticWindow WindowOf(const Node& node, size_t n) {
  StaticWindow w;
  w.strides = node.GetInts("strides", std::vector<int64_t>(n, 1));
  w.dilations = node.GetInts("dilations", std::vector<int64_t>(n, 1));
  w.pads = node.GetInts("pads", std::vector<int64_t>(2 * n, 0));
  if (w.strides.size() != n || w.dilations.size() != n || w.pads.size() != 2 * n) {
    throw Error(ErrorKind::kIo, node.Describe() + ": strides/dilations/pads do not match " +
                                    std::to_string(n) + " spatial dims");
  }
  const std::string auto_pad = node.GetString("auto_pad", "NOTSET");
  if (auto_pad == "NOTSET") {
    w.auto_pad = 0;
  } else if (auto_pad == "SAME_UPPER") {
    w.auto_pad = 1;
  } else if (auto_pad == "SAME_LOWER") {
    w.auto_pad = 2;
  } else if (auto_pad == "VALID") {
    w.auto_pad = 3;
    std::fill(w.pads.begin(), w.pads.end(), 0);
  } else {
    throw Error(ErrorKind::kIo, node.Describe() + ": unknown auto_pad '" + auto_pad + "'");
  }
  w.begin.assign(w.pads.begin(), w.pads.begin() + n);
  w.end.assign(w.pads.begin() + n, w.pads.end());
  return w;
}

// ---- the exporter: names and values ----------------------------------------------------

[[noreturn]] void Exporter::Unsupported(const Node& node, const std::string& what) const {
  throw Error(ErrorKind::kUnsupported,
              node.Describe() + ": TorchScript export does not support " + what);
}

std::string Exporter::Use(const std::string& helper) {
  for (const auto& h : Helpers()) {
    if (helper == h.name) {
      if (helpers_.insert(helper).second) {
        for (const char* dep : h.deps) Use(dep);
      }
      return "self." + helper;
    }
  }
  throw Error(ErrorKind::kInternal, "no TorchScript helper " + helper);
}

std::string Exporter::AttrFor(const std::string& initializer) {
  auto it = attr_of_.find(initializer);
  if (it != attr_of_.end()) return "self." + it->second;
  const std::string attr = FreshIdent(initializer, "w", attr_names_);
  // A copy, so the module never shares storage with the graph a pass may change.
  Tensor t = graph_.initializers.at(initializer).value.detach().clone();
  if (trainable_.count(initializer)) {
    module_.register_parameter(attr, t, /*is_buffer=*/false);
  } else {
    module_.register_buffer(attr, t);
  }
  initializer_names_.insert(attr, initializer);
  attr_of_[initializer] = attr;
  return "self." + attr;
}

std::string Exporter::BufferFor(const std::string& hint, const Tensor& t) {
  const std::string attr = FreshIdent(hint, "c", attr_names_);
  module_.register_buffer(attr, t.detach().clone());
  return "self." + attr;
}

std::string Exporter::Ref(const std::string& value) {
  auto it = value_expr_.find(value);
  if (it != value_expr_.end()) return it->second;
  if (graph_.IsInitializer(value)) return value_expr_[value] = AttrFor(value);
  throw Error(ErrorKind::kInternal, "TorchScript export: value '" + value + "' read before it is defined");
}

std::string Exporter::Define(const std::string& value) {
  const std::string ident = FreshIdent(value, "v", local_names_);
  value_expr_[value] = ident;
  return ident;
}

std::optional<Tensor> Exporter::Static(const std::string& value) const {
  if (value.empty()) return std::nullopt;
  auto it = graph_.initializers.find(value);
  if (it != graph_.initializers.end()) return it->second.value;
  int p = graph_.ProducerIndex(value);
  if (p < 0 || graph_.nodes[p].op_type != "Constant") return std::nullopt;
  const Node& n = graph_.nodes[p];
  if (n.HasAttr("value")) return n.GetTensor("value");
  if (n.HasAttr("value_int")) return torch::scalar_tensor(n.GetInt("value_int"), torch::kLong);
  if (n.HasAttr("value_ints")) return torch::tensor(n.GetInts("value_ints"), torch::kLong);
  return std::nullopt;
}

std::optional<at::ScalarType> Exporter::DtypeOf(const std::string& value) const {
  if (auto t = Static(value)) return t->scalar_type();
  if (auto info = graph_.FindValue(value)) return info->dtype;
  return std::nullopt;
}

std::optional<int64_t> Exporter::RankOf(const std::string& value) const {
  if (auto t = Static(value)) return t->dim();
  if (auto info = graph_.FindValue(value); info && info->shape) {
    return static_cast<int64_t>(info->shape->size());
  }
  return std::nullopt;
}

// An int-list argument read from input `input`: a literal when the graph fixes it,
// else converted at run time.
std::string Exporter::IntsArg(const Node& node, size_t input) {
  if (auto t = Static(node.inputs[input])) {
    Tensor c = t->to(torch::kCPU, torch::kLong).contiguous().reshape({-1});
    return IntsLit(std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()));
  }
  return Use("_mc_ints") + "(" + Ref(node.inputs[input]) + ")";
}

std::string Exporter::OptRef(const Node& node, size_t input) {
  return node.HasInput(input) ? Ref(node.inputs[input]) : "None";
}

// ---- per-node emission ---------------------------------------------------------------

// The emitter of `op_type`, or nullptr. The table is sorted by op type (as ops.cpp's
// kOps) and searched by binary search; it covers every op of the registry.
Exporter::Emitter Exporter::FindEmitter(const std::string& op_type) {
  struct Row {
    const char* op_type;
    Emitter emit;
  };
  static const Row kEmitters[] = {
      {"Add", &Exporter::EmitAddSubMul},
      {"AveragePool", &Exporter::EmitPool},
      {"BatchNormalization", &Exporter::EmitBatchNormalization},
      {"Clip", &Exporter::EmitClip},
      {"Concat", &Exporter::EmitConcat},
      {"Constant", &Exporter::EmitConstant},
      {"Conv", &Exporter::EmitConv},
      {"DequantizeLinear", &Exporter::EmitDequantize},
      {"Div", &Exporter::EmitDiv},
      {"Dropout", &Exporter::EmitDropout},
      {"Erf", &Exporter::EmitErf},
      {"Flatten", &Exporter::EmitFlatten},
      {"Gelu", &Exporter::EmitGelu},
      {"Gemm", &Exporter::EmitGemm},
      {"GlobalAveragePool", &Exporter::EmitGlobalAveragePool},
      {"HardSigmoid", &Exporter::EmitHardSigmoid},
      {"HardSwish", &Exporter::EmitHardSwish},
      {"Identity", &Exporter::EmitIdentity},
      {"LayerNormalization", &Exporter::EmitLayerNormalization},
      {"LeakyRelu", &Exporter::EmitLeakyRelu},
      {"MatMul", &Exporter::EmitMatMul},
      {"MaxPool", &Exporter::EmitPool},
      {"Mul", &Exporter::EmitAddSubMul},
      {"QuantizeLinear", &Exporter::EmitQuantize},
      {"Relu", &Exporter::EmitRelu},
      {"Reshape", &Exporter::EmitReshape},
      {"Sigmoid", &Exporter::EmitSigmoid},
      {"Slice", &Exporter::EmitSlice},
      {"Softmax", &Exporter::EmitSoftmax},
      {"Split", &Exporter::EmitSplit},
      {"Squeeze", &Exporter::EmitSqueeze},
      {"Sub", &Exporter::EmitAddSubMul},
      {"Tanh", &Exporter::EmitTanh},
      {"Transpose", &Exporter::EmitTranspose},
      {"Unsqueeze", &Exporter::EmitSqueeze},
  };
  assert(std::is_sorted(std::begin(kEmitters), std::end(kEmitters), [](const Row& a, const Row& b) {
    return std::strcmp(a.op_type, b.op_type) < 0;
  }));
  const Row* it = std::lower_bound(std::begin(kEmitters), std::end(kEmitters), op_type,
                                   [](const Row& row, const std::string& name) {
                                     return name.compare(row.op_type) > 0;
                                   });
  return it != std::end(kEmitters) && op_type == it->op_type ? it->emit : nullptr;
}

void Exporter::EmitNode(const Node& node) {
  const std::string& op = node.op_type;
  if (!node.domain.empty() && node.domain != "ai.onnx") Unsupported(node, "domain '" + node.domain + "'");
  if (FindOp(op) == nullptr) Unsupported(node, "op " + op);
  const Emitter emit = FindEmitter(op);
  if (emit == nullptr) Unsupported(node, "op " + op);
  (this->*emit)(node);
}

// `y = fn(x)`.
void Exporter::EmitUnary(const Node& node, const std::string& fn) {
  Emit(Out(node) + " = " + fn + "(" + In(node, 0) + ")");
}

void Exporter::EmitAddSubMul(const Node& node) {
  const std::string& op = node.op_type;
  const char* sym = op == "Add" ? " + " : op == "Sub" ? " - " : " * ";
  Emit(Out(node) + " = " + In(node, 0) + sym + In(node, 1));
}

void Exporter::EmitDiv(const Node& node) {
  auto dtype = DtypeOf(node.inputs[0]);
  if (dtype && at::isFloatingType(*dtype)) {
    Emit(Out(node) + " = " + In(node, 0) + " / " + In(node, 1));
  } else if (dtype) {
    Emit(Out(node) + " = torch.div(" + In(node, 0) + ", " + In(node, 1) + ", rounding_mode=\"trunc\")");
  } else {
    Emit(Out(node) + " = " + Use("_mc_div") + "(" + In(node, 0) + ", " + In(node, 1) + ")");
  }
}

void Exporter::EmitRelu(const Node& node) { EmitUnary(node, "torch.relu"); }
void Exporter::EmitSigmoid(const Node& node) { EmitUnary(node, "torch.sigmoid"); }
void Exporter::EmitTanh(const Node& node) { EmitUnary(node, "torch.tanh"); }
void Exporter::EmitErf(const Node& node) { EmitUnary(node, "torch.erf"); }
void Exporter::EmitHardSwish(const Node& node) { EmitUnary(node, "torch.hardswish"); }

void Exporter::EmitLeakyRelu(const Node& node) {
  Emit(Out(node) + " = torch.leaky_relu(" + In(node, 0) + ", " + FloatLit(node.GetFloat("alpha", 0.01)) + ")");
}

void Exporter::EmitHardSigmoid(const Node& node) {
  Emit(Out(node) + " = torch.clamp(" + In(node, 0) + " * " + FloatLit(node.GetFloat("alpha", 0.2)) +
       " + " + FloatLit(node.GetFloat("beta", 0.5)) + ", 0.0, 1.0)");
}

void Exporter::EmitGelu(const Node& node) {
  const std::string approx = node.GetString("approximate", "none");
  if (approx != "none" && approx != "tanh") Unsupported(node, "approximate='" + approx + "'");
  Emit(Out(node) + " = torch.gelu(" + In(node, 0) + ", approximate=\"" + approx + "\")");
}

void Exporter::EmitClip(const Node& node) {
  std::string lo = "None", hi = "None";
  if (graph_.opset < 11) {
    if (node.HasAttr("min")) lo = FloatLit(node.GetFloat("min"));
    if (node.HasAttr("max")) hi = FloatLit(node.GetFloat("max"));
  } else {
    const std::string x = In(node, 0);
    if (node.HasInput(1)) lo = In(node, 1) + ".to(" + x + ".dtype)";
    if (node.HasInput(2)) hi = In(node, 2) + ".to(" + x + ".dtype)";
  }
  if (lo == "None" && hi == "None") {
    Emit(Out(node) + " = " + In(node, 0));
  } else {
    Emit(Out(node) + " = torch.clamp(" + In(node, 0) + ", " + lo + ", " + hi + ")");
  }
}

void Exporter::EmitBatchNormalization(const Node& node) {
  if (node.GetInt("training_mode", 0) != 0) Unsupported(node, "training_mode=1");
  if (node.outputs.size() > 1) Unsupported(node, "running statistics outputs");
  Emit(Out(node) + " = torch.batch_norm(" + In(node, 0) + ", " + In(node, 1) + ", " + In(node, 2) + ", " +
       In(node, 3) + ", " + In(node, 4) + ", False, 0.0, " + FloatLit(node.GetFloat("epsilon", 1e-5)) +
       ", False)");
}

void Exporter::EmitGlobalAveragePool(const Node& node) {
  Emit(Out(node) + " = " + Use("_mc_global_average_pool") + "(" + In(node, 0) + ")");
}

void Exporter::EmitMatMul(const Node& node) {
  Emit(Out(node) + " = torch.matmul(" + In(node, 0) + ", " + In(node, 1) + ")");
}

void Exporter::EmitFlatten(const Node& node) {
  Emit(Out(node) + " = " + Use("_mc_flatten") + "(" + In(node, 0) + ", " + IntLit(node.GetInt("axis", 1)) + ")");
}

void Exporter::EmitReshape(const Node& node) {
  const bool allow_zero = node.GetInt("allowzero", 0) != 0;
  std::optional<Tensor> shape = Static(node.inputs[1]);
  if (shape) {
    // Common case spelled out: each 0 copies the input's dim at run time.
    Tensor c = shape->to(torch::kCPU, torch::kLong).contiguous().reshape({-1});
    const std::string x = In(node, 0);
    std::string list = "[";
    for (int64_t i = 0; i < c.numel(); ++i) {
      const int64_t d = c.data_ptr<int64_t>()[i];
      list += (i ? ", " : "") + (d == 0 && !allow_zero ? x + ".size(" + std::to_string(i) + ")" : IntLit(d));
    }
    Emit(Out(node) + " = " + x + ".reshape(" + list + "])");
  } else {
    Emit(Out(node) + " = " + Use("_mc_reshape") + "(" + In(node, 0) + ", " + IntsArg(node, 1) + ", " +
         BoolLit(allow_zero) + ")");
  }
}

void Exporter::EmitTranspose(const Node& node) {
  if (node.HasAttr("perm")) {
    Emit(Out(node) + " = " + In(node, 0) + ".permute(" + IntsLit(node.GetInts("perm")) + ")");
  } else {
    Emit(Out(node) + " = " + Use("_mc_reverse") + "(" + In(node, 0) + ")");
  }
}

void Exporter::EmitSqueeze(const Node& node) {
  const std::string& op = node.op_type;
  std::string axes = "[]";
  if (graph_.opset >= 13) {
    if (node.HasInput(1)) axes = IntsArg(node, 1);
  } else {
    axes = IntsLit(node.GetInts("axes"));
  }
  const std::string helper = op == "Squeeze" ? "_mc_squeeze" : "_mc_unsqueeze";
  Emit(Out(node) + " = " + Use(helper) + "(" + In(node, 0) + ", " + axes + ")");
}

void Exporter::EmitConcat(const Node& node) {
  std::string parts;
  for (size_t i = 0; i < node.inputs.size(); ++i) {
    if (!node.HasInput(i)) continue;
    parts += (parts.empty() ? "" : ", ") + In(node, i);
  }
  Emit(Out(node) + " = torch.cat([" + parts + "], " + IntLit(node.GetInt("axis")) + ")");
}

void Exporter::EmitSplit(const Node& node) {
  std::string sizes = "[]";
  if (graph_.opset >= 13) {
    if (node.HasInput(1)) sizes = IntsArg(node, 1);
  } else {
    sizes = IntsLit(node.GetInts("split"));
  }
  const std::string x = In(node, 0);
  const std::string parts = FreshIdent(node.name + "_parts", "parts", local_names_);
  Emit(parts + " = " + Use("_mc_split") + "(" + x + ", " + IntLit(node.GetInt("axis", 0)) +
       ", " + sizes + ", " + std::to_string(node.outputs.size()) + ")");
  for (size_t i = 0; i < node.outputs.size(); ++i) {
    if (node.outputs[i].empty()) continue;
    Emit(Out(node, i) + " = " + parts + "[" + std::to_string(i) + "]");
  }
}

void Exporter::EmitSlice(const Node& node) {
  std::string starts, ends, axes, steps;
  if (graph_.opset < 10) {
    starts = IntsLit(node.GetInts("starts"));
    ends = IntsLit(node.GetInts("ends"));
    std::vector<int64_t> a = node.GetInts("axes");
    if (a.empty()) {
      for (size_t i = 0; i < node.GetInts("starts").size(); ++i) a.push_back(i);
    }
    axes = IntsLit(a);
    steps = IntsLit(std::vector<int64_t>(node.GetInts("starts").size(), 1));
  } else {
    starts = IntsArg(node, 1);
    ends = IntsArg(node, 2);
    // Default axes/steps need the number of starts: known when starts is static.
    std::optional<Tensor> st = Static(node.inputs[1]);
    if ((!node.HasInput(3) || !node.HasInput(4)) && !st) {
      Unsupported(node, "default axes/steps with run-time starts");
    }
    const int64_t n = st ? st->numel() : 0;
    std::vector<int64_t> a;
    for (int64_t i = 0; i < n; ++i) a.push_back(i);
    axes = node.HasInput(3) ? IntsArg(node, 3) : IntsLit(a);
    steps = node.HasInput(4) ? IntsArg(node, 4) : IntsLit(std::vector<int64_t>(n, 1));
  }
  Emit(Out(node) + " = " + Use("_mc_slice") + "(" + In(node, 0) + ", " + starts + ", " + ends + ", " +
       axes + ", " + steps + ")");
}

void Exporter::EmitSoftmax(const Node& node) {
  if (graph_.opset < 13) {
    Emit(Out(node) + " = " + Use("_mc_softmax_2d") + "(" + In(node, 0) + ", " + IntLit(node.GetInt("axis", 1)) + ")");
  } else {
    Emit(Out(node) + " = torch.softmax(" + In(node, 0) + ", " + IntLit(node.GetInt("axis", -1)) + ")");
  }
}

void Exporter::EmitLayerNormalization(const Node& node) {
  const std::string args = In(node, 0) + ", " + In(node, 1) + ", " + OptRef(node, 2) + ", " +
                           IntLit(node.GetInt("axis", -1)) + ", " +
                           FloatLit(node.GetFloat("epsilon", 1e-5));
  if (node.outputs.size() > 1) {
    std::string outs;
    for (size_t i = 0; i < 3; ++i) {
      outs += (i ? ", " : "") + (i < node.outputs.size() && !node.outputs[i].empty()
                                     ? Out(node, i)
                                     : FreshIdent("unused", "unused", local_names_));
    }
    Emit(outs + " = " + Use("_mc_layer_norm_stats") + "(" + args + ")");
  } else {
    Emit(Out(node) + " = " + Use("_mc_layer_norm") + "(" + args + ")");
  }
}

void Exporter::EmitDropout(const Node& node) {
  if (node.HasInput(2)) {
    std::optional<Tensor> mode = Static(node.inputs[2]);
    if (!mode || mode->item<bool>()) Unsupported(node, "training_mode other than a constant false");
  }
  const std::string x = In(node, 0);
  Emit(Out(node) + " = " + x);
  if (node.outputs.size() > 1 && !node.outputs[1].empty()) {
    Emit(Out(node, 1) + " = torch.ones_like(" + x + ", dtype=" + std::to_string(DtypeCode(at::kBool)) + ")");
  }
}

void Exporter::EmitIdentity(const Node& node) { Emit(Out(node) + " = " + In(node, 0)); }

void Exporter::EmitConstant(const Node& node) {
  Tensor value;
  if (node.HasAttr("value")) {
    value = node.GetTensor("value");
  } else if (node.HasAttr("value_float")) {
    value = torch::scalar_tensor(node.GetFloat("value_float"), torch::kFloat);
  } else if (node.HasAttr("value_int")) {
    value = torch::scalar_tensor(node.GetInt("value_int"), torch::kLong);
  } else if (node.HasAttr("value_floats")) {
    value = torch::tensor(node.GetFloats("value_floats"), torch::kDouble).to(torch::kFloat);
  } else if (node.HasAttr("value_ints")) {
    value = torch::tensor(node.GetInts("value_ints"), torch::kLong);
  } else {
    Unsupported(node, "Constant forms other than value, value_float(s) and value_int(s)");
  }
  Emit(Out(node) + " = " + BufferFor(node.outputs[0], value));
}

void Exporter::EmitConv(const Node& node) {
  std::vector<int64_t> kernel;
  if (node.HasAttr("kernel_shape")) {
    kernel = node.GetInts("kernel_shape");
  } else if (auto t = Static(node.inputs[1])) {
    kernel.assign(t->sizes().begin() + 2, t->sizes().end());
  } else if (auto info = graph_.FindValue(node.inputs[1]); info && info->shape) {
    kernel.assign(info->shape->begin() + 2, info->shape->end());
  } else {
    Unsupported(node, "a weight of unknown shape without kernel_shape");
  }
  const StaticWindow w = WindowOf(node, kernel.size());
  std::string x = Ref(node.inputs[0]);
  const std::string weight = Ref(node.inputs[1]);
  const std::string bias = OptRef(node, 2);
  const std::string group = IntLit(node.GetInt("group", 1));
  const std::string y = Define(node.outputs[0]);
  if (w.auto_pad == 1 || w.auto_pad == 2) {
    Emit(y + " = " + Use("_mc_conv") + "(" + x + ", " + weight + ", " + bias + ", " +
         IntsLit(kernel) + ", " + IntsLit(w.strides) + ", " + IntsLit(w.dilations) + ", " +
         IntsLit(w.pads) + ", " + std::to_string(w.auto_pad) + ", " + group + ")");
    return;
  }
  std::vector<int64_t> padding = w.begin;
  if (!w.Symmetric(kernel, false)) {
    x = "torch.constant_pad_nd(" + x + ", " + PadList(w) + ", 0.0)";
    std::fill(padding.begin(), padding.end(), 0);
  }
  Emit(y + " = torch.convolution(" + x + ", " + weight + ", " + bias + ", " +
       IntsLit(w.strides) + ", " + IntsLit(padding) + ", " + IntsLit(w.dilations) + ", False, " +
       IntsLit(std::vector<int64_t>(kernel.size(), 0)) + ", " + group + ")");
}

void Exporter::EmitPool(const Node& node) {
  const bool max = node.op_type == "MaxPool";
  const std::vector<int64_t> kernel = node.GetInts("kernel_shape");
  const size_t n = kernel.size();
  if (n < 1 || n > 3) Unsupported(node, std::to_string(n) + "-D pooling");
  if (max && node.outputs.size() > 1 && !node.outputs[1].empty()) {
    Unsupported(node, "the Indices output");
  }
  const StaticWindow w = WindowOf(node, n);
  const bool ceil_mode = node.GetInt("ceil_mode", 0) != 0;
  const bool count_pad = node.GetInt("count_include_pad", 0) != 0;
  if (!max) {
    for (auto d : w.dilations) {
      if (d != 1) Unsupported(node, "dilated AveragePool");
    }
  }
  const std::string x = Ref(node.inputs[0]);
  const std::string y = Define(node.outputs[0]);
  auto dtype = DtypeOf(node.inputs[0]);
  const bool is_float = dtype && at::isFloatingType(*dtype);
  const std::string nd = std::to_string(n) + "d";
  if (w.auto_pad != 1 && w.auto_pad != 2 && w.Symmetric(kernel, true) && (is_float || !max)) {
    if (max) {
      Emit(y + " = torch.max_pool" + nd + "(" + x + ", " + IntsLit(kernel) + ", " +
           IntsLit(w.strides) + ", " + IntsLit(w.begin) + ", " + IntsLit(w.dilations) + ", " +
           BoolLit(ceil_mode) + ")");
    } else {
      Emit(y + " = torch.avg_pool" + nd + "(" + x + ", " + IntsLit(kernel) + ", " +
           IntsLit(w.strides) + ", " + IntsLit(w.begin) + ", " + BoolLit(ceil_mode) + ", " +
           BoolLit(count_pad) + (n == 1 ? "" : ", None") + ")");
    }
    return;
  }
  const std::string common = x + ", " + IntsLit(kernel) + ", " + IntsLit(w.strides) + ", " +
                             IntsLit(w.dilations) + ", " + IntsLit(w.pads) + ", " +
                             std::to_string(w.auto_pad) + ", " + BoolLit(ceil_mode);
  if (max) {
    Emit(y + " = " + Use("_mc_max_pool") + "(" + common + ")");
  } else {
    Emit(y + " = " + Use("_mc_average_pool") + "(" + common + ", " + BoolLit(count_pad) + ")");
  }
}

void Exporter::EmitGemm(const Node& node) {
  const double alpha = node.GetFloat("alpha", 1.0);
  const double beta = node.GetFloat("beta", 1.0);
  const bool trans_a = node.GetInt("transA", 0) != 0;
  const bool trans_b = node.GetInt("transB", 0) != 0;
  const std::string a = Ref(node.inputs[0]);
  const std::string b = Ref(node.inputs[1]);
  std::optional<int64_t> c_rank;
  if (node.HasInput(2)) c_rank = RankOf(node.inputs[2]);
  const std::string y = Define(node.outputs[0]);
  if (!trans_a && trans_b && alpha == 1.0 && beta == 1.0 && (!node.HasInput(2) || c_rank == 1)) {
    Emit(y + " = torch.linear(" + a + ", " + b + ", " + OptRef(node, 2) + ")");
    return;
  }
  if (node.HasInput(2) && !c_rank) Unsupported(node, "a bias C of unknown rank");
  std::string expr = "torch.mm(" + a + (trans_a ? ".t()" : "") + ", " + b + (trans_b ? ".t()" : "") + ")";
  if (alpha != 1.0) expr = expr + " * " + FloatLit(alpha);
  if (node.HasInput(2)) {
    const std::string c = Ref(node.inputs[2]);
    expr = beta == 1.0 ? expr + " + " + c : expr + " + " + c + " * " + FloatLit(beta);
  }
  Emit(y + " = " + expr);
}

// A Q/DQ parameter broadcast along `axis` of x when the scale is 1-D with several
// entries (ops.cpp's QParams): decided at export when the scale is static, else at
// run time.
std::string Exporter::PerAxis(const Node& node, const std::string& param, const std::string& x) {
  std::optional<Tensor> scale = Static(node.inputs[1]);
  const std::string axis = IntLit(node.GetInt("axis", 1));
  if (scale && !(scale->dim() == 1 && scale->numel() > 1)) return param;
  if (scale) return Use("_mc_along") + "(" + param + ", " + axis + ", " + x + ")";
  return Use("_mc_qparam") + "(" + param + ", " + Ref(node.inputs[1]) + ", " + axis + ", " + x + ")";
}

void Exporter::EmitQuantize(const Node& node) {
  const std::string x = Ref(node.inputs[0]);
  const std::string scale = PerAxis(node, Ref(node.inputs[1]), x);
  at::ScalarType out_type = at::kByte;
  std::string zp = "torch.zeros([], dtype=" + std::to_string(DtypeCode(at::kByte)) + ")";
  if (node.HasInput(2)) {
    auto dtype = DtypeOf(node.inputs[2]);
    if (!dtype) Unsupported(node, "a zero point of unknown dtype");
    out_type = *dtype;
    zp = PerAxis(node, Ref(node.inputs[2]), x);
  }
  std::string lo, hi;
  if (out_type == at::kByte) {
    lo = "0.0", hi = "255.0";
  } else if (out_type == at::kChar) {
    lo = "-128.0", hi = "127.0";
  } else {
    Unsupported(node, "QuantizeLinear to " + DtypeName(out_type));
  }
  const std::string y = Define(node.outputs[0]);
  Emit(y + " = torch.clamp(torch.round(" + x + " / " + scale + ") + " + zp + ".to(" + x +
       ".dtype), " + lo + ", " + hi + ").to(" + std::to_string(DtypeCode(out_type)) + ")");
}

void Exporter::EmitDequantize(const Node& node) {
  const std::string x = Ref(node.inputs[0]);
  const std::string scale = PerAxis(node, Ref(node.inputs[1]), x);
  const std::string y = Define(node.outputs[0]);
  if (!node.HasInput(2)) {
    Emit(y + " = " + x + ".to(" + scale + ".dtype) * " + scale);
    return;
  }
  const std::string zp = PerAxis(node, Ref(node.inputs[2]), x);
  Emit(y + " = (" + x + ".to(" + scale + ".dtype) - " + zp + ".to(" + scale + ".dtype)) * " + scale);
}

// The quantized-tensor variable of a real QuantizeLinear (emitted already).
std::string Exporter::QuantizedOf(int q_node) {
  auto it = quantized_var_.find(q_node);
  if (it == quantized_var_.end()) {
    throw Error(ErrorKind::kInternal, graph_.nodes[q_node].Describe() + ": quantized tensor used before it is computed");
  }
  return it->second;
}

jit::Module Exporter::Run(TorchScriptExportResult* result) {
  const Graph& g = graph_;
  for (const auto& name : g.TrainableNames()) trainable_.insert(name);
  // eval()/train() (C++ and Python) expect the flag nn.Module has.
  if (!module_.hasattr("training")) {
    module_.register_attribute("training", c10::BoolType::get(), false);
  }

  // Step 1: forward's signature.
  const std::string signature = Signature();

  // Step 2: the plan of real INT8 layers (packs their weights). The engine stays set
  // until the module is compiled.
  std::optional<ScopedQEngine> engine;
  if (options_.real_int8) {
    engine.emplace(options_.qengine);
    PlanInt8(result);
  }

  // Step 3: the nodes graph outputs depend on.
  const std::vector<bool> live = LiveNodes();

  // Step 4: one statement per node, in graph order.
  const int num_nodes = static_cast<int>(g.nodes.size());
  for (int i = 0; i < num_nodes; ++i) {
    if (skipped_.count(i) || absorbed_dq_.count(i) || !live[i]) continue;
    if (real_q_.count(i)) {
      EmitRealQuantize(i, live);
      continue;
    }
    EmitNode(g.nodes[i]);
  }

  // Step 5: outputs, and the source compiled into the module.
  DefineForward(signature);
  module_.eval();
  return module_;
}

// "def forward(self, x: Tensor, ...)", defining the inputs' identifiers.
std::string Exporter::Signature() {
  std::string signature = "def forward(self";
  for (const auto& input : graph_.inputs) {
    signature += ", " + Define(input.name) + ": Tensor";
  }
  signature += ")";
  return signature;
}

// With INT8 layers folded, the float weights' DequantizeLinear (and whatever else only
// they read) is dead: keep the nodes graph outputs depend on. All live without INT8.
std::vector<bool> Exporter::LiveNodes() const {
  const Graph& g = graph_;
  const int num_nodes = static_cast<int>(g.nodes.size());
  std::vector<bool> live(num_nodes, true);
  if (!options_.real_int8) return live;
  std::set<std::string> needed;
  for (const auto& o : g.outputs) needed.insert(o.name);
  for (int i = num_nodes - 1; i >= 0; --i) {
    const Node& node = g.nodes[i];
    live[i] = !skipped_.count(i) && !absorbed_dq_.count(i) &&
              std::any_of(node.outputs.begin(), node.outputs.end(),
                          [&](const std::string& o) { return needed.count(o) != 0; });
    if (!live[i]) continue;
    auto layer = layer_at_q_out_.find(i);
    auto chain = chain_at_q_.find(i);
    if (layer != layer_at_q_out_.end()) {
      needed.insert(g.nodes[layer->second.q_in].outputs[0]);  // its quantized tensor
    } else if (chain != chain_at_q_.end()) {
      needed.insert(g.nodes[chain->second.source_q].outputs[0]);
    } else if (auto add = add_at_q_out_.find(i); add != add_at_q_out_.end()) {
      needed.insert(g.nodes[add->second.qa].outputs[0]);
      needed.insert(g.nodes[add->second.qb].outputs[0]);
    } else {
      needed.insert(node.inputs.begin(), node.inputs.end());
    }
  }
  return live;
}

// A real QuantizeLinear: its quantized tensor, and its uint8 values when needed.
void Exporter::EmitRealQuantize(int i, const std::vector<bool>& live) {
  const Graph& g = graph_;
  const Node& node = g.nodes[i];
  auto layer = layer_at_q_out_.find(i);
  if (layer != layer_at_q_out_.end()) {
    const Int8Layer& l = layer->second;
    const Node& n = g.nodes[l.node];
    const bool conv = n.op_type == "Conv";
    const std::string qx = QuantizedOf(l.q_in);
    const std::string qy = FreshIdent(node.outputs[0] + "_q", "q", local_names_);
    quantized_var_[i] = qy;
    std::string call = conv ? (l.relu >= 0 ? "quantized.conv2d_relu" : "quantized.conv2d")
                            : (l.relu >= 0 ? "quantized.linear_relu" : "quantized.linear");
    Emit(qy + " = " + call + "(" + qx + ", self." + packed_attr_.at(l.node) + ", " +
         FloatLit(l.out_scale) + ", " + IntLit(l.out_zp) + ")");
  } else if (auto add = add_at_q_out_.find(i); add != add_at_q_out_.end()) {
    const QuantizedAdd& a = add->second;
    const std::string qy = FreshIdent(node.outputs[0] + "_q", "q", local_names_);
    quantized_var_[i] = qy;
    Emit(qy + " = " + (a.relu >= 0 ? "quantized.add_relu(" : "quantized.add(") +
         QuantizedOf(a.qa) + ", " + QuantizedOf(a.qb) + ", " + FloatLit(a.scale) + ", " +
         IntLit(a.zp) + ")");
  } else if (auto chain = chain_at_q_.find(i); chain != chain_at_q_.end()) {
    quantized_var_[i] = EmitQuantizedChain(node, chain->second);
  } else {
    Tensor s, z;
    PerTensorParams(g, node, &s, &z);
    const std::string qy = FreshIdent(node.outputs[0] + "_q", "q", local_names_);
    quantized_var_[i] = qy;
    Emit(qy + " = torch.quantize_per_tensor(" + Ref(node.inputs[0]) + ", " +
         FloatLit(s.to(torch::kCPU).item<float>()) + ", " + IntLit(z.to(torch::kCPU).item<int64_t>()) +
         ", " + std::to_string(DtypeCode(at::kQUInt8)) + ")");
  }
  // Readers that still want the uint8 values (or a graph output) get int_repr.
  bool need_values = g.IsOutput(node.outputs[0]);
  for (int c : g.ConsumerIndices(node.outputs[0])) {
    if (!absorbed_dq_.count(c) && live[c]) need_values = true;
  }
  if (need_values) Emit(Define(node.outputs[0]) + " = " + quantized_var_[i] + ".int_repr()");
}

// The passthrough ops of `c` on quantized tensors, requantized to the parameters of
// `end_q` (its end QuantizeLinear) when they differ; returns the final tensor.
std::string Exporter::EmitQuantizedChain(const Node& end_q, const QuantizedChain& c) {
  const Graph& g = graph_;
  std::string t = QuantizedOf(c.source_q);
  for (int k : c.ops) {
    const Node& op = g.nodes[k];
    const std::string next = FreshIdent(op.outputs[0] + "_q", "q", local_names_);
    if (op.op_type == "Relu") {
      Emit(next + " = torch.relu(" + t + ")");
    } else if (op.op_type == "Flatten") {
      Emit(next + " = " + Use("_mc_flatten") + "(" + t + ", " + IntLit(op.GetInt("axis", 1)) + ")");
    } else if (op.op_type == "Reshape") {
      Emit(next + " = " + Use("_mc_reshape") + "(" + t + ", " + IntsArg(op, 1) + ", " +
           BoolLit(op.GetInt("allowzero", 0) != 0) + ")");
    } else {  // MaxPool
      const StaticWindow w = WindowOf(op, 2);
      Emit(next + " = torch.max_pool2d(" + t + ", " + IntsLit(op.GetInts("kernel_shape")) + ", " +
           IntsLit(w.strides) + ", " + IntsLit(w.begin) + ", " + IntsLit(w.dilations) + ", " +
           BoolLit(op.GetInt("ceil_mode", 0) != 0) + ")");
    }
    t = next;
  }
  if (c.requantize) {
    const std::string next = FreshIdent(end_q.outputs[0] + "_q", "q", local_names_);
    Emit(next + " = torch.quantize_per_tensor(torch.dequantize(" + t + "), " + FloatLit(c.scale) +
         ", " + IntLit(c.zp) + ", " + std::to_string(DtypeCode(at::kQUInt8)) + ")");
    t = next;
  }
  return t;
}

// Completes forward (the helpers it uses, its body, the return of the graph outputs)
// and compiles it into the module.
void Exporter::DefineForward(const std::string& signature) {
  const Graph& g = graph_;
  std::string ret;
  for (size_t i = 0; i < g.outputs.size(); ++i) ret += (i ? ", " : "") + Ref(g.outputs[i].name);
  if (g.outputs.size() != 1) ret = "(" + ret + (g.outputs.size() == 1 ? ",)" : ")");

  std::ostringstream src;
  for (const auto& h : Helpers()) {
    if (helpers_.count(h.name)) src << h.source;
  }
  src << "\n" << signature << ":\n" << body_.str() << "    return " << ret << "\n";
  module_.register_attribute("mcompress_initializers",
                             c10::DictType::create(c10::StringType::get(), c10::StringType::get()),
                             initializer_names_);
  try {
    module_.define(src.str(), MakeExportResolver());
  } catch (const std::exception& e) {
    throw Error(ErrorKind::kInternal, "TorchScript export of graph '" + g.name +
                                          "': LibTorch rejects the generated code: " + WhatOf(e) +
                                          "\n" + src.str());
  }
}

}  // namespace torchscript_detail

ScopedQEngine::ScopedQEngine(const std::string& name) : previous_(at::globalContext().qEngine()) {
  at::QEngine engine;
  if (name == "onednn") {
    engine = at::QEngine::ONEDNN;
  } else if (name == "qnnpack") {
    engine = at::QEngine::QNNPACK;
  } else {
    throw Error(ErrorKind::kUnsupported,
                "TorchScript: unknown quantized engine '" + name + "' (onednn or qnnpack)");
  }
  const auto& supported = at::globalContext().supportedQEngines();
  if (std::find(supported.begin(), supported.end(), engine) == supported.end()) {
    throw Error(ErrorKind::kUnsupported,
                "TorchScript: this LibTorch lacks the '" + name + "' quantized engine");
  }
  at::globalContext().setQEngine(engine);
}

ScopedQEngine::~ScopedQEngine() { at::globalContext().setQEngine(previous_); }

torch::jit::Module GraphToTorchScript(const Graph& graph, const TorchScriptExportOptions& options,
                                      TorchScriptExportResult* result) {
  TorchScriptExportResult local;
  torchscript_detail::Exporter exporter(graph, options);
  return exporter.Run(result ? result : &local);
}

TorchScriptExportResult SaveTorchScript(const Graph& graph, const std::string& path,
                                        const TorchScriptExportOptions& options) {
  TorchScriptExportResult result;
  jit::Module module = GraphToTorchScript(graph, options, &result);
  namespace fs = std::filesystem;
  const std::string tmp = path + ".tmp-" + std::to_string(getpid());
  // The graph's metadata (the INT8 target, the recipe hash) travels as an extra file,
  // readable with torch::jit::load(path, device, extra_files) or Python's _extra_files.
  torch::jit::ExtraFilesMap extra;
  if (!graph.metadata.empty()) extra[kTorchScriptMetadataFile] = nlohmann::json(graph.metadata).dump();
  try {
    module.save(tmp, extra);
  } catch (const std::exception& e) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw Error(ErrorKind::kIo, "cannot write TorchScript file '" + path + "': " +
                                    torchscript_detail::WhatOf(e));
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    throw Error(ErrorKind::kIo, "cannot write TorchScript file '" + path + "': " + ec.message());
  }
  return result;
}

}  // namespace compress
