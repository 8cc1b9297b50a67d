// `mcompress export`: writes a model in one of the export formats (compress/engine/export.h)
// and proves the file in ONNX Runtime or LibTorch before it appears.
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "cli/commands.h"
#include "compress/engine/export.h"
#include "compress/engine/model_source.h"
#include "compress/runtime/runtime_config.h"

namespace cli {

void AddExportCommand(CLI::App& app, const GlobalOptions& global) {
  struct Args {
    std::string model, format = "onnx", out, target;
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
  std::string formats;
  for (const auto& f : compress::ExportFormats()) {
    formats += (formats.empty() ? "" : "; ") + f.name + ": " + f.doc;
  }
  cmd->add_option("--format", args->format, formats)
      ->check(CLI::IsMember(compress::ExportFormatNames()))
      ->capture_default_str();
  cmd->add_option("--target", args->target,
                  "INT8 formats: re-quantize weights for this INT8 target first: portable "
                  "(weights in [-64, 64], right on every CPU) or full_range ([-127, 127], "
                  "VNNI/AMX/ARM/GPU only); default: the model's own")
      ->check(CLI::IsMember(compress::Int8TargetNames()));
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
    const compress::ExportFormat& format = *compress::FindExportFormat(args->format);
    if (!args->target.empty() && !format.needs_quantized) {
      throw compress::Error(compress::ErrorKind::kUsage,
                            "--target applies to the INT8 formats (onnx-qdq, torchscript-int8), "
                            "not --format " + args->format);
    }
    const compress::Graph graph = LoadCliModel(args->model, args->shapes);
    compress::ExportSettings settings;
    settings.onnx.sparse = !args->no_sparse;
    if (!args->target.empty()) settings.target = compress::ParseInt8Target(args->target);
    const compress::ExportOutcome o = compress::ExportModel(
        graph, args->out, format, settings, compress::RandomInputs(graph, args->samples, args->seed));
    for (const auto& w : o.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
    if (format.real_int8) {
      std::printf("INT8 kernels (onednn engine): %zu layers", o.int8.integer.size());
      for (const auto& l : o.int8.integer) std::printf(" %s", l.c_str());
      std::printf("\n");
    } else if (o.int8.quantized > 0) {
      std::printf("%s\n", compress::Int8ExecutionSummary(o.int8).c_str());
    }
    if (!o.int8_target.empty()) {
      std::printf("INT8 target: %s", o.int8_target.c_str());
      if (settings.target) std::printf(" (%lld weight tensors re-quantized)", static_cast<long long>(o.retargeted));
      std::printf("\n");
    }
    std::cout << compress::VerifySummary(o.verify);
    std::printf("wrote %s (%lld bytes); verified in %s on %lld random samples\n",
                args->out.c_str(),
                static_cast<long long>(std::filesystem::file_size(args->out)),
                o.verify.runtime.c_str(), static_cast<long long>(o.verify.samples));
  });
}

}  // namespace cli
