// quantize-qat with `distill`: the fake-quantized model trains on the distillation loss
// against the baseline (alpha 1: the trainer's loss is exactly the KD term) and still ends
// in the QDQ form quantize produces; feature terms share the trainer's observer with the
// range observer; bad `distill` options are recipe errors naming their JSON path.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "compress/data/data.h"
#include "compress/engine/recipe.h"
#include "compress/zoo/zoo.h"
#include "quantization/qat.h"
#include "tests/test_util.h"

namespace compress {
namespace {

using nlohmann::json;
using testing_util::ExpectError;
using testing_util::RunPassFromJson;

// 512 training samples: 8 steps of 64 an epoch.
const DatasetSplits& SmallData() {
  static const DatasetSplits small = [] {
    const DatasetSplits& d = testing_util::FashionMnistSubset(1024, 256, 512);
    return DatasetSplits{d.train.Slice(0, 512), d.validation.Slice(0, 64), d.test.Slice(0, 128)};
  }();
  return small;
}

int CountOp(const Graph& g, const std::string& op) {
  int n = 0;
  for (const auto& node : g.nodes) n += node.op_type == op ? 1 : 0;
  return n;
}

TEST(QatDistill, TrainsTheFakeQuantizedModelOnTheKdLossAndEndsInQdqForm) {
  const Graph teacher = BuildZoo("convnet", 2);
  PassContext ctx = testing_util::SplitsContext(SmallData(), 64, 256);
  ctx.baseline = &teacher;
  std::string log;
  ctx.log = [&](const std::string& line) { log += line + "\n"; };
  Graph ptq = BuildZoo("lenet5", 1);
  const PassResult p = RunPassFromJson("quantize", ptq, json::object(), ctx);
  Graph g = BuildZoo("lenet5", 1);
  const PassResult r = RunPassFromJson(
      "quantize-qat", g, json::parse(R"({"epochs": 1, "distill": {"temperature": 2, "alpha": 1}})"),
      ctx);

  // The QDQ form of quantize, no training-only node left.
  EXPECT_EQ(CountOp(g, "FakeQuantize"), 0);
  EXPECT_GT(CountOp(g, "QuantizeLinear"), 0);
  EXPECT_EQ(CountOp(g, "QuantizeLinear"), CountOp(ptq, "QuantizeLinear"));
  EXPECT_EQ(r.stats.at("layers_quantized"), p.stats.at("layers_quantized"));
  // It computes what was trained, bias rounding aside (about 1e-3 on the QAT tests' models;
  // the bound leaves room for an untrained student's smaller activations).
  EXPECT_LT(r.stats.at("qdq_vs_trained_rel_error"), 0.05);

  // The distillation loss was the one trained: with alpha 1 the trainer's mean loss over
  // the epoch is the mean KD term, and the fresh student is far from its teacher.
  EXPECT_EQ(r.stats.at("epochs"), 1);
  const double kd = r.stats.at("kd_loss");
  ASSERT_TRUE(std::isfinite(kd));
  EXPECT_GT(kd, 0);
  EXPECT_NEAR(r.stats.at("train_loss"), kd, 1e-4 * kd);
  EXPECT_EQ(r.stats.at("alpha_first_epoch"), 1);
  EXPECT_EQ(r.stats.at("teachers"), 1);
  EXPECT_EQ(r.stats.at("teacher_cached"), 1);
  EXPECT_NE(log.find("distilled (teacher 'convnet' (baseline), T 2, alpha 1"), std::string::npos)
      << log;
}

// Activation ranges tracked by the observer (observer_epochs) and a hint on fc1 ([N,120]
// in lenet5, [N,128] in the convnet: an adapter) read the same forward passes.
TEST(QatDistill, FeatureTermsAndTheRangeObserverShareTheForwardPass) {
  const Graph teacher = BuildZoo("convnet", 2);
  PassContext ctx = testing_util::SplitsContext(SmallData(), 64, 256);
  ctx.baseline = &teacher;
  Graph g = BuildZoo("lenet5", 1);
  const PassResult r = RunPassFromJson("quantize-qat", g, json::parse(R"({
    "epochs": 1, "observer_epochs": 1,
    "distill": {"alpha": 0.5, "features": [{"student": "fc1", "weight": 0.5}]}
  })"), ctx);
  EXPECT_EQ(CountOp(g, "FakeQuantize"), 0);
  EXPECT_GT(CountOp(g, "QuantizeLinear"), 0);
  EXPECT_EQ(r.stats.at("adapters"), 1);
  EXPECT_EQ(r.stats.at("teacher_cached"), 0);  // the hint needs the teacher per batch
  EXPECT_TRUE(std::isfinite(r.stats.at("hint_loss")) && r.stats.at("hint_loss") > 0);
  EXPECT_TRUE(std::isfinite(r.stats.at("kd_loss")) && r.stats.at("kd_loss") > 0);
}

TEST(QatDistill, BadDistillOptionsAreClearErrors) {
  const Graph teacher = BuildZoo("convnet", 2);
  PassContext ctx = testing_util::SplitsContext(SmallData(), 64, 256);
  ctx.baseline = &teacher;
  Graph g = BuildZoo("lenet5", 1);
  auto fails = [&](const char* options, const PassContext& c, const std::string& message) {
    ExpectError([&] { RunPassFromJson("quantize-qat", g, json::parse(options), c); },
                ErrorKind::kRecipe, message);
  };
  fails(R"({"distill": {"temperature": 0}})", ctx,
        "stages[0].distill.temperature: value 0 is out of range; expected 0.01 <= value <= 1000");
  fails(R"({"distill": {"alpha": {"from": 0, "to": 2}}})", ctx,
        "stages[0].distill.alpha.to: value 2 is out of range");
  // Epochs and the optimizer are quantize-qat's own.
  fails(R"({"distill": {"epochs": 2}})", ctx, "stages[0].distill.epochs: unknown option");
  fails(R"({"distill": true})", ctx, "stages[0].distill: expected an object, found boolean");
  PassContext no_teacher = ctx;
  no_teacher.baseline = nullptr;
  fails(R"({"distill": {}})", no_teacher, "stages[0].distill: distill has no teacher");

  // In a recipe, the stage's own index.
  const json recipe = json::parse(R"({
    "model": "zoo:lenet5",
    "stages": [{"pass": "train"}, {"pass": "quantize-qat", "distill": {"temperature": 0}}]
  })");
  ExpectError([&] { ParseRecipe(recipe, "r.json", ""); }, ErrorKind::kRecipe,
              "stages[1].distill.temperature: value 0 is out of range");
}

}  // namespace
}  // namespace compress
