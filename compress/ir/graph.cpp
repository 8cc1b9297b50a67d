// Graph: attribute access, deep copy, device moves, validation, topological order,
// use-def queries and the stable text dump.
#include "compress/ir/graph.h"

#include <torch/torch.h>

#include <algorithm>
#include <iomanip>
#include <set>
#include <sstream>
#include <unordered_map>


namespace compress {

namespace {

const char* AttrTypeName(const AttrValue& v) {
  switch (v.index()) {
    case 0: return "int";
    case 1: return "float";
    case 2: return "string";
    case 3: return "ints";
    case 4: return "floats";
    case 5: return "strings";
    default: return "tensor";
  }
}

template <typename T>
const T& GetTyped(const Node& node, const std::string& key, const char* wanted) {
  auto it = node.attrs.find(key);
  if (it == node.attrs.end()) {
    throw Error(ErrorKind::kIo,
                node.Describe() + ": missing required attribute '" + key + "'");
  }
  const T* value = std::get_if<T>(&it->second);
  if (value == nullptr) {
    throw Error(ErrorKind::kIo, node.Describe() + ": attribute '" + key + "' should be " +
                                    wanted + ", found " + AttrTypeName(it->second));
  }
  return *value;
}

std::string FormatDouble(double v) {
  std::ostringstream os;
  os << std::setprecision(6) << v;
  return os.str();
}

std::string AttrToString(const AttrValue& v) {
  std::ostringstream os;
  switch (v.index()) {
    case 0: os << std::get<int64_t>(v); break;
    case 1: os << FormatDouble(std::get<double>(v)); break;
    case 2: os << '"' << std::get<std::string>(v) << '"'; break;
    case 3: {
      os << '[';
      const auto& xs = std::get<std::vector<int64_t>>(v);
      for (size_t i = 0; i < xs.size(); ++i) os << (i ? "," : "") << xs[i];
      os << ']';
      break;
    }
    case 4: {
      os << '[';
      const auto& xs = std::get<std::vector<double>>(v);
      for (size_t i = 0; i < xs.size(); ++i) os << (i ? "," : "") << FormatDouble(xs[i]);
      os << ']';
      break;
    }
    case 5: {
      os << '[';
      const auto& xs = std::get<std::vector<std::string>>(v);
      for (size_t i = 0; i < xs.size(); ++i) os << (i ? "," : "") << '"' << xs[i] << '"';
      os << ']';
      break;
    }
    default: {
      const Tensor& t = std::get<Tensor>(v);
      os << "tensor<" << DtypeName(t.scalar_type()) << ">"
         << ShapeString(std::vector<int64_t>(t.sizes().begin(), t.sizes().end()));
    }
  }
  return os.str();
}

std::vector<int64_t> SizesOf(const Tensor& t) {
  return std::vector<int64_t>(t.sizes().begin(), t.sizes().end());
}

}  // namespace

// ---- Node ------------------------------------------------------------------------

std::string Node::Describe() const { return op_type + " '" + name + "'"; }

int64_t Node::GetInt(const std::string& key) const {
  return GetTyped<int64_t>(*this, key, "an int");
}
int64_t Node::GetInt(const std::string& key, int64_t fallback) const {
  return HasAttr(key) ? GetInt(key) : fallback;
}
double Node::GetFloat(const std::string& key) const {
  auto it = attrs.find(key);
  // ONNX writers sometimes store an integral float attribute as an int.
  if (it != attrs.end() && std::holds_alternative<int64_t>(it->second)) {
    return static_cast<double>(std::get<int64_t>(it->second));
  }
  return GetTyped<double>(*this, key, "a float");
}
double Node::GetFloat(const std::string& key, double fallback) const {
  return HasAttr(key) ? GetFloat(key) : fallback;
}
std::string Node::GetString(const std::string& key, const std::string& fallback) const {
  return HasAttr(key) ? GetTyped<std::string>(*this, key, "a string") : fallback;
}
std::vector<int64_t> Node::GetInts(const std::string& key,
                                   const std::vector<int64_t>& fallback) const {
  return HasAttr(key) ? GetTyped<std::vector<int64_t>>(*this, key, "a list of ints")
                      : fallback;
}
std::vector<double> Node::GetFloats(const std::string& key,
                                    const std::vector<double>& fallback) const {
  return HasAttr(key) ? GetTyped<std::vector<double>>(*this, key, "a list of floats")
                      : fallback;
}
const Tensor& Node::GetTensor(const std::string& key) const {
  return GetTyped<Tensor>(*this, key, "a tensor");
}

// ---- Graph -----------------------------------------------------------------------

Graph Graph::Clone() const {
  Graph copy = *this;
  auto clone = [](const Tensor& t) { return t.defined() ? t.detach().clone() : t; };
  for (auto& [name, init] : copy.initializers) {
    init.value = clone(init.value);
    init.mask = clone(init.mask);
    if (init.quant) {
      init.quant->scale = clone(init.quant->scale);
      init.quant->zero_point = clone(init.quant->zero_point);
    }
  }
  for (auto& node : copy.nodes) {
    for (auto& [key, value] : node.attrs) {
      if (auto* t = std::get_if<Tensor>(&value)) *t = clone(*t);
    }
  }
  return copy;
}

void Graph::ApplyMasks() {
  torch::NoGradGuard no_grad;
  for (auto& [name, init] : initializers) {
    if (init.mask.defined()) init.value.mul_(init.mask.to(init.value.device(), init.value.scalar_type()));
  }
}

void Graph::To(const c10::Device& device) {
  auto move = [&](Tensor& t) {
    if (t.defined() && t.device() != device) {
      // Keep leaf-ness and requires_grad so optimizers built afterwards see leaves.
      bool grad = t.requires_grad();
      t = t.detach().to(device);
      if (grad) t.requires_grad_(true);
    }
  };
  for (auto& [name, init] : initializers) {
    move(init.value);
    move(init.mask);
    if (init.quant) {
      move(init.quant->scale);
      move(init.quant->zero_point);
    }
  }
  for (auto& node : nodes) {
    for (auto& [key, value] : node.attrs) {
      if (auto* t = std::get_if<Tensor>(&value)) move(*t);
    }
  }
}

void Graph::Validate(const std::string& where, ErrorKind kind, const NodeCheck& check) const {
  const std::string prefix = where.empty() ? "" : where + ": ";
  auto fail = [&](const std::string& msg) { throw Error(kind, prefix + msg); };

  std::set<std::string> defined;
  for (const auto& in : inputs) {
    if (in.name.empty()) fail("graph input with an empty name");
    if (!defined.insert(in.name).second) fail("graph input '" + in.name + "' defined twice");
  }
  for (const auto& [name, init] : initializers) {
    if (!init.value.defined()) fail("initializer '" + name + "' has no tensor");
    if (!defined.insert(name).second) {
      fail("initializer '" + name + "' is also a graph input or defined twice");
    }
  }
  // Values produced later: used-before-defined means a cycle or a wrong order.
  std::map<std::string, size_t> producer;
  for (size_t i = 0; i < nodes.size(); ++i) {
    for (const auto& out : nodes[i].outputs) {
      if (out.empty()) continue;
      if (defined.count(out) || !producer.emplace(out, i).second) {
        fail(nodes[i].Describe() + " defines value '" + out + "' which is already defined");
      }
    }
  }
  for (size_t i = 0; i < nodes.size(); ++i) {
    const Node& node = nodes[i];
    if (check) check(node, prefix);
    for (const auto& in : node.inputs) {
      if (in.empty() || defined.count(in)) continue;
      auto it = producer.find(in);
      if (it == producer.end()) {
        fail(node.Describe() + " uses value '" + in + "' which no node, input or "
             "initializer defines");
      }
      fail(node.Describe() + " uses value '" + in + "' before " +
           nodes[it->second].Describe() + " produces it (a cycle, or nodes out of "
           "topological order)");
    }
    for (const auto& out : node.outputs) {
      if (!out.empty()) defined.insert(out);
    }
  }
  for (const auto& out : outputs) {
    if (!defined.count(out.name)) fail("graph output '" + out.name + "' is never defined");
  }
}

bool Graph::IsOutput(const std::string& value) const {
  for (const auto& o : outputs) {
    if (o.name == value) return true;
  }
  return false;
}

void Graph::ReplaceUses(const std::string& from, const std::string& to) {
  for (Node& n : nodes) {
    for (auto& in : n.inputs) {
      if (in == from) in = to;
    }
  }
}

void Graph::RemoveNodes(const std::vector<bool>& remove, const std::set<std::string>& candidates) {
  std::vector<Node> kept;
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (i >= remove.size() || !remove[i]) kept.push_back(std::move(nodes[i]));
  }
  nodes = std::move(kept);
  for (const auto& name : candidates) {
    if (IsInitializer(name) && ConsumerIndices(name).empty()) initializers.erase(name);
  }
}

int64_t Graph::RemoveDeadNodes() {
  int64_t removed = 0;
  for (bool again = true; again;) {
    std::set<std::string> read;
    for (const auto& n : nodes) read.insert(n.inputs.begin(), n.inputs.end());
    for (const auto& o : outputs) read.insert(o.name);
    std::vector<bool> dead(nodes.size(), false);
    again = false;
    for (size_t i = 0; i < nodes.size(); ++i) {
      dead[i] = std::none_of(nodes[i].outputs.begin(), nodes[i].outputs.end(),
                             [&](const std::string& o) { return !o.empty() && read.count(o); });
      if (dead[i]) {
        for (const auto& o : nodes[i].outputs) value_info.erase(o);
        ++removed;
        again = true;
      }
    }
    RemoveNodes(dead);
  }
  std::set<std::string> read;
  for (const auto& n : nodes) read.insert(n.inputs.begin(), n.inputs.end());
  for (const auto& o : outputs) read.insert(o.name);
  for (auto it = initializers.begin(); it != initializers.end();) {
    it = read.count(it->first) ? std::next(it) : initializers.erase(it);
  }
  return removed;
}

NameSource::NameSource(const Graph& graph) {
  for (const auto& v : graph.inputs) used_.insert(v.name);
  for (const auto& [name, init] : graph.initializers) used_.insert(name);
  for (const auto& n : graph.nodes) {
    used_.insert(n.name);
    for (const auto& o : n.outputs) used_.insert(o);
  }
}

void NameSource::Reserve(const std::string& name) { used_.insert(name); }

std::string NameSource::Fresh(const std::string& base) {
  std::string name = base;
  int& next = next_[base];
  while (used_.count(name) != 0) name = base + "_" + std::to_string(++next);
  used_.insert(name);
  return name;
}

void Graph::TopologicalSort() {
  std::set<std::string> available;
  for (const auto& in : inputs) available.insert(in.name);
  for (const auto& [name, init] : initializers) available.insert(name);
  std::vector<Node> sorted;
  sorted.reserve(nodes.size());
  std::vector<bool> placed(nodes.size(), false);
  size_t remaining = nodes.size();
  while (remaining > 0) {
    bool progress = false;
    for (size_t i = 0; i < nodes.size(); ++i) {
      if (placed[i]) continue;
      bool ready = std::all_of(nodes[i].inputs.begin(), nodes[i].inputs.end(),
                               [&](const std::string& in) {
                                 return in.empty() || available.count(in) != 0;
                               });
      if (!ready) continue;
      placed[i] = true;
      --remaining;
      progress = true;
      for (const auto& out : nodes[i].outputs) available.insert(out);
      sorted.push_back(nodes[i]);
      break;  // restart from the first node: keeps the original order where possible
    }
    if (!progress) {
      for (size_t i = 0; i < nodes.size(); ++i) {
        if (!placed[i]) {
          throw Error(ErrorKind::kIo, nodes[i].Describe() +
                                          " is part of a cycle or uses an undefined value");
        }
      }
    }
  }
  nodes = std::move(sorted);
}

Tensor& Graph::Weight(const std::string& value) {
  auto it = initializers.find(value);
  if (it == initializers.end()) {
    throw Error(ErrorKind::kInternal, "'" + value + "' is not an initializer");
  }
  return it->second.value;
}

const Tensor& Graph::Weight(const std::string& value) const {
  return const_cast<Graph*>(this)->Weight(value);
}

int Graph::ProducerIndex(const std::string& value) const {
  for (size_t i = 0; i < nodes.size(); ++i) {
    for (const auto& out : nodes[i].outputs) {
      if (out == value) return static_cast<int>(i);
    }
  }
  return -1;
}

std::vector<int> Graph::ConsumerIndices(const std::string& value) const {
  std::vector<int> result;
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (std::find(nodes[i].inputs.begin(), nodes[i].inputs.end(), value) !=
        nodes[i].inputs.end()) {
      result.push_back(static_cast<int>(i));
    }
  }
  return result;
}

std::optional<ValueInfo> Graph::FindValue(const std::string& value) const {
  for (const auto& v : inputs) {
    if (v.name == value) return v;
  }
  for (const auto& v : outputs) {
    if (v.name == value) return v;
  }
  auto it = value_info.find(value);
  if (it != value_info.end()) return it->second;
  auto init = initializers.find(value);
  if (init != initializers.end()) {
    return ValueInfo{value, init->second.value.scalar_type(), SizesOf(init->second.value)};
  }
  return std::nullopt;
}

std::vector<std::string> Graph::TrainableNames() const {
  // Initializers read as statistics or configuration are not trained by gradient
  // descent: BatchNormalization inputs 3/4 (running mean/var) and the inputs after the
  // first of Q/DQ, Clip and Dropout, and FakeQuantize's zero point (and its scale
  // unless learned).
  std::set<std::string> frozen;
  for (const auto& node : nodes) {
    if (node.op_type == "BatchNormalization") {
      for (size_t i = 3; i < node.inputs.size() && i < 5; ++i) frozen.insert(node.inputs[i]);
    } else if (node.op_type == "QuantizeLinear" || node.op_type == "DequantizeLinear" ||
               node.op_type == "Clip" || node.op_type == "Dropout") {
      // Scale/zero point, clip bounds, dropout ratio: configuration, not weights.
      for (size_t i = 1; i < node.inputs.size(); ++i) frozen.insert(node.inputs[i]);
    } else if (node.op_type == "FakeQuantize") {
      // quantize-qat's fake quantization: the zero point is fixed; the scale is learned
      // (LSQ) only when the node says so.
      for (size_t i = 1; i < node.inputs.size(); ++i) {
        if (i != 1 || node.GetInt("learn_scale", 0) == 0) frozen.insert(node.inputs[i]);
      }
    }
  }
  std::vector<std::string> names;
  for (const auto& [name, init] : initializers) {
    if (init.value.is_floating_point() && !frozen.count(name)) names.push_back(name);
  }
  return names;  // std::map iteration: already sorted
}

std::vector<Tensor> Graph::Parameters() const {
  std::vector<Tensor> params;
  for (const auto& name : TrainableNames()) params.push_back(initializers.at(name).value);
  return params;
}

int64_t Graph::NumParameters() const {
  int64_t n = 0;
  for (const auto& [name, init] : initializers) n += init.value.numel();
  return n;
}

std::string Graph::Dump() const {
  std::ostringstream os;
  os << "graph " << name << " (opset " << opset << ")\n";
  for (const auto& in : inputs) {
    os << "  input  " << in.name << ": " << DtypeName(in.dtype) << ShapeString(in.shape)
       << "\n";
  }
  for (const auto& [name, init] : initializers) {
    const Tensor& t = init.value;
    os << "  init   " << name << ": " << DtypeName(t.scalar_type())
       << ShapeString(SizesOf(t));
    if (t.numel() > 0) {
      Tensor zeros = (t == 0).sum();
      double sparsity = static_cast<double>(zeros.item<int64_t>()) / t.numel();
      if (sparsity > 0) os << " sparsity=" << FormatDouble(sparsity);
    }
    if (init.mask.defined()) os << " masked";
    if (init.quant) {
      os << " int" << init.quant->bits
         << (init.quant->axis >= 0 ? " per-axis=" + std::to_string(init.quant->axis)
                                   : std::string(" per-tensor"));
    }
    os << "\n";
  }
  for (const auto& node : nodes) {
    os << "  " << node.name << " = " << node.op_type << "(";
    for (size_t i = 0; i < node.inputs.size(); ++i) {
      os << (i ? ", " : "") << (node.inputs[i].empty() ? "<none>" : node.inputs[i]);
    }
    os << ")";
    if (!node.attrs.empty()) {
      os << " {";
      bool first = true;
      for (const auto& [key, value] : node.attrs) {
        os << (first ? "" : ", ") << key << "=" << AttrToString(value);
        first = false;
      }
      os << "}";
    }
    os << " -> ";
    for (size_t i = 0; i < node.outputs.size(); ++i) {
      const std::string& out = node.outputs[i];
      os << (i ? ", " : "") << out;
      if (auto v = FindValue(out)) os << ":" << ShapeString(v->shape);
    }
    os << "\n";
  }
  for (const auto& out : outputs) {
    os << "  output " << out.name << ": " << DtypeName(out.dtype) << ShapeString(out.shape)
       << "\n";
  }
  return os.str();
}

std::vector<int64_t> ConcreteShape(const ValueInfo& info, int64_t dynamic_size,
                                   const std::string& where, ErrorKind kind) {
  if (!info.shape) throw Error(kind, where + ": input '" + info.name + "' has no known shape");
  std::vector<int64_t> dims = *info.shape;
  for (auto& d : dims) {
    if (d == kDynamicDim) d = dynamic_size;
  }
  return dims;
}

std::string DtypeName(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "float32";
    case at::kDouble: return "float64";
    case at::kHalf: return "float16";
    case at::kBFloat16: return "bfloat16";
    case at::kChar: return "int8";
    case at::kByte: return "uint8";
    case at::kShort: return "int16";
    case at::kInt: return "int32";
    case at::kLong: return "int64";
    case at::kBool: return "bool";
    default: return c10::toString(t);
  }
}

std::string ShapeString(const std::optional<std::vector<int64_t>>& shape) {
  if (!shape) return "[?]";
  std::string s = "[";
  for (size_t i = 0; i < shape->size(); ++i) {
    if (i) s += ",";
    s += (*shape)[i] == kDynamicDim ? "N" : std::to_string((*shape)[i]);
  }
  return s + "]";
}

}  // namespace compress
