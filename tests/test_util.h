// Helpers shared by the test files.
#pragma once

#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "compress/base/error.h"
#include "compress/data/data.h"
#include "compress/io/onnx_io.h"
#include "compress/io/verify.h"
#include "compress/runtime/executor.h"
#include "compress/registry/registry.h"
#include "compress/runtime/runtime_config.h"

namespace compress::testing_util {

// The device the Device.* tests run on: $MCOMPRESS_TEST_DEVICE (auto, cpu, cuda or
// cuda:N; default cpu), resolved as a recipe's device is. ctest's gpu_device_tests sets
// it to cuda on a machine with a GPU; a device this build or machine cannot provide
// throws, failing the test (no silent fallback to the CPU).
inline c10::Device TestDevice() {
  const char* spec = std::getenv("MCOMPRESS_TEST_DEVICE");
  return ResolveDevice(spec != nullptr && *spec != '\0' ? spec : "cpu");
}

// Fashion-MNIST (Debian's dataset-fashion-mnist, seed-0 split) cut to `train` training,
// `validation` validation and `test` test samples; each size is loaded once per binary.
inline const DatasetSplits& FashionMnistSubset(int64_t train, int64_t validation, int64_t test) {
  static std::map<std::array<int64_t, 3>, DatasetSplits> loaded;
  const std::array<int64_t, 3> key{train, validation, test};
  auto it = loaded.find(key);
  if (it == loaded.end()) {
    FashionMnistOptions o;
    o.train_limit = train;
    o.validation_size = validation;
    o.test_limit = test;
    it = loaded.emplace(key, LoadFashionMnist(o)).first;
  }
  return it->second;
}

// A pass context on `data` with batches of `batch_size`, `calibration` calibration
// samples, no progress output and the engine's after-step hook (masks re-applied).
inline PassContext SplitsContext(const DatasetSplits& data, int64_t batch_size,
                                 int64_t calibration = 512) {
  PassContext ctx;
  ctx.data = &data;
  ctx.batch_size = batch_size;
  ctx.calibration_samples = calibration;
  ctx.progress = "quiet";
  ctx.after_step = [](Graph& g) { g.ApplyMasks(); };
  return ctx;
}

// Expects `fn()` to throw compress::Error of `kind` whose message contains `substring`.
template <typename Fn>
void ExpectError(Fn fn, ErrorKind kind, const std::string& substring) {
  try {
    fn();
    ADD_FAILURE() << "expected an error containing: " << substring;
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    EXPECT_NE(std::string(e.what()).find(substring), std::string::npos)
        << "message: " << e.what() << "\nexpected to contain: " << substring;
  }
}

// Builds pass `name` from `options` through the registry (as a recipe stage at
// "stages[0]") and runs it on `graph`. Option problems throw Error(kRecipe) with the
// first problem's path and message.
inline PassResult RunPassFromJson(const std::string& name, Graph& graph,
                                  const nlohmann::json& options, PassContext ctx = {}) {
  const PassEntry* entry = FindPass(name);
  if (entry == nullptr) throw Error(ErrorKind::kInternal, "no pass " + name);
  std::vector<Problem> problems;
  OptionReader reader(options, "stages[0]", &problems);
  auto pass = entry->create(reader);
  reader.Finish();
  if (!problems.empty()) {
    throw Error(ErrorKind::kRecipe, problems[0].path + ": " + problems[0].message);
  }
  return pass->Run(graph, ctx);
}

// The differential check every pass test uses (STYLE 7): runs pass `name` with
// `options` on a copy of `graph` and compares its outputs with the unpassed graph's on
// the same seeded random inputs (batch `batch`). Returns the largest |Δ| over all
// outputs divided by max(max |reference|, 1); `result` (optional) receives the pass's
// result and `passed` (optional) the passed graph.
inline double PassOutputDiff(const std::string& name, const Graph& graph,
                             const nlohmann::json& options, const PassContext& ctx,
                             int64_t batch = 4, PassResult* result = nullptr,
                             Graph* passed = nullptr) {
  Graph g = graph.Clone();
  PassResult r = RunPassFromJson(name, g, options, ctx);
  const std::vector<Tensor> inputs = RandomInputs(graph, batch, 1234);
  at::NoGradGuard no_grad;
  const std::vector<Tensor> want = Executor(graph).Run(inputs);
  const std::vector<Tensor> got = Executor(g).Run(inputs);
  double worst = 0;
  for (size_t k = 0; k < want.size(); ++k) {
    const double scale = std::max(1.0, want[k].abs().max().item<double>());
    worst = std::max(worst, (got[k] - want[k]).abs().max().item<double>() / scale);
  }
  if (result) *result = std::move(r);
  if (passed) *passed = std::move(g);
  return worst;
}

// Saves `graph` as `name`.onnx in a fresh temporary folder and verifies the file in
// ONNX Runtime on `inputs` under the INT8 rule (one quantization step on 99.9% of the
// outputs, the same top-1 on 99.5%): VerifyOnnxInOrt throws, failing the test, when it
// does not hold. `read_back` (optional) receives the saved file loaded again. The folder
// is removed either way.
inline VerifyReport VerifyInt8InOrt(const Graph& graph, const std::string& name,
                                    const Tensor& inputs, Graph* read_back = nullptr) {
  namespace fs = std::filesystem;
  const fs::path dir =
      fs::temp_directory_path() / ("mc_int8_" + name + "_" + std::to_string(getpid()));
  fs::create_directories(dir);
  try {
    const std::string path = (dir / (name + ".onnx")).string();
    SaveOnnx(graph, path);
    VerifyTolerance tol;
    tol.mode = VerifyTolerance::Mode::kInt8;
    VerifyReport report = VerifyOnnxInOrt(graph, path, {inputs}, tol);
    if (read_back) *read_back = LoadOnnx(path);
    fs::remove_all(dir);
    return report;
  } catch (...) {
    fs::remove_all(dir);
    throw;
  }
}

}  // namespace compress::testing_util
