// The export table and ExportModel: prepare the graph for the format (strip Q/DQ,
// re-quantize for a target), check the INT8 target, write, verify, rename.
#include "compress/engine/export.h"

#include "compress/runtime/cpu_info.h"
#include "compress/runtime/executor.h"
#include "compress/io/torchscript_export.h"
#include "quantization/qdq.h"

namespace compress {

const std::vector<ExportFormat>& ExportFormats() {
  static const std::vector<ExportFormat> formats = {
      {"onnx", false, true, false, false,
       "FP32 ONNX (a quantized model without its Q/DQ, weights keeping their rounding), "
       "verified in ONNX Runtime"},
      {"onnx-qdq", true, false, false, false,
       "a quantized model as INT8 QDQ ONNX, verified in ONNX Runtime under the INT8 rule"},
      {"torchscript", false, false, true, false,
       "TorchScript of the model as it is (FP32, or fake-quant bit-exact with mcompress), "
       "verified in LibTorch"},
      {"torchscript-int8", true, false, true, true,
       "TorchScript running quantized layers on LibTorch's INT8 kernels (oneDNN), "
       "verified under the INT8 rule"},
  };
  return formats;
}

std::vector<std::string> ExportFormatNames() {
  std::vector<std::string> names;
  for (const auto& f : ExportFormats()) names.push_back(f.name);
  return names;
}

const ExportFormat* FindExportFormat(const std::string& name) {
  for (const auto& f : ExportFormats()) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

namespace {

// torchscript-int8's layers as an Int8Execution: every quantized layer is either on
// LibTorch's INT8 kernels or left fake-quant.
Int8Execution TorchScriptInt8Execution(const TorchScriptExportResult& r) {
  Int8Execution e;
  e.integer = r.int8_layers;
  e.fallback = r.fallback_layers;
  e.quantized = static_cast<int64_t>(e.integer.size() + e.fallback.size());
  return e;
}

std::string FloatInOrtWarning(const std::string& layer, const std::string& why) {
  return layer + " runs in float in ONNX Runtime: " + why;
}

}  // namespace

ExportOutcome ExportModel(const Graph& graph, const std::string& path, const ExportFormat& format,
                          const ExportSettings& settings, const std::vector<Tensor>& samples) {
  const bool quantized = HasQuantization(graph);
  if (format.needs_quantized && !quantized) {
    throw Error(ErrorKind::kUsage, path + ": format " + format.name + " writes a quantized model; " +
                                       "the model has no QuantizeLinear/DequantizeLinear nodes " +
                                       "(run a \"quantize\" stage first)");
  }
  // Step 1: the graph as the format writes it (a copy only when it must change).
  std::optional<Graph> copy;
  const Graph* g = &graph;
  auto edit = [&]() -> Graph& {
    if (!copy) copy = graph.Clone();
    g = &*copy;
    return *copy;
  };
  if (format.strips_qdq && quantized) StripQuantization(edit());
  if (ShapesMissing(*g)) InferShapes(edit());

  // Step 2: INT8 formats: the target, proved on the weights before anything is written.
  ExportOutcome out;
  VerifyTolerance tol;
  Int8TargetCheck check;
  if (format.needs_quantized) {
    tol.mode = VerifyTolerance::Mode::kInt8;
    if (settings.target) out.retargeted = RetargetInt8(edit(), *settings.target);
    check = CheckInt8Target(*g, path);
    out.int8_target = Int8TargetName(check.target);
    if (!check.saturating.empty()) out.warnings.push_back(check.Warning());
  }

  // Step 3: write, verify in the format's runtime, rename.
  try {
    if (format.torchscript) {
      TorchScriptExportOptions ts;
      ts.real_int8 = format.real_int8;
      TorchScriptExportResult r;
      out.verify = WriteVerified(
          path, [&](const std::string& tmp) { r = SaveTorchScript(*g, tmp, ts); },
          [&](const std::string& tmp) {
            return VerifyTorchScriptFile(*g, tmp, samples, tol, ts.qengine);
          });
      out.int8 = TorchScriptInt8Execution(r);
      for (const auto& [layer, why] : r.fallback_layers) {
        out.warnings.push_back(layer + " stays fake-quant: " + why);
      }
    } else {
      out.verify = WriteVerified(
          path, [&](const std::string& tmp) { SaveOnnx(*g, tmp, settings.onnx); },
          [&](const std::string& tmp) { return VerifyOnnxInOrt(*g, tmp, samples, tol); });
      out.int8 = out.verify.int8;
      for (const auto& [layer, why] : out.int8.fallback) {
        out.warnings.push_back(FloatInOrtWarning(layer, why));
      }
    }
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::kNumeric || !format.needs_quantized) throw;
    const bool saturates = format.torchscript ? OnednnInt8PairsSaturate(CpuInt8())
                                              : OrtInt8PairsSaturate(CpuInt8());
    throw Error(e.kind(), e.what() + SaturationHint(check, saturates));
  }
  return out;
}

VerifyReport VerifyModelFile(const std::string& path, int64_t samples, uint64_t seed,
                             const std::function<void(const std::string&)>& warn,
                             std::string* int8_target) {
  std::optional<Int8TargetCheck> check;
  const Graph graph = LoadOnnx(path);
  if (HasQuantization(graph)) {
    check = CheckInt8Target(graph, path);
    if (!check->saturating.empty()) warn(check->Warning());
  }
  if (int8_target) *int8_target = check ? Int8TargetName(check->target) : "";
  VerifyReport report;
  try {
    report = VerifyOnnxFile(graph, path, samples, seed);
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::kNumeric || !check) throw;
    throw Error(e.kind(), e.what() + SaturationHint(*check, OrtInt8PairsSaturate(CpuInt8())));
  }
  for (const auto& [layer, why] : report.int8.fallback) warn(FloatInOrtWarning(layer, why));
  return report;
}

}  // namespace compress
