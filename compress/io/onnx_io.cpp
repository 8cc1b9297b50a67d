// ONNX <-> compress::Graph and TensorProto files. Import maps the protobuf 1:1 onto the
// IR (the IR uses ONNX semantics), checking ops against the registry; export writes a
// deterministic ModelProto and runs ONNX's own shape inference and checker on it.
#include "compress/io/onnx_io.h"

#include <onnx/checker.h>
#include <onnx/onnx_pb.h>
#include <onnx/shape_inference/implementation.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "compress/base/file_util.h"
#include "compress/base/limits.h"
#include "compress/ir/graph_limits.h"
#include "compress/runtime/fake_quant.h"
#include "compress/runtime/ops.h"

namespace compress {
namespace {

// raw_data is little endian; we copy bytes as they are.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "onnx_io copies raw_data bytes; add byte swapping for big-endian hosts");

std::string Prefix(const std::string& where) { return where.empty() ? "" : where + ": "; }

// The file's bytes; a file above Limits::max_model_bytes is refused before reading.
std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) {
    throw Error(ErrorKind::kIo, "cannot read " + path + ": " + std::strerror(errno));
  }
  const std::streamoff size = in.tellg();
  if (size >= 0) CheckModelBytes(size, path);
  in.seekg(0);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw Error(ErrorKind::kIo, "cannot read " + path + ": read error");
  return ss.str();
}

// ---- element types -------------------------------------------------------------------

std::optional<at::ScalarType> ScalarTypeFromOnnx(int32_t elem_type) {
  using TP = onnx::TensorProto;
  switch (elem_type) {
    case TP::FLOAT: return at::kFloat;
    case TP::DOUBLE: return at::kDouble;
    case TP::FLOAT16: return at::kHalf;
    case TP::BFLOAT16: return at::kBFloat16;
    case TP::INT8: return at::kChar;
    case TP::UINT8: return at::kByte;
    case TP::INT16: return at::kShort;
    case TP::INT32: return at::kInt;
    case TP::INT64: return at::kLong;
    case TP::BOOL: return at::kBool;
    default: return std::nullopt;  // string, uint16/32/64, complex: no LibTorch dtype
  }
}

std::string OnnxTypeName(int32_t elem_type) {
  if (onnx::TensorProto_DataType_IsValid(elem_type)) {
    return onnx::TensorProto_DataType_Name(static_cast<onnx::TensorProto_DataType>(elem_type));
  }
  return "type " + std::to_string(elem_type);
}

at::ScalarType RequireScalarType(int32_t elem_type, const std::string& what) {
  auto st = ScalarTypeFromOnnx(elem_type);
  if (!st) {
    throw Error(ErrorKind::kUnsupported,
                what + " has element type " + OnnxTypeName(elem_type) + ", which is not supported");
  }
  return *st;
}

int32_t OnnxFromScalarType(at::ScalarType t, const std::string& what) {
  using TP = onnx::TensorProto;
  switch (t) {
    case at::kFloat: return TP::FLOAT;
    case at::kDouble: return TP::DOUBLE;
    case at::kHalf: return TP::FLOAT16;
    case at::kBFloat16: return TP::BFLOAT16;
    case at::kChar: return TP::INT8;
    case at::kByte: return TP::UINT8;
    case at::kShort: return TP::INT16;
    case at::kInt: return TP::INT32;
    case at::kLong: return TP::INT64;
    case at::kBool: return TP::BOOL;
    default:
      throw Error(ErrorKind::kUnsupported,
                  what + " has dtype " + DtypeName(t) + ", which ONNX export does not support");
  }
}

// ---- tensors -------------------------------------------------------------------------

std::string DimsString(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? "," : "") + std::to_string(dims[i]);
  return s + "]";
}

// The element count of `dims` (negative dims refused), refused above
// Limits::max_tensor_elements so that nothing of a declared size is allocated before it
// is known to be sane. `what` names the tensor.
int64_t CheckedNumel(const std::vector<int64_t>& dims, const std::string& what) {
  const int64_t max = CurrentLimits().max_tensor_elements;
  int64_t numel = 1;
  bool over = false, empty = false;
  for (int64_t d : dims) {
    if (d < 0) throw Error(ErrorKind::kIo, what + " has a negative dim: " + DimsString(dims));
    if (d == 0) empty = true;  // an empty tensor, whatever its other dims
    else if (numel > INT64_MAX / d) over = true;
    else numel *= d;
  }
  if (empty) return 0;
  if (over || numel > max) {
    throw Error(ErrorKind::kIo, what + " declares shape " + DimsString(dims) + ", " +
                                    (over ? std::string("more than 2^63") : std::to_string(numel)) +
                                    " elements, above the limit of " + std::to_string(max) + " (" +
                                    LimitVariable("max_tensor_elements") + ")");
  }
  return numel;
}

// Copies `count` values of a typed repeated field into `out`, converting to T.
template <typename T, typename Field>
void CopyTyped(const Field& field, const Tensor& out) {
  T* dst = static_cast<T*>(out.data_ptr());
  for (int i = 0; i < field.size(); ++i) dst[i] = static_cast<T>(field.Get(i));
}

// A CPU tensor holding the data of `t` (raw_data or the typed *_data field).
Tensor TensorFromProto(const onnx::TensorProto& t, const std::string& where) {
  const std::string what = Prefix(where) + "tensor '" + t.name() + "'";
  if (t.data_location() == onnx::TensorProto::EXTERNAL || t.external_data_size() > 0) {
    throw Error(ErrorKind::kUnsupported,
                what + " uses external data, which is not supported (save the model with "
                       "all tensors inside the file)");
  }
  if (t.has_segment()) {
    throw Error(ErrorKind::kUnsupported, what + " is segmented, which is not supported");
  }
  const at::ScalarType dtype = RequireScalarType(t.data_type(), what);
  const std::vector<int64_t> dims(t.dims().begin(), t.dims().end());
  const int64_t numel = CheckedNumel(dims, what);
  const size_t elem_size = c10::elementSize(dtype);

  // The values must all be present before the tensor is allocated: a small file must
  // not make us allocate what its shape declares.
  auto check_count = [&](int64_t have, int64_t want, const char* field) {
    if (have != want) {
      throw Error(ErrorKind::kIo, what + " has " + std::to_string(have) + " values in " + field +
                                      " for shape " + DimsString(dims) + " (" +
                                      std::to_string(want) + " expected)");
    }
  };
  auto allocate = [&] { return at::empty(dims, at::TensorOptions().dtype(dtype)); };
  Tensor out;

  if (t.has_raw_data()) {
    check_count(static_cast<int64_t>(t.raw_data().size()), numel * static_cast<int64_t>(elem_size),
                "raw_data bytes");
    out = allocate();
    if (numel > 0) std::memcpy(out.data_ptr(), t.raw_data().data(), t.raw_data().size());
    if (dtype == at::kBool) out = out.ne(0);  // any non-zero byte is true
    return out;
  }
  using TP = onnx::TensorProto;
  switch (t.data_type()) {
    case TP::FLOAT:
      check_count(t.float_data_size(), numel, "float_data");
      out = allocate();
      CopyTyped<float>(t.float_data(), out);
      break;
    case TP::DOUBLE:
      check_count(t.double_data_size(), numel, "double_data");
      out = allocate();
      CopyTyped<double>(t.double_data(), out);
      break;
    case TP::INT64:
      check_count(t.int64_data_size(), numel, "int64_data");
      out = allocate();
      CopyTyped<int64_t>(t.int64_data(), out);
      break;
    case TP::INT32:
      check_count(t.int32_data_size(), numel, "int32_data");
      out = allocate();
      CopyTyped<int32_t>(t.int32_data(), out);
      break;
    case TP::INT16:
      check_count(t.int32_data_size(), numel, "int32_data");
      out = allocate();
      CopyTyped<int16_t>(t.int32_data(), out);
      break;
    case TP::INT8:
      check_count(t.int32_data_size(), numel, "int32_data");
      out = allocate();
      CopyTyped<int8_t>(t.int32_data(), out);
      break;
    case TP::UINT8:
      check_count(t.int32_data_size(), numel, "int32_data");
      out = allocate();
      CopyTyped<uint8_t>(t.int32_data(), out);
      break;
    case TP::BOOL: {
      check_count(t.int32_data_size(), numel, "int32_data");
      out = allocate();
      bool* dst = out.data_ptr<bool>();
      for (int i = 0; i < t.int32_data_size(); ++i) dst[i] = t.int32_data(i) != 0;
      break;
    }
    case TP::FLOAT16:
    case TP::BFLOAT16:  // the 16-bit patterns, one per int32
      check_count(t.int32_data_size(), numel, "int32_data");
      out = allocate();
      CopyTyped<uint16_t>(t.int32_data(), out);
      break;
    default:
      throw Error(ErrorKind::kUnsupported, what + " has an unsupported element type");
  }
  return out;
}

// Fills `p` with `t` as raw_data (contiguous CPU bytes) so output is deterministic.
void TensorToProto(const Tensor& t, const std::string& name, onnx::TensorProto* p,
                   const std::string& what) {
  p->set_name(name);
  p->set_data_type(OnnxFromScalarType(t.scalar_type(), what));
  for (int64_t d : t.sizes()) p->add_dims(d);
  Tensor c = t.detach().to(at::kCPU).contiguous();
  const size_t bytes = static_cast<size_t>(c.numel()) * c.element_size();
  p->set_raw_data(bytes ? std::string(static_cast<const char*>(c.data_ptr()), bytes)
                        : std::string());
}

// Dense tensor of a SparseTensorProto (indices: [NNZ] linear or [NNZ, rank] coordinates).
Tensor DensifySparse(const onnx::SparseTensorProto& sp, const std::string& where) {
  const std::string what = Prefix(where) + "sparse tensor '" + sp.values().name() + "'";
  Tensor values = TensorFromProto(sp.values(), where).reshape({-1});
  Tensor indices = TensorFromProto(sp.indices(), where).to(at::kLong);
  std::vector<int64_t> dims(sp.dims().begin(), sp.dims().end());
  CheckedNumel(dims, what);  // the dense shape, before it is allocated
  Tensor dense = at::zeros(dims, values.options());
  const int64_t nnz = values.numel();
  if (nnz == 0) return dense;
  Tensor linear;
  if (indices.dim() == 1 && indices.numel() == nnz) {
    linear = indices;
  } else if (indices.dim() == 2 && indices.size(0) == nnz &&
             indices.size(1) == static_cast<int64_t>(dims.size())) {
    linear = at::zeros({nnz}, at::kLong);
    int64_t stride = 1;
    for (int64_t k = static_cast<int64_t>(dims.size()) - 1; k >= 0; --k) {
      Tensor col = indices.select(1, k);
      if (col.lt(0).any().item<bool>() || col.ge(dims[k]).any().item<bool>()) {
        throw Error(ErrorKind::kIo, what + " has an index out of range in dim " +
                                        std::to_string(k));
      }
      linear.add_(col * stride);
      stride *= dims[k];
    }
  } else {
    throw Error(ErrorKind::kIo, what + " has indices of shape " +
                                    DimsString(indices.sizes().vec()) + " for " +
                                    std::to_string(nnz) + " values");
  }
  if (linear.lt(0).any().item<bool>() || linear.ge(dense.numel()).any().item<bool>()) {
    throw Error(ErrorKind::kIo, what + " has an index out of range");
  }
  dense.view({-1}).index_put_({linear}, values);
  return dense;
}

// Adds `value` to `g` as a sparse_initializer when options allow it and it is smaller
// than `dense`; returns whether it did. Format (ONNX IR spec, onnx.proto
// SparseTensorProto): `values` holds the NNZ non-zero values as a 1-D tensor carrying
// the initializer's name, `indices` their int64 linearized (row-major) indices, shape
// [NNZ], ascending without duplicates, and `dims` the dense shape.
bool AddSparseInitializer(const Tensor& value, const std::string& name,
                          const onnx::TensorProto& dense, const OnnxExportOptions& options,
                          onnx::GraphProto* g) {
  if (!options.sparse || value.dim() == 0 || value.numel() == 0 ||
      value.scalar_type() == at::kBool) {
    return false;
  }
  const Tensor flat = value.detach().to(at::kCPU).contiguous().reshape({-1});
  const Tensor nonzero = flat.ne(0);  // NaN counts as non-zero and is kept
  const int64_t nnz = nonzero.sum().item<int64_t>();
  const int64_t zeros = flat.numel() - nnz;
  if (static_cast<double>(zeros) < options.sparse_min_zeros * static_cast<double>(flat.numel())) {
    return false;
  }
  const Tensor indices = nonzero.nonzero().reshape({-1});  // ascending
  onnx::SparseTensorProto sp;
  for (int64_t d : value.sizes()) sp.add_dims(d);
  const std::string what = "initializer '" + name + "'";
  TensorToProto(flat.index_select(0, indices), name, sp.mutable_values(), what);
  TensorToProto(indices, "", sp.mutable_indices(), what);
  if (sp.ByteSizeLong() >= dense.ByteSizeLong()) return false;
  *g->add_sparse_initializer() = std::move(sp);
  return true;
}

// `m` with its sparse initializers as dense ones. ONNX 1.12's shape inference gives a
// sparse initializer rank 0 and then rejects its consumers ("Input tensors of wrong
// rank (0)"), so shapes are inferred and checked on this equivalent copy; the checker
// also runs on the model as written.
onnx::ModelProto WithDenseInitializers(const onnx::ModelProto& m, const std::string& where) {
  onnx::ModelProto copy = m;
  onnx::GraphProto* g = copy.mutable_graph();
  for (const auto& sp : m.graph().sparse_initializer()) {
    TensorToProto(DensifySparse(sp, where), sp.values().name(), g->add_initializer(),
                  "sparse initializer '" + sp.values().name() + "'");
  }
  g->clear_sparse_initializer();
  return copy;
}

// ---- attributes ----------------------------------------------------------------------

AttrValue AttrFromProto(const onnx::AttributeProto& a, const std::string& what) {
  using AP = onnx::AttributeProto;
  auto type = a.type();
  if (type == AP::UNDEFINED) {  // very old models leave the type out: use the field set
    if (a.has_f()) type = AP::FLOAT;
    else if (a.has_i()) type = AP::INT;
    else if (a.has_s()) type = AP::STRING;
    else if (a.has_t()) type = AP::TENSOR;
    else if (a.floats_size()) type = AP::FLOATS;
    else if (a.ints_size()) type = AP::INTS;
    else if (a.strings_size()) type = AP::STRINGS;
  }
  const std::string attr_what = what + " attribute '" + a.name() + "'";
  switch (type) {
    case AP::INT: return static_cast<int64_t>(a.i());
    case AP::FLOAT: return static_cast<double>(a.f());
    case AP::STRING: return a.s();
    case AP::INTS: return std::vector<int64_t>(a.ints().begin(), a.ints().end());
    case AP::FLOATS: return std::vector<double>(a.floats().begin(), a.floats().end());
    case AP::STRINGS: return std::vector<std::string>(a.strings().begin(), a.strings().end());
    case AP::TENSOR: return TensorFromProto(a.t(), attr_what);
    case AP::SPARSE_TENSOR: return DensifySparse(a.sparse_tensor(), attr_what);
    default:
      throw Error(ErrorKind::kUnsupported,
                  attr_what + " has type " + AP::AttributeType_Name(type) +
                      ", which is not supported (subgraphs, type protos and tensor lists)");
  }
}

void AttrToProto(const std::string& name, const AttrValue& v, onnx::AttributeProto* a,
                 const std::string& what) {
  using AP = onnx::AttributeProto;
  a->set_name(name);
  if (auto* i = std::get_if<int64_t>(&v)) {
    a->set_type(AP::INT);
    a->set_i(*i);
  } else if (auto* f = std::get_if<double>(&v)) {
    a->set_type(AP::FLOAT);
    a->set_f(static_cast<float>(*f));
  } else if (auto* s = std::get_if<std::string>(&v)) {
    a->set_type(AP::STRING);
    a->set_s(*s);
  } else if (auto* is = std::get_if<std::vector<int64_t>>(&v)) {
    a->set_type(AP::INTS);
    for (int64_t x : *is) a->add_ints(x);
  } else if (auto* fs = std::get_if<std::vector<double>>(&v)) {
    a->set_type(AP::FLOATS);
    for (double x : *fs) a->add_floats(static_cast<float>(x));
  } else if (auto* ss = std::get_if<std::vector<std::string>>(&v)) {
    a->set_type(AP::STRINGS);
    for (const auto& x : *ss) a->add_strings(x);
  } else if (auto* t = std::get_if<Tensor>(&v)) {
    a->set_type(AP::TENSOR);
    TensorToProto(*t, "", a->mutable_t(), what + " attribute '" + name + "'");
  }
}

// ---- value infos ---------------------------------------------------------------------

// nullopt for a value without any type (allowed for intermediate value_info).
std::optional<ValueInfo> ValueInfoFromProto(const onnx::ValueInfoProto& v,
                                            const std::string& where) {
  const std::string what = Prefix(where) + "value '" + v.name() + "'";
  if (!v.has_type() || v.type().value_case() == onnx::TypeProto::VALUE_NOT_SET) {
    return std::nullopt;
  }
  if (!v.type().has_tensor_type()) {
    throw Error(ErrorKind::kUnsupported,
                what + " is not a tensor (sequence, map, optional and sparse values are not "
                       "supported)");
  }
  const auto& tt = v.type().tensor_type();
  ValueInfo info;
  info.name = v.name();
  info.dtype = RequireScalarType(tt.elem_type(), what);
  if (tt.has_shape()) {
    std::vector<int64_t> dims, fixed;  // fixed: the static dims, for the size limit
    for (const auto& d : tt.shape().dim()) {
      dims.push_back(d.has_dim_value() ? d.dim_value() : kDynamicDim);
      if (d.has_dim_value() && d.dim_value() >= 0) fixed.push_back(d.dim_value());
    }
    CheckedNumel(fixed, what);
    info.shape = std::move(dims);
  }
  return info;
}

void ValueInfoToProto(const ValueInfo& v, onnx::ValueInfoProto* p) {
  p->set_name(v.name);
  auto* tt = p->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(OnnxFromScalarType(v.dtype, "value '" + v.name + "'"));
  if (v.shape) {
    auto* shape = tt->mutable_shape();  // present even for a scalar (rank 0)
    for (int64_t d : *v.shape) {
      auto* dim = shape->add_dim();
      if (d == kDynamicDim) dim->set_dim_param("N");
      else dim->set_dim_value(d);
    }
  }
}

// ---- model-level helpers ---------------------------------------------------------------

// The newest default-domain opset whose changes to the registry's ops the kernels follow
// (Split's uneven last part is opset 18); later opsets change QuantizeLinear,
// DequantizeLinear, Pad and Reshape in ways the kernels do not implement.
constexpr int64_t kNewestOpset = 18;

bool IsDefaultDomain(const std::string& domain) { return domain.empty() || domain == "ai.onnx"; }

onnx::ModelProto ParseModel(const std::string& bytes, const std::string& where) {
  onnx::ModelProto m;
  if (bytes.empty()) {  // parses as a ModelProto with nothing set: say what it is
    throw Error(ErrorKind::kIo, Prefix(where) + "the file is empty (0 bytes); expected an ONNX model");
  }
  if (bytes.size() > static_cast<size_t>(INT_MAX) || !m.ParseFromString(bytes)) {
    throw Error(ErrorKind::kIo,
                Prefix(where) + "not a valid ONNX model (truncated or corrupt protobuf)");
  }
  if (!m.has_graph()) {
    throw Error(ErrorKind::kIo, Prefix(where) + "not a valid ONNX model (it has no graph)");
  }
  return m;
}

int64_t DefaultOpset(const onnx::ModelProto& m) {
  for (const auto& o : m.opset_import()) {
    if (IsDefaultDomain(o.domain())) return o.version();
  }
  return 0;
}

// Unique node names: an empty or repeated name becomes "<op>_<index>" (plus a suffix if
// even that is taken), so errors and passes can always name a node.
std::vector<std::string> NodeNames(const onnx::GraphProto& g) {
  std::set<std::string> taken;
  for (const auto& n : g.node()) {
    if (!n.name().empty()) taken.insert(n.name());
  }
  std::vector<std::string> names;
  std::set<std::string> used;
  for (int i = 0; i < g.node_size(); ++i) {
    const auto& n = g.node(i);
    std::string name = n.name();
    if (name.empty() || used.count(name)) {
      const std::string base = n.op_type() + "_" + std::to_string(i);
      name = base;
      for (int k = 1; taken.count(name) || used.count(name); ++k) {
        name = base + "_" + std::to_string(k);
      }
    }
    used.insert(name);
    names.push_back(name);
  }
  return names;
}

// One error listing every op type outside the registry, with the first node using it.
void CheckOpsSupported(const onnx::GraphProto& g, const std::vector<std::string>& names,
                       const std::string& where) {
  std::vector<std::string> missing;
  std::set<std::string> seen;
  for (int i = 0; i < g.node_size(); ++i) {
    const auto& n = g.node(i);
    const bool known = IsDefaultDomain(n.domain()) && FindOp(n.op_type()) != nullptr;
    if (known) continue;
    const std::string label =
        IsDefaultDomain(n.domain()) ? n.op_type() : n.domain() + ":" + n.op_type();
    if (!seen.insert(label).second) continue;
    missing.push_back(label + " (node '" + names[i] + "')");
  }
  if (missing.empty()) return;
  std::string msg = Prefix(where) + "unsupported ops: ";
  for (size_t i = 0; i < missing.size(); ++i) msg += (i ? ", " : "") + missing[i];
  msg += "; supported: ";
  const auto& registry = OpRegistry();
  for (size_t i = 0; i < registry.size(); ++i) {
    msg += (i ? ", " : "") + std::string(registry[i].op_type);
  }
  throw Error(ErrorKind::kUnsupported, msg);
}

void CollectInfo(const onnx::GraphProto& g, OnnxModelInfo& info, std::set<std::string>& ops,
                 std::set<std::string>& notes) {
  auto note = [&](const std::string& s) {
    if (notes.insert(s).second) info.unrepresentable.push_back(s);
  };
  auto check_elem = [&](int32_t elem_type, const std::string& what) {
    if (!ScalarTypeFromOnnx(elem_type)) note(what + " has element type " + OnnxTypeName(elem_type));
  };
  auto check_value = [&](const onnx::ValueInfoProto& v) {
    if (!v.has_type() || v.type().value_case() == onnx::TypeProto::VALUE_NOT_SET) return;
    if (!v.type().has_tensor_type()) {
      note("value '" + v.name() + "' is not a tensor");
    } else {
      check_elem(v.type().tensor_type().elem_type(), "value '" + v.name() + "'");
    }
  };
  auto check_tensor = [&](const onnx::TensorProto& t) {
    check_elem(t.data_type(), "tensor '" + t.name() + "'");
    if (t.data_location() == onnx::TensorProto::EXTERNAL || t.external_data_size() > 0) {
      note("tensor '" + t.name() + "' uses external data");
    }
  };
  for (const auto& v : g.input()) check_value(v);
  for (const auto& v : g.output()) check_value(v);
  for (const auto& t : g.initializer()) check_tensor(t);
  for (const auto& n : g.node()) {
    const std::string label =
        IsDefaultDomain(n.domain()) ? n.op_type() : n.domain() + ":" + n.op_type();
    if (ops.insert(label).second) info.op_types.push_back(label);
    if (!IsDefaultDomain(n.domain())) note("op " + label + " is outside the default domain");
    for (const auto& a : n.attribute()) {
      using AP = onnx::AttributeProto;
      if (a.type() == AP::GRAPH || a.type() == AP::GRAPHS) {
        note("op " + label + " has a subgraph attribute");
        if (a.has_g()) CollectInfo(a.g(), info, ops, notes);
        for (const auto& sub : a.graphs()) CollectInfo(sub, info, ops, notes);
      } else if (a.type() == AP::TENSOR) {
        check_tensor(a.t());
      } else if (a.type() == AP::TYPE_PROTO || a.type() == AP::TYPE_PROTOS ||
                 a.type() == AP::TENSORS || a.type() == AP::SPARSE_TENSORS) {
        note("op " + label + " has a " + AP::AttributeType_Name(a.type()) + " attribute");
      }
    }
  }
}

}  // namespace

// ---- import --------------------------------------------------------------------------

Graph ParseOnnx(const std::string& bytes, const std::string& where) {
  const onnx::ModelProto m = ParseModel(bytes, where);
  const onnx::GraphProto& g = m.graph();
  Graph graph;

  // Step 1: the opset, then the ops, so an unsupported model fails with the
  // one useful message.
  if (const int64_t opset = DefaultOpset(m); opset > kNewestOpset) {
    throw Error(ErrorKind::kUnsupported,
                Prefix(where) + "opset " + std::to_string(opset) +
                    " of the default domain is newer than the newest supported (" +
                    std::to_string(kNewestOpset) + "); export the model at opset " +
                    std::to_string(kNewestOpset) + " or older");
  }
  const std::vector<std::string> names = NodeNames(g);
  CheckOpsSupported(g, names, where);

  if (!g.name().empty()) graph.name = g.name();
  if (const int64_t opset = DefaultOpset(m); opset > 0) graph.opset = opset;

  // Step 2: initializers, dense and sparse.
  auto add_initializer = [&](const std::string& name, Tensor value) {
    if (name.empty()) throw Error(ErrorKind::kIo, Prefix(where) + "an initializer has no name");
    if (graph.initializers.count(name)) {
      throw Error(ErrorKind::kIo, Prefix(where) + "initializer '" + name + "' is defined twice");
    }
    graph.initializers[name].value = std::move(value);
  };
  for (const auto& t : g.initializer()) add_initializer(t.name(), TensorFromProto(t, where));
  for (const auto& sp : g.sparse_initializer()) {
    add_initializer(sp.values().name(), DensifySparse(sp, where));
  }

  // Step 3: graph inputs (runtime inputs only), outputs and intermediate shapes.
  for (const auto& v : g.input()) {
    if (graph.IsInitializer(v.name())) continue;
    auto info = ValueInfoFromProto(v, where);
    if (!info) {
      throw Error(ErrorKind::kIo, Prefix(where) + "graph input '" + v.name() + "' has no type");
    }
    graph.inputs.push_back(std::move(*info));
  }
  for (const auto& v : g.output()) {
    auto info = ValueInfoFromProto(v, where);
    if (!info) {  // an untyped output: its type is whatever the graph computes
      info = ValueInfo{};
      info->name = v.name();
    }
    graph.outputs.push_back(std::move(*info));
  }
  for (const auto& v : g.value_info()) {
    if (auto info = ValueInfoFromProto(v, where)) graph.value_info[v.name()] = std::move(*info);
  }

  // Step 4: nodes.
  graph.nodes.reserve(g.node_size());
  for (int i = 0; i < g.node_size(); ++i) {
    const auto& n = g.node(i);
    Node node;
    node.name = names[i];
    node.op_type = n.op_type();
    node.inputs.assign(n.input().begin(), n.input().end());
    node.outputs.assign(n.output().begin(), n.output().end());
    const std::string what = Prefix(where) + node.Describe();
    for (const auto& a : n.attribute()) node.attrs[a.name()] = AttrFromProto(a, what);
    graph.nodes.push_back(std::move(node));
  }

  for (const auto& p : m.metadata_props()) graph.metadata[p.key()] = p.value();

  ValidateGraph(graph, where, ErrorKind::kIo);
  CheckGraphLimits(graph, where);
  return graph;
}

Graph LoadOnnx(const std::string& path) { return ParseOnnx(ReadFile(path), path); }

OnnxModelInfo InspectOnnx(const std::string& path) {
  const onnx::ModelProto m = ParseModel(ReadFile(path), path);
  OnnxModelInfo info;
  info.opset = DefaultOpset(m);
  std::set<std::string> ops, notes;
  CollectInfo(m.graph(), info, ops, notes);
  for (const auto& sp : m.graph().sparse_initializer()) {
    if (!ScalarTypeFromOnnx(sp.values().data_type())) {
      info.unrepresentable.push_back("sparse tensor '" + sp.values().name() +
                                     "' has element type " + OnnxTypeName(sp.values().data_type()));
    }
  }
  return info;
}

std::vector<OnnxNodeInfo> ListOnnxNodes(const std::string& path) {
  const onnx::ModelProto m = ParseModel(ReadFile(path), path);
  std::vector<OnnxNodeInfo> nodes;
  nodes.reserve(m.graph().node_size());
  for (const auto& n : m.graph().node()) nodes.push_back({n.name(), n.domain(), n.op_type()});
  return nodes;
}

void CheckOnnx(const std::string& path) {
  const onnx::ModelProto m = ParseModel(ReadFile(path), path);
  try {
    onnx::checker::check_model(m);
    onnx::ModelProto inferred = WithDenseInitializers(m, path);
    onnx::shape_inference::InferShapes(inferred, onnx::OpSchemaRegistry::Instance(),
                                       onnx::ShapeInferenceOptions(/*check_type=*/true,
                                                                   /*strict_mode=*/0));
    onnx::checker::check_model(inferred);
  } catch (const std::exception& e) {
    std::string why = e.what();
    for (char& c : why) {
      if (c == '\n' || c == '\r') c = ' ';
    }
    throw Error(ErrorKind::kIo, path + ": fails the ONNX checker: " + why);
  }
}

// ---- export --------------------------------------------------------------------------

std::string SerializeOnnx(const Graph& graph, const OnnxExportOptions& options) {
  for (const auto& n : graph.nodes) {
    if (n.domain == kInternalDomain) {
      throw Error(ErrorKind::kUnsupported,
                  n.Describe() + ": " + n.domain + "::" + n.op_type +
                      " is a training-only op and cannot be exported (quantize-qat replaces its "
                      "FakeQuantize nodes by QuantizeLinear/DequantizeLinear when it ends)");
    }
  }
  onnx::ModelProto m;
  m.set_ir_version(8);
  m.set_producer_name(options.producer_name);
  m.set_producer_version(options.producer_version.empty() ? MCOMPRESS_VERSION
                                                         : options.producer_version);
  auto* opset = m.add_opset_import();
  opset->set_domain("");
  opset->set_version(std::max(options.opset, graph.opset));
  std::set<std::string> domains;
  for (const auto& n : graph.nodes) {
    if (!IsDefaultDomain(n.domain) && domains.insert(n.domain).second) {
      auto* o = m.add_opset_import();
      o->set_domain(n.domain);
      o->set_version(1);
    }
  }

  onnx::GraphProto* g = m.mutable_graph();
  g->set_name(graph.name);
  // Nodes in graph order; attributes and initializers in std::map (name) order, so the
  // bytes depend only on the graph.
  for (const auto& n : graph.nodes) {
    auto* p = g->add_node();
    p->set_name(n.name);
    p->set_op_type(n.op_type);
    if (!IsDefaultDomain(n.domain)) p->set_domain(n.domain);
    for (const auto& in : n.inputs) p->add_input(in);
    for (const auto& out : n.outputs) p->add_output(out);
    for (const auto& [key, value] : n.attrs) AttrToProto(key, value, p->add_attribute(), n.Describe());
  }
  for (const auto& [name, init] : graph.initializers) {
    onnx::TensorProto dense;
    TensorToProto(init.value, name, &dense, "initializer '" + name + "'");
    if (!AddSparseInitializer(init.value, name, dense, options, g)) {
      *g->add_initializer() = std::move(dense);
    }
  }
  std::set<std::string> io_names;
  for (const auto& v : graph.inputs) {
    ValueInfoToProto(v, g->add_input());
    io_names.insert(v.name);
  }
  for (const auto& v : graph.outputs) {
    ValueInfoToProto(v, g->add_output());
    io_names.insert(v.name);
  }
  for (const auto& [name, v] : graph.value_info) {
    if (io_names.count(name) || graph.IsInitializer(name)) continue;
    ValueInfo named = v;
    named.name = name;
    ValueInfoToProto(named, g->add_value_info());
  }
  std::map<std::string, std::string> metadata = graph.metadata;
  if (!options.recipe_hash.empty()) metadata["mcompress.recipe_hash"] = options.recipe_hash;
  for (const auto& [key, value] : metadata) {
    auto* p = m.add_metadata_props();
    p->set_key(key);
    p->set_value(value);
  }

  if (options.check) {
    try {
      onnx::checker::check_model(m);  // as written: sparse indices sorted and in range
      onnx::ModelProto inferred = WithDenseInitializers(m, "");
      onnx::shape_inference::InferShapes(inferred, onnx::OpSchemaRegistry::Instance(),
                                         onnx::ShapeInferenceOptions(/*check_type=*/true,
                                                                     /*strict_mode=*/1));
      onnx::checker::check_model(inferred);
    } catch (const std::exception& e) {
      throw Error(ErrorKind::kInternal,
                  "exported ONNX fails the checker: " + std::string(e.what()));
    }
  }

  if (m.ByteSizeLong() > static_cast<size_t>(INT_MAX)) {
    throw Error(ErrorKind::kUnsupported,
                "exported ONNX model exceeds protobuf's 2 GiB limit (external data is not "
                "supported)");
  }
  std::string bytes;
  if (!m.SerializeToString(&bytes)) {
    throw Error(ErrorKind::kInternal, "cannot serialize the ONNX model");
  }
  return bytes;
}

void SaveOnnx(const Graph& graph, const std::string& path, const OnnxExportOptions& options) {
  WriteFileAtomic(path, SerializeOnnx(graph, options));
}

// ---- tensor files --------------------------------------------------------------------

Tensor LoadTensorProto(const std::string& path) {
  const std::string bytes = ReadFile(path);
  onnx::TensorProto t;
  if (!t.ParseFromString(bytes)) {
    throw Error(ErrorKind::kIo, path + ": not a valid TensorProto (truncated or corrupt protobuf)");
  }
  return TensorFromProto(t, path);
}

void SaveTensorProto(const Tensor& tensor, const std::string& path, const std::string& name) {
  onnx::TensorProto t;
  TensorToProto(tensor, name, &t, "tensor '" + name + "'");
  std::string bytes;
  if (!t.SerializeToString(&bytes)) {
    throw Error(ErrorKind::kInternal, "cannot serialize tensor '" + name + "'");
  }
  WriteFileAtomic(path, bytes);
}

}  // namespace compress
