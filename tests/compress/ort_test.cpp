// Exports proven in ONNX Runtime: every zoo model within 1e-4, sparse initializers
// (smaller, exact in ORT, exact on re-import), metadata, and the errors for corrupt
// files, tampered weights, a missing runtime and a model ORT rejects; the pure output
// comparison on crafted tensors (FP32 and INT8 rules).
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <sstream>

#include "compress/zoo/builder.h"
#include "compress/runtime/executor.h"
#include "compress/io/onnx_io.h"
#include "compress/io/ort_runner.h"
#include "compress/engine/export.h"
#include "compress/engine/recipe.h"
#include "compress/runtime/runtime_config.h"
#include "compress/io/verify.h"
#include "compress/zoo/zoo.h"
#include "pruning/magnitude.h"
#include "tests/test_util.h"

namespace compress {
namespace {

namespace fs = std::filesystem;
using testing_util::ExpectError;

class Ort : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("mc_ort_" + std::string(info->name()) + "_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

// Sets an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    ::setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (old_) ::setenv(name_, old_->c_str(), 1);
    else ::unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteAll(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}

Graph Zoo(const std::string& name, uint64_t seed = 1) {
  Graph g = BuildZoo(name, seed);
  if (g.value_info.empty()) InferShapes(g);
  return g;
}

// The mlp with 90% of each Gemm weight pruned (masks applied, as the pruning pass does).
Graph PrunedMlp() {
  Graph g = Zoo("mlp-300-100");
  for (const auto& node : g.nodes) {
    if (node.op_type != "Gemm") continue;
    Initializer& w = g.initializers.at(node.inputs[1]);
    w.mask = MagnitudeMask(w.value, 0.9);
  }
  g.ApplyMasks();
  return g;
}

Tensor Images(int64_t n, uint64_t seed = 7) {
  return RandomInputs(Zoo("lenet5"), n, seed)[0];
}

// ---- ONNX Runtime against our executor ------------------------------------------------

TEST_F(Ort, EveryZooModelMatchesWithin1e4) {
  const Tensor x = Images(16);
  for (const auto& entry : ZooModels()) {
    SCOPED_TRACE(entry.name);
    Graph g = Zoo(entry.name);
    const std::string file = Path(entry.name + ".onnx");
    SaveOnnx(g, file);
    VerifyReport r = VerifyOnnxInOrt(g, file, {x});  // throws beyond rel 1e-4
    ASSERT_EQ(r.outputs.size(), 1u);
    EXPECT_EQ(r.outputs[0].name, "logits");
    EXPECT_EQ(r.samples, 16);
    // The report's figure, recomputed here from both runtimes' outputs.
    const Tensor ours = Executor(g).Run({x})[0];
    const Tensor theirs = RunInOrt(file, {x})[0];
    const double scale = std::max(1.0, ours.abs().max().item<double>());
    EXPECT_NEAR(r.max_rel_diff, (ours - theirs).abs().max().item<double>() / scale, 1e-9);
    EXPECT_EQ(r.top1_agreement, 1.0);
    EXPECT_FALSE(r.ort_version.empty());
    EXPECT_EQ(r.int8.quantized, 0);  // an FP32 file: integer kernels are not measured
    std::printf("[ zoo ] %-15s max |diff| %.3g  rel %.3g  top-1 %.4f  ORT %.2f s  %lld bytes\n",
                entry.name.c_str(), r.max_abs_diff, r.max_rel_diff, r.top1_agreement,
                r.ort_seconds, static_cast<long long>(fs::file_size(file)));
  }
}

TEST_F(Ort, RunInOrtReturnsOutputsAndBench) {
  Graph g = Zoo("lenet5");
  const std::string file = Path("lenet5.onnx");
  SaveOnnx(g, file);
  OrtOptions o;
  o.bench_runs = 5;
  o.bench_warmup = 1;
  const auto t0 = std::chrono::steady_clock::now();
  OrtRun run = RunOrt(file, {Images(2)}, o);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(run.outputs.size(), 1u);
  EXPECT_EQ(run.output_names, std::vector<std::string>{"logits"});
  EXPECT_EQ(run.outputs[0].sizes(), (std::vector<int64_t>{2, 10}));
  EXPECT_EQ(run.outputs[0].scalar_type(), at::kFloat);
  EXPECT_EQ(run.latency.runs, 5);
  EXPECT_EQ(run.latency.latencies_ms.size(), 5u);
  EXPECT_GT(run.latency.median_ms, 0);
  EXPECT_LE(run.latency.min_ms, run.latency.median_ms);
  std::printf("[ ort ] one node + ONNX Runtime spawn (lenet5, 7 runs): %.2f s; median %.3f ms\n",
              seconds, run.latency.median_ms);
}

// ---- sparse initializers + metadata -------------------------------------------------

TEST_F(Ort, SparseExportIsSmallerExactInOrtAndOnReimport) {
  const Graph g = PrunedMlp();
  OnnxExportOptions dense_options;
  dense_options.sparse = false;
  const std::string dense = Path("dense.onnx"), sparse = Path("sparse.onnx");
  SaveOnnx(g, dense, dense_options);
  SaveOnnx(g, sparse);  // sparse is the default
  const double factor = static_cast<double>(fs::file_size(dense)) / fs::file_size(sparse);
  std::printf("[ sparse ] 90%%-pruned mlp-300-100: dense %lld bytes, sparse %lld bytes (%.2fx)\n",
              static_cast<long long>(fs::file_size(dense)),
              static_cast<long long>(fs::file_size(sparse)), factor);
  // 10% non-zeros at 12 bytes (value + int64 index) vs 4 bytes dense: ~3.3x on weights.
  EXPECT_GT(factor, 3.0);

  // ORT densifies sparse initializers: the same numbers as the dense file, bit for bit,
  // and within tolerance of our executor.
  const Tensor x = Images(32);
  const VerifyReport r = VerifyOnnxInOrt(g, sparse, {x});  // throws beyond rel 1e-4
  EXPECT_EQ(r.samples, 32);
  const Tensor from_dense = RunInOrt(dense, {x})[0];
  EXPECT_TRUE(torch::equal(RunInOrt(sparse, {x})[0], from_dense));

  // Re-import densifies to the same values; the mask is recoverable from the zeros.
  const Graph back = LoadOnnx(sparse);
  ASSERT_EQ(back.initializers.size(), g.initializers.size());
  for (const auto& [name, init] : g.initializers) {
    SCOPED_TRACE(name);
    const Tensor& w = back.initializers.at(name).value;
    EXPECT_TRUE(torch::equal(w, init.value));
    if (init.mask.defined()) {
      EXPECT_TRUE(torch::equal(w.ne(0).to(init.mask.dtype()), init.mask));
    }
  }
}

// ONNX's Python checker (the second checker) on the sparse file, plus the producer
// fields and the recipe hash in metadata_props. Not full_check: ONNX 1.12's shape
// inference gives sparse initializers rank 0 (CheckOnnx works around it).
TEST_F(Ort, SparseFilePassesPythonCheckerAndCarriesMetadata) {
  const Graph g = PrunedMlp();
  OnnxExportOptions o;
  o.recipe_hash = "0123456789abcdef";
  const std::string file = Path("m.onnx");
  SaveOnnx(g, file, o);
  EXPECT_EQ(LoadOnnx(file).metadata.at("mcompress.recipe_hash"), "0123456789abcdef");

  const std::string out = Path("py.txt");
  const std::string cmd =
      "/usr/bin/python3 -c \"import onnx,sys; m=onnx.load(sys.argv[1]); "
      "onnx.checker.check_model(m); "
      "print(m.producer_name, m.producer_version, len(m.graph.sparse_initializer), "
      "len(m.graph.initializer))\" " + file + " > " + out + " 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << ReadAll(out);
  std::istringstream fields(ReadAll(out));
  std::string producer, version;
  int sparse_count = -1, dense_count = -1;
  fields >> producer >> version >> sparse_count >> dense_count;
  EXPECT_EQ(producer, "mcompress");
  // VersionString() is "mcompress <version> (...)".
  std::istringstream vs(VersionString());
  std::string word, library_version;
  vs >> word >> library_version;
  EXPECT_EQ(version, library_version);
  EXPECT_EQ(sparse_count, 3);  // the three pruned Gemm weights
  EXPECT_EQ(dense_count, 3);   // their biases
}

TEST_F(Ort, SparseThresholdAndDenseTensorsStayDense) {
  Graph g = Zoo("mlp-300-100");
  const std::string plain = Path("plain.onnx"), forced = Path("forced.onnx");
  SaveOnnx(g, plain);
  OnnxExportOptions off;
  off.sparse = false;
  EXPECT_EQ(ReadAll(plain), SerializeOnnx(g, off));  // nothing mostly zero: same bytes
  // Even at threshold 0, a tensor is written sparse only when that is smaller.
  OnnxExportOptions zero;
  zero.sparse_min_zeros = 0;
  EXPECT_EQ(SerializeOnnx(g, zero), SerializeOnnx(g, off));
}

// ---- failures -------------------------------------------------------------------------

TEST_F(Ort, CorruptOrTruncatedFileIsAClearError) {
  Graph g = Zoo("lenet5");
  const std::string good = Path("good.onnx"), half = Path("half.onnx");
  SaveOnnx(g, good);
  const std::string bytes = ReadAll(good);
  WriteAll(half, bytes.substr(0, bytes.size() / 2));
  ExpectError([&] { VerifyOnnxFile(half, 2, 0); }, ErrorKind::kIo, "half.onnx");
  ExpectError([&] { VerifyOnnxInOrt(g, half, {Images(2)}); }, ErrorKind::kIo, "half.onnx");
  WriteAll(Path("junk.onnx"), "this is not a model");
  ExpectError([&] { VerifyOnnxFile(Path("junk.onnx"), 2, 0); }, ErrorKind::kIo, "junk.onnx");
  ExpectError([&] { VerifyOnnxFile(Path("missing.onnx"), 2, 0); }, ErrorKind::kIo,
              "missing.onnx");
}

TEST_F(Ort, TamperedWeightFailsNamingTheOutput) {
  Graph g = Zoo("lenet5");
  const std::string file = Path("tampered.onnx");
  OnnxExportOptions o;
  o.sparse = false;
  SaveOnnx(g, file, o);
  // Find a weight's raw bytes in the file and overwrite one value.
  Tensor w;
  for (const auto& [name, init] : g.initializers) {
    if (init.value.dim() >= 2 && init.value.numel() >= 16) {
      w = init.value.contiguous();
      break;
    }
  }
  ASSERT_TRUE(w.defined());
  const std::string raw(static_cast<const char*>(w.data_ptr()), 64);
  std::string bytes = ReadAll(file);
  const size_t at = bytes.find(raw);
  ASSERT_NE(at, std::string::npos);
  const float big = 25.0f;
  std::memcpy(&bytes[at], &big, sizeof big);
  WriteAll(file, bytes);
  ExpectError([&] { VerifyOnnxInOrt(g, file, {Images(4)}); }, ErrorKind::kNumeric,
              "output 'logits' differs (mcompress vs ONNX Runtime) at [");
}

// CompareOrtLatency times every model in one process, rounds × runs each, in order.
TEST_F(Ort, CompareOrtLatencyTimesEachModelSideBySide) {
  Graph small = Zoo("lenet5");
  Graph big = Zoo("convnet");
  const std::string a = Path("small.onnx"), b = Path("big.onnx");
  SaveOnnx(small, a);
  SaveOnnx(big, b);
  OrtLatencyOptions o;
  o.rounds = 3;
  o.runs = 4;
  o.warmup = 1;
  const OrtLatencyComparison c = CompareOrtLatency({a, b, a}, {Images(8)}, o);
  EXPECT_FALSE(c.ort_version.empty());
  ASSERT_EQ(c.models.size(), 3u);
  for (const OrtLatency& m : c.models) {
    EXPECT_EQ(m.runs, 12);
    ASSERT_EQ(m.latencies_ms.size(), 12u);
    EXPECT_GT(m.min_ms, 0);
    EXPECT_LE(m.min_ms, m.median_ms);
    EXPECT_LE(m.median_ms, m.max_ms);
    EXPECT_LE(m.median_ms, m.p90_ms);
  }
  std::printf("[ ort ] side by side, batch 8: lenet5 %.3f ms, convnet %.3f ms, lenet5 %.3f ms\n",
              c.models[0].median_ms, c.models[1].median_ms, c.models[2].median_ms);
  ExpectError([&] { CompareOrtLatency({a, Path("missing.onnx")}, {Images(8)}, o); },
              ErrorKind::kIo, "missing.onnx: No such file or directory");
  // A model ONNX Runtime cannot run on the input is its own one-line error.
  ExpectError([&] { CompareOrtLatency({a}, {at::zeros({2, 3}, at::kFloat)}, o); },
              ErrorKind::kUnsupported, "ONNX Runtime failed to run");
}

TEST_F(Ort, MissingNodeOrOrtIsAClearError) {
  Graph g = Zoo("lenet5");
  const std::string file = Path("m.onnx");
  SaveOnnx(g, file);
  {
    ScopedEnv env("MCOMPRESS_NODE", "/nonexistent/node");
    ExpectError([&] { VerifyOnnxInOrt(g, file, {Images(1)}); }, ErrorKind::kUnsupported,
                "needs node and onnxruntime-node in");
    ExpectError([&] { RunInOrt(file, {Images(1)}); }, ErrorKind::kUnsupported,
                "run `make deps` (cannot start MCOMPRESS_NODE=/nonexistent/node");
  }
  {
    ScopedEnv env("MCOMPRESS_ORT_DIR", dir_.string());
    ExpectError([&] { RunInOrt(file, {Images(1)}); }, ErrorKind::kUnsupported,
                "run `make deps`");
  }
}

TEST_F(Ort, OrtsOwnMessageComesThroughOnOneLine) {
  Graph g = Zoo("lenet5");
  OnnxExportOptions o;
  o.opset = 99;  // no runtime implements opset 99
  o.check = false;
  const std::string file = Path("opset99.onnx");
  SaveOnnx(g, file, o);
  try {
    RunInOrt(file, {Images(1)});
    ADD_FAILURE() << "ONNX Runtime accepted opset 99";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
    EXPECT_NE(msg.find("ONNX Runtime cannot load"), std::string::npos) << msg;
    EXPECT_NE(msg.find("99"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

// ---- integer kernels of INT8 (QDQ) files ----------------------------------------------

// Files VerifyOnnxInOrt of this process left in $TMPDIR for ONNX Runtime's optimized graph.
int LeftoverOptimizedGraphs() {
  const std::string prefix = "mcompress-ort-optimized-" + std::to_string(::getpid()) + "-";
  int n = 0;
  for (const auto& f : fs::directory_iterator(fs::temp_directory_path())) {
    n += f.path().filename().string().rfind(prefix, 0) == 0;
  }
  return n;
}

// Every zoo model, quantized, runs every quantized layer on an ONNX Runtime integer kernel
// (QLinearConv, QGemm): no layer of the QDQ layout falls back to float.
TEST_F(Ort, EveryQuantizedZooLayerRunsOnIntegerKernels) {
  const DatasetSplits& data = testing_util::FashionMnistSubset(1024, 256, 512);
  VerifyTolerance tol;
  tol.mode = VerifyTolerance::Mode::kInt8;
  for (const auto& entry : ZooModels()) {
    SCOPED_TRACE(entry.name);
    Graph g = Zoo(entry.name);
    const PassResult q = testing_util::RunPassFromJson(
        "quantize", g, nlohmann::json::object(), testing_util::SplitsContext(data, 128, 256));
    const int64_t layers = static_cast<int64_t>(q.stats.at("layers_quantized"));
    ASSERT_GT(layers, 0);
    const std::string file = Path(entry.name + ".onnx");
    SaveOnnx(g, file);
    const VerifyReport r = VerifyOnnxInOrt(g, file, {data.test.inputs}, tol);
    EXPECT_EQ(r.int8.quantized, layers);
    EXPECT_EQ(static_cast<int64_t>(r.int8.integer.size()), layers);
    for (const auto& [layer, why] : r.int8.fallback) ADD_FAILURE() << layer << ": " << why;
    EXPECT_EQ(LeftoverOptimizedGraphs(), 0);  // the optimized graph is removed
    std::printf("[ int8 ] %-15s %s\n", entry.name.c_str(), Int8ExecutionSummary(r.int8).c_str());
  }
}

// BisectInt8: a correct INT8 file is within one step of ours at every quantized value
// from the same integer inputs; a file whose conv2 computes something else (int8
// weights of one output channel shifted) is found at the first value after conv2, and a
// failed verification says so.
TEST_F(Ort, BisectInt8FindsTheLayerAFileComputesDifferently) {
  const DatasetSplits& data = testing_util::FashionMnistSubset(1024, 256, 64);
  Graph g = Zoo("convnet");
  const PassResult q = testing_util::RunPassFromJson(
      "quantize", g, nlohmann::json::object(), testing_util::SplitsContext(data, 128, 256));
  const std::vector<Tensor> inputs{data.test.inputs.slice(0, 0, 16)};
  const std::vector<Int8ValueDivergence> rows = BisectInt8(g, g, inputs);
  ASSERT_EQ(static_cast<double>(rows.size()), q.stats.at("activations_quantized"));
  for (const auto& r : rows) {
    EXPECT_GT(r.scale, 0) << r.value;
    EXPECT_LE(r.local_max_steps, 1.0 + 1e-3) << r.value;
    EXPECT_EQ(r.local_beyond_one, 0) << r.value;
    EXPECT_LE(r.beyond_one, 0.01) << r.value;  // four layers: little to accumulate
  }

  // conv2's int8 weights of output channel 0 moved by 20 levels, in the file only.
  Graph bad = g.Clone();
  int conv2 = -1;
  for (size_t i = 0; i < bad.nodes.size(); ++i) {
    if (bad.nodes[i].name == "conv2") conv2 = static_cast<int>(i);
  }
  ASSERT_GE(conv2, 0);
  const int dq = bad.ProducerIndex(bad.nodes[static_cast<size_t>(conv2)].inputs.at(1));
  ASSERT_GE(dq, 0);
  ASSERT_EQ(bad.nodes[static_cast<size_t>(dq)].op_type, "DequantizeLinear");
  Tensor& w = bad.Weight(bad.nodes[static_cast<size_t>(dq)].inputs.at(0));
  ASSERT_EQ(w.scalar_type(), at::kChar);
  w[0] = (w[0].to(at::kInt) + 20).clamp(-64, 64).to(at::kChar);
  const std::vector<Int8ValueDivergence> found = BisectInt8(g, bad, inputs);
  ASSERT_EQ(found.size(), rows.size());
  size_t first = found.size();
  for (size_t k = 0; k < found.size(); ++k) {
    if (found[k].local_beyond_one > 0) {
      first = k;
      break;
    }
  }
  ASSERT_LT(first, found.size());
  EXPECT_GT(g.ProducerIndex(found[first].value), conv2) << found[first].value;
  for (size_t k = 0; k < first; ++k) {
    EXPECT_LT(g.ProducerIndex(found[k].value), conv2) << found[k].value;
  }

  const std::string file = Path("bad_int8.onnx");
  OnnxExportOptions o;
  o.sparse = false;
  SaveOnnx(bad, file, o);
  VerifyTolerance tol;
  tol.mode = VerifyTolerance::Mode::kInt8;
  ExpectError([&] { VerifyOnnxInOrt(g, file, inputs, tol); }, ErrorKind::kNumeric,
              "from the same integer inputs, '" + found[first].value + "' is ");
}

// RunOrt writes the graph ONNX Runtime runs when asked; the fused nodes keep their names.
// ExportModel reports the same layers, without a float warning.
TEST_F(Ort, OptimizedGraphAndExportOutcomeNameTheIntegerKernels) {
  const DatasetSplits& data = testing_util::FashionMnistSubset(1024, 256, 512);
  Graph g = Zoo("convnet");
  testing_util::RunPassFromJson("quantize", g, nlohmann::json::object(),
                                testing_util::SplitsContext(data, 128, 256));
  const std::string file = Path("convnet.onnx");
  SaveOnnx(g, file);
  OrtOptions o;
  o.optimized_model_path = Path("optimized.onnx");
  RunOrt(file, {Images(2)}, o);
  std::map<std::string, std::string> ops;
  for (const OnnxNodeInfo& n : ListOnnxNodes(o.optimized_model_path)) ops[n.name] = n.op_type;
  EXPECT_EQ(ops["conv1"], "QLinearConv");
  EXPECT_EQ(ops["fc2"], "QGemm");

  const ExportOutcome out = ExportModel(g, Path("exported.onnx"), *FindExportFormat("onnx-qdq"),
                                        {}, {data.test.inputs});
  EXPECT_EQ(out.int8.quantized, 4);
  EXPECT_EQ(out.int8.integer, (std::vector<std::string>{"conv1", "conv2", "fc1", "fc2"}));
  EXPECT_TRUE(out.int8.fallback.empty());
  for (const auto& w : out.warnings) EXPECT_EQ(w.find("runs in float"), std::string::npos) << w;

  // A failed run leaves no temporary optimized graph behind either.
  VerifyTolerance tol;
  tol.mode = VerifyTolerance::Mode::kInt8;
  ScopedEnv env("MCOMPRESS_NODE", "/nonexistent/node");
  ExpectError([&] { VerifyOnnxInOrt(g, file, {Images(2)}, tol); }, ErrorKind::kUnsupported,
              "needs node and onnxruntime-node in");
  EXPECT_EQ(LeftoverOptimizedGraphs(), 0);
}

// A hand-built QDQ graph: two Conv layers read int8 weights through DequantizeLinear,
// one Conv keeps a float weight; a Gemm and a MatMul are quantized too.
Graph QuantizedLayers() {
  Graph g;
  auto node = [&](const std::string& name, const std::string& op,
                  std::vector<std::string> in, const std::string& out) {
    Node n;
    n.name = name;
    n.op_type = op;
    n.inputs = std::move(in);
    n.outputs = {out};
    g.nodes.push_back(std::move(n));
  };
  for (const std::string w : {"w_int", "w_float", "w_fc", "w_mm"}) {
    g.initializers[w].value = torch::ones({2, 2}, torch::kChar);
    g.initializers[w + "_scale"].value = torch::ones({2});
    node(w + "_dq", "DequantizeLinear", {w, w + "_scale"}, w + "_dequantized");
  }
  g.initializers["w_fp32"].value = torch::ones({2, 2});
  node("conv_int", "Conv", {"x", "w_int_dequantized"}, "a");
  node("conv_float", "Conv", {"a", "w_float_dequantized"}, "b");
  node("conv_fp32", "Conv", {"b", "w_fp32"}, "c");
  node("fc", "Gemm", {"c", "w_fc_dequantized"}, "d");
  node("mm", "MatMul", {"d", "w_mm_dequantized"}, "y");
  return g;
}

TEST(OrtInt8Execution, FusedLayersAreIntegerTheOthersSayWhatRunsThem) {
  const Graph g = QuantizedLayers();
  const std::vector<OnnxNodeInfo> optimized = {
      {"conv_int", "", "QLinearConv"},
      {"conv_float", "com.microsoft", "FusedConv"},
      {"conv_fp32", "", "Conv"},
      {"mm", "com.microsoft", "MatMulIntegerToFloat"},
      {"fc_other", "com.microsoft", "QGemm"},  // a name that is not the layer's
  };
  std::vector<OnnxNodeInfo> renamed = optimized;
  renamed.push_back({"fused fc", "com.microsoft", "FusedGemm"});  // ORT's Gemm + Relu
  const Int8Execution e = ClassifyInt8Execution(g, optimized);
  EXPECT_EQ(e.quantized, 4);  // conv_fp32 reads a float weight
  EXPECT_EQ(e.integer, (std::vector<std::string>{"conv_int", "mm"}));
  const std::vector<std::pair<std::string, std::string>> want = {
      {"conv_float", "ONNX Runtime runs it as FusedConv"},
      {"fc", "not found in ONNX Runtime's optimized graph"}};
  EXPECT_EQ(e.fallback, want);
  EXPECT_EQ(Int8ExecutionSummary(e), "INT8 kernels (ONNX Runtime): 2/4 quantized layers conv_int mm");
  EXPECT_EQ(ClassifyInt8Execution(g, renamed).fallback.back(),
            std::make_pair(std::string("fc"), std::string("ONNX Runtime runs it as FusedGemm")));
}

TEST(OrtInt8Execution, EveryIntegerKernelCountsAndAFloatGraphHasNoLayers) {
  const Graph g = QuantizedLayers();
  for (const std::string op : {"QLinearConv", "NhwcQLinearConv", "QGemm", "ConvInteger",
                               "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul",
                               "QLinearMatMul"}) {
    std::vector<OnnxNodeInfo> optimized;
    for (const std::string name : {"conv_int", "conv_float", "fc", "mm"}) {
      optimized.push_back({name, "", op});
    }
    EXPECT_EQ(ClassifyInt8Execution(g, optimized).integer.size(), 4u) << op;
  }
  // QuantizeLinear alone is no integer layer kernel.
  EXPECT_EQ(ClassifyInt8Execution(g, {{"conv_int", "", "QuantizeLinear"}}).integer.size(), 0u);
  // Must not change: a float graph has nothing to classify.
  const Int8Execution none = ClassifyInt8Execution(Zoo("lenet5"), {{"conv1", "", "QLinearConv"}});
  EXPECT_EQ(none.quantized, 0);
  EXPECT_TRUE(none.integer.empty());
  EXPECT_TRUE(none.fallback.empty());
}

// ---- the pure comparison --------------------------------------------------------------

TEST(OrtCompare, Fp32PassAndFail) {
  VerifyTolerance tol;
  const Tensor ref = torch::tensor({{0.5f, -2.0f, 3.0f}, {1.0f, 0.0f, -4.0f}});
  OutputCheck same = CompareOutput("y", ref, ref.clone(), tol);
  EXPECT_TRUE(same.passed);
  EXPECT_EQ(same.max_abs_diff, 0);
  EXPECT_EQ(same.top1_agreement, 1.0);
  EXPECT_EQ(same.rows, 2);
  EXPECT_DOUBLE_EQ(same.scale, 4.0);  // max |ref|

  Tensor near = ref.clone();
  near[1][2] = -4.0f + 3e-4f;  // 3e-4 <= 1e-4 * 4
  EXPECT_TRUE(CompareOutput("y", ref, near, tol).passed);

  Tensor far = ref.clone();
  far[1][2] = -4.0f + 5e-4f;  // > 4e-4
  OutputCheck c = CompareOutput("y", ref, far, tol);
  EXPECT_FALSE(c.passed);
  EXPECT_EQ(c.index, 5);
  EXPECT_EQ(c.index_text, "[1,2]");
  EXPECT_EQ(c.reference_value, -4.0);
  EXPECT_NE(c.failure.find("at [1,2]: -4 vs -3.9995"), std::string::npos) << c.failure;

  // Small outputs: the scale floor (1) keeps the tolerance at 1e-4 absolute.
  const Tensor tiny = torch::full({4}, 1e-3f);
  EXPECT_TRUE(CompareOutput("y", tiny, tiny + 9e-5f, tol).passed);
  EXPECT_FALSE(CompareOutput("y", tiny, tiny + 2e-4f, tol).passed);
}

TEST(OrtCompare, NanInfShapeAndIntegers) {
  VerifyTolerance tol;
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const Tensor ref = torch::tensor({1.0f, nan, inf, -inf});
  EXPECT_TRUE(CompareOutput("y", ref, ref.clone(), tol).passed);
  OutputCheck n = CompareOutput("y", ref, torch::tensor({1.0f, 2.0f, inf, -inf}), tol);
  EXPECT_FALSE(n.passed);
  EXPECT_EQ(n.index_text, "[1]");
  EXPECT_FALSE(CompareOutput("y", ref, torch::tensor({1.0f, nan, -inf, -inf}), tol).passed);

  OutputCheck s = CompareOutput("y", torch::zeros({2, 3}), torch::zeros({3, 2}), tol);
  EXPECT_FALSE(s.passed);
  EXPECT_EQ(s.failure, "shape [2,3] vs [3,2]");

  const Tensor ints = torch::tensor({3, 4, 5}, torch::kLong);
  EXPECT_TRUE(CompareOutput("i", ints, ints.clone(), tol).passed);
  OutputCheck i = CompareOutput("i", ints, torch::tensor({3, 4, 6}, torch::kLong), tol);
  EXPECT_FALSE(i.passed);
  EXPECT_NE(i.failure.find("exact match required"), std::string::npos) << i.failure;
}

TEST(OrtCompare, Int8WithinOneStepAndTop1) {
  VerifyTolerance tol;
  tol.mode = VerifyTolerance::Mode::kInt8;
  tol.int8_step = 0.1;
  // 10000 elements in rows of 10 with a clear arg-max in column 0.
  Tensor ref = torch::zeros({1000, 10});
  ref.select(1, 0).fill_(5.0);
  Tensor one_step = ref + 0.1;  // every element exactly one step off
  EXPECT_TRUE(CompareOutput("y", ref, one_step, tol).passed);

  Tensor few = ref.clone();
  for (int k = 0; k < 10; ++k) few[k * 7][3] = 0.25;  // 10 of 10000 beyond a step: 99.9%
  OutputCheck ok = CompareOutput("y", ref, few, tol);
  EXPECT_TRUE(ok.passed) << ok.failure;
  EXPECT_DOUBLE_EQ(ok.within_step, 0.999);

  Tensor many = few.clone();
  many[999][3] = 0.25;  // 11 of 10000: below 99.9%
  OutputCheck bad = CompareOutput("y", ref, many, tol);
  EXPECT_FALSE(bad.passed);
  EXPECT_NE(bad.failure.find("99.89% of elements within one quantization step"),
            std::string::npos) << bad.failure;
  EXPECT_EQ(bad.index_text, "[0,3]");

  // Arg-max flips on 5 of 1000 rows (99.5%) pass; 6 fail, even within the step rule.
  Tensor close = torch::zeros({1000, 10});
  close.select(1, 0).fill_(0.05);
  Tensor flipped = close.clone();
  for (int k = 0; k < 5; ++k) flipped[k][1] = 0.1;  // within one step, but a new arg-max
  OutputCheck t = CompareOutput("y", close, flipped, tol);
  EXPECT_TRUE(t.passed) << t.failure;
  EXPECT_DOUBLE_EQ(t.top1_agreement, 0.995);
  flipped[5][1] = 0.1;
  OutputCheck t2 = CompareOutput("y", close, flipped, tol);
  EXPECT_FALSE(t2.passed);
  EXPECT_NE(t2.failure.find("top-1 agreement 99.40% of 1000 rows"), std::string::npos)
      << t2.failure;

  // Without an explicit step, the reference's range / 255 is one step.
  VerifyTolerance derived = tol;
  derived.int8_step = 0;
  const Tensor refd = ref.to(torch::kDouble);  // float would round 5 + 5/255
  OutputCheck d = CompareOutput("y", refd, refd + 5.0 / 255, derived);
  EXPECT_TRUE(d.passed) << d.failure;
  EXPECT_DOUBLE_EQ(d.scale, 5.0 / 255);
}

TEST(OrtRecipe, ExportSparseOption) {
  auto recipe = [](const nlohmann::json& ex) {
    return nlohmann::json{{"model", "zoo:lenet5"},
                          {"stages", nlohmann::json::array({{{"pass", "evaluate"}}})},
                          {"exports", nlohmann::json::array({ex})}};
  };
  Recipe on = ParseRecipe(recipe({{"format", "onnx"}, {"path", "m.onnx"}}), "r.json", "");
  EXPECT_TRUE(on.exports.at(0).sparse);
  Recipe off = ParseRecipe(recipe({{"format", "onnx"}, {"path", "m.onnx"}, {"sparse", false}}),
                           "r.json", "");
  EXPECT_FALSE(off.exports.at(0).sparse);
  ExpectError([&] { ParseRecipe(recipe({{"format", "onnx"}, {"path", "m.onnx"}, {"sparse", 3}}),
                                "r.json", ""); },
              ErrorKind::kRecipe, "exports[0].sparse");
}

}  // namespace
}  // namespace compress
