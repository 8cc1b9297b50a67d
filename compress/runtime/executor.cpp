// Executor: a precomputed plan (kernel and value slots per node, last uses) run with
// LibTorch kernels from the op registry; and shape inference by execution.
#include "compress/runtime/executor.h"

#include <torch/torch.h>

#include <set>
#include <unordered_map>

#include "compress/base/interrupt.h"
#include "compress/runtime/ops.h"

namespace compress {

Executor::Executor(const Graph& graph) : graph_(graph) {
  std::unordered_map<std::string, int> slot_of;
  auto new_slot = [&](const std::string& name) {
    int slot = static_cast<int>(slot_names_.size());
    slot_names_.push_back(name);
    slot_of[name] = slot;
    return slot;
  };

  // Step 1: every op must have a kernel; report all that do not at once.
  std::map<std::string, std::string> missing;  // op -> first node using it
  for (const auto& node : graph.nodes) {
    const bool default_domain = node.domain.empty() || node.domain == "ai.onnx";
    if (FindNodeOp(node) == nullptr) {
      missing.emplace((default_domain ? "" : node.domain + "::") + node.op_type, node.name);
    }
  }
  if (!missing.empty()) {
    std::string msg = "unsupported ops: ";
    bool first = true;
    for (const auto& [op, node] : missing) {
      msg += (first ? "" : ", ") + op + " (node '" + node + "')";
      first = false;
    }
    throw Error(ErrorKind::kUnsupported, msg);
  }

  // Step 2: slots for inputs, initializers, node outputs.
  for (const auto& in : graph.inputs) input_slots_.push_back(new_slot(in.name));
  for (const auto& [name, init] : graph.initializers) {
    constants_.emplace_back(new_slot(name), init.value);
  }
  // A DequantizeLinear of an integer initializer (a quantized weight or bias) yields the
  // same tensor on every run, and nothing trains its inputs (integer tensors; Q/DQ
  // scales are not trainable): compute it once here, as a constant.
  auto constant_dequantize = [&](const Node& node) {
    if (node.op_type != "DequantizeLinear" || node.outputs.size() != 1) return false;
    for (const auto& in : node.inputs) {
      if (!in.empty() && !graph.IsInitializer(in)) return false;
    }
    return !at::isFloatingType(graph.initializers.at(node.inputs[0]).value.scalar_type());
  };
  std::vector<int> last_use;
  for (size_t i = 0; i < graph.nodes.size(); ++i) {
    const Node& node = graph.nodes[i];
    if (constant_dequantize(node)) {
      torch::NoGradGuard no_grad;
      std::vector<Tensor> args;
      for (const auto& in : node.inputs) {
        args.push_back(in.empty() ? Tensor() : graph.initializers.at(in).value);
      }
      KernelContext ctx{node, args, graph.opset, false};
      constants_.emplace_back(new_slot(node.outputs[0]), FindOp(node.op_type)->run(ctx).at(0));
      continue;
    }
    Step step;
    step.node = &node;
    step.op = FindNodeOp(node);
    for (const auto& in : node.inputs) {
      if (in.empty()) {
        step.input_slots.push_back(-1);
        continue;
      }
      auto it = slot_of.find(in);
      if (it == slot_of.end()) {
        throw Error(ErrorKind::kInternal, node.Describe() + " uses undefined value '" + in +
                                              "' (validate the graph first)");
      }
      step.input_slots.push_back(it->second);
    }
    for (const auto& out : node.outputs) {
      step.output_slots.push_back(out.empty() ? -1 : new_slot(out));
    }
    steps_.push_back(std::move(step));
  }
  num_slots_ = slot_names_.size();

  // Step 3: free intermediate values after their last use (bounded memory in
  // inference; autograd keeps what backward needs by itself).
  std::set<int> keep;
  for (const auto& out : graph.outputs) {
    auto it = slot_of.find(out.name);
    if (it == slot_of.end()) {
      throw Error(ErrorKind::kInternal, "graph output '" + out.name + "' is never defined");
    }
    output_slots_.push_back(it->second);
    keep.insert(it->second);
  }
  for (const auto& [slot, t] : constants_) keep.insert(slot);
  last_use.assign(num_slots_, -1);
  for (size_t i = 0; i < steps_.size(); ++i) {
    for (int s : steps_[i].input_slots) {
      if (s >= 0) last_use[s] = static_cast<int>(i);
    }
  }
  for (size_t s = 0; s < num_slots_; ++s) {
    if (last_use[s] >= 0 && !keep.count(static_cast<int>(s))) {
      steps_[last_use[s]].free_after.push_back(static_cast<int>(s));
    }
  }
  observed_.assign(num_slots_, false);
}

void Executor::SetObserver(const std::vector<std::string>& values, Observer observer) {
  observed_.assign(num_slots_, false);
  observer_ = nullptr;
  if (values.empty()) return;
  for (const auto& v : values) {
    bool found = false;
    for (size_t s = 0; s < num_slots_; ++s) {
      if (slot_names_[s] == v) {
        observed_[s] = true;
        found = true;
      }
    }
    if (!found) {
      throw Error(ErrorKind::kRecipe, "cannot observe '" + v + "': no such value in graph '" +
                                          graph_.name + "'");
    }
  }
  observer_ = std::move(observer);
}

std::vector<Tensor> Executor::Run(const std::vector<Tensor>& inputs) const {
  ThrowIfInterrupted();  // every batch of every stage passes here: stop within one
  if (inputs.size() != input_slots_.size()) {
    throw Error(ErrorKind::kUsage, "graph '" + graph_.name + "' takes " +
                                       std::to_string(input_slots_.size()) +
                                       " inputs, got " + std::to_string(inputs.size()));
  }
  std::vector<Tensor> values(num_slots_);
  auto notify = [&](int slot) {
    if (observer_ && observed_[slot]) observer_(slot_names_[slot], values[slot]);
  };
  for (size_t i = 0; i < inputs.size(); ++i) {
    values[input_slots_[i]] = inputs[i];
    notify(input_slots_[i]);
  }
  for (const auto& [slot, t] : constants_) {
    values[slot] = t;
    notify(slot);
  }
  std::vector<Tensor> args;
  for (const auto& step : steps_) {
    args.clear();
    for (int s : step.input_slots) args.push_back(s >= 0 ? values[s] : Tensor());
    KernelContext ctx{*step.node, args, graph_.opset, training_,
                      training_ && replica_sum_ ? &replica_sum_ : nullptr};
    std::vector<Tensor> outs;
    try {
      outs = static_cast<const OpSpec*>(step.op)->run(ctx);
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      // LibTorch's messages carry a C++ backtrace; keep the first line.
      std::string what = e.what();
      auto nl = what.find('\n');
      if (nl != std::string::npos) what = what.substr(0, nl);
      throw Error(ErrorKind::kNumeric, step.node->Describe() + " failed: " + what);
    }
    for (size_t k = 0; k < step.output_slots.size(); ++k) {
      int s = step.output_slots[k];
      if (s < 0) continue;
      if (k >= outs.size() || !outs[k].defined()) {
        throw Error(ErrorKind::kUnsupported,
                    step.node->Describe() + ": output " + std::to_string(k) +
                        " is requested but not produced by our kernel");
      }
      values[s] = std::move(outs[k]);
      notify(s);
    }
    for (int s : step.free_after) values[s] = Tensor();
  }
  std::vector<Tensor> result;
  result.reserve(output_slots_.size());
  for (int s : output_slots_) result.push_back(values[s]);
  return result;
}

bool ShapesMissing(const Graph& graph) {
  return graph.value_info.empty() && !graph.inputs.empty() && graph.inputs[0].shape.has_value();
}

void InferShapes(Graph& graph) {
  // Run at two batch sizes: a dim that changes with the dynamic input dims is dynamic.
  auto run_with = [&](int64_t dynamic_size) {
    std::vector<Tensor> inputs;
    for (const auto& in : graph.inputs) {
      const std::vector<int64_t> dims =
          ConcreteShape(in, dynamic_size, "cannot infer shapes", ErrorKind::kUsage);
      auto options = torch::TensorOptions().dtype(in.dtype);
      if (!graph.initializers.empty()) {
        options = options.device(graph.initializers.begin()->second.value.device());
      }
      inputs.push_back(torch::zeros(dims, options));
    }
    std::map<std::string, std::pair<at::ScalarType, std::vector<int64_t>>> seen;
    Executor exec(graph);
    std::vector<std::string> names;
    for (const auto& node : graph.nodes) {
      for (const auto& out : node.outputs) {
        if (!out.empty()) names.push_back(out);
      }
    }
    exec.SetObserver(names, [&](const std::string& name, const Tensor& t) {
      seen[name] = {t.scalar_type(), std::vector<int64_t>(t.sizes().begin(), t.sizes().end())};
    });
    torch::NoGradGuard no_grad;
    exec.Run(inputs);
    return seen;
  };
  bool has_dynamic = false;
  for (const auto& in : graph.inputs) {
    if (in.shape) {
      for (auto d : *in.shape) has_dynamic |= d == kDynamicDim;
    }
  }
  auto a = run_with(1);
  auto b = has_dynamic ? run_with(2) : a;
  graph.value_info.clear();
  for (const auto& [name, info] : a) {
    std::vector<int64_t> dims = info.second;
    const auto& other = b.at(name).second;
    if (other.size() == dims.size()) {
      for (size_t i = 0; i < dims.size(); ++i) {
        if (dims[i] != other[i]) dims[i] = kDynamicDim;
      }
    }
    ValueInfo v{name, info.first, dims};
    bool is_output = false;
    for (auto& out : graph.outputs) {
      if (out.name == name) {
        out = v;
        is_output = true;
      }
    }
    if (!is_output) graph.value_info[name] = v;
  }
}

}  // namespace compress
