// Proof that an exported ONNX file computes what the in-memory graph computes: the
// ONNX checker, then ONNX Runtime and our executor on the same inputs, every output
// compared under a named tolerance (FP32, or INT8 for quantized exports).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "compress/ir/graph.h"
#include "compress/io/onnx_io.h"
#include "compress/io/ort_runner.h"

namespace compress {

struct VerifyTolerance {
  enum class Mode { kFp32, kInt8 };
  Mode mode = Mode::kFp32;
  // FP32: every element within rel * scale, scale = max(max |reference|, scale_floor).
  double rel = 1e-4;
  double scale_floor = 1.0;
  // INT8: |Δ| within one quantization step (int8_step; when 0, the reference's
  // (max - min) / 255) on at least int8_within_step of the elements, and, for 2-D
  // outputs with more than one column (logits), the same arg-max on at least
  // int8_top1 of the rows.
  double int8_step = 0;
  double int8_within_step = 0.999;
  double int8_top1 = 0.995;
};

// How one output of the candidate (ONNX Runtime) compares with the reference (ours).
struct OutputCheck {
  std::string name;
  std::vector<int64_t> shape;
  double max_abs_diff = 0;
  double max_rel_diff = 0;     // max_abs_diff / scale
  double scale = 0;            // FP32: max(max |reference|, floor); INT8: the step
  double tolerance = 0;        // FP32: largest |Δ| allowed; INT8: the step
  double within_step = 1;      // fraction of elements with |Δ| <= tolerance
  double top1_agreement = -1;  // fraction of rows with the same arg-max; -1 if not logits
  int64_t rows = 0;            // rows compared for top1_agreement
  bool passed = true;
  // The first element beyond the tolerance (or the worst, when none is): flat index,
  // "[i,j]" form, and both values.
  int64_t index = -1;
  std::string index_text;
  double reference_value = 0, candidate_value = 0;
  std::string failure;  // why it failed, one line; empty when passed
};

// Compares `candidate` with `reference` (same shape; any real dtype; compared in
// double) under `tol`. NaN matches only NaN, ±Inf only itself; integer and bool
// outputs must match exactly. A shape mismatch fails. Pure: no runtime involved.
OutputCheck CompareOutput(const std::string& name, const Tensor& reference,
                          const Tensor& candidate, const VerifyTolerance& tol);

// How a runtime runs the quantized layers of an INT8 file.
struct Int8Execution {
  // Weighted layers (Conv, Gemm, MatMul) whose weight is read through DequantizeLinear
  // in our graph; 0 when not measured (not an INT8 file).
  int64_t quantized = 0;
  std::vector<std::string> integer;  // of those, the ones on integer kernels (graph order)
  // The others, in graph order: layer name, why it is not on an integer kernel.
  std::vector<std::pair<std::string, std::string>> fallback;
};

// The quantized layers of `graph` (see Int8Execution::quantized), each classified by the
// node of the same name in `runtime_nodes`, the graph ONNX Runtime runs (its optimized
// model: fused nodes keep the original node's name, except a float Gemm fused with its
// activation, "fused <name>"): integer when its op is an integer kernel (QLinear*,
// NhwcQLinear*, QGemm, ConvInteger, MatMulInteger, MatMulIntegerToFloat,
// DynamicQuantizeMatMul), else a fallback saying what ONNX Runtime runs it as, or that
// the optimized graph has no such node. Pure.
Int8Execution ClassifyInt8Execution(const Graph& graph,
                                    const std::vector<OnnxNodeInfo>& runtime_nodes);

struct VerifyReport {
  std::string onnx_path;    // the verified file (ONNX or TorchScript)
  std::string ort_version;  // ONNX Runtime's version (ONNX files)
  std::string runtime;      // what ran the file: "onnxruntime-node 1.30.0", "LibTorch 1.13.1 ..."
  int64_t samples = 0;  // batch size of the inputs (first dim of the first input)
  std::vector<OutputCheck> outputs;
  double max_abs_diff = 0, max_rel_diff = 0;  // over all outputs
  double top1_agreement = -1;                 // the lowest over logits outputs; -1 if none
  double ort_seconds = 0;                     // the node process, start to finish
  Int8Execution int8;  // INT8 (QDQ) files verified in ONNX Runtime; else quantized == 0
  // INT8 files: how the INT8 rule held: "end to end", or "value by value: ..." (the
  // file failed the end-to-end share of elements within one step, but every quantized
  // value and output, from the same integer inputs, is within the rule, and end to end
  // the outputs are finite and the top-1 agreement holds; the text says what was found).
  std::string int8_rule;
};

// Runs the ONNX checker on `onnx_path` (and our importer), then the file in ONNX
// Runtime (on the CPU) and `graph` in our executor on `executor_device` (a copy of the
// graph moved there when it lives elsewhere), both on `sample_inputs` (graph input
// order; moved to each side's device), and compares every output on the CPU, in order
// and by name. The default runs the executor on the CPU whatever device the graph is
// on: the FP32 tolerance is set for CPU kernels, and a GPU's (TF32 convolutions,
// other reduction orders) can differ by more. Under the
// INT8 rule (tol.mode kInt8, QDQ files) it also has ONNX Runtime write its optimized
// graph (to ort.optimized_model_path when set, else to a temporary file under $TMPDIR,
// removed afterwards) and fills report.int8 from it (ClassifyInt8Execution). An INT8
// file that misses the end-to-end share within one step is checked value by value
// (BisectInt8's local comparison, and each graph output from the same integers) and
// passes when every value is within the rule there and, end to end, every output is
// finite and the top-1 agreement holds (report.int8_rule says which way it held); else
// the error adds the first value the runtimes compute differently.
// Throws compress::Error: kIo for a file the checker or importer rejects (naming the
// file), kNumeric naming the first diverging output, the element and both values,
// and RunOrt's errors (kUnsupported when node or ONNX Runtime is missing or rejects
// the model).
VerifyReport VerifyOnnxInOrt(const Graph& graph, const std::string& onnx_path,
                             const std::vector<Tensor>& sample_inputs,
                             const VerifyTolerance& tol = {}, const OrtOptions& ort = {},
                             const c10::Device& executor_device = c10::Device(c10::kCPU));

// Where an INT8 file parts from our executor, value by value. For each activation
// Quantize/Dequantize pair of the QDQ `graph` (graph order):
// - `max_steps` / `beyond_one`: the prefix of the graph up to that DequantizeLinear, run
//   in ONNX Runtime (its fusions up to the value intact) and in our executor on
//   `inputs`, the two dequantized values compared in steps of the value's scale. Errors
//   of earlier values carry into later ones, so in a deep network this grows with depth.
// - `local_max_steps` / `local_beyond_one`: the same value computed from the same
//   integers: the segment of the graph between the earlier quantized values it reads
//   and this one, fed our executor's integer codes of those values (so ONNX Runtime
//   still sees DequantizeLinear -> layer -> QuantizeLinear and runs its integer kernel).
//   Both runtimes compute each integer layer alike up to the rounding of the float
//   requantization, so a correct kernel stays within one step here, however deep.
struct Int8ValueDivergence {
  std::string value;     // the quantized value (the QuantizeLinear's input)
  double scale = 0;      // its quantization step
  double max_steps = 0;  // largest |ours - ORT| / scale, end to end
  double beyond_one = 0; // fraction of elements more than one step apart, end to end
  double local_max_steps = 0;  // the same from the same integer inputs
  double local_beyond_one = 0;
};
// One row per activation pair of `graph`; empty for a graph without any. ONNX Runtime
// runs the segments of `runtime_graph` (the file being verified, imported: the same
// value names), our executor those of `graph`. Errors as RunOrt's (a segment ONNX
// Runtime cannot run is kUnsupported naming it).
std::vector<Int8ValueDivergence> BisectInt8(const Graph& graph, const Graph& runtime_graph,
                                            const std::vector<Tensor>& inputs,
                                            const OrtOptions& ort = {});

// Random inputs for `graph`: standard normal for floating inputs, zeros for integer
// and bool ones; every dynamic dim is `batch`. Deterministic in `seed`. Throws
// compress::Error(kUnsupported) naming an input with an unknown shape.
std::vector<Tensor> RandomInputs(const Graph& graph, int64_t batch, uint64_t seed);

// `mcompress verify`: checker, import, then VerifyOnnxInOrt of the file against its
// own import on RandomInputs(batch = samples, seed). A file with QuantizeLinear nodes
// (QDQ) is compared under the INT8 rule (tol with mode kInt8).
VerifyReport VerifyOnnxFile(const std::string& onnx_path, int64_t samples, uint64_t seed,
                            const VerifyTolerance& tol = {});
// The same for a caller that already holds `graph`, the file's own LoadOnnx.
VerifyReport VerifyOnnxFile(const Graph& graph, const std::string& onnx_path, int64_t samples,
                            uint64_t seed, const VerifyTolerance& tol = {});

// Runs `write(tmp)` for a temporary name beside `path`, then `verify(tmp)`, and renames
// the file to `path` only when both succeed (removed otherwise), so `path` never holds
// an unverified file. Errors name `path`, not the temporary file.
VerifyReport WriteVerified(const std::string& path,
                           const std::function<void(const std::string&)>& write,
                           const std::function<VerifyReport(const std::string&)>& verify);

// Loads the TorchScript file at `path` with torch::jit::load (quantized engine `qengine`
// selected for the load and the run, as INT8 files need), runs forward on
// `sample_inputs` on the CPU (INT8 modules hold CPU-only packed weights) and compares
// every output with `graph` in our executor on `executor_device` under `tol` (see
// VerifyOnnxInOrt for the device). Throws compress::Error: kIo when the file does not load, kNumeric naming
// the first diverging output (or when forward fails).
VerifyReport VerifyTorchScriptFile(const Graph& graph, const std::string& path,
                                   const std::vector<Tensor>& sample_inputs,
                                   const VerifyTolerance& tol = {},
                                   const std::string& qengine = "onednn",
                                   const c10::Device& executor_device = c10::Device(c10::kCPU));

// One line per output: "logits [8,10]: max |Δ| 1.2e-06 (rel 3.1e-07, tolerance 1e-04),
// top-1 agreement 100.00%".
std::string VerifySummary(const VerifyReport& report);

// One line, no newline: "INT8 kernels (ONNX Runtime): 3/4 quantized layers conv1 conv2
// fc1" (the layers on integer kernels; the fallbacks are the caller's to list).
std::string Int8ExecutionSummary(const Int8Execution& e);

}  // namespace compress
