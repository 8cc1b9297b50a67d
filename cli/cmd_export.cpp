// `mcompress export`: writes a model as ONNX (FP32 or INT8 QDQ) or TorchScript (FP32 /
// fake-quant, or real INT8) and proves the file in ONNX Runtime or LibTorch before it
// appears.
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "cli/commands.h"
#include "compress/model_source.h"
#include "compress/executor.h"
#include "compress/runtime_config.h"
#include "compress/torchscript_export.h"
#include "compress/verify.h"
#include "quantization/qdq.h"

namespace cli {

void AddExportCommand(CLI::App& app, const GlobalOptions& global) {
  struct Args {
    std::string model, format = "onnx", out;
    std::vector<std::string> shapes;
    bool no_sparse = false;
    int64_t samples = 8;
    uint64_t seed = 0;
  };
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand(
      "export", "Write a model as ONNX or TorchScript, verified in ONNX Runtime / LibTorch "
                "(written only if it passes)");
  cmd->add_option("model", args->model, "model.onnx, model.pt or zoo:<name>")->required();
  AddInputShapeOption(cmd, args->shapes);
  cmd->add_option("--format", args->format, "onnx (FP32; a quantized model without its Q/DQ), onnx-qdq (a "
                                            "quantized model as INT8 QDQ), torchscript (the "
                                            "model as is: FP32 or fake-quant) or "
                                            "torchscript-int8 (LibTorch INT8 kernels, ONEDNN)")
      ->check(CLI::IsMember({"onnx", "onnx-qdq", "torchscript", "torchscript-int8"}))
      ->capture_default_str();
  cmd->add_option("-o,--out", args->out, "output file")->required();
  cmd->add_flag("--no-sparse", args->no_sparse,
                "write every initializer dense (default: mostly-zero ones as sparse_initializer)");
  cmd->add_option("--samples", args->samples, "batch size of the random verification inputs")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--seed", args->seed, "seed of the random verification inputs")
      ->capture_default_str();
  cmd->callback([args, &global] {
    compress::ConfigureThreads(global.threads);
    compress::Graph graph = LoadCliModel(args->model, args->shapes);
    compress::VerifyTolerance tol;
    const bool quantized = compress::HasQuantization(graph);
    const bool int8 = args->format == "onnx-qdq" || args->format == "torchscript-int8";
    if (int8) {
      if (!quantized) {
        throw compress::Error(compress::ErrorKind::kUsage,
                              args->model + " has no QuantizeLinear/DequantizeLinear nodes; "
                              "--format " + args->format + " writes a quantized model (run a "
                              "recipe with a \"quantize\" stage first)");
      }
      tol.mode = compress::VerifyTolerance::Mode::kInt8;
    } else if (quantized && args->format == "onnx") {
      // --format onnx is FP32: the Q/DQ nodes go, weights keep their quantized values.
      compress::StripQuantization(graph);
    }
    compress::VerifyReport r;
    if (args->format == "torchscript" || args->format == "torchscript-int8") {
      if (graph.value_info.empty() && !graph.inputs.empty() && graph.inputs[0].shape) {
        compress::InferShapes(graph);
      }
      compress::TorchScriptExportOptions options;
      options.real_int8 = args->format == "torchscript-int8";
      compress::TorchScriptExportResult result;
      r = compress::ExportTorchScriptVerified(graph, args->out, options, args->samples,
                                              args->seed, tol, &result);
      if (options.real_int8) {
        std::printf("INT8 kernels (%s engine): %zu layers", options.qengine.c_str(),
                    result.int8_layers.size());
        for (const auto& l : result.int8_layers) std::printf(" %s", l.c_str());
        std::printf("\n");
      }
      for (const auto& [layer, why] : result.fallback_layers) {
        std::fprintf(stderr, "warning: %s stays fake-quant: %s\n", layer.c_str(), why.c_str());
      }
    } else {
      compress::OnnxExportOptions options;
      options.sparse = !args->no_sparse;
      r = compress::ExportOnnxVerified(std::move(graph), args->out, options, args->samples,
                                       args->seed, tol);
    }
    std::cout << compress::VerifySummary(r);
    std::printf("wrote %s (%lld bytes); verified in %s on %lld random samples\n",
                args->out.c_str(),
                static_cast<long long>(std::filesystem::file_size(args->out)),
                r.runtime.c_str(), static_cast<long long>(r.samples));
  });
}

}  // namespace cli
