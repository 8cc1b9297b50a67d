// TorchScript export: generates TorchScript source for the graph (one statement per
// node, mirroring the kernels of ops.cpp operand for operand so float results are
// bit-exact), registers initializers on a fresh torch::jit::Module and compiles the
// source into it with Module::define. Real INT8 layers get weights packed once here,
// stored as module attributes (they serialize through the packed classes' pickling).
#include "compress/io/torchscript_export.h"

#include <nlohmann/json.hpp>

#include <torch/csrc/jit/frontend/resolver.h>
#include <torch/csrc/jit/frontend/sugared_value.h>

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include "compress/runtime/ops.h"

namespace compress {

namespace {

namespace jit = torch::jit;

// ---- helpers of the generated code ----------------------------------------------
// TorchScript methods mirroring the parts of ops.cpp that depend on input sizes, so
// they are evaluated at run time. Emitted only when used (with their dependencies).

struct HelperSource {
  const char* name;
  std::vector<const char*> deps;
  const char* source;
};

const std::vector<HelperSource>& Helpers() {
  static const std::vector<HelperSource> kHelpers = {
      {"_mc_ints", {}, R"(
def _mc_ints(self, t: Tensor) -> List[int]:
    r: List[int] = t.reshape([-1]).to(4).tolist()
    return r
)"},
      {"_mc_pad", {}, R"(
def _mc_pad(self, x: Tensor, begin: List[int], end: List[int], value: float) -> Tensor:
    pad: List[int] = []
    n = len(begin)
    for j in range(n):
        pad.append(begin[n - 1 - j])
        pad.append(end[n - 1 - j])
    return torch.constant_pad_nd(x, pad, value)
)"},
      {"_mc_window", {}, R"(
def _mc_window(self, x: Tensor, kernel: List[int], strides: List[int], dilations: List[int], pads: List[int], auto_pad: int) -> Tuple[List[int], List[int]]:
    n = len(kernel)
    begin = pads[:n]
    end = pads[n:]
    if auto_pad == 1 or auto_pad == 2:
        for i in range(n):
            size = x.size(2 + i)
            out = (size + strides[i] - 1) // strides[i]
            total = max(0, (out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - size)
            small = total // 2
            big = total - small
            if auto_pad == 1:
                begin[i] = small
                end[i] = big
            else:
                begin[i] = big
                end[i] = small
    elif auto_pad == 3:
        begin = [0] * n
        end = [0] * n
    return begin, end
)"},
      {"_mc_symmetric", {}, R"(
def _mc_symmetric(self, kernel: List[int], dilations: List[int], begin: List[int], end: List[int], limit_half_kernel: bool) -> bool:
    for i in range(len(kernel)):
        if begin[i] != end[i]:
            return False
        if limit_half_kernel and begin[i] > ((kernel[i] - 1) * dilations[i] + 1) // 2:
            return False
    return True
)"},
      {"_mc_ceil_extra", {}, R"(
def _mc_ceil_extra(self, x: Tensor, kernel: List[int], strides: List[int], dilations: List[int], begin: List[int], end: List[int]) -> List[int]:
    extra: List[int] = []
    for i in range(len(kernel)):
        span = x.size(2 + i) + begin[i] + end[i]
        k = (kernel[i] - 1) * dilations[i] + 1
        out = (span - k + strides[i] - 1) // strides[i] + 1
        extra.append(max(0, (out - 1) * strides[i] + k - span))
    return extra
)"},
      {"_mc_conv", {"_mc_window", "_mc_symmetric", "_mc_pad"}, R"(
def _mc_conv(self, x: Tensor, w: Tensor, b: Optional[Tensor], kernel: List[int], strides: List[int], dilations: List[int], pads: List[int], auto_pad: int, group: int) -> Tensor:
    n = len(kernel)
    begin, end = self._mc_window(x, kernel, strides, dilations, pads, auto_pad)
    padding = begin
    if not self._mc_symmetric(kernel, dilations, begin, end, False):
        x = self._mc_pad(x, begin, end, 0.0)
        padding = [0] * n
    return torch.convolution(x, w, b, strides, padding, dilations, False, [0] * n, group)
)"},
      {"_mc_lowest", {}, R"(
def _mc_lowest(self, dtype: int) -> float:
    if dtype == 0:
        return 0.0
    if dtype == 1:
        return -128.0
    if dtype == 2:
        return -32768.0
    if dtype == 3:
        return -2147483648.0
    return -9223372036854775808.0
)"},
      {"_mc_max_pool", {"_mc_window", "_mc_symmetric", "_mc_pad", "_mc_ceil_extra", "_mc_lowest"}, R"(
def _mc_max_pool(self, x: Tensor, kernel: List[int], strides: List[int], dilations: List[int], pads: List[int], auto_pad: int, ceil_mode: bool) -> Tensor:
    n = len(kernel)
    begin, end = self._mc_window(x, kernel, strides, dilations, pads, auto_pad)
    dtype = x.dtype
    integer = not x.is_floating_point()
    lowest = float("-inf")
    if integer:
        lowest = self._mc_lowest(dtype)
        x = x.to(6)
    padding = begin
    use_ceil = ceil_mode
    if not self._mc_symmetric(kernel, dilations, begin, end, True):
        if ceil_mode:
            extra = self._mc_ceil_extra(x, kernel, strides, dilations, begin, end)
            end = [end[i] + extra[i] for i in range(n)]
        x = self._mc_pad(x, begin, end, lowest)
        padding = [0] * n
        use_ceil = False
    if n == 1:
        y = torch.max_pool1d(x, kernel, strides, padding, dilations, use_ceil)
    elif n == 2:
        y = torch.max_pool2d(x, kernel, strides, padding, dilations, use_ceil)
    else:
        y = torch.max_pool3d(x, kernel, strides, padding, dilations, use_ceil)
    if integer:
        y = y.to(dtype)
    return y
)"},
      {"_mc_avg", {}, R"(
def _mc_avg(self, x: Tensor, kernel: List[int], strides: List[int], padding: List[int], ceil_mode: bool, count_pad: bool) -> Tensor:
    n = len(kernel)
    if n == 1:
        return torch.avg_pool1d(x, kernel, strides, padding, ceil_mode, count_pad)
    if n == 2:
        return torch.avg_pool2d(x, kernel, strides, padding, ceil_mode, count_pad, None)
    return torch.avg_pool3d(x, kernel, strides, padding, ceil_mode, count_pad, None)
)"},
      {"_mc_average_pool", {"_mc_window", "_mc_symmetric", "_mc_pad", "_mc_ceil_extra", "_mc_avg"}, R"(
def _mc_average_pool(self, x: Tensor, kernel: List[int], strides: List[int], dilations: List[int], pads: List[int], auto_pad: int, ceil_mode: bool, count_pad: bool) -> Tensor:
    n = len(kernel)
    begin, end = self._mc_window(x, kernel, strides, dilations, pads, auto_pad)
    if self._mc_symmetric(kernel, dilations, begin, end, True):
        return self._mc_avg(x, kernel, strides, begin, ceil_mode, count_pad)
    extra = [0] * n
    if ceil_mode:
        extra = self._mc_ceil_extra(x, kernel, strides, dilations, begin, end)
    zeros = [0] * n
    plane = [1, 1] + x.size()[2:]
    ones = torch.ones(plane, dtype=x.dtype, device=x.device)
    pad_value = 0.0
    if count_pad:
        pad_value = 1.0
    count = self._mc_pad(self._mc_pad(ones, begin, end, pad_value), zeros, extra, 0.0)
    padded = self._mc_pad(self._mc_pad(x, begin, end, 0.0), zeros, extra, 0.0)
    return self._mc_avg(padded, kernel, strides, zeros, False, True) / self._mc_avg(count, kernel, strides, zeros, False, True)
)"},
      {"_mc_global_average_pool", {}, R"(
def _mc_global_average_pool(self, x: Tensor) -> Tensor:
    dims = [d for d in range(2, x.dim())]
    return x.mean(dims, True)
)"},
      {"_mc_flatten", {}, R"(
def _mc_flatten(self, x: Tensor, axis: int) -> Tensor:
    if axis < 0:
        axis += x.dim()
    if axis < 0 or axis > x.dim():
        assert False, "Flatten: axis out of range"
    outer = 1
    for d in range(axis):
        outer *= x.size(d)
    inner = 0
    if outer != 0:
        inner = x.numel() // max(outer, 1)
    return x.reshape([outer, inner])
)"},
      {"_mc_reshape", {}, R"(
def _mc_reshape(self, x: Tensor, shape: List[int], allow_zero: bool) -> Tensor:
    out: List[int] = []
    for i in range(len(shape)):
        s = shape[i]
        if s == 0 and not allow_zero:
            if i >= x.dim():
                assert False, "Reshape: 0 in shape beyond input rank"
            s = x.size(i)
        out.append(s)
    return x.reshape(out)
)"},
      {"_mc_reverse", {}, R"(
def _mc_reverse(self, x: Tensor) -> Tensor:
    return x.permute([x.dim() - 1 - d for d in range(x.dim())])
)"},
      {"_mc_squeeze", {}, R"(
def _mc_squeeze(self, x: Tensor, axes: List[int]) -> Tensor:
    shape: List[int] = []
    if len(axes) == 0:
        for d in range(x.dim()):
            if x.size(d) != 1:
                shape.append(x.size(d))
        return x.reshape(shape)
    drop = [False] * x.dim()
    for a in axes:
        if a < 0:
            a += x.dim()
        if x.size(a) != 1:
            assert False, "Squeeze: cannot squeeze an axis whose size is not 1"
        drop[a] = True
    for d in range(x.dim()):
        if not drop[d]:
            shape.append(x.size(d))
    return x.reshape(shape)
)"},
      {"_mc_unsqueeze", {}, R"(
def _mc_unsqueeze(self, x: Tensor, axes: List[int]) -> Tensor:
    rank = x.dim() + len(axes)
    norm: List[int] = []
    for a in axes:
        if a < 0:
            a += rank
        norm.append(a)
    norm.sort()
    for a in norm:
        x = x.unsqueeze(a)
    return x
)"},
      {"_mc_split", {}, R"(
def _mc_split(self, x: Tensor, axis: int, sizes: List[int], parts: int) -> List[Tensor]:
    if axis < 0:
        axis += x.dim()
    chunks: List[int] = []
    if len(sizes) == 0:
        dim = x.size(axis)
        chunk = (dim + parts - 1) // parts
        for i in range(parts):
            chunks.append(max(0, min(chunk, dim - i * chunk)))
    else:
        chunks = sizes
    if len(chunks) != parts:
        assert False, "Split: sizes count differs from the number of outputs"
    return torch.split_with_sizes(x, chunks, axis)
)"},
      {"_mc_slice", {}, R"(
def _mc_slice(self, x: Tensor, starts: List[int], ends: List[int], axes: List[int], steps: List[int]) -> Tensor:
    for i in range(len(starts)):
        axis = axes[i]
        if axis < 0:
            axis += x.dim()
        dim = x.size(axis)
        step = steps[i]
        if step == 0:
            assert False, "Slice: step 0"
        s = starts[i]
        e = ends[i]
        if s < 0:
            s += dim
        if e < 0:
            e += dim
        if step > 0:
            s = min(max(s, 0), dim)
            e = min(max(e, 0), dim)
            x = x.slice(axis, s, max(s, e), step)
        else:
            s = min(max(s, -1), dim - 1)
            e = min(max(e, -1), dim - 1)
            if s <= e:
                x = x.slice(axis, 0, 0)
            else:
                index = torch.arange(s, e, step, dtype=4, device=x.device)
                x = x.index_select(axis, index)
    return x
)"},
      {"_mc_softmax_2d", {}, R"(
def _mc_softmax_2d(self, x: Tensor, axis: int) -> Tensor:
    if axis < 0:
        axis += x.dim()
    outer = 1
    for d in range(axis):
        outer *= x.size(d)
    return torch.softmax(x.reshape([outer, -1]), 1).reshape(x.size())
)"},
      {"_mc_layer_norm", {"_mc_layer_norm_stats"}, R"(
def _mc_layer_norm(self, x: Tensor, scale: Tensor, bias: Optional[Tensor], axis: int, eps: float) -> Tensor:
    if axis < 0:
        axis += x.dim()
    norm_shape = x.size()[axis:]
    bias_fits = True
    if bias is not None:
        bias_fits = bias.size() == norm_shape
    if scale.size() == norm_shape and bias_fits:
        return torch.layer_norm(x, norm_shape, scale, bias, eps, True)
    y, mean, inv_std = self._mc_layer_norm_stats(x, scale, bias, axis, eps)
    return y
)"},
      {"_mc_layer_norm_stats", {}, R"(
def _mc_layer_norm_stats(self, x: Tensor, scale: Tensor, bias: Optional[Tensor], axis: int, eps: float) -> Tuple[Tensor, Tensor, Tensor]:
    if axis < 0:
        axis += x.dim()
    dims = [d for d in range(axis, x.dim())]
    mean = x.mean(dims, True)
    inv_std = torch.rsqrt(x.var(dims, False, True) + eps)
    y = (x - mean) * inv_std * scale
    if bias is not None:
        y = y + bias
    return y, mean, inv_std
)"},
      {"_mc_div", {}, R"(
def _mc_div(self, a: Tensor, b: Tensor) -> Tensor:
    if not a.is_floating_point():
        return torch.div(a, b, rounding_mode="trunc")
    return a / b
)"},
      {"_mc_along", {}, R"(
def _mc_along(self, p: Tensor, axis: int, x: Tensor) -> Tensor:
    if p.dim() == 0:
        return p
    if axis < 0:
        axis += x.dim()
    shape = [1] * x.dim()
    shape[axis] = p.numel()
    return p.reshape(shape)
)"},
      {"_mc_qparam", {"_mc_along"}, R"(
def _mc_qparam(self, p: Tensor, scale: Tensor, axis: int, x: Tensor) -> Tensor:
    if scale.dim() == 1 and scale.numel() > 1:
        return self._mc_along(p, axis, x)
    return p
)"},
  };
  return kHelpers;
}

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

// Same-valued scale/zero point (per-tensor): true when both refer to equal tensors.
bool SameTensor(const Tensor& a, const Tensor& b) {
  return a.defined() && b.defined() && a.sizes() == b.sizes() &&
         a.scalar_type() == b.scalar_type() && at::equal(a.cpu(), b.cpu());
}

// ---- the exporter -----------------------------------------------------------------

// One Conv/Gemm that runs with real INT8 kernels.
struct Int8Layer {
  int node = -1;     // the Conv/Gemm
  int relu = -1;     // fused Relu, or -1
  int bias_add = -1; // MatMul only: the Add of its bias, or -1
  int q_in = -1;     // QuantizeLinear whose DequantizeLinear feeds the layer
  int q_out = -1;    // QuantizeLinear of the layer's (or Relu's) output
  Tensor qweight;    // quantized weight (per-channel or per-tensor)
  Tensor bias;       // float bias, or undefined
  double out_scale = 0;
  int64_t out_zp = 0;
};

// Ops between two real QuantizeLinear nodes that LibTorch runs on quantized tensors
// as they are: DQ(q) -> MaxPool/Flatten/Reshape/Relu... -> Q.
struct QuantizedChain {
  int source_q = -1;     // the real QuantizeLinear whose tensor enters the chain
  std::vector<int> ops;  // the passthrough nodes, in order
  bool requantize = false;
  double scale = 0;      // the end QuantizeLinear's parameters
  int64_t zp = 0;
};

// An Add of two quantized tensors run by quantized::add[_relu]: DQ(qa) + DQ(qb) ->
// [Relu] -> Q, with qa and qb real QuantizeLinear nodes.
struct QuantizedAdd {
  int node = -1, relu = -1, qa = -1, qb = -1, q_out = -1;
  double scale = 0;
  int64_t zp = 0;
};

class Exporter {
 public:
  Exporter(const Graph& graph, const TorchScriptExportOptions& options)
      : graph_(graph),
        options_(options),
        module_(c10::QualifiedName("__torch__.mcompress.ExportedGraph")) {}

  jit::Module Run(TorchScriptExportResult* result);

 private:
  // -- names and values
  std::string Ref(const std::string& value);
  std::string Define(const std::string& value);
  std::string AttrFor(const std::string& initializer);
  std::string BufferFor(const std::string& hint, const Tensor& t);
  std::optional<Tensor> Static(const std::string& value) const;
  std::optional<at::ScalarType> DtypeOf(const std::string& value) const;
  std::optional<int64_t> RankOf(const std::string& value) const;
  std::string IntsArg(const Node& node, size_t input);
  std::string OptRef(const Node& node, size_t input);
  std::string Use(const std::string& helper);
  [[noreturn]] void Unsupported(const Node& node, const std::string& what) const;
  void Emit(const std::string& line) { body_ << "    " << line << "\n"; }

  // -- nodes
  void EmitNode(const Node& node);
  void EmitConv(const Node& node);
  void EmitPool(const Node& node);
  void EmitGemm(const Node& node);
  void EmitQuantize(const Node& node);
  void EmitDequantize(const Node& node);
  std::string PerAxis(const Node& node, const std::string& param, const std::string& x);

  // -- real INT8
  void PlanInt8(TorchScriptExportResult* result);
  std::string MatchInt8(int index, Int8Layer* layer);
  std::string BiasOf(const std::string& value, Tensor* bias) const;
  std::string PackLayer(const Int8Layer& layer);
  std::string QuantizedOf(int q_node);
  void PlanChains();
  void PlanAdds(TorchScriptExportResult* result);
  int RealSource(const std::string& value) const;
  bool Passthrough(const Node& node) const;

  const Graph& graph_;
  const TorchScriptExportOptions& options_;
  jit::Module module_;
  std::ostringstream body_;
  std::set<std::string> helpers_;
  std::set<std::string> attr_names_, local_names_;
  std::map<std::string, std::string> value_expr_;  // value -> TorchScript expression
  std::map<std::string, std::string> attr_of_;     // initializer -> attribute
  c10::Dict<std::string, std::string> initializer_names_;
  std::set<std::string> trainable_;
  // Real INT8 plan.
  std::map<int, Int8Layer> layer_at_q_out_;        // q_out node -> layer
  std::set<int> skipped_;                          // nodes folded into an INT8 layer
  std::set<int> real_q_;                           // Q nodes producing quantized tensors
  std::map<int, std::string> quantized_var_;       // real Q node -> its quantized tensor
  std::map<int, std::string> packed_attr_;         // INT8 layer node -> packed weights
  std::set<int> absorbed_dq_;                      // DQ nodes only INT8 layers read
  std::map<int, QuantizedChain> chain_at_q_;       // end Q node -> its chain
  std::map<int, QuantizedAdd> add_at_q_out_;       // q_out node -> quantized Add
  jit::Module packer_{c10::QualifiedName("__torch__.mcompress.Packer")};
  bool packer_ready_ = false;
};

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

void Exporter::EmitNode(const Node& node) {
  const std::string& op = node.op_type;
  if (!node.domain.empty() && node.domain != "ai.onnx") Unsupported(node, "domain '" + node.domain + "'");
  if (FindOp(op) == nullptr) Unsupported(node, "op " + op);
  auto in = [&](size_t i) { return Ref(node.inputs.at(i)); };
  auto out = [&](size_t i = 0) { return Define(node.outputs.at(i)); };
  auto unary = [&](const std::string& fn) { Emit(out() + " = " + fn + "(" + in(0) + ")"); };
  const int64_t opset = graph_.opset;

  if (op == "Add" || op == "Sub" || op == "Mul") {
    const char* sym = op == "Add" ? " + " : op == "Sub" ? " - " : " * ";
    Emit(out() + " = " + in(0) + sym + in(1));
  } else if (op == "Div") {
    auto dtype = DtypeOf(node.inputs[0]);
    if (dtype && at::isFloatingType(*dtype)) {
      Emit(out() + " = " + in(0) + " / " + in(1));
    } else if (dtype) {
      Emit(out() + " = torch.div(" + in(0) + ", " + in(1) + ", rounding_mode=\"trunc\")");
    } else {
      Emit(out() + " = " + Use("_mc_div") + "(" + in(0) + ", " + in(1) + ")");
    }
  } else if (op == "Relu") {
    unary("torch.relu");
  } else if (op == "Sigmoid") {
    unary("torch.sigmoid");
  } else if (op == "Tanh") {
    unary("torch.tanh");
  } else if (op == "Erf") {
    unary("torch.erf");
  } else if (op == "HardSwish") {
    unary("torch.hardswish");
  } else if (op == "LeakyRelu") {
    Emit(out() + " = torch.leaky_relu(" + in(0) + ", " + FloatLit(node.GetFloat("alpha", 0.01)) + ")");
  } else if (op == "HardSigmoid") {
    Emit(out() + " = torch.clamp(" + in(0) + " * " + FloatLit(node.GetFloat("alpha", 0.2)) +
         " + " + FloatLit(node.GetFloat("beta", 0.5)) + ", 0.0, 1.0)");
  } else if (op == "Gelu") {
    const std::string approx = node.GetString("approximate", "none");
    if (approx != "none" && approx != "tanh") Unsupported(node, "approximate='" + approx + "'");
    Emit(out() + " = torch.gelu(" + in(0) + ", approximate=\"" + approx + "\")");
  } else if (op == "Clip") {
    std::string lo = "None", hi = "None";
    if (opset < 11) {
      if (node.HasAttr("min")) lo = FloatLit(node.GetFloat("min"));
      if (node.HasAttr("max")) hi = FloatLit(node.GetFloat("max"));
    } else {
      const std::string x = in(0);
      if (node.HasInput(1)) lo = in(1) + ".to(" + x + ".dtype)";
      if (node.HasInput(2)) hi = in(2) + ".to(" + x + ".dtype)";
    }
    if (lo == "None" && hi == "None") {
      Emit(out() + " = " + in(0));
    } else {
      Emit(out() + " = torch.clamp(" + in(0) + ", " + lo + ", " + hi + ")");
    }
  } else if (op == "BatchNormalization") {
    if (node.GetInt("training_mode", 0) != 0) Unsupported(node, "training_mode=1");
    if (node.outputs.size() > 1) Unsupported(node, "running statistics outputs");
    Emit(out() + " = torch.batch_norm(" + in(0) + ", " + in(1) + ", " + in(2) + ", " + in(3) +
         ", " + in(4) + ", False, 0.0, " + FloatLit(node.GetFloat("epsilon", 1e-5)) + ", False)");
  } else if (op == "Conv") {
    EmitConv(node);
  } else if (op == "MaxPool" || op == "AveragePool") {
    EmitPool(node);
  } else if (op == "GlobalAveragePool") {
    Emit(out() + " = " + Use("_mc_global_average_pool") + "(" + in(0) + ")");
  } else if (op == "Gemm") {
    EmitGemm(node);
  } else if (op == "MatMul") {
    Emit(out() + " = torch.matmul(" + in(0) + ", " + in(1) + ")");
  } else if (op == "Flatten") {
    Emit(out() + " = " + Use("_mc_flatten") + "(" + in(0) + ", " + IntLit(node.GetInt("axis", 1)) + ")");
  } else if (op == "Reshape") {
    const bool allow_zero = node.GetInt("allowzero", 0) != 0;
    std::optional<Tensor> shape = Static(node.inputs[1]);
    if (shape) {
      // Common case spelled out: each 0 copies the input's dim at run time.
      Tensor c = shape->to(torch::kCPU, torch::kLong).contiguous().reshape({-1});
      const std::string x = in(0);
      std::string list = "[";
      for (int64_t i = 0; i < c.numel(); ++i) {
        const int64_t d = c.data_ptr<int64_t>()[i];
        list += (i ? ", " : "") + (d == 0 && !allow_zero ? x + ".size(" + std::to_string(i) + ")" : IntLit(d));
      }
      Emit(out() + " = " + x + ".reshape(" + list + "])");
    } else {
      Emit(out() + " = " + Use("_mc_reshape") + "(" + in(0) + ", " + IntsArg(node, 1) + ", " +
           BoolLit(allow_zero) + ")");
    }
  } else if (op == "Transpose") {
    if (node.HasAttr("perm")) {
      Emit(out() + " = " + in(0) + ".permute(" + IntsLit(node.GetInts("perm")) + ")");
    } else {
      Emit(out() + " = " + Use("_mc_reverse") + "(" + in(0) + ")");
    }
  } else if (op == "Squeeze" || op == "Unsqueeze") {
    std::string axes = "[]";
    if (opset >= 13) {
      if (node.HasInput(1)) axes = IntsArg(node, 1);
    } else {
      axes = IntsLit(node.GetInts("axes"));
    }
    const std::string helper = op == "Squeeze" ? "_mc_squeeze" : "_mc_unsqueeze";
    Emit(out() + " = " + Use(helper) + "(" + in(0) + ", " + axes + ")");
  } else if (op == "Concat") {
    std::string parts;
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      if (!node.HasInput(i)) continue;
      parts += (parts.empty() ? "" : ", ") + in(i);
    }
    Emit(out() + " = torch.cat([" + parts + "], " + IntLit(node.GetInt("axis")) + ")");
  } else if (op == "Split") {
    std::string sizes = "[]";
    if (opset >= 13) {
      if (node.HasInput(1)) sizes = IntsArg(node, 1);
    } else {
      sizes = IntsLit(node.GetInts("split"));
    }
    const std::string x = in(0);
    const std::string parts = FreshIdent(node.name + "_parts", "parts", local_names_);
    Emit(parts + " = " + Use("_mc_split") + "(" + x + ", " + IntLit(node.GetInt("axis", 0)) +
         ", " + sizes + ", " + std::to_string(node.outputs.size()) + ")");
    for (size_t i = 0; i < node.outputs.size(); ++i) {
      if (node.outputs[i].empty()) continue;
      Emit(out(i) + " = " + parts + "[" + std::to_string(i) + "]");
    }
  } else if (op == "Slice") {
    std::string starts, ends, axes, steps;
    if (opset < 10) {
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
    Emit(out() + " = " + Use("_mc_slice") + "(" + in(0) + ", " + starts + ", " + ends + ", " +
         axes + ", " + steps + ")");
  } else if (op == "Softmax") {
    if (opset < 13) {
      Emit(out() + " = " + Use("_mc_softmax_2d") + "(" + in(0) + ", " + IntLit(node.GetInt("axis", 1)) + ")");
    } else {
      Emit(out() + " = torch.softmax(" + in(0) + ", " + IntLit(node.GetInt("axis", -1)) + ")");
    }
  } else if (op == "LayerNormalization") {
    const std::string args = in(0) + ", " + in(1) + ", " + OptRef(node, 2) + ", " +
                             IntLit(node.GetInt("axis", -1)) + ", " +
                             FloatLit(node.GetFloat("epsilon", 1e-5));
    if (node.outputs.size() > 1) {
      std::string outs;
      for (size_t i = 0; i < 3; ++i) {
        outs += (i ? ", " : "") + (i < node.outputs.size() && !node.outputs[i].empty()
                                       ? out(i)
                                       : FreshIdent("unused", "unused", local_names_));
      }
      Emit(outs + " = " + Use("_mc_layer_norm_stats") + "(" + args + ")");
    } else {
      Emit(out() + " = " + Use("_mc_layer_norm") + "(" + args + ")");
    }
  } else if (op == "Dropout") {
    if (node.HasInput(2)) {
      std::optional<Tensor> mode = Static(node.inputs[2]);
      if (!mode || mode->item<bool>()) Unsupported(node, "training_mode other than a constant false");
    }
    const std::string x = in(0);
    Emit(out() + " = " + x);
    if (node.outputs.size() > 1 && !node.outputs[1].empty()) {
      Emit(out(1) + " = torch.ones_like(" + x + ", dtype=" + std::to_string(DtypeCode(at::kBool)) + ")");
    }
  } else if (op == "Identity") {
    Emit(out() + " = " + in(0));
  } else if (op == "Constant") {
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
    Emit(out() + " = " + BufferFor(node.outputs[0], value));
  } else if (op == "QuantizeLinear") {
    EmitQuantize(node);
  } else if (op == "DequantizeLinear") {
    EmitDequantize(node);
  } else {
    Unsupported(node, "op " + op);
  }
}

// Static window of a conv/pool (NOTSET / VALID): begin/end pads; nullopt for SAME_*.
struct StaticWindow {
  std::vector<int64_t> strides, dilations, pads, begin, end;
  int auto_pad = 0;  // 0 NOTSET, 1 SAME_UPPER, 2 SAME_LOWER, 3 VALID
  bool Symmetric(const std::vector<int64_t>& kernel, bool limit_half_kernel) const {
    for (size_t i = 0; i < kernel.size(); ++i) {
      if (begin[i] != end[i]) return false;
      if (limit_half_kernel && begin[i] > ((kernel[i] - 1) * dilations[i] + 1) / 2) return false;
    }
    return true;
  }
};

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

// Explicit pads for constant_pad_nd (last spatial dim first).
std::string PadList(const StaticWindow& w) {
  std::vector<int64_t> pad;
  for (size_t i = w.begin.size(); i-- > 0;) {
    pad.push_back(w.begin[i]);
    pad.push_back(w.end[i]);
  }
  return IntsLit(pad);
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

// ---- real INT8 ------------------------------------------------------------------------

// The node producing `value` if it is `op_type`, else nullptr.
const Node* ProducerOf(const Graph& g, const std::string& value, const std::string& op_type,
                       int* index = nullptr) {
  const int p = g.ProducerIndex(value);
  if (p < 0 || g.nodes[p].op_type != op_type) return nullptr;
  if (index) *index = p;
  return &g.nodes[p];
}

// Per-tensor (scale, zero point) of a Q/DQ node as static tensors, or a reason.
std::string PerTensorParams(const Graph& g, const Node& qdq, Tensor* scale, Tensor* zp) {
  auto it = g.initializers.find(qdq.inputs[1]);
  if (it == g.initializers.end()) return "its scale is not an initializer";
  *scale = it->second.value;
  if (scale->numel() != 1) return "its activation scale is not per-tensor";
  if (!qdq.HasInput(2)) {
    *zp = torch::zeros({}, torch::kByte);
    return "";
  }
  auto zit = g.initializers.find(qdq.inputs[2]);
  if (zit == g.initializers.end()) return "its zero point is not an initializer";
  *zp = zit->second.value;
  if (zp->numel() != 1) return "its activation zero point is not per-tensor";
  return "";
}

// A static 1-D bias as float: an initializer, or DequantizeLinear of initializers
// (computed as the DequantizeLinear kernel does). Returns why not, or "".
std::string Exporter::BiasOf(const std::string& value, Tensor* bias) const {
  const Graph& g = graph_;
  if (const Node* dq_b = ProducerOf(g, value, "DequantizeLinear")) {
    for (size_t i = 0; i < dq_b->inputs.size(); ++i) {
      if (dq_b->HasInput(i) && !g.IsInitializer(dq_b->inputs[i])) {
        return "bias quantization parameters are not initializers";
      }
    }
    const Tensor bq = g.Weight(dq_b->inputs[0]).to(torch::kCPU);
    const Tensor bs = g.Weight(dq_b->inputs[1]).to(torch::kCPU);
    Tensor bz = dq_b->HasInput(2) ? g.Weight(dq_b->inputs[2]).to(torch::kCPU) : torch::zeros_like(bs);
    *bias = (bq.to(bs.scalar_type()) - bz.to(bs.scalar_type())) * bs;
  } else if (g.IsInitializer(value)) {
    *bias = g.Weight(value).to(torch::kCPU);
  } else {
    return "bias is computed at run time";
  }
  if (bias->dim() != 1) return "bias is not 1-D";
  *bias = bias->to(torch::kFloat).contiguous();
  return "";
}

std::string Exporter::MatchInt8(int index, Int8Layer* layer) {
  const Graph& g = graph_;
  const Node& node = g.nodes[index];
  const bool conv = node.op_type == "Conv";
  const bool matmul = node.op_type == "MatMul";
  layer->node = index;
  // Weight: DequantizeLinear of an int8 initializer with zero zero points.
  const Node* dq_w = ProducerOf(g, node.inputs[1], "DequantizeLinear");
  if (!dq_w) return "weight is not read through DequantizeLinear";
  if (!g.IsInitializer(dq_w->inputs[0]) || !g.IsInitializer(dq_w->inputs[1]) ||
      (dq_w->HasInput(2) && !g.IsInitializer(dq_w->inputs[2]))) {
    return "weight quantization parameters are not initializers";
  }
  const Tensor& wq = g.Weight(dq_w->inputs[0]);
  if (wq.scalar_type() != at::kChar) return "weight is " + DtypeName(wq.scalar_type()) + ", not int8";
  const Tensor w_scale = g.Weight(dq_w->inputs[1]).to(torch::kCPU);
  Tensor w_zp = dq_w->HasInput(2) ? g.Weight(dq_w->inputs[2]).to(torch::kCPU) : torch::zeros_like(w_scale, torch::kChar);
  if (w_zp.ne(0).any().item<bool>()) return "weight zero point is not zero (the INT8 kernels need symmetric weights)";
  const bool per_channel = w_scale.dim() == 1 && w_scale.numel() > 1;
  // Output channels: dim 0 of Conv/Gemm weights, dim 1 of MatMul's [K, N].
  const int64_t channel_axis = matmul ? 1 : 0;
  if (per_channel) {
    int64_t axis = dq_w->GetInt("axis", 1);
    if (axis < 0) axis += wq.dim();
    if (axis != channel_axis) {
      return "weight is quantized along axis " + std::to_string(axis) + ", not " + std::to_string(channel_axis);
    }
    if (w_scale.numel() != wq.size(channel_axis)) return "weight scale count does not match the output channels";
  }
  // Layer attributes the quantized kernels cover.
  if (conv) {
    if (wq.dim() != 4) return "only 2-D convolutions have an INT8 kernel";
    const StaticWindow w = WindowOf(node, 2);
    if (w.auto_pad == 1 || w.auto_pad == 2) return "auto_pad SAME";
    std::vector<int64_t> kernel(wq.sizes().begin() + 2, wq.sizes().end());
    if (!w.Symmetric(kernel, false)) return "asymmetric padding";
  } else if (matmul) {
    if (wq.dim() != 2) return "weight is not 2-D";
  } else {
    if (node.GetInt("transA", 0) != 0 || node.GetInt("transB", 0) != 1 ||
        node.GetFloat("alpha", 1.0) != 1.0 || node.GetFloat("beta", 1.0) != 1.0) {
      return "Gemm is not a fully connected layer (transA=0, transB=1, alpha=beta=1)";
    }
    if (wq.dim() != 2) return "weight is not 2-D";
  }
  // Activation: DequantizeLinear(QuantizeLinear(x)) per tensor, uint8.
  const Node* dq_x = ProducerOf(g, node.inputs[0], "DequantizeLinear");
  if (!dq_x) return "input is not read through DequantizeLinear";
  int q_in = -1;
  const Node* q_x = ProducerOf(g, dq_x->inputs[0], "QuantizeLinear", &q_in);
  if (!q_x) return "input DequantizeLinear does not read a QuantizeLinear";
  Tensor xs, xz, dxs, dxz;
  std::string why = PerTensorParams(g, *q_x, &xs, &xz);
  if (!why.empty()) return "input QuantizeLinear: " + why;
  why = PerTensorParams(g, *dq_x, &dxs, &dxz);
  if (!why.empty()) return "input DequantizeLinear: " + why;
  if (!SameTensor(xs, dxs) || !SameTensor(xz, dxz)) return "input Q/DQ pair uses different parameters";
  if (xz.scalar_type() != at::kByte) {
    return "activation is " + DtypeName(xz.scalar_type()) + " (the INT8 kernels take uint8 activations)";
  }
  layer->q_in = q_in;
  // Bias: float, or DequantizeLinear of int32 (per channel or per tensor).
  if (node.HasInput(2) && !matmul) {
    why = BiasOf(node.inputs[2], &layer->bias);
    if (!why.empty()) return why;
  }
  // Output: [Relu] then QuantizeLinear, nothing else reading the float values.
  auto only_consumer = [&](const std::string& value) -> int {
    std::vector<int> c = g.ConsumerIndices(value);
    if (c.size() != 1 || g.IsOutput(value)) return -1;
    return c[0];
  };
  int next = only_consumer(node.outputs[0]);
  if (next < 0 && g.IsOutput(node.outputs[0])) {
    return "its output is a graph output, kept float (no output scale to requantize to)";
  }
  if (next < 0) return "output is read by more than a QuantizeLinear";
  if (matmul && g.nodes[next].op_type == "Add") {
    // MatMul + bias, as a fully connected layer is often written.
    const Node& add = g.nodes[next];
    const std::string other = add.inputs[0] == node.outputs[0] ? add.inputs[1] : add.inputs[0];
    why = BiasOf(other, &layer->bias);
    if (!why.empty()) return "MatMul's Add: " + why;
    if (layer->bias.size(0) != wq.size(1)) return "MatMul's Add is not a bias per output channel";
    layer->bias_add = next;
    next = only_consumer(add.outputs[0]);
    if (next < 0) return "output is read by more than a QuantizeLinear";
  }
  if (g.nodes[next].op_type == "Relu") {
    layer->relu = next;
    next = only_consumer(g.nodes[next].outputs[0]);
    if (next < 0) return "Relu output is read by more than a QuantizeLinear";
  }
  if (g.nodes[next].op_type != "QuantizeLinear") return "output is not quantized (no QuantizeLinear after it)";
  Tensor ys, yz;
  why = PerTensorParams(g, g.nodes[next], &ys, &yz);
  if (!why.empty()) return "output QuantizeLinear: " + why;
  if (yz.scalar_type() != at::kByte) return "output is quantized to " + DtypeName(yz.scalar_type()) + ", not uint8";
  layer->q_out = next;
  layer->out_scale = ys.to(torch::kCPU).item<float>();
  layer->out_zp = yz.to(torch::kCPU).item<int64_t>();
  // The quantized weight, [out, in...] as the kernels take it.
  const Tensor w_int8 = (matmul ? wq.t() : wq).to(torch::kCPU).contiguous();
  if (per_channel) {
    layer->qweight = at::_make_per_channel_quantized_tensor(
        w_int8, w_scale.to(torch::kDouble), w_zp.to(torch::kLong), 0);
  } else {
    layer->qweight = at::_make_per_tensor_quantized_tensor(w_int8, w_scale.item<double>(), 0);
  }
  return "";
}

// Packs the weight of `layer` with the selected engine and stores it as a module
// attribute; returns the attribute name. The engine's errors propagate (c10::Error).
std::string Exporter::PackLayer(const Int8Layer& layer) {
  const Node& node = graph_.nodes[layer.node];
  if (!packer_ready_) {
    packer_.define(R"(
def pack_conv(self, w: Tensor, b: Optional[Tensor], stride: List[int], padding: List[int], dilation: List[int], groups: int):
    return quantized.conv2d_prepack(w, b, stride, padding, dilation, groups)
def pack_linear(self, w: Tensor, b: Optional[Tensor]):
    return quantized.linear_prepack(w, b)
)", std::make_shared<ExportResolver>());
    packer_ready_ = true;
  }
  c10::IValue bias = layer.bias.defined() ? c10::IValue(layer.bias) : c10::IValue();
  c10::IValue packed;
  if (node.op_type == "Conv") {
    const StaticWindow w = WindowOf(node, 2);
    packed = packer_.run_method("pack_conv", layer.qweight, bias, w.strides, w.begin, w.dilations,
                                node.GetInt("group", 1));
  } else {
    packed = packer_.run_method("pack_linear", layer.qweight, bias);
  }
  const std::string attr = FreshIdent(node.name + "_packed", "packed", attr_names_);
  module_.register_attribute(attr, packed.type(), packed);
  return attr;
}

// The quantized-tensor variable of a real QuantizeLinear (emitted already).
std::string Exporter::QuantizedOf(int q_node) {
  auto it = quantized_var_.find(q_node);
  if (it == quantized_var_.end()) {
    throw Error(ErrorKind::kInternal, graph_.nodes[q_node].Describe() + ": quantized tensor used before it is computed");
  }
  return it->second;
}

void Exporter::PlanInt8(TorchScriptExportResult* result) {
  const Graph& g = graph_;
  for (int i = 0; i < static_cast<int>(g.nodes.size()); ++i) {
    const Node& node = g.nodes[i];
    if (node.op_type != "Conv" && node.op_type != "Gemm" && node.op_type != "MatMul") continue;
    // Only quantized layers (weight read through DequantizeLinear) are candidates.
    if (!ProducerOf(g, node.inputs[1], "DequantizeLinear")) continue;
    Int8Layer layer;
    std::string why = MatchInt8(i, &layer);
    if (why.empty()) {
      // Packing is the engine's verdict on what it supports (e.g. some grouped convs).
      try {
        packed_attr_[i] = PackLayer(layer);
      } catch (const c10::Error& e) {
        std::string what = WhatOf(e);
        why = "the " + options_.qengine + " engine rejects it: " + what.substr(0, what.find('\n'));
      }
    }
    if (!why.empty()) {
      result->fallback_layers.emplace_back(node.name, why);
      continue;
    }
    result->int8_layers.push_back(node.name);
    layer_at_q_out_[layer.q_out] = layer;
    skipped_.insert(layer.node);
    if (layer.relu >= 0) skipped_.insert(layer.relu);
    if (layer.bias_add >= 0) skipped_.insert(layer.bias_add);
    real_q_.insert(layer.q_in);
    real_q_.insert(layer.q_out);
  }
  PlanAdds(result);
  std::map<std::string, size_t> position;
  for (size_t i = 0; i < g.nodes.size(); ++i) position[g.nodes[i].name] = i;
  std::sort(result->int8_layers.begin(), result->int8_layers.end(),
            [&](const std::string& a, const std::string& b) { return position[a] < position[b]; });
  // DequantizeLinear nodes whose only readers are INT8 nodes, reading them where they
  // take a quantized tensor (a layer's activation, an Add's operands), are not
  // computed at all.
  std::map<int, size_t> quantized_operands;  // INT8 node -> how many leading inputs
  for (const auto& [q, layer] : layer_at_q_out_) quantized_operands[layer.node] = 1;
  for (const auto& [q, add] : add_at_q_out_) quantized_operands[add.node] = 2;
  for (int q : real_q_) {
    for (int d : g.ConsumerIndices(g.nodes[q].outputs[0])) {
      const Node& dq = g.nodes[d];
      if (dq.op_type != "DequantizeLinear" || g.IsOutput(dq.outputs[0])) continue;
      bool all_int8 = true;
      for (int c : g.ConsumerIndices(dq.outputs[0])) {
        auto it = quantized_operands.find(c);
        for (size_t k = 0; k < g.nodes[c].inputs.size(); ++k) {
          if (g.nodes[c].inputs[k] != dq.outputs[0]) continue;
          if (it == quantized_operands.end() || k >= it->second) all_int8 = false;
        }
      }
      if (all_int8) absorbed_dq_.insert(d);
    }
  }
  PlanChains();
}

// The real QuantizeLinear whose tensor `value` dequantizes (same per-tensor
// parameters), or -1.
int Exporter::RealSource(const std::string& value) const {
  const Node* dq = ProducerOf(graph_, value, "DequantizeLinear");
  if (!dq) return -1;
  int q = -1;
  if (!ProducerOf(graph_, dq->inputs[0], "QuantizeLinear", &q) || !real_q_.count(q)) return -1;
  Tensor qs, qz, ds, dz;
  if (!PerTensorParams(graph_, graph_.nodes[q], &qs, &qz).empty() ||
      !PerTensorParams(graph_, *dq, &ds, &dz).empty() || !SameTensor(qs, ds) || !SameTensor(qz, dz)) {
    return -1;
  }
  return q;
}

// Adds whose operands are both quantized tensors already (outputs of INT8 layers or
// of earlier quantized Adds, or quantized inputs of them), in graph order so residual
// blocks chain.
void Exporter::PlanAdds(TorchScriptExportResult* result) {
  const Graph& g = graph_;
  auto only_reader = [&](const std::string& value) -> int {
    std::vector<int> c = g.ConsumerIndices(value);
    return c.size() == 1 && !g.IsOutput(value) ? c[0] : -1;
  };
  for (int i = 0; i < static_cast<int>(g.nodes.size()); ++i) {
    const Node& node = g.nodes[i];
    if (node.op_type != "Add") continue;
    QuantizedAdd add;
    add.node = i;
    add.qa = RealSource(node.inputs[0]);
    add.qb = RealSource(node.inputs[1]);
    if (add.qa < 0 || add.qb < 0) continue;
    int next = only_reader(node.outputs[0]);
    if (next >= 0 && g.nodes[next].op_type == "Relu") {
      add.relu = next;
      next = only_reader(g.nodes[next].outputs[0]);
    }
    if (next < 0 || g.nodes[next].op_type != "QuantizeLinear" || real_q_.count(next)) continue;
    Tensor s, z;
    if (!PerTensorParams(g, g.nodes[next], &s, &z).empty() || z.scalar_type() != at::kByte) continue;
    add.q_out = next;
    add.scale = s.to(torch::kCPU).item<float>();
    add.zp = z.to(torch::kCPU).item<int64_t>();
    add_at_q_out_[next] = add;
    skipped_.insert(i);
    if (add.relu >= 0) skipped_.insert(add.relu);
    real_q_.insert(next);
    result->int8_layers.push_back(node.name);
  }
}

// Ops that give the same values on a quantized tensor (max and reshapes commute with
// the monotonic dequantization), with the attributes LibTorch's quantized kernels take.
bool Exporter::Passthrough(const Node& node) const {
  if (node.op_type == "Relu" || node.op_type == "Flatten") return true;
  if (node.op_type == "Reshape") return Static(node.inputs[1]).has_value();
  if (node.op_type != "MaxPool" || node.outputs.size() > 1) return false;
  const std::vector<int64_t> kernel = node.GetInts("kernel_shape");
  if (kernel.size() != 2) return false;
  const StaticWindow w = WindowOf(node, 2);
  return w.auto_pad != 1 && w.auto_pad != 2 && w.Symmetric(kernel, true);
}

// Finds DQ(real Q) -> passthrough ops -> real Q chains whose intermediate values have
// no other reader: the end Q's tensor is computed from the source Q's tensor without
// leaving the quantized domain (re-quantized only when the parameters differ).
void Exporter::PlanChains() {
  const Graph& g = graph_;
  for (int q : std::set<int>(real_q_)) {
    for (int d : g.ConsumerIndices(g.nodes[q].outputs[0])) {
      const Node& dq = g.nodes[d];
      if (dq.op_type != "DequantizeLinear" || absorbed_dq_.count(d)) continue;
      Tensor qs, qz, ds, dz;
      if (!PerTensorParams(g, g.nodes[q], &qs, &qz).empty() ||
          !PerTensorParams(g, dq, &ds, &dz).empty() || !SameTensor(qs, ds) || !SameTensor(qz, dz)) {
        continue;
      }
      QuantizedChain chain;
      chain.source_q = q;
      std::string value = dq.outputs[0];
      int end = -1;
      while (true) {
        std::vector<int> readers = g.ConsumerIndices(value);
        if (readers.size() != 1 || g.IsOutput(value)) break;
        const Node& next = g.nodes[readers[0]];
        if (next.inputs[0] != value) break;
        if (next.op_type == "QuantizeLinear") {
          if (real_q_.count(readers[0]) && !layer_at_q_out_.count(readers[0]) && !chain.ops.empty()) {
            end = readers[0];
          }
          break;
        }
        if (!Passthrough(next)) break;
        chain.ops.push_back(readers[0]);
        value = next.outputs[0];
      }
      if (end < 0 || chain_at_q_.count(end)) continue;
      Tensor es, ez;
      PerTensorParams(g, g.nodes[end], &es, &ez);
      chain.scale = es.to(torch::kCPU).item<float>();
      chain.zp = ez.to(torch::kCPU).item<int64_t>();
      chain.requantize = !SameTensor(es, qs) || !SameTensor(ez, qz);
      skipped_.insert(d);
      skipped_.insert(chain.ops.begin(), chain.ops.end());
      chain_at_q_[end] = chain;
    }
  }
}

jit::Module Exporter::Run(TorchScriptExportResult* result) {
  const Graph& g = graph_;
  for (const auto& name : g.TrainableNames()) trainable_.insert(name);
  // eval()/train() (C++ and Python) expect the flag nn.Module has.
  if (!module_.hasattr("training")) {
    module_.register_attribute("training", c10::BoolType::get(), false);
  }

  // Step 1: forward's signature.
  std::string signature = "def forward(self";
  for (const auto& input : g.inputs) {
    signature += ", " + Define(input.name) + ": Tensor";
  }
  signature += ")";

  // Step 2: the plan of real INT8 layers (packs their weights).
  std::optional<ScopedQEngine> engine;
  if (options_.real_int8) {
    engine.emplace(options_.qengine);
    PlanInt8(result);
  }

  // Step 3: with INT8 layers folded, the float weights' DequantizeLinear (and
  // whatever else only they read) is dead: keep the nodes graph outputs depend on.
  const int num_nodes = static_cast<int>(g.nodes.size());
  std::vector<bool> live(num_nodes, true);
  if (options_.real_int8) {
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
  }

  // Step 4: one statement per node, in graph order.
  for (int i = 0; i < num_nodes; ++i) {
    const Node& node = g.nodes[i];
    if (skipped_.count(i) || absorbed_dq_.count(i) || !live[i]) continue;
    auto layer = layer_at_q_out_.find(i);
    if (real_q_.count(i)) {
      // A real QuantizeLinear: its quantized tensor, and its uint8 values when needed.
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
        const QuantizedChain& c = chain->second;
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
          const std::string next = FreshIdent(node.outputs[0] + "_q", "q", local_names_);
          Emit(next + " = torch.quantize_per_tensor(torch.dequantize(" + t + "), " + FloatLit(c.scale) +
               ", " + IntLit(c.zp) + ", " + std::to_string(DtypeCode(at::kQUInt8)) + ")");
          t = next;
        }
        quantized_var_[i] = t;
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
      continue;
    }
    EmitNode(node);
  }

  // Step 5: outputs.
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
    module_.define(src.str(), std::make_shared<ExportResolver>());
  } catch (const std::exception& e) {
    throw Error(ErrorKind::kInternal, "TorchScript export of graph '" + g.name +
                                          "': LibTorch rejects the generated code: " + WhatOf(e) +
                                          "\n" + src.str());
  }
  module_.eval();
  return module_;
}

}  // namespace

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
  Exporter exporter(graph, options);
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
    throw Error(ErrorKind::kIo, "cannot write TorchScript file '" + path + "': " + WhatOf(e));
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
