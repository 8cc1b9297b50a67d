// prune-sensitivity: the target rule, the scan's numbers against pruning a copy by hand
// (differential), the graph left untouched when only scanning, and applied targets.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "compress/train/eval.h"
#include "compress/zoo/zoo.h"
#include "pruning/magnitude.h"
#include "pruning/prune_sensitivity.h"
#include "tests/test_util.h"

namespace compress {
namespace {

using testing_util::ExpectError;
using testing_util::RunPassFromJson;

TEST(ChooseSparsity, HighestWithinTheDrop) {
  const std::vector<double> s = {0.3, 0.5, 0.7, 0.9};
  EXPECT_DOUBLE_EQ(ChooseSparsity(s, {0.90, 0.89, 0.87, 0.60}, 0.90, 0.01), 0.5);
  EXPECT_DOUBLE_EQ(ChooseSparsity(s, {0.90, 0.90, 0.90, 0.90}, 0.90, 0.0), 0.9);
  EXPECT_DOUBLE_EQ(ChooseSparsity(s, {0.5, 0.4, 0.3, 0.2}, 0.90, 0.01), 0.0);
  // Non-monotone curves: the highest passing point counts.
  EXPECT_DOUBLE_EQ(ChooseSparsity(s, {0.80, 0.91, 0.70, 0.60}, 0.90, 0.0), 0.5);
}

struct Fixture {
  DatasetSplits data;
  PassContext ctx;
  Fixture() {
    torch::manual_seed(1);
    data.train.inputs = torch::randn({64, 1, 28, 28});
    data.train.targets = torch::randint(0, 10, {64}, torch::kLong);
    data.validation.inputs = torch::randn({300, 1, 28, 28});
    data.validation.targets = torch::randint(0, 10, {300}, torch::kLong);
    data.test = data.validation;
    ctx.data = &data;
  }
};

TEST(PruneSensitivity, ScanMatchesPruningOneLayerByHand) {
  Fixture f;
  Graph g = BuildZoo("lenet5", 4);
  Graph before = g.Clone();
  PassResult r = RunPassFromJson("prune-sensitivity", g,
                                 {{"sparsities", {0.5, 0.95}}, {"samples", 200}}, f.ctx);
  EXPECT_FALSE(r.changed);
  ASSERT_EQ(r.sensitivity.size(), 5u);
  const TensorDataset val = f.data.validation.Slice(0, 200);
  for (size_t i = 0; i < r.sensitivity.size(); ++i) {
    const SensitivityRow& row = r.sensitivity[i];
    ASSERT_EQ(row.top1.size(), 2u);
    EXPECT_TRUE(std::isnan(row.chosen));
    Graph copy = before.Clone();
    const std::string w = row.layer + ".weight";
    copy.Weight(w).mul_(MagnitudeMask(copy.Weight(w), 0.95));
    EXPECT_DOUBLE_EQ(row.top1[1], Evaluate(copy, val, 256, torch::kCPU).top1) << row.layer;
  }
  // Scanning restores every weight exactly.
  for (const auto& [name, init] : before.initializers) {
    EXPECT_TRUE(torch::equal(init.value, g.Weight(name))) << name;
  }
}

TEST(PruneSensitivity, AppliesDerivedTargets) {
  Fixture f;
  Graph g = BuildZoo("lenet5", 4);
  PassResult r = RunPassFromJson("prune-sensitivity", g,
                                 {{"sparsities", {0.2, 0.6}}, {"samples", 200}, {"apply_max_drop", 0.02}},
                                 f.ctx);
  for (const SensitivityRow& row : r.sensitivity) {
    EXPECT_DOUBLE_EQ(row.chosen, ChooseSparsity(row.sparsities, row.top1,
                                                r.stats["reference_val_top1"], 0.02));
    const Tensor& w = g.Weight(row.layer + ".weight");
    EXPECT_EQ((w == 0).sum().item<int64_t>(), std::llround(row.chosen * w.numel())) << row.layer;
  }
  ExpectError([&] { RunPassFromJson("prune-sensitivity", g, {{"sparsities", {0.5, 1.5}}}, f.ctx); },
              ErrorKind::kRecipe, "stages[0].sparsities[1]: value 1.5 is out of range");
  PassContext no_data;
  ExpectError([&] { RunPassFromJson("prune-sensitivity", g, nlohmann::json::object(), no_data); },
              ErrorKind::kRecipe, "needs a validation split");
}

}  // namespace
}  // namespace compress
