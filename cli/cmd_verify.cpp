// `mcompress verify`: runs an ONNX file through the ONNX checker, then ONNX Runtime and
// mcompress's executor on the same random inputs, and prints how close they agree.
#include <cstdio>
#include <iostream>

#include "cli/commands.h"
#include "compress/runtime/runtime_config.h"
#include "compress/engine/export.h"

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
    std::string target;
    const compress::VerifyReport r = compress::VerifyModelFile(
        args->model, args->samples, args->seed,
        [](const std::string& w) { std::fprintf(stderr, "warning: %s\n", w.c_str()); }, &target);
    if (!target.empty()) std::printf("INT8 target: %s\n", target.c_str());
    if (r.int8.quantized > 0) std::printf("%s\n", compress::Int8ExecutionSummary(r.int8).c_str());
    std::cout << compress::VerifySummary(r);
    std::printf("verified %s: ONNX checker passed; ONNX Runtime %s matches mcompress on %lld "
                "random samples\n",
                args->model.c_str(), r.ort_version.c_str(), static_cast<long long>(r.samples));
  });
}

}  // namespace cli
