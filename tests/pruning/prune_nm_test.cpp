// prune-nm and the AGP schedule: the N:M mask math (pattern, ties, partial group
// fractions, any reduction dim), the pass on zoo graphs (which layers fit, exact 50%,
// the checker) and the pattern holding through fine-tuning and gradual steps.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "compress/runtime/executor.h"
#include "compress/zoo/zoo.h"
#include "pruning/nm.h"
#include "compress/pass/schedule.h"
#include "tests/test_util.h"

namespace compress {
namespace {

using testing_util::ExpectError;
using testing_util::RunPassFromJson;

TEST(NMMask, KeepsTheTwoLargestOfEveryFour) {
  Tensor w = torch::tensor({{0.1f, -3.f, 2.f, 0.5f, 1.f, 1.f, 1.f, 1.f}});
  Tensor m = NMMask(w, 2, 4, 1);
  // Group 2 is all ties: the first two positions are kept.
  EXPECT_TRUE(torch::equal(m, torch::tensor({{0.f, 1.f, 1.f, 0.f, 1.f, 1.f, 0.f, 0.f}})));
  EXPECT_EQ(CountNMViolations(w * m, 2, 4, 1), 0);
  EXPECT_EQ(CountNMViolations(w, 2, 4, 1), 2);
}

TEST(NMMask, ConvGroupsRunAlongInputChannelsAtEachPosition) {
  torch::manual_seed(3);
  Tensor w = torch::randn({8, 16, 3, 3});
  Tensor m = NMMask(w, 2, 4, 1);
  EXPECT_EQ(m.sum().item<int64_t>(), w.numel() / 2);
  EXPECT_EQ(CountNMViolations(w * m, 2, 4, 1), 0);
  // Each run of 4 input channels at a fixed (out, kh, kw) keeps exactly 2 entries.
  Tensor runs = m.permute({0, 2, 3, 1}).reshape({-1, 4}).sum(1);
  EXPECT_TRUE(torch::all(runs == 2).item<bool>());
  // Kept entries are the largest of their run.
  Tensor a = w.abs().permute({0, 2, 3, 1}).reshape({-1, 4});
  Tensor k = m.permute({0, 2, 3, 1}).reshape({-1, 4}).to(torch::kBool);
  Tensor kept_min = a.masked_fill(~k, 1e9).amin(1), dropped_max = a.masked_fill(k, -1).amax(1);
  EXPECT_TRUE(torch::all(kept_min >= dropped_max).item<bool>());
  // MatMul [K, N]: the runs are along dim 0.
  Tensor mm = torch::randn({12, 5});
  EXPECT_EQ(CountNMViolations(mm * NMMask(mm, 1, 4, 0), 1, 4, 0), 0);
  EXPECT_THROW(NMMask(torch::randn({3, 6}), 2, 4, 1), Error);  // 6 % 4 != 0
  EXPECT_THROW(NMMask(w, 4, 4, 1), Error);
}

TEST(NMMask, PartialFractionPatternsTheCheapestGroups) {
  // Row 0 loses 0.2 under 2:4, row 1 loses 10: at fraction 0.5 only row 0 is pruned.
  Tensor w = torch::tensor({{1.f, 0.1f, 1.f, 0.1f}, {5.f, 5.f, 5.f, 5.f}});
  Tensor m = NMMask(w, 2, 4, 1, 0.5);
  EXPECT_TRUE(torch::equal(m, torch::tensor({{1.f, 0.f, 1.f, 0.f}, {1.f, 1.f, 1.f, 1.f}})));
  EXPECT_TRUE(torch::equal(NMMask(w, 2, 4, 1, 0.0), torch::ones_like(w)));
}

TEST(AgpTarget, CubicFromInitialToFinal) {
  EXPECT_DOUBLE_EQ(AgpTarget(0.0, 0.9, 5, 5), 0.9);
  EXPECT_NEAR(AgpTarget(0.0, 0.9, 1, 5), 0.9 * (1 - 0.8 * 0.8 * 0.8), 1e-12);
  EXPECT_NEAR(AgpTarget(0.2, 0.8, 2, 4), 0.8 - 0.6 * 0.125, 1e-12);
  double prev = 0;
  for (int s = 1; s <= 10; ++s) {  // increasing, and front-loaded (larger steps first)
    double t = AgpTarget(0.0, 0.9, s, 10);
    EXPECT_GT(t, prev);
    if (s > 1) EXPECT_LT(t - prev, AgpTarget(0.0, 0.9, 1, 10) + 1e-12);
    prev = t;
  }
}

TEST(PruneNM, FitsLayersAndHoldsExactlyHalf) {
  Graph g = BuildZoo("lenet5");
  PassResult r = RunPassFromJson("prune-nm", g, {{"n", 2}, {"m", 4}});
  // conv1 reads 1 channel and conv2 6: neither is a multiple of 4; the FCs are.
  ASSERT_EQ(r.skipped.size(), 2u);
  EXPECT_EQ(r.skipped[0].layer, "conv1");
  EXPECT_EQ(r.skipped[0].reason, "input dimension 1 is not a multiple of m=4");
  EXPECT_EQ(r.skipped[1].reason, "input dimension 6 is not a multiple of m=4");
  EXPECT_EQ(r.stats["layers_pruned"], 3);
  EXPECT_DOUBLE_EQ(r.stats["sparsity"], 0.5);
  for (const char* w : {"fc1.weight", "fc2.weight", "fc3.weight"}) {
    EXPECT_EQ(CountNMViolations(g.Weight(w), 2, 4, 1), 0) << w;
    EXPECT_TRUE(g.initializers.at(w).mask.defined());
  }
  EXPECT_EQ((g.Weight("conv2.weight") == 0).sum().item<int64_t>(), 0);
}

TEST(PruneNM, BadPatternIsARecipeError) {
  Graph g = BuildZoo("lenet5");
  ExpectError([&] { RunPassFromJson("prune-nm", g, {{"n", 4}, {"m", 4}}); }, ErrorKind::kRecipe,
              "stages[0].n: must be smaller than m (4)");
  ExpectError([&] { RunPassFromJson("prune-nm", g, {{"n", 2}, {"mm", 4}}); }, ErrorKind::kRecipe,
              "stages[0].mm");
}

DatasetSplits TinyData(int64_t n) {
  torch::manual_seed(0);
  DatasetSplits d;
  d.train.inputs = torch::randn({n, 1, 28, 28});
  d.train.targets = torch::randint(0, 10, {n}, torch::kLong);
  d.validation = d.train.Slice(0, 32);
  d.test = d.train.Slice(0, 32);
  return d;
}

// A context whose training re-applies masks after each step, as the engine's does.
PassContext TrainingContext(const DatasetSplits* data) {
  PassContext ctx;
  ctx.data = data;
  ctx.batch_size = 64;
  ctx.progress = "quiet";
  ctx.after_step = [](Graph& graph) { graph.ApplyMasks(); };
  return ctx;
}

TEST(PruneNM, GradualStepsEndInTheFullPatternThroughFineTuning) {
  Graph g = BuildZoo("mlp-300-100");
  DatasetSplits data = TinyData(256);
  PassContext ctx = TrainingContext(&data);
  std::vector<std::string> log;
  ctx.log = [&](const std::string& line) { log.push_back(line); };
  PassResult r = RunPassFromJson(
      "prune-nm", g,
      {{"gradual", {{"steps", 3}, {"finetune_epochs", 1}, {"optimizer", {{"name", "adam"}, {"lr", 0.01}}}}}},
      ctx);
  EXPECT_EQ(r.stats["gradual_steps"], 3);
  EXPECT_EQ(r.stats["finetune_epochs"], 2);
  for (const char* w : {"fc1.weight", "fc2.weight"}) {
    EXPECT_EQ(CountNMViolations(g.Weight(w), 2, 4, 1), 0) << w;
  }
  // fc3 reads 100 = 25 x 4 inputs: pruned too.
  EXPECT_DOUBLE_EQ(r.stats["sparsity"], 0.5);
  ASSERT_GE(log.size(), 3u);
  EXPECT_NE(log[0].find("gradual step 1/3"), std::string::npos);
}

TEST(PruneMagnitude, GradualReachesTheExactFinalSparsity) {
  Graph g = BuildZoo("mlp-300-100");
  DatasetSplits data = TinyData(256);
  PassContext ctx = TrainingContext(&data);
  PassResult r = RunPassFromJson(
      "prune-magnitude", g,
      {{"sparsity", 0.9}, {"scope", "global"}, {"gradual", {{"steps", 4}, {"initial", 0.1}}}}, ctx);
  int64_t zeros = 0, total = 0;
  for (const char* w : {"fc1.weight", "fc2.weight", "fc3.weight"}) {
    zeros += (g.Weight(w) == 0).sum().item<int64_t>();
    total += g.Weight(w).numel();
  }
  EXPECT_EQ(zeros, std::llround(0.9 * total));
  EXPECT_EQ(r.stats["finetune_epochs"], 3);
  ExpectError([&] { RunPassFromJson("prune-magnitude", g, {{"sparsity", 0.5}, {"gradual", {{"steps", 2}, {"initial", 0.6}}}}); },
              ErrorKind::kRecipe, "stages[0].gradual.initial: must be below the pass's final target");
}

}  // namespace
}  // namespace compress
