// Export verification (see verify.h): the ONNX checker, ONNX Runtime against our
// executor, and the pure comparison that decides within which tolerance they agree.
#include "compress/base/text.h"
#include "compress/io/verify.h"

#include <ATen/ATen.h>
#include <torch/script.h>
#include <ATen/CPUGeneratorImpl.h>

#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <set>
#include <tuple>
#include <utility>

#include "compress/base/file_util.h"
#include "compress/runtime/executor.h"
#include "compress/io/onnx_io.h"
#include "compress/io/torchscript_export.h"

namespace compress {

namespace {

std::string Sci(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.3g", v);
  return buf;
}

std::string Value(double v) {
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%.9g", v);
  return buf;
}

// "[3,7]" for flat index 37 of shape [N,10].
std::string IndexText(int64_t flat, const std::vector<int64_t>& shape) {
  std::vector<int64_t> idx(shape.size());
  for (int64_t k = static_cast<int64_t>(shape.size()) - 1; k >= 0; --k) {
    const int64_t d = std::max<int64_t>(shape[k], 1);
    idx[k] = flat % d;
    flat /= d;
  }
  std::string s = "[";
  for (size_t k = 0; k < idx.size(); ++k) s += (k ? "," : "") + std::to_string(idx[k]);
  return s + "]";
}

std::string Percent(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f%%", 100 * v);
  return buf;
}

// Whether every initializer of `graph` is on `device` ("cuda" matches any CUDA index).
bool AllOn(const Graph& graph, const c10::Device& device) {
  for (const auto& [name, init] : graph.initializers) {
    const c10::Device have = init.value.device();
    if (have.type() != device.type()) return false;
    if (device.has_index() && have.index() != device.index()) return false;
  }
  return true;
}

// Our executor on `sample_inputs`, run on `device` (the caller's graph when it is
// there already, else a copy moved there; inputs follow), outputs on the CPU, where
// the comparison runs in double.
std::vector<Tensor> RunOurs(const Graph& graph, const std::vector<Tensor>& sample_inputs,
                            const c10::Device& device) {
  Graph moved;
  const Graph* g = &graph;
  if (!AllOn(graph, device)) {
    moved = graph.Clone();
    moved.To(device);
    g = &moved;
  }
  std::vector<Tensor> inputs;
  for (const auto& x : sample_inputs) inputs.push_back(x.to(device));
  at::NoGradGuard no_grad;
  std::vector<Tensor> outs = Executor(*g).Run(inputs);
  for (auto& o : outs) o = o.cpu();
  return outs;
}

// Compares `theirs` (the runtime's outputs, named `their_names` when the runtime names
// them) with our executor's on `device`, output by output; the first failure throws kNumeric naming
// `file`, the output, the element and both values. Fills `report`.
void CompareWithExecutor(const Graph& graph, const std::vector<Tensor>& sample_inputs,
                         const std::vector<Tensor>& theirs,
                         const std::vector<std::string>& their_names, const VerifyTolerance& tol,
                         const std::string& file, const std::string& runtime,
                         const c10::Device& device, VerifyReport& report) {
  const std::vector<Tensor> ours = RunOurs(graph, sample_inputs, device);
  if (theirs.size() != ours.size()) {
    throw Error(ErrorKind::kNumeric, file + ": " + runtime + " returned " +
                                         std::to_string(theirs.size()) +
                                         " outputs, mcompress's executor " +
                                         std::to_string(ours.size()));
  }
  for (size_t k = 0; k < ours.size(); ++k) {
    const std::string& name = graph.outputs[k].name;
    if (k < their_names.size() && their_names[k] != name) {
      throw Error(ErrorKind::kNumeric, file + ": output " + std::to_string(k) + " is '" +
                                           their_names[k] + "' in " + runtime + ", '" + name +
                                           "' in the graph");
    }
    OutputCheck c = CompareOutput(name, ours[k], theirs[k], tol);
    if (!c.passed) {
      const bool at_element = c.failure.rfind("at ", 0) == 0;
      throw Error(ErrorKind::kNumeric, file + ": output '" + name + "' differs (mcompress vs " +
                                           runtime + ")" + (at_element ? " " : ": ") + c.failure);
    }
    report.max_abs_diff = std::max(report.max_abs_diff, c.max_abs_diff);
    report.max_rel_diff = std::max(report.max_rel_diff, c.max_rel_diff);
    if (c.top1_agreement >= 0) {
      report.top1_agreement = report.top1_agreement < 0
                                  ? c.top1_agreement
                                  : std::min(report.top1_agreement, c.top1_agreement);
    }
    report.outputs.push_back(std::move(c));
  }
}

// ONNX Runtime's integer kernels: a quantized layer fused into one of these computes
// in integers; anything else dequantizes its weight and runs in float.
constexpr const char* kIntegerKernelPrefixes[] = {"QLinear", "NhwcQLinear"};
constexpr const char* kIntegerKernels[] = {"QGemm", "ConvInteger", "MatMulInteger",
                                           "MatMulIntegerToFloat", "DynamicQuantizeMatMul"};

bool IsIntegerKernel(const std::string& op_type) {
  for (const char* prefix : kIntegerKernelPrefixes) {
    if (op_type.rfind(prefix, 0) == 0) return true;
  }
  for (const char* op : kIntegerKernels) {
    if (op_type == op) return true;
  }
  return false;
}

// A Conv, Gemm or MatMul whose weight (input 1) is a DequantizeLinear of an initializer:
// a layer the QDQ form asks the runtime to run in integers.
bool ReadsQuantizedWeight(const Graph& graph, const Node& node) {
  if (node.op_type != "Conv" && node.op_type != "Gemm" && node.op_type != "MatMul") return false;
  if (!node.HasInput(1)) return false;
  const int p = graph.ProducerIndex(node.inputs[1]);
  if (p < 0) return false;
  const Node& dq = graph.nodes[p];
  return dq.op_type == "DequantizeLinear" && dq.HasInput(0) && graph.IsInitializer(dq.inputs[0]);
}

// A fresh, empty file under $TMPDIR for ONNX Runtime's optimized graph: not beside the
// verified file, whose folder may be read-only or shared with another verification.
std::string TempOptimizedPath() {
  std::string pattern = (std::filesystem::temp_directory_path() /
                         ("mcompress-ort-optimized-" + std::to_string(::getpid()) + "-XXXXXX.onnx"))
                            .string();
  const int fd = ::mkstemps(pattern.data(), 5);  // 5: the ".onnx" suffix
  if (fd < 0) {
    throw Error(ErrorKind::kIo, "cannot create a temporary file " + pattern + ": " +
                                    std::strerror(errno));
  }
  ::close(fd);
  return pattern;
}

// Deletes a file when the scope ends, however it ends (empty path: nothing).
class RemoveOnExit {
 public:
  explicit RemoveOnExit(std::string path) : path_(std::move(path)) {}
  ~RemoveOnExit() {
    if (!path_.empty()) std::remove(path_.c_str());
  }
  RemoveOnExit(const RemoveOnExit&) = delete;
  RemoveOnExit& operator=(const RemoveOnExit&) = delete;

 private:
  std::string path_;
};

}  // namespace

Int8Execution ClassifyInt8Execution(const Graph& graph,
                                    const std::vector<OnnxNodeInfo>& runtime_nodes) {
  std::map<std::string, const OnnxNodeInfo*> by_name;  // the first node of each name
  for (const OnnxNodeInfo& n : runtime_nodes) by_name.emplace(n.name, &n);
  Int8Execution out;
  for (const Node& node : graph.nodes) {
    if (!ReadsQuantizedWeight(graph, node)) continue;
    ++out.quantized;
    auto it = by_name.find(node.name);
    // ORT 1.30's Gemm + activation fusion (float FusedGemm) renames the node this way.
    if (it == by_name.end()) it = by_name.find("fused " + node.name);
    if (it == by_name.end()) {
      out.fallback.emplace_back(node.name, "not found in ONNX Runtime's optimized graph");
    } else if (IsIntegerKernel(it->second->op_type)) {
      out.integer.push_back(node.name);
    } else {
      out.fallback.emplace_back(node.name, "ONNX Runtime runs it as " + it->second->op_type);
    }
  }
  return out;
}

OutputCheck CompareOutput(const std::string& name, const Tensor& reference,
                          const Tensor& candidate, const VerifyTolerance& tol) {
  OutputCheck c;
  c.name = name;
  c.shape = reference.sizes().vec();
  if (reference.sizes() != candidate.sizes()) {
    c.passed = false;
    c.failure = "shape " + ShapeString(c.shape) + " vs " +
                ShapeString(candidate.sizes().vec());
    return c;
  }
  if (reference.numel() == 0) return c;
  const bool exact = !at::isFloatingType(reference.scalar_type()) ||
                     !at::isFloatingType(candidate.scalar_type());
  const Tensor ref = reference.detach().to(at::kCPU, at::kDouble).reshape({-1});
  const Tensor cand = candidate.detach().to(at::kCPU, at::kDouble).reshape({-1});

  // Step 1: |Δ| per element; equal values (same Inf, both NaN) differ by 0, and a NaN
  // or Inf against anything else by Inf.
  const Tensor same = ref.eq(cand).logical_or(ref.isnan().logical_and(cand.isnan()));
  Tensor diff = (ref - cand).abs();
  diff = at::where(same, at::zeros_like(diff), diff);
  diff = at::where(diff.isnan(), at::full_like(diff, INFINITY), diff);

  // Step 2: the scale and the tolerance of the mode.
  const Tensor finite = ref.masked_select(ref.isfinite());
  const double max_abs = finite.numel() ? finite.abs().max().item<double>() : 0.0;
  if (exact) {
    c.scale = std::max(max_abs, tol.scale_floor);
    c.tolerance = 0;
  } else if (tol.mode == VerifyTolerance::Mode::kFp32) {
    c.scale = std::max(max_abs, tol.scale_floor);
    c.tolerance = tol.rel * c.scale;
  } else {
    double step = tol.int8_step;
    if (step <= 0 && finite.numel()) {
      step = (finite.max().item<double>() - finite.min().item<double>()) / 255.0;
    }
    if (step <= 0) step = tol.rel * tol.scale_floor;  // a constant output
    c.scale = step;
    c.tolerance = step * (1 + 1e-6);  // exactly one step, allowing for rounding
  }
  const Tensor bad = diff.gt(c.tolerance);
  c.max_abs_diff = diff.max().item<double>();
  c.max_rel_diff = c.max_abs_diff / c.scale;
  c.within_step = 1.0 - bad.to(at::kDouble).mean().item<double>();

  // Step 3: top-1 agreement for logits ([rows, classes]).
  if (reference.dim() == 2 && reference.size(1) > 1 && !exact) {
    const Tensor a = ref.view(reference.sizes()).argmax(1);
    const Tensor b = cand.view(reference.sizes()).argmax(1);
    c.rows = reference.size(0);
    c.top1_agreement = a.eq(b).to(at::kDouble).mean().item<double>();
  }

  // Step 4: the element to name, and the verdict.
  const Tensor bad_at = bad.nonzero();
  c.index = bad_at.numel() ? bad_at[0][0].item<int64_t>() : diff.argmax().item<int64_t>();
  c.index_text = IndexText(c.index, c.shape);
  c.reference_value = ref[c.index].item<double>();
  c.candidate_value = cand[c.index].item<double>();
  const std::string at_element = "at " + c.index_text + ": " + Value(c.reference_value) +
                                 " vs " + Value(c.candidate_value);
  if (exact || tol.mode == VerifyTolerance::Mode::kFp32) {
    c.passed = bad_at.numel() == 0;
    if (!c.passed) {
      c.failure = at_element + " (|Δ| " + Sci(std::abs(c.reference_value - c.candidate_value)) +
                  (exact ? ", exact match required)"
                         : " > tolerance " + Sci(c.tolerance) + " = " + Sci(tol.rel) +
                               " x scale " + Sci(c.scale) + ")");
    }
  } else {
    constexpr double kSlack = 1e-12;  // fractions like 1 - 10/10000 are not exact
    const bool steps_ok = c.within_step >= tol.int8_within_step - kSlack;
    const bool top1_ok = c.top1_agreement < 0 || c.top1_agreement >= tol.int8_top1 - kSlack;
    c.passed = steps_ok && top1_ok;
    if (!steps_ok) {
      c.failure = Percent(c.within_step) + " of elements within one quantization step " +
                  Sci(c.scale) + " (" + Percent(tol.int8_within_step) + " required); first " +
                  at_element;
    } else if (!top1_ok) {
      c.failure = "top-1 agreement " + Percent(c.top1_agreement) + " of " +
                  std::to_string(c.rows) + " rows (" + Percent(tol.int8_top1) + " required)";
    }
  }
  return c;
}

VerifyReport WriteVerified(const std::string& path,
                           const std::function<void(const std::string&)>& write,
                           const std::function<VerifyReport(const std::string&)>& verify) {
  const std::string tmp = path + ".verify-" + std::to_string(::getpid());
  try {
    write(tmp);
    VerifyReport report = verify(tmp);
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
      throw Error(ErrorKind::kIo, "cannot write " + path + ": " + std::strerror(errno));
    }
    report.onnx_path = path;
    return report;
  } catch (const Error& e) {
    std::remove(tmp.c_str());
    throw Error(e.kind(), ReplaceAll(e.what(), tmp, path));
  } catch (...) {
    std::remove(tmp.c_str());
    throw;
  }
}

namespace {

// The per-value check of an INT8 file that fails end to end (docs/quantization.md,
// "Exports of a quantized model"): `passed` when every quantized activation and every
// graph output, computed from the same integer inputs, is within the INT8 rule of ours;
// `finding` says what was found, for the report or the error.
struct LocalVerdict {
  bool passed = false;
  std::string finding;
};
LocalVerdict CheckInt8Locally(const Graph& graph, const Graph& runtime_graph,
                              const std::vector<Tensor>& inputs, const OrtOptions& ort,
                              const VerifyTolerance& tol);

}  // namespace

VerifyReport VerifyOnnxInOrt(const Graph& graph, const std::string& onnx_path,
                             const std::vector<Tensor>& sample_inputs,
                             const VerifyTolerance& tol, const OrtOptions& ort,
                             const c10::Device& executor_device) {
  VerifyReport report;
  report.onnx_path = onnx_path;
  report.samples = sample_inputs.empty() || sample_inputs[0].dim() == 0
                       ? 0 : sample_inputs[0].size(0);

  // Step 1: the ONNX checker and our own importer accept the file.
  CheckOnnx(onnx_path);
  const Graph imported = LoadOnnx(onnx_path);
  if (imported.outputs.size() != graph.outputs.size()) {
    throw Error(ErrorKind::kNumeric,
                onnx_path + ": has " + std::to_string(imported.outputs.size()) +
                    " outputs, the graph has " + std::to_string(graph.outputs.size()));
  }

  // Step 2: ONNX Runtime, all samples in one run; for an INT8 file also the graph it
  // runs, to see which quantized layers it fused into integer kernels.
  const bool int8 = tol.mode == VerifyTolerance::Mode::kInt8;
  OrtOptions options = ort;
  const bool own_optimized = int8 && options.optimized_model_path.empty();
  if (own_optimized) options.optimized_model_path = TempOptimizedPath();
  const RemoveOnExit cleanup(own_optimized ? options.optimized_model_path : "");
  const auto t0 = std::chrono::steady_clock::now();
  OrtRun run = RunOrt(onnx_path, sample_inputs, options);
  report.ort_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  report.ort_version = run.ort_version;
  report.runtime = "onnxruntime-node " + run.ort_version;

  // Steps 3 and 4: our executor on the same inputs; every output, in order and by name.
  // An INT8 file that fails says where the runtimes part (BisectInt8).
  try {
    CompareWithExecutor(graph, sample_inputs, run.outputs, run.output_names, tol, onnx_path,
                        "ONNX Runtime", executor_device, report);
    if (int8) report.int8_rule = "end to end";
  } catch (const Error& e) {
    if (!int8 || e.kind() != ErrorKind::kNumeric) throw;
    // Deep networks accumulate one-step roundings past the end-to-end share: the file
    // still passes when each value, from the same integers, is within the rule, and end
    // to end every output is finite and the top-1 agreement holds.
    const LocalVerdict local = CheckInt8Locally(graph, imported, sample_inputs, ort, tol);
    if (!local.passed) throw Error(e.kind(), std::string(e.what()) + "; " + local.finding);
    VerifyTolerance top1_only = tol;
    top1_only.int8_within_step = 0;
    report.outputs.clear();
    report.max_abs_diff = report.max_rel_diff = 0;
    report.top1_agreement = -1;
    try {
      CompareWithExecutor(graph, sample_inputs, run.outputs, run.output_names, top1_only,
                          onnx_path, "ONNX Runtime", executor_device, report);
    } catch (const Error& again) {
      throw Error(e.kind(), std::string(again.what()) + "; " + local.finding);
    }
    if (!std::isfinite(report.max_abs_diff)) {
      throw Error(e.kind(), std::string(e.what()) + " (an output is not finite)");
    }
    report.int8_rule = "value by value: " + local.finding;
  }

  // Step 5: INT8 files: integer kernels or float, per quantized layer.
  if (int8) report.int8 = ClassifyInt8Execution(graph, ListOnnxNodes(options.optimized_model_path));
  return report;
}

namespace {

// An activation pair of a QDQ graph: QuantizeLinear `q` of a runtime value and the
// DequantizeLinear `dq` reading it.
struct ActivationPair {
  const Node* q = nullptr;
  const Node* dq = nullptr;
};

std::vector<ActivationPair> ActivationPairs(const Graph& graph) {
  std::vector<ActivationPair> pairs;
  for (const Node& q : graph.nodes) {
    if (q.op_type != "QuantizeLinear" || q.outputs.empty() || q.inputs.size() < 2 ||
        graph.IsInitializer(q.inputs[0]) || !graph.IsInitializer(q.inputs[1])) {
      continue;
    }
    for (int r : graph.ConsumerIndices(q.outputs[0])) {
      const Node& reader = graph.nodes[static_cast<size_t>(r)];
      if (reader.op_type == "DequantizeLinear") pairs.push_back({&q, &reader});
    }
  }
  return pairs;
}

// `graph` cut down to the nodes computing `output` from `inputs` (values it then takes
// as graph inputs of `types` and the shapes value_info knows).
Graph Segment(const Graph& graph, const std::vector<std::string>& inputs,
              const std::vector<at::ScalarType>& types, const std::string& output) {
  Graph g = graph.Clone();
  g.inputs.clear();
  for (size_t k = 0; k < inputs.size(); ++k) {
    ValueInfo in;
    in.name = inputs[k];
    in.dtype = types[k];
    if (auto info = graph.FindValue(inputs[k])) in.shape = info->shape;
    g.inputs.push_back(in);
  }
  // Producers of the new inputs go; RemoveDeadNodes drops what nothing reads.
  std::vector<bool> remove(g.nodes.size(), false);
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    for (const auto& o : g.nodes[i].outputs) {
      if (std::find(inputs.begin(), inputs.end(), o) != inputs.end()) remove[i] = true;
    }
  }
  g.RemoveNodes(remove);
  ValueInfo out;
  out.name = output;
  out.dtype = at::kFloat;
  if (auto info = graph.FindValue(output)) out.shape = info->shape;
  g.outputs = {out};
  g.RemoveDeadNodes();
  return g;
}

// |ours - theirs| / scale: {max, fraction above one step}.
std::pair<double, double> Steps(const Tensor& ours, const Tensor& theirs, double scale) {
  if (ours.sizes() != theirs.sizes() || ours.numel() == 0 || !(scale > 0)) {
    return {std::numeric_limits<double>::infinity(), 1.0};
  }
  const Tensor steps = (ours.to(at::kDouble) - theirs.to(at::kDouble)).abs() / scale;
  // Both sides are multiples of the scale: a one-step difference may read 1.0000001, so
  // "more than one" is anything from 1.5 up.
  return {steps.max().item<double>(), (steps > 1.5).to(at::kDouble).mean().item<double>()};
}

// Segments of a QDQ graph run in both runtimes: ours from `graph` in our executor, the
// file's from `runtime_graph` in ONNX Runtime, on the same inputs.
class Int8Segments {
 public:
  Int8Segments(const Graph& graph, const Graph& runtime_graph, const std::vector<Tensor>& inputs,
               const OrtOptions& ort)
      : graph_(graph), runtime_(runtime_graph), inputs_(inputs), ort_(ort),
        pairs_(ActivationPairs(graph)), dir_("mcompress-bisect") {
    // Our integer codes of every quantized value, in one run.
    if (pairs_.empty()) return;
    Graph all = graph.Clone();
    all.outputs.clear();
    for (const auto& p : pairs_) {
      ValueInfo v;
      v.name = p.q->outputs[0];
      v.dtype = graph.Weight(p.q->inputs.size() > 2 ? p.q->inputs[2] : p.q->inputs[1]).scalar_type();
      all.outputs.push_back(v);
    }
    const std::vector<Tensor> outs = RunOurs(all, inputs, c10::Device(c10::kCPU));
    for (size_t k = 0; k < pairs_.size(); ++k) codes_[pairs_[k].q->outputs[0]] = outs[k];
  }

  const std::vector<ActivationPair>& pairs() const { return pairs_; }

  // {ours, ONNX Runtime's} `output` computed from the graph inputs.
  std::pair<Tensor, Tensor> EndToEnd(const std::string& output) {
    std::vector<std::string> names;
    std::vector<at::ScalarType> types;
    for (const auto& in : graph_.inputs) names.push_back(in.name), types.push_back(in.dtype);
    return Run(names, types, inputs_, output);
  }

  // The same from the integer codes (ours) of the quantized values `start` is computed
  // from: walking back from `start`, stopping at a quantized value or a graph input.
  std::pair<Tensor, Tensor> Local(const std::string& start, const std::string& output) {
    std::vector<std::string> names;
    std::vector<at::ScalarType> types;
    std::vector<Tensor> feed;
    std::set<std::string> seen;
    std::vector<std::string> stack{start};
    while (!stack.empty()) {
      const std::string v = stack.back();
      stack.pop_back();
      if (!seen.insert(v).second || graph_.IsInitializer(v)) continue;
      if (codes_.count(v)) {  // an earlier quantized value: its integers are the input
        names.push_back(v);
        types.push_back(codes_.at(v).scalar_type());
        feed.push_back(codes_.at(v));
        continue;
      }
      const int producer = graph_.ProducerIndex(v);
      if (producer < 0) {  // a graph input
        for (size_t i = 0; i < graph_.inputs.size(); ++i) {
          if (graph_.inputs[i].name != v) continue;
          names.push_back(v);
          types.push_back(graph_.inputs[i].dtype);
          feed.push_back(inputs_.at(i));
        }
        continue;
      }
      for (const auto& in : graph_.nodes[static_cast<size_t>(producer)].inputs) {
        if (!in.empty()) stack.push_back(in);
      }
    }
    return Run(names, types, feed, output);
  }

 private:
  std::pair<Tensor, Tensor> Run(const std::vector<std::string>& names,
                                const std::vector<at::ScalarType>& types,
                                const std::vector<Tensor>& feed, const std::string& output) {
    const std::string path = (dir_.path() / ("segment_" + std::to_string(files_++) + ".onnx")).string();
    const Graph ours = Segment(graph_, names, types, output);
    Graph theirs = Segment(runtime_, names, types, output);
    theirs.inputs = ours.inputs;  // our shapes (an imported file may lack value_info)
    theirs.outputs = ours.outputs;
    SaveOnnx(theirs, path);
    return {RunOurs(ours, feed, c10::Device(c10::kCPU)).at(0), RunInOrt(path, feed, ort_).at(0)};
  }

  const Graph& graph_;
  const Graph& runtime_;
  const std::vector<Tensor>& inputs_;
  OrtOptions ort_;
  std::vector<ActivationPair> pairs_;
  std::map<std::string, Tensor> codes_;
  TempDir dir_;
  int files_ = 0;
};

std::vector<Int8ValueDivergence> Bisect(Int8Segments& segments, const Graph& graph) {
  std::vector<Int8ValueDivergence> rows;
  for (const ActivationPair& p : segments.pairs()) {
    Int8ValueDivergence row;
    row.value = p.q->inputs[0];
    row.scale = graph.Weight(p.q->inputs[1]).to(at::kDouble).reshape({-1})[0].item<double>();
    const std::string dq_out = p.dq->outputs.at(0);
    {
      const auto [ours, theirs] = segments.EndToEnd(dq_out);
      std::tie(row.max_steps, row.beyond_one) = Steps(ours, theirs, row.scale);
    }
    {
      const auto [ours, theirs] = segments.Local(row.value, dq_out);
      std::tie(row.local_max_steps, row.local_beyond_one) = Steps(ours, theirs, row.scale);
    }
    rows.push_back(row);
  }
  return rows;
}

}  // namespace

std::vector<Int8ValueDivergence> BisectInt8(const Graph& graph, const Graph& runtime_graph,
                                            const std::vector<Tensor>& inputs,
                                            const OrtOptions& ort) {
  Int8Segments segments(graph, runtime_graph, inputs, ort);
  return Bisect(segments, graph);
}

namespace {

LocalVerdict CheckInt8Locally(const Graph& graph, const Graph& runtime_graph,
                              const std::vector<Tensor>& inputs, const OrtOptions& ort,
                              const VerifyTolerance& tol) {
  LocalVerdict v;
  std::vector<Int8ValueDivergence> rows;
  std::vector<OutputCheck> outputs;
  try {
    Int8Segments segments(graph, runtime_graph, inputs, ort);
    rows = Bisect(segments, graph);
    for (const auto& out : graph.outputs) {
      const auto [ours, theirs] = segments.Local(out.name, out.name);
      outputs.push_back(CompareOutput(out.name, ours, theirs, tol));
    }
  } catch (const Error& e) {
    v.finding = std::string("checking the quantized values one by one failed: ") + e.what();
    return v;
  }
  if (rows.empty()) {
    v.finding = "the graph has no quantized activations to check one by one";
    return v;
  }
  char buf[320];
  double worst = 0;
  for (const auto& r : rows) {
    if (r.local_beyond_one > 0) {
      std::snprintf(buf, sizeof buf,
                    "from the same integer inputs, '%s' is %.0f steps from ONNX Runtime's on "
                    "%.3g%% of its elements: the runtimes compute that layer differently",
                    r.value.c_str(), r.local_max_steps, 100 * r.local_beyond_one);
      v.finding = buf;
      return v;
    }
    worst = std::max(worst, r.local_max_steps);
  }
  for (const auto& c : outputs) {
    if (!c.passed) {
      v.finding = "from the same integer inputs, output '" + c.name + "' differs: " + c.failure;
      return v;
    }
  }
  const Int8ValueDivergence* first = nullptr;
  for (const auto& r : rows) {
    if (r.beyond_one > 0 && first == nullptr) first = &r;
  }
  std::snprintf(buf, sizeof buf,
                "from the same integer inputs all %zu quantized activations are within %.0f "
                "step of ONNX Runtime's and every output within the rule; end to end the first "
                "value more than a step off is '%s' (%.0f steps on %.3g%% of its elements): "
                "one-step roundings accumulate with depth",
                rows.size(), worst, first ? first->value.c_str() : "none",
                first ? first->max_steps : 0.0, first ? 100 * first->beyond_one : 0.0);
  v.finding = buf;
  v.passed = true;
  return v;
}

}  // namespace

std::vector<Tensor> RandomInputs(const Graph& graph, int64_t batch, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  std::vector<Tensor> inputs;
  for (const auto& in : graph.inputs) {
    const std::vector<int64_t> shape =
        ConcreteShape(in, batch, "cannot make sample inputs", ErrorKind::kUnsupported);
    if (at::isFloatingType(in.dtype)) {
      inputs.push_back(at::randn(shape, gen, at::TensorOptions().dtype(at::kFloat)).to(in.dtype));
    } else {
      inputs.push_back(at::zeros(shape, at::TensorOptions().dtype(in.dtype)));
    }
  }
  return inputs;
}

VerifyReport VerifyOnnxFile(const std::string& onnx_path, int64_t samples, uint64_t seed,
                            const VerifyTolerance& tol) {
  return VerifyOnnxFile(LoadOnnx(onnx_path), onnx_path, samples, seed, tol);
}

VerifyReport VerifyOnnxFile(const Graph& graph, const std::string& onnx_path, int64_t samples,
                            uint64_t seed, const VerifyTolerance& tol) {
  VerifyTolerance t = tol;
  // A QDQ file runs integer kernels in ONNX Runtime: compare under the INT8 rule.
  for (const Node& n : graph.nodes) {
    if (n.op_type == "QuantizeLinear") t.mode = VerifyTolerance::Mode::kInt8;
  }
  return VerifyOnnxInOrt(graph, onnx_path, RandomInputs(graph, samples, seed), t);
}

VerifyReport VerifyTorchScriptFile(const Graph& graph, const std::string& path,
                                   const std::vector<Tensor>& sample_inputs,
                                   const VerifyTolerance& tol, const std::string& qengine,
                                   const c10::Device& executor_device) {
  VerifyReport report;
  report.onnx_path = path;
  report.runtime = std::string("LibTorch ") + TORCH_VERSION + " (torch::jit::load)";
  report.samples = sample_inputs.empty() || sample_inputs[0].dim() == 0 ? 0 : sample_inputs[0].size(0);
  ScopedQEngine engine(qengine);  // packed INT8 weights are unpacked for this engine
  torch::jit::Module module;
  try {
    // On the CPU, always: real INT8 modules hold CPU-only packed weights (ONEDNN or
    // QNNPACK), and the FP32 ones are the reference the executor is held to.
    module = torch::jit::load(path, c10::Device(c10::kCPU));
  } catch (const std::exception& e) {
    std::string what = e.what();
    throw Error(ErrorKind::kIo, path + ": torch::jit::load failed: " + what.substr(0, what.find('\n')));
  }
  module.eval();
  std::vector<torch::jit::IValue> args;
  for (const auto& x : sample_inputs) args.emplace_back(x.cpu());
  std::vector<Tensor> theirs;
  const auto t0 = std::chrono::steady_clock::now();
  {
    at::NoGradGuard no_grad;
    torch::jit::IValue out;
    try {
      out = module.forward(args);
    } catch (const std::exception& e) {
      std::string what = e.what();
      throw Error(ErrorKind::kNumeric, path + ": the TorchScript module failed: " +
                                           what.substr(0, what.find('\n')));
    }
    if (out.isTuple()) {
      for (const auto& v : out.toTupleRef().elements()) theirs.push_back(v.toTensor());
    } else {
      theirs.push_back(out.toTensor());
    }
  }
  report.ort_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CompareWithExecutor(graph, sample_inputs, theirs, {}, tol, path, "TorchScript",
                      executor_device, report);
  return report;
}

std::string VerifySummary(const VerifyReport& report) {
  std::string s;
  for (const auto& c : report.outputs) {
    s += c.name + " " + ShapeString(c.shape) + ": max |Δ| " + Sci(c.max_abs_diff) + " (rel " +
         Sci(c.max_rel_diff) + ", tolerance " + Sci(c.tolerance) + ")";
    if (c.top1_agreement >= 0) s += ", top-1 agreement " + Percent(c.top1_agreement);
    s += "\n";
  }
  return s;
}

std::string Int8ExecutionSummary(const Int8Execution& e) {
  std::string s = "INT8 kernels (ONNX Runtime): " + std::to_string(e.integer.size()) + "/" +
                  std::to_string(e.quantized) + " quantized layers";
  for (const auto& layer : e.integer) s += " " + layer;
  return s;
}

}  // namespace compress
