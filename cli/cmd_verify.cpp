// `mcompress verify`: runs an ONNX file through the ONNX checker, then ONNX Runtime and
// mcompress's executor on the same random inputs, and prints how close they agree.
#include <cstdio>
#include <iostream>
#include <optional>

#include "cli/commands.h"
#include "compress/runtime/cpu_info.h"
#include "compress/io/onnx_io.h"
#include "compress/runtime/runtime_config.h"
#include "compress/io/verify.h"
#include "quantization/int8_target.h"
#include "quantization/qdq.h"

namespace cli {

void AddVerifyCommand(CLI::App& app, const GlobalOptions& global) {
  struct Args {
    std::string model;
    int64_t samples = 8;
    uint64_t seed = 0;
  };
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand(
      "verify", "Check an ONNX file (ONNX checker) and compare ONNX Runtime with mcompress on it");
  cmd->add_option("model", args->model, "model.onnx")->required();
  cmd->add_option("--samples", args->samples, "batch size of the random inputs")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--seed", args->seed, "seed of the random inputs")->capture_default_str();
  cmd->callback([args, &global] {
    compress::ConfigureThreads(global.threads);
    // A QDQ file: the static int16 proof of its INT8 target first.
    std::optional<compress::Int8TargetCheck> check;
    const compress::Graph graph = compress::LoadOnnx(args->model);
    if (compress::HasQuantization(graph)) {
      check = compress::CheckInt8Target(graph, args->model);
      if (!check->saturating.empty()) std::fprintf(stderr, "warning: %s\n", check->Warning().c_str());
    }
    compress::VerifyReport r;
    try {
      r = compress::VerifyOnnxFile(args->model, args->samples, args->seed);
    } catch (const compress::Error& e) {
      if (e.kind() != compress::ErrorKind::kNumeric || !check) throw;
      throw compress::Error(e.kind(), e.what() + compress::SaturationHint(
                                          *check, compress::OrtInt8PairsSaturate(compress::CpuInt8())));
    }
    if (check) std::printf("INT8 target: %s\n", compress::Int8TargetName(check->target));
    std::cout << compress::VerifySummary(r);
    std::printf("verified %s: ONNX checker passed; ONNX Runtime %s matches mcompress on %lld "
                "random samples\n",
                args->model.c_str(), r.ort_version.c_str(), static_cast<long long>(r.samples));
  });
}

}  // namespace cli
