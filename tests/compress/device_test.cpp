// The device tests: training, evaluation, calibration (quantize and quantize-qat as
// the first stage, nothing having moved the graph yet), saving and verification on
// TestDevice() ($MCOMPRESS_TEST_DEVICE, default cpu). make test runs them on the CPU;
// ctest's gpu_device_tests runs them again with MCOMPRESS_TEST_DEVICE=cuda where a GPU
// is present (docs/gpu.md).
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>

#include "compress/io/onnx_io.h"
#include "compress/io/torchscript_export.h"
#include "compress/io/verify.h"
#include "compress/train/eval.h"
#include "compress/train/train.h"
#include "compress/zoo/zoo.h"
#include "tests/test_util.h"

namespace compress {
namespace {

namespace fs = std::filesystem;
using testing_util::FashionMnistSubset;
using testing_util::RunPassFromJson;
using testing_util::SplitsContext;
using testing_util::TestDevice;

// Whether every initializer (and mask / quantization tensor) of `g` is on a device of
// `device`'s type: what Graph::To promises and what each stage must leave behind.
::testing::AssertionResult AllOn(const Graph& g, const c10::Device& device) {
  for (const auto& [name, init] : g.initializers) {
    for (const Tensor* t : {&init.value, &init.mask}) {
      if (t->defined() && t->device().type() != device.type()) {
        return ::testing::AssertionFailure() << name << " is on " << t->device() << ", not "
                                             << device;
      }
    }
  }
  return ::testing::AssertionSuccess();
}

PassContext DeviceContext() {
  PassContext ctx = SplitsContext(FashionMnistSubset(512, 64, 256), 128, 256);
  ctx.device = TestDevice();
  return ctx;
}

TEST(Device, ExecutorOnTheDeviceMatchesTheCpu) {
  Graph cpu = BuildZoo("convnet", 3);
  Graph dev = cpu.Clone();
  dev.To(TestDevice());
  EXPECT_TRUE(AllOn(dev, TestDevice()));
  const Tensor x = FashionMnistSubset(512, 64, 256).test.inputs.slice(0, 0, 32);
  torch::NoGradGuard no_grad;
  const Tensor want = Executor(cpu).Run({x})[0];
  const Tensor got = Executor(dev).Run({x.to(TestDevice())})[0];
  EXPECT_EQ(got.device().type(), TestDevice().type());
  // TF32 convolutions on recent GPUs: about 1e-3 of the scale, not 1e-6.
  EXPECT_LT((got.cpu() - want).abs().max().item<double>() / want.abs().max().item<double>(),
            5e-3);
}

TEST(Device, TrainEvaluateAndSaveFromTheDevice) {
  const DatasetSplits& data = FashionMnistSubset(512, 64, 256);
  Graph g = BuildZoo("lenet5", 3);
  TrainOptions o;
  o.epochs = 1;
  o.batch_size = 64;
  o.optimizer.name = "adam";
  o.optimizer.lr = 0.002;
  o.progress = "off";
  Train(g, data.train, &data.validation, o, TestDevice());
  EXPECT_TRUE(AllOn(g, TestDevice()));
  const EvalResult on_device = Evaluate(g, data.test, 128, TestDevice());
  const EvalResult on_cpu = Evaluate(g, data.test, 128, c10::Device(c10::kCPU));
  EXPECT_GT(on_device.top1, 0.3);
  EXPECT_NEAR(on_device.top1, on_cpu.top1, 2.0 / data.test.size());  // a tie may flip
  // Saved straight from the device (SaveOnnx copies each tensor to the CPU), the graph
  // staying where it was.
  const fs::path file = fs::temp_directory_path() / ("mc_device_" + std::to_string(getpid()) + ".onnx");
  SaveOnnx(g, file.string());
  EXPECT_TRUE(AllOn(g, TestDevice()));
  const EvalResult loaded = Evaluate(LoadOnnx(file.string()), data.test, 128, c10::Device(c10::kCPU));
  EXPECT_EQ(loaded.top1, on_cpu.top1);
  fs::remove(file);
}

// A quantize-first recipe: the graph arrives on the CPU, the run's device is ctx.device.
TEST(Device, QuantizeFirstCalibratesOnTheRunDevice) {
  for (bool bias_correction : {false, true}) {
    Graph g = BuildZoo("convnet", 3);
    const PassResult r = RunPassFromJson("quantize", g, {{"bias_correction", bias_correction}},
                                         DeviceContext());
    EXPECT_TRUE(AllOn(g, TestDevice())) << "bias_correction " << bias_correction;
    EXPECT_EQ(r.stats.at("layers_quantized"), 4);
    // Untrained weights: a loose bound; what matters here is where it ran.
    EXPECT_LT(r.stats.at("output_rel_error"), 0.2);
  }
}

TEST(Device, QuantizeAccuracyAwareFirstRunsItsTrialsOnTheRunDevice) {
  Graph g = BuildZoo("convnet", 3);
  const PassResult r =
      RunPassFromJson("quantize", g, {{"max_accuracy_drop", 1.0}, {"eval_samples", 64}},
                      DeviceContext());
  EXPECT_TRUE(AllOn(g, TestDevice()));
  EXPECT_EQ(r.stats.at("accuracy_target_met"), 1);
}

// quantize-qat calibrates before its training moves the graph: the batches (drawn for
// ctx.device) follow the graph.
TEST(Device, QuantizeQatFirstCalibratesWhereTheGraphIs) {
  Graph g = BuildZoo("lenet5", 3);
  const PassResult r = RunPassFromJson("quantize-qat", g, {{"epochs", 1}}, DeviceContext());
  EXPECT_TRUE(AllOn(g, TestDevice()));
  EXPECT_GT(r.stats.at("layers_quantized"), 0);
}

// Verification runs our executor on the CPU by default, whatever device the graph is
// on, and on the device it is given otherwise.
TEST(Device, VerificationRunsTheExecutorWhereTheCallerSays) {
  Graph g = BuildZoo("convnet", 3);
  g.To(TestDevice());
  Graph cpu = g.Clone();
  cpu.To(c10::Device(c10::kCPU));
  const fs::path file = fs::temp_directory_path() / ("mc_device_" + std::to_string(getpid()) + ".pt");
  SaveTorchScript(cpu, file.string());
  const std::vector<Tensor> x = {FashionMnistSubset(512, 64, 256).test.inputs.slice(0, 0, 16)};
  // Each verification throws beyond its tolerance: the calls are the checks.
  const VerifyReport on_cpu = VerifyTorchScriptFile(g, file.string(), x);
  EXPECT_EQ(on_cpu.samples, 16);
  VerifyTolerance loose;  // TF32 convolutions on recent GPUs
  loose.rel = 5e-3;
  const VerifyReport on_device =
      VerifyTorchScriptFile(g, file.string(), x, loose, "onednn", TestDevice());
  EXPECT_EQ(on_device.samples, 16);
  EXPECT_TRUE(AllOn(g, TestDevice()));  // the caller's graph stays where it was
  fs::remove(file);
}

}  // namespace
}  // namespace compress
