// `mcompress export`: writes a model as ONNX and proves the file in ONNX Runtime before
// it appears. Other formats are accepted names that are not implemented yet.
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "cli/commands.h"
#include "compress/model_source.h"
#include "compress/runtime_config.h"
#include "compress/verify.h"

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
  cmd->add_option("--format", args->format, "onnx (onnx-qdq, torchscript, torchscript-int8: "
                                            "not supported yet)")
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
    if (args->format != "onnx") {
      throw compress::Error(compress::ErrorKind::kUnsupported,
                            "export format '" + args->format +
                                "' is not supported yet; use --format onnx");
    }
    compress::ConfigureThreads(global.threads);
    compress::Graph graph = compress::LoadModel(args->model);
    compress::OnnxExportOptions options;
    options.sparse = !args->no_sparse;
    const compress::VerifyReport r = compress::ExportOnnxVerified(
        std::move(graph), args->out, options, args->samples, args->seed);
    std::cout << compress::VerifySummary(r);
    std::printf("wrote %s (%lld bytes); verified in ONNX Runtime %s on %lld random samples\n",
                args->out.c_str(),
                static_cast<long long>(std::filesystem::file_size(args->out)),
                r.ort_version.c_str(), static_cast<long long>(r.samples));
  });
}

}  // namespace cli
