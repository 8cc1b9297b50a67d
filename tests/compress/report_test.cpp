// Report layer: per-layer numbers and sizes of zoo models against hand-computed values,
// an exact JSON round trip, error messages for foreign or malformed files, the Markdown
// and HTML renderings, the comparison, atomic writes, and a real render in Chromium.
// zlib declares a global function `compress`, which clashes with our namespace.
#define compress zlib_compress_unused
#include <zlib.h>
#undef compress

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "compress/base/file_util.h"
#include "compress/zoo/builder.h"
#include "compress/report/report.h"
#include "compress/zoo/zoo.h"

namespace compress {
namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/mcompress_report_XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

const LayerRow* FindRow(const std::vector<LayerRow>& rows, const std::string& name) {
  for (const auto& r : rows) {
    if (r.name == name) return &r;
  }
  return nullptr;
}

// ---- LayerTable / ComputeSize ---------------------------------------------------------------

TEST(ReportLayers, Lenet5RowsMatchHandComputedValues) {
  Graph g = BuildZoo("lenet5");
  auto rows = LayerTable(g);
  ASSERT_EQ(rows.size(), 5u);
  struct Want {
    const char* name; const char* op; std::vector<int64_t> shape; int64_t params, macs;
  };
  const Want want[] = {
      {"conv1", "Conv", {6, 1, 5, 5}, 6 * 25 + 6, 6 * 28 * 28 * 1 * 5 * 5},   // 117600
      {"conv2", "Conv", {16, 6, 5, 5}, 16 * 150 + 16, 16 * 10 * 10 * 6 * 25},  // 240000
      {"fc1", "Gemm", {120, 400}, 400 * 120 + 120, 400 * 120},
      {"fc2", "Gemm", {84, 120}, 120 * 84 + 84, 120 * 84},
      {"fc3", "Gemm", {10, 84}, 84 * 10 + 10, 84 * 10},
  };
  for (size_t i = 0; i < 5; ++i) {
    SCOPED_TRACE(want[i].name);
    EXPECT_EQ(rows[i].name, want[i].name);
    EXPECT_EQ(rows[i].op, want[i].op);
    EXPECT_EQ(rows[i].weight, std::string(want[i].name) + ".weight");
    EXPECT_EQ(rows[i].weight_shape, want[i].shape);
    EXPECT_EQ(rows[i].params, want[i].params);
    EXPECT_EQ(rows[i].macs, want[i].macs);
    EXPECT_EQ(rows[i].bits, 32);
    EXPECT_DOUBLE_EQ(rows[i].sparsity, 0.0);
  }
  EXPECT_EQ(rows[0].macs, 117600);
  EXPECT_EQ(rows[1].macs, 240000);
}

TEST(ReportLayers, Lenet5SizeMatchesFormula) {
  Graph g = BuildZoo("lenet5");
  SizeStats s = ComputeSize(g);
  EXPECT_EQ(s.parameters, 61706);
  EXPECT_EQ(s.parameters, g.NumParameters());
  EXPECT_EQ(s.nonzeros, 61706);
  EXPECT_EQ(s.bytes_fp32, 61706 * 4);
  // Weights 1 byte each, biases stay FP32.
  const int64_t weights = 150 + 2400 + 48000 + 10080 + 840, biases = 6 + 16 + 120 + 84 + 10;
  EXPECT_EQ(s.bytes_int8, weights + biases * 4);
  EXPECT_EQ(s.bytes_sparse, 61706 * 4);  // dense is smaller than COO for every tensor
  EXPECT_EQ(s.macs, 117600 + 240000 + 48000 + 10080 + 840);
}

TEST(ReportLayers, ZerosMasksAndQuantizationChangeTheNumbers) {
  Graph g = BuildZoo("lenet5");
  // 90% of fc1's weights set to zero in the value itself.
  g.Weight("fc1.weight").view({-1}).narrow(0, 0, 43200).zero_();
  // Half of conv2 pruned by a mask only (values untouched).
  Tensor mask = torch::ones({16, 6, 5, 5});
  mask.narrow(0, 0, 8).zero_();
  g.initializers["conv2.weight"].mask = mask;
  // fc2 quantized.
  QuantParams q;
  q.scale = torch::ones({84});
  q.zero_point = torch::zeros({84}, torch::kInt8);
  q.axis = 0;
  g.initializers["fc2.weight"].quant = q;

  auto rows = LayerTable(g);
  EXPECT_DOUBLE_EQ(FindRow(rows, "fc1")->sparsity, 0.9);
  EXPECT_DOUBLE_EQ(FindRow(rows, "conv2")->sparsity, 0.5);
  EXPECT_DOUBLE_EQ(FindRow(rows, "conv1")->sparsity, 0.0);
  EXPECT_EQ(FindRow(rows, "fc2")->bits, 8);
  EXPECT_EQ(FindRow(rows, "fc1")->bits, 32);

  SizeStats s = ComputeSize(g);
  EXPECT_EQ(s.parameters, 61706);
  EXPECT_EQ(s.nonzeros, 61706 - 43200 - 1200);
  EXPECT_EQ(s.bytes_fp32, 61706 * 4);
  // Sparse: fc1.weight has 4800 non-zeros -> COO 4800*12 = 57600 < 192000 dense;
  // conv2.weight has 1200 -> 14400 > 9600 dense, stays dense.
  EXPECT_EQ(s.bytes_sparse, 61706 * 4 - 48000 * 4 + 4800 * 12);
  // Compact: fc1's 4800 trailing non-zeros as a bitmask, 48000 / 8 + 4800 * 4 = 25200 B,
  // beat 4-bit relative indices (2701 entries to reach position 43200, at most 16 per
  // entry, + 4799 = 7500 entries of 36 bits = 33750 B); conv2's second half as a bitmask,
  // 2400 / 8 + 1200 * 4 = 5100 B (relative: 76 + 1199 entries = 5738 B).
  EXPECT_EQ(s.bytes_compact, 61706 * 4 - 48000 * 4 - 2400 * 4 + 25200 + 5100);
  const int64_t weights = 150 + 2400 + 48000 + 10080 + 840, biases = 6 + 16 + 120 + 84 + 10;
  EXPECT_EQ(s.bytes_int8, weights + biases * 4);
}


// Deep Compression's relative indices win where the gaps are short and regular: fc1 with
// every 8th weight kept stores 6000 entries of 32 + 4 bits = 27000 B, against a bitmask's
// 6000 + 24000 = 30000 B and COO's 72000 B.
TEST(ReportLayers, CompactSizeTakesRelativeIndicesWhereTheyAreSmaller) {
  Graph g = BuildZoo("lenet5");
  Tensor fc1 = g.Weight("fc1.weight").view({-1});
  fc1.zero_();
  fc1.slice(0, 0, 48000, 8).fill_(0.5f);
  const SizeStats s = ComputeSize(g);
  EXPECT_EQ(s.nonzeros, 61706 - 48000 + 6000);
  EXPECT_EQ(s.bytes_compact, 61706 * 4 - 48000 * 4 + 27000);
  EXPECT_EQ(s.bytes_sparse, 61706 * 4 - 48000 * 4 + 6000 * 12);
}
TEST(ReportLayers, GroupedConvUsesInputChannelsPerGroup) {
  Graph g = BuildZoo("mobilenet-tiny");
  auto rows = LayerTable(g);
  // Stem 3x3 conv, 1 -> 16 channels at 28x28.
  EXPECT_EQ(FindRow(rows, "stem.conv")->macs, 16 * 28 * 28 * 1 * 9);
  // Depthwise 3x3, 16 channels, stride 2 -> 14x14, one input channel per group.
  EXPECT_EQ(FindRow(rows, "block1.dw")->macs, 16 * 14 * 14 * 1 * 9);
  EXPECT_EQ(FindRow(rows, "block1.pw")->macs, 32 * 14 * 14 * 16);
  EXPECT_EQ(FindRow(rows, "fc")->macs, 128 * 10);
}

TEST(ReportLayers, MatMulGemmWithoutTransposeAndConv1d) {
  GraphBuilder b("g", 0);
  std::string x = b.Input("x", {kDynamicDim, 5, 8});
  b.Constant("w", torch::randn({8, 3}));
  std::string y = b.Op1("MatMul", {x, "w"}, {}, "mm");  // [N,5,3]
  b.Output(y);
  std::string x2 = b.Input("x2", {kDynamicDim, 8});
  b.Constant("w2", torch::randn({8, 3}));  // K x M, transB = 0
  b.Output(b.Op1("Gemm", {x2, "w2"}, {}, "gemm"));
  std::string x3 = b.Input("x3", {kDynamicDim, 2, 10});
  b.Constant("w3", torch::randn({4, 2, 3}));
  b.Constant("b3", torch::zeros({4}));
  b.Output(b.Op1("Conv", {x3, "w3", "b3"}, {{"kernel_shape", std::vector<int64_t>{3}}}, "conv1d"));
  Graph g = b.Build();
  auto rows = LayerTable(g);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(FindRow(rows, "mm")->macs, 5 * 3 * 8);
  EXPECT_EQ(FindRow(rows, "mm")->params, 24);
  EXPECT_EQ(FindRow(rows, "gemm")->macs, 3 * 8);
  EXPECT_EQ(FindRow(rows, "conv1d")->macs, 4 * 8 * 2 * 3);  // out length 10 - 3 + 1 = 8
  EXPECT_EQ(FindRow(rows, "conv1d")->params, 24 + 4);
  // Without value_info the Conv output size comes from the input shape and attributes.
  g.value_info.clear();
  g.outputs.clear();
  EXPECT_EQ(FindRow(LayerTable(g), "conv1d")->macs, 4 * 8 * 2 * 3);
}

// ---- JSON -----------------------------------------------------------------------------------

StageReport MakeStage(int index, const std::string& pass, double top1, int64_t bytes) {
  StageReport s;
  s.index = index;
  s.pass = pass;
  s.changed = index >= 0;
  s.metrics = {top1, 0.995, 0.3125, 1000};
  s.size = {61706, 61706, bytes, bytes / 4, bytes, bytes / 8, 416520};
  s.seconds = 1.5;
  return s;
}

Report FullReport() {
  Report r;
  r.mcompress_version = "0.1.0";
  r.torch_version = "1.13.1";
  r.recipe_hash = "9f2c";
  r.model = "zoo:lenet5";
  r.device = "cpu";
  r.seed = 18446744073709551615ull;  // the full uint64 range survives
  r.threads = 2;
  r.baseline = MakeStage(-1, "baseline", 0.9, 246824);
  r.stages.push_back(MakeStage(0, "prune-magnitude", 0.8875, 112424));
  r.stages[0].stats = {{"layers_pruned", 4}, {"target_sparsity", 0.7}, {"odd", kNaN}};
  r.stages[0].skipped = {{"fc3", "last layer kept dense"}, {"conv1", "too few weights | tiny"}};
  r.stages.push_back(MakeStage(1, "quantize-ptq", kNaN, 62414));
  r.stages[1].metrics.top5 = kNaN;
  r.stages[1].metrics.loss = kNaN;
  r.stages[1].changed = false;
  r.stages.push_back(MakeStage(2, "finetune", 0.1 + 0.2, 62414));  // a non-round double
  r.latency_baseline = {0.75, 12.5};
  r.latency_final = {0.5, kNaN};
  r.layers.push_back({"conv1", "Conv", "conv1.weight", {6, 1, 5, 5}, {}, 156, 0.0, 32, 117600});
  r.layers.push_back({"fc1", "Gemm", "fc1.weight", {120, 400}, {240, 400}, 48120, 0.9, 8, 48000});
  r.stages[0].sensitivity = {{"fc1", {0.5, 0.9}, {0.88, kNaN}, 0.5}, {"fc2", {0.5, 0.9}, {0.9, 0.7}, kNaN}};
  r.exports.push_back({"onnx", "model.onnx", 250000, true, 1.5e-6});
  r.exports.push_back({"torchscript", "model.pt", 260000, false, kNaN});
  r.exports.push_back({"onnx-qdq", "model_int8.onnx", 70000, true, 0.01});
  r.exports.back().int8_target = "portable";
  r.exports.back().int8_quantized_layers = 3;
  r.exports.back().int8_integer_layers = {"conv1", "fc1"};
  r.exports.back().int8_fallback_layers = {{"fc2", "ONNX Runtime runs it as Gemm"}};
  r.acceptance.push_back({"max_accuracy_drop", 0.02, 0.0125, true});
  r.acceptance.push_back({"min_compression", 4, 3.95, false});
  r.accepted = false;
  r.compression_ratio = 3.9546;
  r.total_seconds = 42.25;
  return r;
}

bool SameDouble(double a, double b) { return (std::isnan(a) && std::isnan(b)) || a == b; }

void ExpectSameStage(const StageReport& a, const StageReport& b) {
  EXPECT_EQ(a.index, b.index);
  EXPECT_EQ(a.pass, b.pass);
  EXPECT_EQ(a.changed, b.changed);
  EXPECT_TRUE(SameDouble(a.metrics.top1, b.metrics.top1)) << a.metrics.top1 << " " << b.metrics.top1;
  EXPECT_TRUE(SameDouble(a.metrics.top5, b.metrics.top5));
  EXPECT_TRUE(SameDouble(a.metrics.loss, b.metrics.loss));
  EXPECT_EQ(a.metrics.samples, b.metrics.samples);
  EXPECT_EQ(a.size.parameters, b.size.parameters);
  EXPECT_EQ(a.size.nonzeros, b.size.nonzeros);
  EXPECT_EQ(a.size.bytes_fp32, b.size.bytes_fp32);
  EXPECT_EQ(a.size.bytes_int8, b.size.bytes_int8);
  EXPECT_EQ(a.size.bytes_sparse, b.size.bytes_sparse);
  EXPECT_EQ(a.size.macs, b.size.macs);
  EXPECT_TRUE(SameDouble(a.seconds, b.seconds));
  ASSERT_EQ(a.stats.size(), b.stats.size());
  for (const auto& [k, v] : a.stats) {
    ASSERT_TRUE(b.stats.count(k)) << k;
    EXPECT_TRUE(SameDouble(v, b.stats.at(k))) << k;
  }
  ASSERT_EQ(a.skipped.size(), b.skipped.size());
  for (size_t i = 0; i < a.skipped.size(); ++i) {
    EXPECT_EQ(a.skipped[i].layer, b.skipped[i].layer);
    EXPECT_EQ(a.skipped[i].reason, b.skipped[i].reason);
  }
  ASSERT_EQ(a.sensitivity.size(), b.sensitivity.size());
  for (size_t i = 0; i < a.sensitivity.size(); ++i) {
    EXPECT_EQ(a.sensitivity[i].layer, b.sensitivity[i].layer);
    EXPECT_EQ(a.sensitivity[i].sparsities, b.sensitivity[i].sparsities);
    ASSERT_EQ(a.sensitivity[i].top1.size(), b.sensitivity[i].top1.size());
    for (size_t k = 0; k < a.sensitivity[i].top1.size(); ++k) {
      EXPECT_TRUE(SameDouble(a.sensitivity[i].top1[k], b.sensitivity[i].top1[k]));
    }
    EXPECT_TRUE(SameDouble(a.sensitivity[i].chosen, b.sensitivity[i].chosen));
  }
}

void ExpectSameReport(const Report& a, const Report& b) {
  EXPECT_EQ(a.schema_version, b.schema_version);
  EXPECT_EQ(a.mcompress_version, b.mcompress_version);
  EXPECT_EQ(a.torch_version, b.torch_version);
  EXPECT_EQ(a.recipe_hash, b.recipe_hash);
  EXPECT_EQ(a.model, b.model);
  EXPECT_EQ(a.device, b.device);
  EXPECT_EQ(a.seed, b.seed);
  EXPECT_EQ(a.threads, b.threads);
  {
    SCOPED_TRACE("baseline");
    ExpectSameStage(a.baseline, b.baseline);
  }
  ASSERT_EQ(a.stages.size(), b.stages.size());
  for (size_t i = 0; i < a.stages.size(); ++i) {
    SCOPED_TRACE("stage " + std::to_string(i));
    ExpectSameStage(a.stages[i], b.stages[i]);
  }
  EXPECT_TRUE(SameDouble(a.latency_baseline.batch1_ms, b.latency_baseline.batch1_ms));
  EXPECT_TRUE(SameDouble(a.latency_baseline.batch32_ms, b.latency_baseline.batch32_ms));
  EXPECT_TRUE(SameDouble(a.latency_final.batch1_ms, b.latency_final.batch1_ms));
  EXPECT_TRUE(SameDouble(a.latency_final.batch32_ms, b.latency_final.batch32_ms));
  ASSERT_EQ(a.layers.size(), b.layers.size());
  for (size_t i = 0; i < a.layers.size(); ++i) {
    EXPECT_EQ(a.layers[i].name, b.layers[i].name);
    EXPECT_EQ(a.layers[i].op, b.layers[i].op);
    EXPECT_EQ(a.layers[i].weight, b.layers[i].weight);
    EXPECT_EQ(a.layers[i].weight_shape, b.layers[i].weight_shape);
    EXPECT_EQ(a.layers[i].params, b.layers[i].params);
    EXPECT_TRUE(SameDouble(a.layers[i].sparsity, b.layers[i].sparsity));
    EXPECT_EQ(a.layers[i].bits, b.layers[i].bits);
    EXPECT_EQ(a.layers[i].macs, b.layers[i].macs);
    EXPECT_EQ(a.layers[i].baseline_shape, b.layers[i].baseline_shape);
  }
  ASSERT_EQ(a.exports.size(), b.exports.size());
  for (size_t i = 0; i < a.exports.size(); ++i) {
    EXPECT_EQ(a.exports[i].format, b.exports[i].format);
    EXPECT_EQ(a.exports[i].path, b.exports[i].path);
    EXPECT_EQ(a.exports[i].bytes, b.exports[i].bytes);
    EXPECT_EQ(a.exports[i].verified, b.exports[i].verified);
    EXPECT_TRUE(SameDouble(a.exports[i].max_abs_diff, b.exports[i].max_abs_diff));
    EXPECT_EQ(a.exports[i].int8_target, b.exports[i].int8_target);
    EXPECT_EQ(a.exports[i].int8_quantized_layers, b.exports[i].int8_quantized_layers);
    EXPECT_EQ(a.exports[i].int8_integer_layers, b.exports[i].int8_integer_layers);
    ASSERT_EQ(a.exports[i].int8_fallback_layers.size(), b.exports[i].int8_fallback_layers.size());
    for (size_t k = 0; k < a.exports[i].int8_fallback_layers.size(); ++k) {
      EXPECT_EQ(a.exports[i].int8_fallback_layers[k].layer, b.exports[i].int8_fallback_layers[k].layer);
      EXPECT_EQ(a.exports[i].int8_fallback_layers[k].reason,
                b.exports[i].int8_fallback_layers[k].reason);
    }
  }
  ASSERT_EQ(a.acceptance.size(), b.acceptance.size());
  for (size_t i = 0; i < a.acceptance.size(); ++i) {
    EXPECT_EQ(a.acceptance[i].criterion, b.acceptance[i].criterion);
    EXPECT_TRUE(SameDouble(a.acceptance[i].threshold, b.acceptance[i].threshold));
    EXPECT_TRUE(SameDouble(a.acceptance[i].value, b.acceptance[i].value));
    EXPECT_EQ(a.acceptance[i].passed, b.acceptance[i].passed);
  }
  EXPECT_EQ(a.accepted, b.accepted);
  EXPECT_TRUE(SameDouble(a.compression_ratio, b.compression_ratio));
  EXPECT_TRUE(SameDouble(a.total_seconds, b.total_seconds));
}

TEST(ReportJson, RoundTripIsExactIncludingNaN) {
  const Report r = FullReport();
  nlohmann::json j = ReportToJson(r);
  EXPECT_TRUE(j["stages"][1]["metrics"]["top1"].is_null());
  EXPECT_TRUE(j["latency_final"]["batch32_ms"].is_null());
  EXPECT_TRUE(j["stages"][0]["stats"]["odd"].is_null());
  EXPECT_EQ(j["schema_version"], kReportSchemaVersion);
  ExpectSameReport(r, ReportFromJson(j, "mem"));
  // Through text as well (what a file holds).
  ExpectSameReport(r, ReportFromJson(nlohmann::json::parse(j.dump()), "mem"));
  ExpectSameReport(r, ReportFromJson(nlohmann::json::parse(ReportJsonText(r)), "mem"));
}

TEST(ReportJson, InfinityRoundTrips) {
  Report r = FullReport();
  r.compression_ratio = std::numeric_limits<double>::infinity();
  Report back = ReportFromJson(ReportToJson(r), "mem");
  EXPECT_TRUE(std::isinf(back.compression_ratio) && back.compression_ratio > 0);
}

// Which quantized layers run on integer kernels: an optional key per export, absent for
// FP32 exports and in reports written before it existed.
TEST(ReportJson, Int8KernelsAreOptionalAndRoundTrip) {
  const nlohmann::json j = ReportToJson(FullReport());
  EXPECT_FALSE(j["exports"][0].contains("int8_kernels"));
  EXPECT_EQ(j["exports"][2]["int8_kernels"],
            nlohmann::json::parse(R"({"quantized": 3, "integer": ["conv1", "fc1"],
                                      "fallback": [{"layer": "fc2",
                                                    "reason": "ONNX Runtime runs it as Gemm"}]})"));
  nlohmann::json old = j;
  old["exports"][2].erase("int8_kernels");
  const Report back = ReportFromJson(old, "old.json");
  EXPECT_EQ(back.exports[2].int8_quantized_layers, 0);
  EXPECT_TRUE(back.exports[2].int8_integer_layers.empty());
  EXPECT_TRUE(back.exports[2].int8_fallback_layers.empty());
}

TEST(ReportJson, TextStartsWithSchemaVersion) {
  const std::string text = ReportJsonText(FullReport());
  EXPECT_EQ(text.rfind("{\n  \"schema_version\": 1,\n", 0), 0u) << text.substr(0, 80);
}

TEST(ReportJson, SaveAndLoadThroughAFile) {
  TempDir dir;
  const std::string path = dir.path() + "/report.json";
  WriteFileAtomic(path, ReportJsonText(FullReport()));
  ExpectSameReport(FullReport(), LoadReport(path));
}

std::string ErrorOf(const std::function<void()>& fn, ErrorKind want_kind = ErrorKind::kIo) {
  try {
    fn();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), want_kind);
    return e.what();
  }
  ADD_FAILURE() << "no error thrown";
  return "";
}

TEST(ReportJson, NewerSchemaIsExplained) {
  nlohmann::json j = ReportToJson(FullReport());
  j["schema_version"] = kReportSchemaVersion + 1;
  j["something_new"] = {1, 2};
  EXPECT_EQ(ErrorOf([&] { ReportFromJson(j, "runs/b.json"); }),
            "runs/b.json: written by a newer mcompress (schema 2, this build reads up to 1); "
            "upgrade to compare it");
  j["schema_version"] = 0;
  EXPECT_EQ(ErrorOf([&] { ReportFromJson(j, "a.json"); }),
            "a.json: written by an older mcompress (schema 0, this build reads 1 to 1); "
            "re-run its recipe with this build to compare it");
  j.erase("schema_version");
  EXPECT_EQ(ErrorOf([&] { ReportFromJson(j, "a.json"); }),
            "a.json: field 'schema_version': missing; not an mcompress report?");
}

TEST(ReportJson, MalformedFieldsNameTheirPath) {
  const nlohmann::json good = ReportToJson(FullReport());
  nlohmann::json j = good;
  j["stages"][2]["metrics"]["top1"] = "high";
  EXPECT_EQ(ErrorOf([&] { ReportFromJson(j, "r.json"); }),
            "r.json: field 'stages[2].metrics.top1': expected number, found string");
  j = good;
  j["baseline"]["size"].erase("macs");
  EXPECT_EQ(ErrorOf([&] { ReportFromJson(j, "r.json"); }),
            "r.json: field 'baseline.size.macs': missing (expected integer)");
  j = good;
  j["layers"][1]["weight_shape"][0] = 1.5;
  EXPECT_EQ(ErrorOf([&] { ReportFromJson(j, "r.json"); }),
            "r.json: field 'layers[1].weight_shape[0]': expected integer, found number 1.5");
  j = good;
  j["exports"] = nlohmann::json::object();
  EXPECT_EQ(ErrorOf([&] { ReportFromJson(j, "r.json"); }),
            "r.json: field 'exports': expected array, found object");
  j = good;
  j["acceptance"][0]["passed"] = 1;
  EXPECT_EQ(ErrorOf([&] { ReportFromJson(j, "r.json"); }),
            "r.json: field 'acceptance[0].passed': expected boolean, found integer 1");
  j = good;
  j["seed"] = -3;
  EXPECT_EQ(ErrorOf([&] { ReportFromJson(j, "r.json"); }),
            "r.json: field 'seed': expected non-negative integer, found integer -3");
  EXPECT_EQ(ErrorOf([&] { ReportFromJson(nlohmann::json::array(), "r.json"); }),
            "r.json: expected a JSON object (an mcompress report), found array");
}

TEST(ReportJson, Int8KernelsMustAddUp) {
  nlohmann::json j = ReportToJson(FullReport());
  j["exports"][2]["int8_kernels"]["quantized"] = 5;
  EXPECT_EQ(ErrorOf([&] { ReportFromJson(j, "r.json"); }),
            "r.json: field 'exports[2].int8_kernels.quantized': 5 layers, but integer and "
            "fallback list 3");
  j = ReportToJson(FullReport());
  j["exports"][2]["int8_kernels"]["fallback"][0].erase("reason");
  EXPECT_EQ(ErrorOf([&] { ReportFromJson(j, "r.json"); }),
            "r.json: field 'exports[2].int8_kernels.fallback[0].reason': missing (expected string)");
}

TEST(ReportJson, UnreadableOrInvalidFilesNameThePath) {
  TempDir dir;
  const std::string missing = dir.path() + "/missing.json";
  EXPECT_EQ(ErrorOf([&] { LoadReport(missing); }),
            missing + ": cannot read: No such file or directory");
  const std::string bad = dir.path() + "/bad.json";
  WriteFileAtomic(bad, "{\"schema_version\": 1,");
  const std::string msg = ErrorOf([&] { LoadReport(bad); });
  EXPECT_EQ(msg.rfind(bad + ": not valid JSON: parse error at line 1", 0), 0u) << msg;
  const std::string list = dir.path() + "/list.json";
  WriteFileAtomic(list, "[1, 2]");
  EXPECT_EQ(ErrorOf([&] { LoadReport(list); }),
            list + ": expected a JSON object (an mcompress report), found array");
}

// ---- Markdown -------------------------------------------------------------------------------

Report SmallReport() {
  Report r;
  r.mcompress_version = "0.1.0";
  r.torch_version = "1.13.1";
  r.recipe_hash = "abc123";
  r.model = "zoo:lenet5";
  r.device = "cpu";
  r.seed = 7;
  r.threads = 2;
  r.baseline = MakeStage(-1, "baseline", 0.9, 246824);
  r.stages.push_back(MakeStage(0, "prune-magnitude", 0.8875, 112424));
  r.stages[0].stats = {{"layers_pruned", 4}, {"sparsity", 0.7}};
  r.stages[0].skipped = {{"fc3", "last layer kept dense"}};
  r.stages.push_back(MakeStage(1, "quantize-ptq", kNaN, 62414));
  r.stages[1].changed = false;
  r.latency_baseline = {0.75, 12.5};
  r.latency_final = {0.5, kNaN};
  r.layers.push_back({"conv1", "Conv", "conv1.weight", {6, 1, 5, 5}, {}, 156, 0.0, 32, 117600});
  r.layers.push_back({"fc1", "Gemm", "fc1.weight", {120, 400}, {}, 48120, 0.9, 8, 48000});
  r.exports.push_back({"onnx", "model.onnx", 250000, true, 1.5e-6});
  r.acceptance.push_back({"max_accuracy_drop", 0.02, 0.0125, true});
  r.acceptance.push_back({"min_compression", 4, 3.95, false});
  r.accepted = false;
  r.compression_ratio = 3.95;
  r.total_seconds = 42.25;
  return r;
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream is(text);
  for (std::string line; std::getline(is, line);) lines.push_back(line);
  return lines;
}

void ExpectLine(const std::string& text, const std::string& line) {
  const auto lines = Lines(text);
  EXPECT_NE(std::find(lines.begin(), lines.end(), line), lines.end())
      << "missing line:\n" << line << "\nin:\n" << text;
}

TEST(ReportMarkdown, TablesHaveTheExpectedRows) {
  const std::string md = RenderMarkdown(SmallReport());
  ExpectLine(md, "# mcompress report: zoo:lenet5");
  ExpectLine(md, "| model | zoo:lenet5 |");
  ExpectLine(md, "| seed | 7 |");
  ExpectLine(md, "| recipe hash | abc123 |");
  ExpectLine(md, "| LibTorch | 1.13.1 |");
  ExpectLine(md, "| # | pass | top-1 % | top-5 % | loss | params | non-zeros | FP32 KB | "
                 "INT8 KB | sparse KB | compact KB | seconds | changed |");
  ExpectLine(md, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
  ExpectLine(md, "| base | baseline | 90.00 | 99.50 | 0.3125 | 61,706 | 61,706 | 241.0 | "
                 "60.3 | 241.0 | 30.1 | 1.50 |  |");
  ExpectLine(md, "| 0 | prune-magnitude | 88.75 | 99.50 | 0.3125 | 61,706 | 61,706 | 109.8 | "
                 "27.4 | 109.8 | 13.7 | 1.50 | yes |");
  ExpectLine(md, "| 1 | quantize-ptq | \u2014 | 99.50 | 0.3125 | 61,706 | 61,706 | 61.0 | "
                 "15.2 | 61.0 | 7.6 | 1.50 | no |");
  ExpectLine(md, "| baseline | 0.750 | 12.500 |");
  ExpectLine(md, "| final | 0.500 | \u2014 |");
  ExpectLine(md, "| speed-up | 1.50\u00d7 | \u2014 |");
  ExpectLine(md, "| format | path | bytes | verified | max \\|\u0394\\| | INT8 target | "
                 "INT8 kernels |");
  ExpectLine(md, "| onnx | model.onnx | 250,000 | yes | 1.50e-06 | \u2014 | \u2014 |");
  // Every quantized layer on integer kernels: no fallback table.
  EXPECT_EQ(md.find("layer not on integer kernels"), std::string::npos) << md;
  ExpectLine(md, "| conv1 | Conv | [6,1,5,5] | 156 | 0.0 | 32 | 117,600 |");
  ExpectLine(md, "| fc1 | Gemm | [120,400] | 48,120 | 90.0 | 8 | 48,000 |");
  ExpectLine(md, "| total |  |  | 48,276 | 89.7 |  | 165,600 |");
  ExpectLine(md, "### Stage 0: prune-magnitude");
  ExpectLine(md, "| layers_pruned | 4 |");
  ExpectLine(md, "| sparsity | 0.7 |");
  ExpectLine(md, "| fc3 | last layer kept dense |");
  ExpectLine(md, "| max_accuracy_drop | 0.02 | 0.0125 | PASS |");
  ExpectLine(md, "| min_compression | 4 | 3.95 | FAIL |");
  ExpectLine(md, "**Verdict: REJECTED (1 of 2 criteria failed)**");
}

TEST(ReportMarkdown, ShrunkShapesAndSensitivityScans) {
  const std::string md = RenderMarkdown(FullReport());
  ExpectLine(md, "| fc1 | Gemm | [240,400] \u2192 [120,400] | 48,120 | 90.0 | 8 | 48,000 |");
  ExpectLine(md, "| layer | top-1 % @ 50% sparse | top-1 % @ 90% sparse | chosen sparsity % |");
  ExpectLine(md, "| fc1 | 88.00 | \u2014 | 50 |");
  ExpectLine(md, "| fc2 | 90.00 | 70.00 | \u2014 |");
}

TEST(ReportMarkdown, Int8KernelsAndTheLayersLeftInFloat) {
  const std::string md = RenderMarkdown(FullReport());
  ExpectLine(md, "| onnx-qdq | model_int8.onnx | 70,000 | yes | 1.00e-02 | portable | 2/3 |");
  ExpectLine(md, "| export | layer not on integer kernels | reason |");
  ExpectLine(md, "| model_int8.onnx | fc2 | ONNX Runtime runs it as Gemm |");
  const std::string html = RenderHtml(FullReport());
  EXPECT_NE(html.find("<td>portable</td><td class=\"r\">2/3</td>"), std::string::npos);
  EXPECT_NE(html.find("<td>model_int8.onnx</td><td>fc2</td><td>ONNX Runtime runs it as Gemm</td>"),
            std::string::npos);
}

TEST(ReportMarkdown, PipesInCellsAreEscaped) {
  Report r = SmallReport();
  r.stages[0].skipped = {{"a|b", "x"}};
  ExpectLine(RenderMarkdown(r), "| a\\|b | x |");
}

// ---- HTML -----------------------------------------------------------------------------------

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t pos = text.find(what); pos != std::string::npos; pos = text.find(what, pos + 1)) ++n;
  return n;
}

TEST(ReportHtml, SelfContainedWithThreeChartsAndEscapedText) {
  Report r = SmallReport();
  r.model = "<script>alert('x')</script> & co";
  const std::string html = RenderHtml(r);
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  for (const char* banned : {"http", "//", "src=", "href=", "url(", "@import", "<script", "<link"}) {
    EXPECT_EQ(html.find(banned), std::string::npos) << banned;
  }
  EXPECT_EQ(Count(html, "<svg"), 3u);
  EXPECT_EQ(Count(html, "</svg>"), 3u);
  EXPECT_NE(html.find("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; co"), std::string::npos);
  EXPECT_NE(html.find("Top-1 accuracy per stage"), std::string::npos);
  EXPECT_NE(html.find("Model size per stage"), std::string::npos);
  EXPECT_NE(html.find("Per-layer sparsity and bit width"), std::string::npos);
  // The tables carry the same numbers as the Markdown.
  EXPECT_NE(html.find("<td>prune-magnitude</td><td class=\"r\">88.75</td>"), std::string::npos);
  EXPECT_NE(html.find("<td>min_compression</td><td class=\"r\">4</td><td class=\"r\">3.95</td>"
                      "<td>FAIL</td>"),
            std::string::npos);
  // Axis labels.
  EXPECT_NE(html.find(">top-1 %</text>"), std::string::npos);
  EXPECT_NE(html.find(">KB</text>"), std::string::npos);
}

TEST(ReportHtml, NoAccuracyAndNoLayersStillDrawCharts) {
  Report r;
  r.baseline.pass = "baseline";
  const std::string html = RenderHtml(r);
  EXPECT_EQ(Count(html, "<svg"), 3u);
  EXPECT_NE(html.find("accuracy was not evaluated"), std::string::npos);
  EXPECT_NE(html.find("no weighted layers"), std::string::npos);
  EXPECT_EQ(html.find("nan"), std::string::npos);
}

// ---- compare --------------------------------------------------------------------------------

TEST(ReportCompare, ListsBothRunsWithTheirRatio) {
  Report a = SmallReport();
  a.stages[1].metrics.top1 = 0.885;  // final top-1
  Report b = SmallReport();
  b.model = "zoo:convnet";
  b.stages.pop_back();
  b.layers[1].bits = 32;  // not quantized: best storage is sparse
  b.compression_ratio = 2.2;
  b.accepted = true;
  const std::string md = RenderCompareMarkdown({a, b}, {"int8", "pruned"});
  ExpectLine(md, "| run | model | final top-1 % | drop (pp) | final bytes | ratio | b1 ms | "
                 "b32 ms | accepted |");
  // a: quantized -> INT8 bytes of the last stage (62414 / 4 = 15603).
  ExpectLine(md, "| int8 | zoo:lenet5 | 88.50 | 1.50 | 15,603 | 3.95\u00d7 | 0.500 | \u2014 | no |");
  ExpectLine(md, "| pruned | zoo:convnet | 88.75 | 1.25 | 112,424 | 2.20\u00d7 | 0.500 | \u2014 | yes |");

  const std::string html = RenderCompareHtml({a, b}, {"int8", "pruned"});
  EXPECT_EQ(Count(html, "<svg"), 1u);
  EXPECT_EQ(Count(html, "<circle"), 2u);
  EXPECT_NE(html.find(">int8</text>"), std::string::npos);
  EXPECT_NE(html.find(">pruned</text>"), std::string::npos);
  EXPECT_NE(html.find(">size KB</text>"), std::string::npos);  // 15 KB vs 110 KB: linear
  EXPECT_EQ(html.find("http"), std::string::npos);
  EXPECT_EQ(html.find("//"), std::string::npos);
}

// ---- files ----------------------------------------------------------------------------------

TEST(ReportFiles, WriteFileAtomicReplacesAndLeavesNoTemporary) {
  TempDir dir;
  const std::string path = dir.path() + "/out.md";
  WriteFileAtomic(path, "first");
  WriteFileAtomic(path, "second\n");
  EXPECT_EQ(ReadText(path), "second\n");
  int entries = 0;
  for (const auto& e : fs::directory_iterator(dir.path())) {
    ++entries;
    EXPECT_EQ(e.path().filename(), "out.md");
  }
  EXPECT_EQ(entries, 1);
}

TEST(ReportFiles, WriteFileAtomicFailsCleanly) {
  EXPECT_EQ(ErrorOf([] { WriteFileAtomic("/proc/nope/x", "data"); }),
            "/proc/nope/x: cannot write: No such file or directory");
  TempDir dir;
  // The target is a directory: the rename fails, the temporary is removed.
  const std::string sub = dir.path() + "/sub";
  fs::create_directory(sub);
  fs::create_directory(sub + "/blocker");
  const std::string msg = ErrorOf([&] { WriteFileAtomic(sub + "/blocker", "data"); });
  EXPECT_EQ(msg.rfind(sub + "/blocker: cannot write: ", 0), 0u) << msg;
  int entries = 0;
  for (const auto& e : fs::directory_iterator(sub)) {
    ++entries;
    EXPECT_EQ(e.path().filename(), "blocker");
  }
  EXPECT_EQ(entries, 1);
}

// ---- a real render ----------------------------------------------------------------------------

// Decodes an 8-bit RGB/RGBA non-interlaced PNG (what Chromium writes) into RGBA.
struct Image {
  uint32_t width = 0, height = 0;
  std::vector<uint8_t> rgba;
};

uint32_t Be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

Image DecodePng(const std::string& bytes) {
  Image img;
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  if (bytes.size() < 8 || std::memcmp(p, "\x89PNG\r\n\x1a\n", 8) != 0) {
    throw std::runtime_error("not a PNG");
  }
  int depth = 0, color = 0, interlace = 0;
  std::string idat;
  for (size_t pos = 8; pos + 12 <= bytes.size();) {
    const uint32_t len = Be32(p + pos);
    const std::string type(bytes, pos + 4, 4);
    const uint8_t* data = p + pos + 8;
    if (pos + 12 + len > bytes.size()) throw std::runtime_error("truncated PNG");
    if (type == "IHDR") {
      img.width = Be32(data);
      img.height = Be32(data + 4);
      depth = data[8];
      color = data[9];
      interlace = data[12];
    } else if (type == "IDAT") {
      idat.append(reinterpret_cast<const char*>(data), len);
    } else if (type == "IEND") {
      break;
    }
    pos += 12 + len;
  }
  if (depth != 8 || (color != 2 && color != 6) || interlace != 0) {
    throw std::runtime_error("unsupported PNG: depth " + std::to_string(depth) + " color " +
                             std::to_string(color) + " interlace " + std::to_string(interlace));
  }
  const size_t bpp = color == 6 ? 4 : 3;
  const size_t stride = img.width * bpp;
  std::vector<uint8_t> raw((stride + 1) * img.height);
  uLongf raw_len = raw.size();
  if (uncompress(raw.data(), &raw_len, reinterpret_cast<const Bytef*>(idat.data()), idat.size()) !=
          Z_OK ||
      raw_len != raw.size()) {
    throw std::runtime_error("bad IDAT stream");
  }
  // Undo the per-row filters (PNG spec 9.2).
  std::vector<uint8_t> pix(stride * img.height), prev(stride, 0);
  for (uint32_t y = 0; y < img.height; ++y) {
    const uint8_t filter = raw[y * (stride + 1)];
    const uint8_t* in = &raw[y * (stride + 1) + 1];
    uint8_t* out = &pix[y * stride];
    for (size_t x = 0; x < stride; ++x) {
      const int a = x >= bpp ? out[x - bpp] : 0, b = prev[x], c = x >= bpp ? prev[x - bpp] : 0;
      int pred = 0;
      switch (filter) {
        case 0: pred = 0; break;
        case 1: pred = a; break;
        case 2: pred = b; break;
        case 3: pred = (a + b) / 2; break;
        case 4: {
          const int pp = a + b - c, pa = std::abs(pp - a), pb = std::abs(pp - b),
                    pc = std::abs(pp - c);
          pred = pa <= pb && pa <= pc ? a : (pb <= pc ? b : c);
          break;
        }
        default: throw std::runtime_error("bad PNG filter " + std::to_string(filter));
      }
      out[x] = static_cast<uint8_t>(in[x] + pred);
    }
    std::copy(out, out + stride, prev.begin());
  }
  img.rgba.resize(size_t{img.width} * img.height * 4);
  for (size_t i = 0; i < size_t{img.width} * img.height; ++i) {
    for (size_t k = 0; k < 3; ++k) img.rgba[i * 4 + k] = pix[i * bpp + k];
    img.rgba[i * 4 + 3] = bpp == 4 ? pix[i * bpp + 3] : 255;
  }
  return img;
}

TEST(ReportRender, ChromiumDrawsANonBlankPage) {
  // A dependency make test installs (chromium): missing is a failure, not a skip.
  ASSERT_EQ(access("/usr/bin/chromium", X_OK), 0)
      << "/usr/bin/chromium not installed (tools/deps.sh installs it)";
  TempDir dir;
  const std::string html = dir.path() + "/report.html";
  const std::string png = dir.path() + "/report.png";
  WriteFileAtomic(html, RenderHtml(SmallReport()));
  const std::string cmd = std::string(MCOMPRESS_SOURCE_DIR) + "/tools/render_check.sh '" + html +
                          "' '" + png + "' > '" + dir.path() + "/render.log' 2>&1";
  const int rc = std::system(cmd.c_str());
  ASSERT_EQ(rc, 0) << ReadText(dir.path() + "/render.log");
  const Image img = DecodePng(ReadText(png));
  EXPECT_EQ(img.width, 1200u);
  EXPECT_EQ(img.height, 1600u);
  std::set<uint32_t> colors;
  size_t non_white = 0;
  const size_t n = size_t{img.width} * img.height;
  for (size_t i = 0; i < n; ++i) {
    const uint8_t* px = &img.rgba[i * 4];
    colors.insert((uint32_t{px[0]} << 16) | (uint32_t{px[1]} << 8) | px[2]);
    if (px[0] < 245 || px[1] < 245 || px[2] < 245) ++non_white;
  }
  EXPECT_GT(non_white, n / 100) << "page looks blank: " << non_white << " non-white pixels";
  EXPECT_GT(colors.size(), 10u);
  // The chart palette's blue (#3b6fb6) is on screen: the SVG charts rendered.
  EXPECT_TRUE(colors.count(0x3b6fb6)) << colors.size() << " colours";
}

}  // namespace
}  // namespace compress
