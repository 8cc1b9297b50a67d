// `mcompress export` and `mcompress verify` end to end: verified ONNX and TorchScript
// exports, and one-line errors for bad formats and files. (INT8 exports of quantized
// models: tests/quantization/quantize_test.cpp.)
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <torch/torch.h>

#include "compress/runtime/cpu_info.h"
#include "compress/io/onnx_io.h"
#include "compress/zoo/zoo.h"
#include "quantization/fold_batchnorm.h"
#include "quantization/qdq.h"
#include "quantization/quantize.h"
#include "tests/cli_util.h"

namespace {

namespace fs = std::filesystem;

using compress::cli_test::Result;
using compress::cli_test::RunCli;

int Lines(const std::string& s) { return static_cast<int>(std::count(s.begin(), s.end(), '\n')); }
bool Has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

class CliExport : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("mc_cli_export_" + std::string(info->name()) + "_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

TEST_F(CliExport, ExportThenVerify) {
  const std::string out = Path("lenet5.onnx");
  Result e = RunCli("export zoo:lenet5 --format onnx -o " + out);
  ASSERT_EQ(e.code, 0) << e.output;
  EXPECT_TRUE(Has(e.output, "logits [8,10]: max |Δ|")) << e.output;
  EXPECT_TRUE(Has(e.output, "verified in onnxruntime-node")) << e.output;
  EXPECT_TRUE(fs::exists(out));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1)
      << "no temporary files left";

  Result v = RunCli("verify " + out + " --samples 3 --seed 5");
  ASSERT_EQ(v.code, 0) << v.output;
  EXPECT_TRUE(Has(v.output, "logits [3,10]: max |Δ|")) << v.output;
  EXPECT_TRUE(Has(v.output, "ONNX checker passed")) << v.output;

  Result dense = RunCli("export " + out + " -o " + Path("dense.onnx") + " --no-sparse --samples 2");
  EXPECT_EQ(dense.code, 0) << dense.output;
}

TEST_F(CliExport, TorchScriptAndBadFormats) {
  // A float model as TorchScript: written, loaded back with torch::jit::load, compared.
  Result ts = RunCli("export zoo:lenet5 --format torchscript -o " + Path("m.pt") + " --samples 4");
  EXPECT_EQ(ts.code, 0) << ts.output;
  EXPECT_TRUE(Has(ts.output, "verified in LibTorch")) << ts.output;
  EXPECT_TRUE(Has(ts.output, "logits [4,10]: max |Δ| 0 ")) << ts.output;  // bit-exact
  EXPECT_TRUE(fs::exists(Path("m.pt")));
  EXPECT_EQ(RunCli("export zoo:lenet5 --format tflite -o " + Path("m")).code, 2);
  // A float model has nothing to write as INT8: a usage error that says what to do.
  for (const char* format : {"onnx-qdq", "torchscript-int8"}) {
    Result q = RunCli("export zoo:lenet5 --format " + std::string(format) + " -o " + Path("m"));
    EXPECT_EQ(q.code, 2) << q.output;
    EXPECT_EQ(Lines(q.output), 1) << q.output;
    EXPECT_TRUE(Has(q.output, "has no QuantizeLinear/DequantizeLinear nodes")) << q.output;
    EXPECT_FALSE(fs::exists(Path("m")));
  }
}

// TorchScript files need their input shape: inspect, export (and eval/infer) take
// --input-shape like import does.
TEST_F(CliExport, TorchScriptModelsTakeInputShape) {
  ASSERT_TRUE(fs::exists("/usr/bin/python3")) << "/usr/bin/python3 missing; make test installs it (tools/deps.sh)";
  const std::string pt = Path("small.pt");
  const std::string script =
      "import torch; torch.manual_seed(0); "
      "m = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), "
      "torch.nn.Linear(4 * 26 * 26, 10)).eval(); "
      "torch.jit.trace(m, torch.randn(1, 1, 28, 28)).save('" + pt + "')";
  ASSERT_EQ(std::system(("/usr/bin/python3 -c \"" + script + "\"").c_str()), 0);
  Result i = RunCli("inspect " + pt + " --input-shape 1,1,28,28");
  EXPECT_EQ(i.code, 0) << i.output;
  EXPECT_TRUE(Has(i.output, "Conv x1, Flatten x1, Gemm x1, Relu x1")) << i.output;
  Result e = RunCli("export " + pt + " --input-shape 1,1,28,28 --format torchscript -o " +
                    Path("back.pt") + " --samples 3");
  EXPECT_EQ(e.code, 0) << e.output;
  EXPECT_TRUE(Has(e.output, "verified in LibTorch")) << e.output;
  Result missing = RunCli("inspect " + pt);
  EXPECT_EQ(missing.code, 2) << missing.output;
  EXPECT_EQ(Lines(missing.output), 1) << missing.output;
  EXPECT_TRUE(Has(missing.output, "needs the shape of each input")) << missing.output;
}

TEST_F(CliExport, VerifyBadFileIsOneLineExitOne) {
  {
    std::ofstream f(Path("junk.onnx"), std::ios::binary);
    f << "definitely not protobuf";
  }
  Result r = RunCli("verify " + Path("junk.onnx"));
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(Lines(r.output), 1) << r.output;
  EXPECT_TRUE(Has(r.output, "junk.onnx")) << r.output;
}

TEST_F(CliExport, MissingNodeLeavesNoFile) {
  Result r = RunCli("export zoo:lenet5 -o " + Path("x.onnx"), "MCOMPRESS_NODE=/nonexistent/node");
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(Lines(r.output), 1) << r.output;
  EXPECT_TRUE(Has(r.output, "run `make deps`")) << r.output;
  EXPECT_TRUE(fs::is_empty(dir_)) << "no output or temporary file";
}


// The zoo convnet (random weights, BN folded) quantized for `target`, calibrated on
// seeded noise, written as QDQ ONNX.
void WriteQdqConvnet(const std::string& path, compress::Int8Target target) {
  using namespace compress;
  Graph g = BuildZoo("convnet", 3);
  FoldBatchNorm(g);
  const QdqPlan plan = PlanQdq(g, LayerFilter{});
  torch::manual_seed(4);
  const auto params = Calibrate(g, plan, {torch::randn({64, 1, 28, 28})}, CalibrationMethod::kMinMax,
                                99.99, at::kByte);
  QdqOptions o;
  o.target = target;
  ApplyQdq(g, plan, params, o);
  SaveOnnx(g, path);
}

// Full-range INT8 weights: `export --target portable` re-quantizes them; the verifiers
// name the target, warn about full-range layers, and where the kernels saturate (here:
// oneDNN's AVX2 kernels, forced by ONEDNN_MAX_CPU_ISA on any x86 CPU) the error names
// the final file and the option that fixes it.
TEST_F(CliExport, Int8TargetsAreProvedRecordedAndRetargeted) {
  const std::string full = Path("full.onnx");
  WriteQdqConvnet(full, compress::Int8Target::kFullRange);

  Result v = RunCli("verify " + full);
  EXPECT_TRUE(Has(v.output, "warning: full_range INT8 weights: 4 of 4 integer layers can exceed int16")) << v.output;
  if (v.code == 0) {
    EXPECT_TRUE(Has(v.output, "INT8 target: full_range")) << v.output;
  } else {
    // Only a CPU whose ONNX Runtime kernels saturate may disagree, and it must say why.
    EXPECT_TRUE(compress::OrtInt8PairsSaturate(compress::CpuInt8())) << v.output;
    EXPECT_TRUE(Has(v.output, "--target portable")) << v.output;
  }

  const std::string portable = Path("portable.onnx");
  Result e = RunCli("export " + full + " --format onnx-qdq --target portable -o " + portable);
  ASSERT_EQ(e.code, 0) << e.output;
  EXPECT_TRUE(Has(e.output, "INT8 target: portable (4 weight tensors re-quantized)")) << e.output;
  EXPECT_FALSE(Has(e.output, "warning")) << e.output;
  EXPECT_EQ(compress::LoadOnnx(portable).metadata.at(compress::kInt8TargetKey), "portable");
  Result vp = RunCli("verify " + portable);
  EXPECT_EQ(vp.code, 0) << vp.output;
  EXPECT_TRUE(Has(vp.output, "INT8 target: portable")) << vp.output;

  // oneDNN's AVX2 kernels (what an AVX2-only CPU runs) on the full-range file.
  const std::string avx2 = "ONEDNN_MAX_CPU_ISA=AVX2";
  Result cpu = RunCli("cpu", avx2);
  EXPECT_EQ(cpu.code, 0) << cpu.output;
  EXPECT_TRUE(Has(cpu.output, "oneDNN ISA: avx2; ONEDNN_MAX_CPU_ISA=AVX2")) << cpu.output;
  const std::string pt = Path("full.pt");
  Result f = RunCli("export " + full + " --format torchscript-int8 -o " + pt + " --samples 32", avx2);
  EXPECT_EQ(f.code, 1) << f.output;
  EXPECT_TRUE(Has(f.output, "mcompress: numeric error: " + pt + ": output 'logits' differs")) << f.output;
  EXPECT_TRUE(Has(f.output, "saturating int16")) << f.output;
  EXPECT_TRUE(Has(f.output, "mcompress export --target portable")) << f.output;
  EXPECT_FALSE(fs::exists(pt));
  Result p = RunCli("export " + full + " --format torchscript-int8 --target portable -o " + pt +
                        " --samples 32", avx2);
  EXPECT_EQ(p.code, 0) << p.output;
  EXPECT_TRUE(fs::exists(pt));

  // --target is for INT8 formats only.
  Result bad = RunCli("export " + full + " --format onnx --target portable -o " + Path("x.onnx"));
  EXPECT_EQ(bad.code, 2) << bad.output;
  EXPECT_TRUE(Has(bad.output, "--target applies to the INT8 formats")) << bad.output;
}

}  // namespace

namespace {

// A recipe's INT8 export that fails verification names the final file, not the
// temporary output folder, says why (oneDNN's AVX2 kernels, forced, saturate the
// full-range weights of an untrained convnet by a wide margin) and leaves no output
// folder; the portable target passes on the same kernels.
TEST_F(CliExport, RecipeInt8ExportErrorNamesTheFinalPathAndTheFix) {
  const std::string recipe = Path("r.json");
  std::ofstream(recipe) << R"({
    "model": "zoo:convnet",
    "data": {"batch_size": 64, "validation_size": 100, "train_limit": 300, "test_limit": 200,
             "calibration_samples": 128},
    "device": "cpu", "seed": 0,
    "stages": [{"pass": "quantize", "target": "full_range"}],
    "exports": [{"format": "torchscript-int8", "path": "m.pt"}],
    "report": {"formats": ["json"], "latency": false}
  })";
  const std::string out = Path("out");
  const std::string avx2 = "ONEDNN_MAX_CPU_ISA=AVX2";
  Result r = RunCli("run " + recipe + " --out " + out + " --progress quiet", avx2);
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(Has(r.output, "export m.pt: " + out + "/m.pt: output 'logits' differs")) << r.output;
  EXPECT_FALSE(Has(r.output, ".tmp-")) << r.output;
  EXPECT_TRUE(Has(r.output, "quantize with \"target\": \"portable\"")) << r.output;
  EXPECT_FALSE(fs::exists(out));
  Result p = RunCli("run " + recipe + " --out " + out + " --progress quiet --set stages[0].target=portable", avx2);
  EXPECT_EQ(p.code, 0) << p.output;
  EXPECT_TRUE(fs::exists(out + "/m.pt"));
}

}  // namespace
