// The engine end to end on tiny recipes: outputs, report contents, determinism,
// acceptance exit code, and failure leaving no partial outputs.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "compress/zoo/builder.h"
#include "compress/data/sources.h"
#include "compress/engine/engine.h"
#include "compress/io/onnx_io.h"
#include "compress/io/verify.h"
#include "compress/zoo/zoo.h"
#include "tests/test_util.h"

namespace compress {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

fs::path Scratch(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("mc_engine_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

json TinyRecipe() {
  return json::parse(R"({
    "model": "zoo:lenet5",
    "data": {"batch_size": 64, "validation_size": 200, "train_limit": 1000, "test_limit": 300},
    "device": "cpu", "seed": 3, "threads": 2,
    "stages": [
      {"pass": "train", "epochs": 1, "optimizer": {"name": "adam", "lr": 0.002}},
      {"pass": "evaluate"}
    ],
    "exports": [{"format": "onnx", "path": "model.onnx"}],
    "report": {"formats": ["json", "md", "html"], "latency": false},
    "acceptance": {"max_accuracy_drop": 0.01}
  })");
}

std::string ReadFile(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

RunOutcome RunJson(const json& j, const fs::path& out) {
  Recipe r = ParseRecipe(j, "tiny.json", "");
  RunOptions o;
  o.out_dir = out.string();
  o.progress = "quiet";
  return RunRecipe(r, o);
}

TEST(Engine, TinyRecipeEndToEnd) {
  fs::path dir = Scratch("e2e");
  RunOutcome o = RunJson(TinyRecipe(), dir / "run");
  EXPECT_EQ(o.exit_code, 0);
  for (const char* f : {"model.onnx", "report.json", "report.md", "report.html", "recipe.json",
                        "manifest.json"}) {
    EXPECT_TRUE(fs::exists(dir / "run" / f)) << f;
  }
  EXPECT_FALSE(fs::exists(dir / ("run.tmp-" + std::to_string(getpid()))));
  const Report& r = o.report;
  ASSERT_EQ(r.stages.size(), 2u);
  // The leading train stage produces the baseline; evaluate re-measures the same model.
  EXPECT_GT(r.baseline.metrics.top1, 0.5);
  EXPECT_EQ(r.baseline.metrics.samples, 300);
  EXPECT_DOUBLE_EQ(r.stages[1].metrics.top1, r.baseline.metrics.top1);
  EXPECT_TRUE(r.stages[0].changed);
  EXPECT_FALSE(r.stages[1].changed);
  EXPECT_EQ(r.baseline.size.parameters, 61706);
  ASSERT_EQ(r.exports.size(), 1u);
  EXPECT_TRUE(r.exports[0].verified);
  // Verified in ONNX Runtime on the first test samples (two batches of 64).
  EXPECT_EQ(r.exports[0].verified_with.rfind("onnxruntime-node ", 0), 0u)
      << r.exports[0].verified_with;
  EXPECT_EQ(r.exports[0].verify_samples, 128);
  // (The export's own verification throws beyond rel 1e-4; top-1 it does not check.)
  EXPECT_GE(r.exports[0].top1_agreement, 0.99);
  EXPECT_TRUE(r.exports[0].sparse);
  EXPECT_EQ(r.exports[0].bytes, static_cast<int64_t>(fs::file_size(dir / "run" / "model.onnx")));
  ASSERT_EQ(r.acceptance.size(), 1u);
  EXPECT_TRUE(r.acceptance[0].passed);
  // report.json on disk is the returned report.
  Report loaded = LoadReport((dir / "run" / "report.json").string());
  EXPECT_EQ(ReportToJson(loaded).dump(), ReportToJson(r).dump());
  json manifest = json::parse(ReadFile(dir / "run" / "manifest.json"));
  EXPECT_EQ(manifest["recipe_hash"], RecipeHash(TinyRecipe()));
  EXPECT_EQ(manifest["dataset"]["t10k-labels-idx1-ubyte.gz"].get<std::string>().size(), 8u);
  // The exported model carries the recipe hash.
  Graph exported = LoadOnnx((dir / "run" / "model.onnx").string());
  EXPECT_EQ(exported.metadata["mcompress.recipe_hash"], RecipeHash(TinyRecipe()));
  fs::remove_all(dir);
}

TEST(Engine, SameRecipeSameSeedSameResultsAndBytes) {
  fs::path dir = Scratch("det");
  json j = TinyRecipe();
  j.erase("acceptance");
  RunOutcome a = RunJson(j, dir / "a");
  RunOutcome b = RunJson(j, dir / "b");
  EXPECT_EQ(a.report.baseline.metrics.top1, b.report.baseline.metrics.top1);
  EXPECT_EQ(a.report.baseline.metrics.loss, b.report.baseline.metrics.loss);
  EXPECT_EQ(a.report.stages[0].stats.size(), b.report.stages[0].stats.size());
  EXPECT_EQ(a.report.stages[0].stats.at("train_loss"), b.report.stages[0].stats.at("train_loss"));
  EXPECT_EQ(ReadFile(dir / "a" / "model.onnx"), ReadFile(dir / "b" / "model.onnx"));
  fs::remove_all(dir);
}

TEST(Engine, UnmetAcceptanceExitsThreeAndStillWritesOutputs) {
  fs::path dir = Scratch("accept");
  json j = TinyRecipe();
  j["acceptance"] = {{"min_compression", 2.0}};
  RunOutcome o = RunJson(j, dir / "run");
  EXPECT_EQ(o.exit_code, 3);
  EXPECT_FALSE(o.report.accepted);
  ASSERT_EQ(o.report.acceptance.size(), 1u);
  EXPECT_NEAR(o.report.acceptance[0].value, 1.0, 0.05);  // nothing was compressed
  json written = json::parse(ReadFile(dir / "run" / "report.json"));
  EXPECT_EQ(written["accepted"], false);
  fs::remove_all(dir);
}

TEST(Engine, FailingRunLeavesNoOutputs) {
  fs::path dir = Scratch("fail");
  // A model with finite weights whose logits are not finite (they are divided by zero):
  // the run must stop with a numeric error at the baseline.
  GraphBuilder b("nan_model");
  std::string x = b.Input("input", {kDynamicDim, 1, 28, 28});
  x = b.Op1("Flatten", {x}, {{"axis", int64_t{1}}});
  x = b.Linear(x, 784, 10, true, "fc");
  b.Constant("zero", torch::zeros({10}));
  b.Output("logits", b.Op1("Div", {x, "zero"}));
  SaveOnnx(b.Build(), (dir / "nan.onnx").string());
  json j = TinyRecipe();
  j["model"] = (dir / "nan.onnx").string();
  j["stages"] = json::array({json{{"pass", "evaluate"}}});
  try {
    RunJson(j, dir / "run");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kNumeric);
    EXPECT_NE(std::string(e.what()).find("baseline: loss is not finite"), std::string::npos)
        << e.what();
  }
  EXPECT_FALSE(fs::exists(dir / "run"));
  EXPECT_FALSE(fs::exists(dir / ("run.tmp-" + std::to_string(getpid()))));
  fs::remove_all(dir);
}

// A C++ pipeline's own model and data (issue 14): RunRecipeOn on a Graph and splits the
// caller made, with "model": "caller" and "data": {"dataset": "caller"}. The masks of
// the pruning stage survive the later training and the INT8 export is verified.
TEST(Engine, RunRecipeOnTheCallersModelAndData) {
  const fs::path dir = Scratch("caller");
  const DatasetSplits& data = testing_util::FashionMnistSubset(1000, 200, 300);
  const json j = json::parse(R"({
    "model": "caller",
    "data": {"dataset": "caller", "batch_size": 64, "calibration_samples": 256},
    "device": "cpu", "seed": 1, "threads": 2,
    "stages": [
      {"pass": "train", "epochs": 1, "optimizer": {"name": "adam", "lr": 0.002}},
      {"pass": "prune-magnitude", "sparsity": 0.6},
      {"pass": "train", "epochs": 1, "optimizer": {"name": "adam", "lr": 0.001}},
      {"pass": "quantize"},
      {"pass": "evaluate"}
    ],
    "exports": [{"format": "onnx-qdq", "path": "int8.onnx"}],
    "report": {"formats": ["json"], "latency": false}
  })");
  Recipe r = ParseRecipe(j, "pipeline", "");
  RunOptions o;
  o.out_dir = (dir / "run").string();
  o.progress = "quiet";
  const RunOutcome out = RunRecipeOn(r, BuildZoo("lenet5", 4), data, o);
  ASSERT_EQ(out.report.stages.size(), 5u);
  EXPECT_GT(out.report.stages.back().metrics.top1, 0.6);
  ASSERT_EQ(out.report.exports.size(), 1u);
  EXPECT_TRUE(out.report.exports[0].verified);
  // Every pruned layer of the exported INT8 file is still at least 60% zeros.
  const Graph exported = LoadOnnx((dir / "run" / "int8.onnx").string());
  int layers = 0;
  for (const auto& n : exported.nodes) {
    if (n.op_type != "DequantizeLinear" || !exported.IsInitializer(n.inputs[0])) continue;
    const Tensor& q = exported.Weight(n.inputs[0]);
    if (q.scalar_type() != at::kChar) continue;
    EXPECT_GE((q == 0).to(torch::kDouble).mean().item<double>(), 0.6 - 1e-9) << n.name;
    ++layers;
  }
  EXPECT_EQ(layers, 5);
  const json manifest = json::parse(ReadFile(dir / "run" / "manifest.json"));
  EXPECT_EQ(manifest["dataset"]["caller"]["train"], 1000);
  // Without the caller, such a recipe has nothing to load.
  EXPECT_THROW(RunJson(j, dir / "cli"), Error);
  DatasetSplits no_test = data;
  no_test.test = TensorDataset{};
  EXPECT_THROW(RunRecipeOn(r, BuildZoo("lenet5", 4), no_test, o), Error);
  fs::remove_all(dir);
}

// Every measured stage is compared with the baseline's outputs: the evaluate stage of
// the tiny recipe runs the baseline itself, so it agrees fully at the SQNR cap.
TEST(Engine, MeasuredStagesCompareWithTheBaseline) {
  fs::path dir = Scratch("compare");
  json j = TinyRecipe();
  j["acceptance"] = {{"min_agreement", 1.0}, {"min_sqnr_db", 199.0}};
  RunOutcome o = RunJson(j, dir / "run");
  EXPECT_EQ(o.exit_code, 0);
  const Report& r = o.report;
  EXPECT_TRUE(std::isnan(r.baseline.metrics.agreement));
  ASSERT_EQ(r.stages.size(), 2u);
  EXPECT_DOUBLE_EQ(r.stages[1].metrics.agreement, 1.0);
  EXPECT_DOUBLE_EQ(r.stages[1].metrics.sqnr_db, 200.0);
  EXPECT_DOUBLE_EQ(r.stages[1].metrics.max_rel_error, 0.0);
  ASSERT_EQ(r.acceptance.size(), 2u);
  EXPECT_EQ(r.acceptance[0].criterion, "min_agreement");
  EXPECT_EQ(r.acceptance[1].criterion, "min_sqnr_db");
  // The figures survive the report's JSON round trip.
  const Report back = LoadReport((dir / "run" / "report.json").string());
  EXPECT_DOUBLE_EQ(back.stages[1].metrics.sqnr_db, 200.0);
  EXPECT_DOUBLE_EQ(back.stages[1].metrics.agreement, 1.0);
  EXPECT_NE(ReadFile(dir / "run" / "report.md").find("agreement %"), std::string::npos);
}

// Unlabeled data (tensor files without targets): a model is quantized, calibrated on the
// unlabeled training split, and judged by agreement and SQNR against its FP32 self.
TEST(Engine, UnlabeledDataIsJudgedByAgreementAndSqnr) {
  fs::path dir = Scratch("unlabeled");
  const DatasetSplits& fm = testing_util::FashionMnistSubset(600, 100, 300);
  SaveTensorFile((dir / "train.pt").string(), fm.train.inputs);
  SaveTensorFile((dir / "test.pt").string(), fm.test.inputs);
  json j = json::parse(R"({
    "model": "zoo:lenet5",
    "data": {"dataset": "tensors", "validation_size": 100, "batch_size": 64},
    "device": "cpu", "seed": 3, "threads": 2,
    "stages": [{"pass": "quantize", "samples": 256}],
    "report": {"formats": ["json", "md"], "latency": false},
    "acceptance": {"min_agreement": 0.9, "min_sqnr_db": 15}
  })");
  j["data"]["train"] = (dir / "train.pt").string();
  j["data"]["test"] = (dir / "test.pt").string();
  RunOutcome o = RunJson(j, dir / "run");
  const Report& r = o.report;
  ASSERT_EQ(r.stages.size(), 1u);
  const Metrics& m = r.stages[0].metrics;
  EXPECT_TRUE(std::isnan(m.top1) && std::isnan(r.baseline.metrics.top1));
  EXPECT_EQ(m.samples, 300);
  // INT8 lenet5 (random weights) against FP32: close, not identical.
  EXPECT_GT(m.agreement, 0.9);
  EXPECT_LT(m.agreement, 1.0 + 1e-12);
  EXPECT_GT(m.sqnr_db, 15);
  EXPECT_LT(m.sqnr_db, 200);
  EXPECT_GT(m.max_rel_error, 0);
  EXPECT_LT(m.max_rel_error, 0.5);
  EXPECT_EQ(o.exit_code, 0);
  EXPECT_TRUE(r.accepted);
  // A limit the INT8 model cannot meet: outputs still written, exit 3.
  j["acceptance"]["min_sqnr_db"] = 150;
  RunOutcome strict = RunJson(j, dir / "strict");
  EXPECT_EQ(strict.exit_code, 3);
  EXPECT_FALSE(strict.report.acceptance[1].passed);
  EXPECT_DOUBLE_EQ(strict.report.acceptance[1].value, m.sqnr_db);
  // Accuracy criteria and evaluate stages need labels: refused with the alternative named.
  json drop = j;
  drop["acceptance"] = {{"max_accuracy_drop", 0.01}};
  testing_util::ExpectError([&] { RunJson(drop, dir / "drop"); }, ErrorKind::kRecipe,
                            "acceptance.max_accuracy_drop: the test split has no labels");
  EXPECT_FALSE(fs::exists(dir / "drop"));
  json eval = j;
  eval["stages"].push_back({{"pass", "evaluate"}});
  testing_util::ExpectError([&] { RunJson(eval, dir / "eval"); }, ErrorKind::kRecipe,
                            "stages[1] (evaluate): the data has no labels");
  EXPECT_FALSE(fs::exists(dir / "eval"));
}

TEST(Engine, RefusesToReplaceAForeignFolder) {
  fs::path dir = Scratch("foreign");
  fs::create_directories(dir / "run");
  { std::ofstream(dir / "run" / "precious.txt") << "user data"; }
  EXPECT_THROW(RunJson(TinyRecipe(), dir / "run"), Error);
  EXPECT_TRUE(fs::exists(dir / "run" / "precious.txt"));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace compress
