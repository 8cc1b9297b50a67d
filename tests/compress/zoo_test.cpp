// Zoo: every model builds with the documented shape and size, is reproducible from
// its seed, and learns: loss on held-out Fashion-MNIST falls after brief training.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "compress/data/data.h"
#include "compress/runtime/executor.h"
#include "compress/train/eval.h"
#include "compress/train/train.h"
#include "compress/zoo/zoo.h"

namespace compress {
namespace {

const DatasetSplits& SmallFashionMnist() {
  static const DatasetSplits splits = [] {
    FashionMnistOptions o;
    o.validation_size = 500;
    o.train_limit = 3000;
    o.test_limit = 1000;
    return LoadFashionMnist(o);
  }();
  return splits;
}

TEST(Zoo, UnknownNameListsModels) {
  try {
    BuildZoo("resnet9000");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "unknown zoo model 'resnet9000'; available: mlp-300-100, lenet5, convnet, "
              "resnet8, mobilenet-tiny");
  }
}

TEST(Zoo, SameSeedSameWeightsDifferentSeedDifferent) {
  Graph a = BuildZoo("lenet5", 1), b = BuildZoo("lenet5", 1), c = BuildZoo("lenet5", 2);
  EXPECT_TRUE(torch::equal(a.Weight("conv1.weight"), b.Weight("conv1.weight")));
  EXPECT_FALSE(torch::equal(a.Weight("conv1.weight"), c.Weight("conv1.weight")));
}

// Students of other sizes: every hidden width scales, input and classes stay, and
// width 1 is the model itself.
TEST(Zoo, WidthMultiplierScalesHiddenLayersOnly) {
  const Graph half = BuildZoo("lenet5?width=0.5", 1);
  EXPECT_EQ(half.name, "lenet5_w0.5");
  EXPECT_EQ(half.Weight("conv1.weight").sizes(), (std::vector<int64_t>{3, 1, 5, 5}));
  EXPECT_EQ(half.Weight("conv2.weight").sizes(), (std::vector<int64_t>{8, 3, 5, 5}));
  EXPECT_EQ(half.Weight("fc1.weight").sizes(), (std::vector<int64_t>{60, 200}));
  EXPECT_EQ(half.Weight("fc3.weight").sizes(), (std::vector<int64_t>{10, 42}));
  const Graph full = BuildZoo("lenet5", 1), same = BuildZoo("lenet5?width=1", 1);
  EXPECT_LT(half.NumParameters() * 3, full.NumParameters());
  for (const auto& [name, init] : full.initializers) {
    EXPECT_TRUE(torch::equal(same.Weight(name), init.value)) << name;
  }
  for (const std::string m : {"mlp-300-100", "convnet", "resnet8", "mobilenet-tiny"}) {
    const Graph g = BuildZoo(m + "?width=0.25", 3);
    torch::NoGradGuard ng;
    const Tensor y = Executor(g).Run({torch::randn({2, 1, 28, 28})})[0];
    EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, 10})) << m;
    EXPECT_LT(g.NumParameters(), BuildZoo(m, 3).NumParameters()) << m;
  }
  for (const std::string bad : {"lenet5?width=0", "lenet5?width=x", "lenet5?depth=2",
                                "lenet5?width=0.5x"}) {
    try {
      BuildZoo(bad);
      ADD_FAILURE() << bad;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kUsage) << bad;
      EXPECT_NE(std::string(e.what()).find("<name>?width=W"), std::string::npos) << e.what();
    }
  }
}

class ZooModel : public ::testing::TestWithParam<std::string> {};

TEST_P(ZooModel, BuildsAndLossFallsAfterBriefTraining) {
  torch::manual_seed(0);
  Graph g = BuildZoo(GetParam(), 0);
  ASSERT_EQ(g.inputs.size(), 1u);
  EXPECT_EQ(ShapeString(g.inputs[0].shape), "[N,1,28,28]");
  EXPECT_EQ(ShapeString(g.outputs[0].shape), "[N,10]");
  const auto& data = SmallFashionMnist();
  const c10::Device cpu(c10::kCPU);
  EvalResult before = Evaluate(g, data.test, 256, cpu);
  TrainOptions o;
  o.epochs = 1;
  o.batch_size = 64;
  o.optimizer.name = "adam";
  o.optimizer.lr = 2e-3;
  o.progress = "off";
  Train(g, data.train, nullptr, o, cpu);
  EvalResult after = Evaluate(g, data.test, 256, cpu);
  // 3000 samples of one epoch take every model well below chance-level loss (ln 10 =
  // 2.30) and to clearly better accuracy; thresholds leave room for seed noise.
  EXPECT_LT(after.loss, 0.75 * before.loss) << "before " << before.loss;
  EXPECT_GT(after.top1, 0.60);
}

INSTANTIATE_TEST_SUITE_P(All, ZooModel,
                         ::testing::Values("mlp-300-100", "lenet5", "convnet", "resnet8",
                                           "mobilenet-tiny"),
                         [](const auto& info) {
                           std::string n = info.param;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

}  // namespace
}  // namespace compress
