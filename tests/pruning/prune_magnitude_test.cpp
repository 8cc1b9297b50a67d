// prune-magnitude: the mask math (exact counts, ties, global ranking), the pass on zoo
// graphs (selection, skips, errors, outputs of the unpruned part unchanged), and masks
// holding through a later training stage of the engine.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>

#include "compress/engine/engine.h"
#include "compress/runtime/executor.h"
#include "compress/zoo/zoo.h"
#include "pruning/magnitude.h"
#include "pruning/prune_magnitude.h"
#include "tests/test_util.h"

namespace compress {
namespace {

using testing_util::ExpectError;

double Sparsity(const Tensor& t) { return (t == 0).sum().item<double>() / t.numel(); }

TEST(MagnitudeMask, ZeroesExactlyTheSmallest) {
  Tensor w = torch::tensor({0.5f, -0.1f, 3.0f, -2.0f, 0.05f, 1.0f});
  Tensor m = MagnitudeMask(w, 0.5);  // 3 of 6: |0.05|, |-0.1|, |0.5|
  EXPECT_TRUE(torch::equal(m, torch::tensor({0.f, 0.f, 1.f, 1.f, 0.f, 1.f})));
  EXPECT_TRUE(torch::equal(MagnitudeMask(w, 0.0), torch::ones(6)));
  // Ties: equal magnitudes are pruned in index order, deterministically.
  Tensor tie = torch::ones({4});
  EXPECT_TRUE(torch::equal(MagnitudeMask(tie, 0.5), torch::tensor({0.f, 0.f, 1.f, 1.f})));
  EXPECT_THROW(MagnitudeMask(w, 1.0), Error);
  EXPECT_THROW(MagnitudeMask(w, -0.1), Error);
}

TEST(MagnitudeMask, ExactSparsityOnLargeTensors) {
  torch::manual_seed(0);
  Tensor w = torch::randn({37, 91});
  for (double s : {0.1, 0.5, 0.9, 0.97}) {
    Tensor m = MagnitudeMask(w, s);
    EXPECT_EQ((m == 0).sum().item<int64_t>(), std::llround(s * w.numel())) << s;
    // Every kept weight is at least as large as every pruned one.
    EXPECT_GE(w.abs().masked_select(m == 1).min().item<float>(),
              w.abs().masked_select(m == 0).max().item<float>());
  }
}

TEST(MagnitudeMask, GlobalRanksAcrossTensors) {
  Tensor small = torch::full({10}, 0.01f), large = torch::full({10}, 5.0f);
  auto masks = GlobalMagnitudeMasks({small, large}, 0.5);
  EXPECT_EQ(masks[0].sum().item<float>(), 0.f);   // all of the small tensor pruned
  EXPECT_EQ(masks[1].sum().item<float>(), 10.f);  // none of the large one
}

PassResult RunPass(Graph& g, const nlohmann::json& options) {
  std::vector<Problem> problems;
  OptionReader r(options, "stages[0]", &problems);
  auto pass = PruneMagnitudePass::Create(r);
  r.Finish();
  if (!problems.empty()) throw Error(ErrorKind::kRecipe, problems[0].path + ": " + problems[0].message);
  PassContext ctx;
  return pass->Run(g, ctx);
}

TEST(PruneMagnitude, PerLayerSparsityIsExactOnEveryLayer) {
  Graph g = BuildZoo("lenet5");
  PassResult r = RunPass(g, {{"sparsity", 0.8}});
  EXPECT_TRUE(r.changed);
  EXPECT_EQ(r.stats["layers_pruned"], 5);
  for (const char* w : {"conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight", "fc3.weight"}) {
    const Initializer& init = g.initializers.at(w);
    EXPECT_NEAR(Sparsity(init.value), 0.8, 0.5 / init.value.numel()) << w;
    ASSERT_TRUE(init.mask.defined()) << w;
    EXPECT_TRUE(torch::equal(init.value == 0, init.mask == 0)) << w;
  }
  EXPECT_EQ(Sparsity(g.Weight("conv1.bias")), 0);  // biases untouched
}

TEST(PruneMagnitude, GlobalScopeHitsTheTotalTarget) {
  Graph g = BuildZoo("mlp-300-100");
  PassResult r = RunPass(g, {{"sparsity", 0.9}, {"scope", "global"}});
  int64_t zeros = 0, total = 0;
  for (const char* w : {"fc1.weight", "fc2.weight", "fc3.weight"}) {
    zeros += (g.Weight(w) == 0).sum().item<int64_t>();
    total += g.Weight(w).numel();
  }
  EXPECT_EQ(zeros, std::llround(0.9 * total));
  EXPECT_DOUBLE_EQ(r.stats["sparsity"], static_cast<double>(zeros) / total);
  // Global ranking prunes the layers unevenly (fc1's fan-in gives it smaller weights).
  EXPECT_GT(Sparsity(g.Weight("fc1.weight")), Sparsity(g.Weight("fc3.weight")));
}

TEST(PruneMagnitude, SelectionAndSkipsAreReported) {
  Graph g = BuildZoo("lenet5");
  PassResult r = RunPass(g, {{"sparsity", 0.5}, {"exclude", "^fc2"}, {"skip_first_last", true}});
  EXPECT_EQ(r.stats["layers_pruned"], 2);  // conv2, fc1
  ASSERT_EQ(r.skipped.size(), 3u);
  EXPECT_EQ(r.skipped[0].layer, "conv1");
  EXPECT_EQ(r.skipped[0].reason, "first weighted layer (skip_first_last)");
  EXPECT_EQ(r.skipped[1].reason, "matches exclude \"^fc2\"");
  EXPECT_EQ(r.skipped[2].reason, "last weighted layer (skip_first_last)");
  EXPECT_EQ(Sparsity(g.Weight("fc2.weight")), 0);
}

TEST(PruneMagnitude, ZeroSparsityChangesNothing) {
  Graph g = BuildZoo("convnet");
  Graph before = g.Clone();
  PassResult r = RunPass(g, {{"sparsity", 0.0}});
  EXPECT_FALSE(r.changed);
  Tensor x = torch::randn({4, 1, 28, 28});
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(Executor(g).Run({x})[0], Executor(before).Run({x})[0]));
}

TEST(PruneMagnitude, MatchesMaskingByHandNumerically) {
  // The pruned graph computes exactly what the original computes with the same weights
  // zeroed by hand (differential check).
  Graph g = BuildZoo("lenet5");
  Graph ref = g.Clone();
  RunPass(g, {{"sparsity", 0.7}});
  for (const char* w : {"conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight", "fc3.weight"}) {
    ref.Weight(w).mul_(MagnitudeMask(ref.Weight(w), 0.7));
  }
  Tensor x = torch::randn({8, 1, 28, 28});
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::allclose(Executor(g).Run({x})[0], Executor(ref).Run({x})[0], 1e-6, 1e-6));
}

TEST(PruneMagnitude, BadOptionsAndNoMatchingLayer) {
  Graph g = BuildZoo("lenet5");
  ExpectError([&] { RunPass(g, {{"sparsity", 1.0}}); }, ErrorKind::kRecipe,
              "stages[0].sparsity: value 1 is out of range");
  ExpectError([&] { RunPass(g, {{"include", "("}}); }, ErrorKind::kRecipe,
              "stages[0].include: not a valid regular expression");
  ExpectError([&] { RunPass(g, {{"include", "^nothing$"}}); }, ErrorKind::kRecipe,
              "prune-magnitude: no layer selected (include \"^nothing$\", exclude \"\"); "
              "weighted layers are: conv1, conv2, fc1, fc2, fc3");
}

TEST(PruneMagnitude, MasksSurviveALaterTrainingStage) {
  namespace fs = std::filesystem;
  fs::path out = fs::temp_directory_path() / ("mc_prune_" + std::to_string(getpid()));
  fs::remove_all(out);
  nlohmann::json j = nlohmann::json::parse(R"({
    "model": "zoo:lenet5",
    "data": {"batch_size": 64, "validation_size": 200, "train_limit": 1000, "test_limit": 300},
    "device": "cpu", "seed": 1, "threads": 2,
    "stages": [
      {"pass": "train", "epochs": 1, "optimizer": {"name": "adam", "lr": 0.002}},
      {"pass": "prune-magnitude", "sparsity": 0.75},
      {"pass": "train", "epochs": 1, "optimizer": {"name": "adam", "lr": 0.001}}
    ],
    "exports": [{"format": "onnx", "path": "model.onnx"}],
    "report": {"latency": false}
  })");
  Recipe recipe = ParseRecipe(j, "prune.json", "");
  RunOptions o;
  o.out_dir = out.string();
  o.progress = "quiet";
  RunOutcome run = RunRecipe(recipe, o);
  ASSERT_EQ(run.report.stages.size(), 3u);
  // After fine-tuning with Adam (whose moment estimates would regrow pruned weights
  // without the masks), every pruned weight is still exactly zero.
  for (const auto& layer : run.report.layers) {
    EXPECT_NEAR(layer.sparsity, 0.75, 0.004) << layer.name;  // round(0.75 n) of n >= 150
  }
  // COO storage (4-byte value + 8-byte index) of 25% non-zeros: 3 bytes per weight
  // instead of 4, so about 4/3 overall.
  EXPECT_GT(run.report.compression_ratio, 1.25);
  EXPECT_GT(run.report.stages[2].metrics.top1, 0.5);
  fs::remove_all(out);
}

}  // namespace
}  // namespace compress
