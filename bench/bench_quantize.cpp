// Quantizes a model for the latency benchmarks when no recipe fits its input (e.g. an
// imported torchvision resnet18 at 3x224x224): calibrates `quantize` (default options)
// on seeded standard-normal inputs of the model's shape, writes fp32.onnx and int8.onnx
// (QDQ) into OUTDIR, and checks int8.onnx in ONNX Runtime under the INT8 rule.
// Usage: bench_quantize MODEL OUTDIR [--input-shape 1,3,224,224] [--samples 64]
//          [--options JSON]   (quantize's options, e.g. '{"latency_fallback": {"batch": 1}}')
//          [--bisect]         (first print every quantized activation's distance from ONNX
//                              Runtime's, in steps: compress/io/verify.h, BisectInt8)
#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <iostream>

#include "compress/base/error.h"
#include "compress/engine/export.h"
#include "compress/engine/model_source.h"
#include "compress/io/onnx_io.h"
#include "compress/registry/registry.h"
#include "compress/runtime/runtime_config.h"
#include "compress/io/verify.h"

int main(int argc, char** argv) {
  CLI::App app("Quantize a model on synthetic calibration data and write FP32 + QDQ ONNX");
  std::string model, out, shape;
  int64_t samples = 64;
  app.add_option("model", model, "zoo:<name>, .onnx or .pt")->required();
  app.add_option("outdir", out, "output folder")->required();
  app.add_option("--input-shape", shape, "input shape for .pt models, e.g. 1,3,224,224");
  app.add_option("--samples", samples, "calibration samples")->capture_default_str();
  std::string options = "{}";
  bool bisect = false;
  app.add_flag("--bisect", bisect, "print each quantized activation's distance from ONNX Runtime's");
  app.add_option("--options", options, "quantize's options as a JSON object")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    compress::ConfigureThreads(0);
    compress::ModelLoadOptions lo;
    if (!shape.empty()) lo.input_shapes = {compress::ParseShape(shape)};
    compress::Graph g = compress::LoadModel(model, lo);
    std::filesystem::create_directories(out);
    compress::SaveOnnx(g, out + "/fp32.onnx");

    std::vector<int64_t> dims = *g.inputs.at(0).shape;
    dims[0] = samples;
    torch::manual_seed(0);
    compress::DatasetSplits data;
    data.train.inputs = torch::randn(dims);
    data.train.targets = torch::zeros({samples}, torch::kLong);
    compress::PassContext ctx;
    ctx.log = [](const std::string& line) { std::printf("%s\n", line.c_str()); };
    ctx.data = &data;
    ctx.calibration_samples = samples;
    ctx.batch_size = 16;
    std::vector<compress::Problem> problems;
    nlohmann::json json_options;
    try {
      json_options = nlohmann::json::parse(options);
    } catch (const nlohmann::json::exception& e) {
      throw compress::Error(compress::ErrorKind::kUsage, "--options: not valid JSON: " +
                                                             std::string(e.what()));
    }
    compress::OptionReader reader(json_options, "quantize", &problems);
    auto pass = compress::FindPass("quantize")->create(reader);
    reader.Finish();
    if (!problems.empty()) {
      throw compress::Error(compress::ErrorKind::kUsage,
                            problems[0].path + ": " + problems[0].message);
    }
    const auto t0 = std::chrono::steady_clock::now();
    const compress::PassResult r = pass->Run(g, ctx);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("quantize: %g layers int8, %g activations, output rel error %.4f, %.1f s\n",
                r.stats.at("layers_quantized"), r.stats.at("activations_quantized"),
                r.stats.at("output_rel_error"), secs);
    for (const auto& s : r.skipped) std::printf("  skipped %s: %s\n", s.layer.c_str(), s.reason.c_str());
    if (bisect) {
      for (const auto& row : compress::BisectInt8(g, g, compress::RandomInputs(g, 8, 1))) {
        std::printf("  %-36s step %.5f: end to end up to %.0f steps (%.3f%% beyond one); from "
                    "the same integers up to %.0f (%.3f%%)\n",
                    row.value.c_str(), row.scale, row.max_steps, 100 * row.beyond_one,
                    row.local_max_steps, 100 * row.local_beyond_one);
      }
    }
    const compress::ExportOutcome o =
        compress::ExportModel(g, out + "/int8.onnx", *compress::FindExportFormat("onnx-qdq"), {},
                              compress::RandomInputs(g, 8, 1));
    std::cout << compress::VerifySummary(o.verify);
    std::printf("wrote %s/fp32.onnx (%lld bytes) and %s/int8.onnx (%lld bytes)\n", out.c_str(),
                static_cast<long long>(std::filesystem::file_size(out + "/fp32.onnx")), out.c_str(),
                static_cast<long long>(std::filesystem::file_size(out + "/int8.onnx")));
  } catch (const compress::Error& e) {
    std::fprintf(stderr, "bench_quantize: %s\n", e.what());
    return 1;
  }
  return 0;
}
