// `mcompress export`: writes a model as ONNX (FP32 or INT8 QDQ) and proves the file in
// ONNX Runtime before it appears.
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "cli/commands.h"
#include "compress/model_source.h"
#include "compress/runtime_config.h"
#include "compress/verify.h"
#include "quantization/qdq.h"

namespace cli {

void AddExportCommand(CLI::App& app, const GlobalOptions& global) {
  struct Args {
    std::string model, format = "onnx", out;
    bool no_sparse = false;
    int64_t samples = 8;
    uint64_t seed = 0;
  };
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand(
      "export", "Write a model as ONNX, verified in ONNX Runtime (written only if it passes)");
  cmd->add_option("model", args->model, "model.onnx or zoo:<name>")->required();
  cmd->add_option("--format", args->format, "onnx (FP32; a quantized model without its Q/DQ) or onnx-qdq (a "
                                            "quantized model as INT8 QDQ); torchscript and "
                                            "torchscript-int8: not supported yet")
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
    if (args->format == "torchscript" || args->format == "torchscript-int8") {
      throw compress::Error(compress::ErrorKind::kUnsupported,
                            "export format '" + args->format +
                                "' is not supported yet; use --format onnx or onnx-qdq");
    }
    compress::ConfigureThreads(global.threads);
    compress::Graph graph = compress::LoadModel(args->model);
    compress::VerifyTolerance tol;
    const bool quantized = compress::HasQuantization(graph);
    if (args->format == "onnx-qdq") {
      if (!quantized) {
        throw compress::Error(compress::ErrorKind::kUsage,
                              args->model + " has no QuantizeLinear/DequantizeLinear nodes; "
                              "--format onnx-qdq writes a quantized model (run a recipe with a "
                              "\"quantize\" stage first)");
      }
      tol.mode = compress::VerifyTolerance::Mode::kInt8;
    } else if (quantized) {
      // --format onnx is FP32: the Q/DQ nodes go, weights keep their quantized values.
      compress::StripQuantization(graph);
    }
    compress::OnnxExportOptions options;
    options.sparse = !args->no_sparse;
    const compress::VerifyReport r = compress::ExportOnnxVerified(
        std::move(graph), args->out, options, args->samples, args->seed, tol);
    std::cout << compress::VerifySummary(r);
    std::printf("wrote %s (%lld bytes); verified in ONNX Runtime %s on %lld random samples\n",
                args->out.c_str(),
                static_cast<long long>(std::filesystem::file_size(args->out)),
                r.ort_version.c_str(), static_cast<long long>(r.samples));
  });
}

}  // namespace cli
