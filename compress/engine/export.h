// Export formats: one table (name, needs a quantized model, Q/DQ stripped, verification
// rule, writer) read by the recipe parser, the engine and `mcompress export`, and the
// one function that writes a model in a format and proves it in its runtime.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "compress/ir/graph.h"
#include "compress/io/onnx_io.h"
#include "compress/io/verify.h"
#include "quantization/int8_target.h"

namespace compress {

struct ExportFormat {
  std::string name;      // "onnx", "onnx-qdq", "torchscript", "torchscript-int8"
  bool needs_quantized;  // an INT8 format: only for a model with Q/DQ nodes
  bool strips_qdq;       // a quantized model is written as its FP32 equivalent
  bool torchscript;      // TorchScript verified in LibTorch (else ONNX, in ONNX Runtime)
  bool real_int8;        // TorchScript with LibTorch's INT8 kernels (oneDNN)
  std::string doc;
};

const std::vector<ExportFormat>& ExportFormats();
std::vector<std::string> ExportFormatNames();
// The row named `name`, or nullptr.
const ExportFormat* FindExportFormat(const std::string& name);

struct ExportSettings {
  OnnxExportOptions onnx;  // ONNX formats
  // INT8 formats: re-quantize weights into this target first (RetargetInt8); unset
  // keeps the model's own.
  std::optional<Int8Target> target;
};

struct ExportOutcome {
  VerifyReport verify;
  std::string int8_target;              // INT8 formats: the target the file meets
  int64_t retargeted = 0;               // weights re-quantized for settings.target
  // INT8 formats: which quantized layers the runtime runs on integer kernels: ONNX
  // Runtime's fused ops for onnx-qdq (VerifyReport::int8); for torchscript-int8,
  // SaveTorchScript's INT8 layers (quantized Adds included) and fake-quant fallbacks.
  Int8Execution int8;
  std::vector<std::string> warnings;    // one line each: saturation risk, fallbacks
};

// Writes `graph` to `path` as `format` and verifies it against our executor on
// `samples` (graph input order) before it appears under `path`: ONNX in ONNX Runtime,
// TorchScript in LibTorch; the FP32 rule, or the INT8 rule for INT8 formats, which are
// also checked by the static int16 proof of their target (CheckInt8Target). Fills
// missing shapes first. Throws compress::Error: kUsage for an INT8 format on a model
// without Q/DQ; kNumeric when the file disagrees (with the saturation hint when this
// CPU's kernels saturate full-range weights); as SaveOnnx, SaveTorchScript,
// VerifyOnnxInOrt and VerifyTorchScriptFile otherwise, naming `path`.
ExportOutcome ExportModel(const Graph& graph, const std::string& path, const ExportFormat& format,
                          const ExportSettings& settings, const std::vector<Tensor>& samples);

// `mcompress verify`: VerifyOnnxFile on `path`, and for a QDQ file the static proof of
// its INT8 target first (its warning goes to `warn` before ONNX Runtime runs, so it is
// seen even when verification then fails), the saturation hint on a failure, and one
// warning per quantized layer ONNX Runtime runs in float (report.int8.fallback).
// `int8_target` (optional) receives the target's name, empty for an FP32 file.
VerifyReport VerifyModelFile(const std::string& path, int64_t samples, uint64_t seed,
                             const std::function<void(const std::string&)>& warn,
                             std::string* int8_target = nullptr);

}  // namespace compress
