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

namespace {

namespace fs = std::filesystem;

struct Result {
  int code;
  std::string output;  // stdout + stderr
};

// `env` ("NAME=value") is set for the one command.
Result RunCli(const std::string& args, const std::string& env = "") {
  const std::string cmd =
      (env.empty() ? "" : "env " + env + " ") + std::string(MCOMPRESS_CLI) + " " + args + " 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf;
  while (size_t n = fread(buf.data(), 1, buf.size(), pipe)) out.append(buf.data(), n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

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
  if (!fs::exists("/usr/bin/python3")) GTEST_SKIP() << "/usr/bin/python3 missing";
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

}  // namespace
