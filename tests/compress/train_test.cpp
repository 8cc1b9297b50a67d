// Tests for compress/train: learning-rate schedules at known steps (one-cycle values
// from PyTorch's OneCycleLR), every optimizer on a separable problem, the label
// smoothing formula, the after-step hook, determinism and the error paths.
#include "tests/test_util.h"
#include "compress/train/train.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "compress/train/eval.h"
#include "compress/zoo/zoo.h"

namespace compress {
namespace {

constexpr double kPi = 3.14159265358979323846;

using testing_util::ExpectError;

// logits = x W^T + b, built by hand from the Graph fields: one Gemm(transB=1).
Graph LinearGraph(const Tensor& w, const Tensor& b) {
  Graph g;
  g.name = "linear";
  g.inputs.push_back(ValueInfo{"x", at::kFloat, std::vector<int64_t>{kDynamicDim, w.size(1)}});
  g.outputs.push_back(
      ValueInfo{"logits", at::kFloat, std::vector<int64_t>{kDynamicDim, w.size(0)}});
  Node fc;
  fc.name = "fc";
  fc.op_type = "Gemm";
  fc.inputs = {"x", "W", "b"};
  fc.outputs = {"logits"};
  fc.attrs["transB"] = int64_t{1};
  g.nodes.push_back(fc);
  g.initializers["W"].value = w.clone();
  g.initializers["b"].value = b.clone();
  return g;
}

// Two Gaussian blobs around (-1.5,-1.5) (class 0) and (1.5,1.5) (class 1), std 0.5.
TensorDataset Blobs(int64_t n, uint64_t seed) {
  auto gen = at::detail::createCPUGenerator(seed);
  const Tensor y = (torch::rand({n}, gen) > 0.5).to(torch::kLong);
  const Tensor center = (y.to(torch::kFloat) * 2 - 1).unsqueeze(1) * 1.5;
  const Tensor x = torch::randn({n, 2}, gen) * 0.5 + center;
  return {x, y};
}

TrainOptions Quiet() {
  TrainOptions o;
  o.progress = "quiet";
  return o;
}

// ---- learning-rate schedules ---------------------------------------------------------

TEST(TrainSchedule, NoneAndStep) {
  LrSchedule s;
  EXPECT_DOUBLE_EQ(LearningRateAt(s, 0.5, 37, 100, 10), 0.5);
  s.name = "step";
  s.step_size = 2;
  s.gamma = 0.1;
  // 10 steps per epoch, decay every 2 epochs.
  EXPECT_DOUBLE_EQ(LearningRateAt(s, 1.0, 0, 100, 10), 1.0);
  EXPECT_DOUBLE_EQ(LearningRateAt(s, 1.0, 19, 100, 10), 1.0);
  EXPECT_DOUBLE_EQ(LearningRateAt(s, 1.0, 20, 100, 10), 0.1);
  EXPECT_DOUBLE_EQ(LearningRateAt(s, 1.0, 39, 100, 10), 0.1);
  EXPECT_NEAR(LearningRateAt(s, 1.0, 40, 100, 10), 0.01, 1e-15);
}

TEST(TrainSchedule, Cosine) {
  LrSchedule s;
  s.name = "cosine";
  EXPECT_DOUBLE_EQ(LearningRateAt(s, 0.2, 0, 100, 10), 0.2);
  EXPECT_NEAR(LearningRateAt(s, 0.2, 50, 100, 10), 0.1, 1e-15);  // half-way: lr/2
  EXPECT_NEAR(LearningRateAt(s, 0.2, 25, 100, 10), 0.1 * (1 + std::cos(kPi / 4)), 1e-15);
  EXPECT_NEAR(LearningRateAt(s, 0.2, 99, 100, 10), 0.1 * (1 + std::cos(kPi * 0.99)), 1e-15);
  EXPECT_GT(LearningRateAt(s, 0.2, 99, 100, 10), 0.0);
  // Out-of-range steps clamp.
  EXPECT_DOUBLE_EQ(LearningRateAt(s, 0.2, -5, 100, 10), 0.2);
}

TEST(TrainSchedule, OneCycleMatchesPyTorch) {
  // Reference values: torch.optim.lr_scheduler.OneCycleLR(max_lr=1, total_steps=100,
  // pct_start=0.3, div_factor=25, final_div_factor=1e4, cycle_momentum=False).
  LrSchedule s;
  s.name = "one-cycle";
  EXPECT_NEAR(LearningRateAt(s, 1.0, 0, 100, 10), 0.04, 1e-12);  // lr / div_factor
  EXPECT_NEAR(LearningRateAt(s, 1.0, 10, 100, 10), 0.29516394846410077, 1e-12);
  EXPECT_NEAR(LearningRateAt(s, 1.0, 29, 100, 10), 1.0, 1e-12);  // peak at pct_start
  EXPECT_NEAR(LearningRateAt(s, 1.0, 30, 100, 10), 0.9994965352845243, 1e-12);
  EXPECT_NEAR(LearningRateAt(s, 1.0, 64, 100, 10), 0.500002, 1e-12);
  EXPECT_NEAR(LearningRateAt(s, 1.0, 99, 100, 10), 4e-6, 1e-15);  // lr/(div*final_div)
  // Rises to the peak, then falls.
  for (int64_t i = 1; i < 100; ++i) {
    const double prev = LearningRateAt(s, 1.0, i - 1, 100, 10);
    const double cur = LearningRateAt(s, 1.0, i, 100, 10);
    if (i <= 29) {
      EXPECT_GT(cur, prev) << "step " << i;
    } else {
      EXPECT_LT(cur, prev) << "step " << i;
    }
  }
  // Tiny runs stay finite.
  EXPECT_TRUE(std::isfinite(LearningRateAt(s, 1.0, 0, 1, 1)));
  EXPECT_TRUE(std::isfinite(LearningRateAt(s, 1.0, 1, 2, 1)));
}

TEST(TrainOptionsCheck, RejectsBadOptions) {
  TrainOptions o = Quiet();
  ValidateTrainOptions(o);
  o.optimizer.name = "sgdd";
  ExpectError([&] { ValidateTrainOptions(o); }, ErrorKind::kRecipe,
              "optimizer.name 'sgdd' is unknown; expected one of sgd, adam, adamw, rmsprop, "
              "adagrad");
  o = Quiet();
  o.lr_schedule.name = "linear";
  ExpectError([&] { ValidateTrainOptions(o); }, ErrorKind::kRecipe,
              "lr_schedule.name 'linear' is unknown");
  o = Quiet();
  o.label_smoothing = 1.0;
  ExpectError([&] { ValidateTrainOptions(o); }, ErrorKind::kRecipe,
              "label_smoothing must be in [0, 1); got 1");
  o = Quiet();
  o.batch_size = 0;
  ExpectError([&] { ValidateTrainOptions(o); }, ErrorKind::kRecipe, "batch_size must be >= 1");
  o = Quiet();
  o.optimizer.nesterov = true;
  ExpectError([&] { ValidateTrainOptions(o); }, ErrorKind::kRecipe, "momentum > 0");
  o = Quiet();
  o.progress = "loud";
  ExpectError([&] { ValidateTrainOptions(o); }, ErrorKind::kRecipe, "progress 'loud'");
}

// ---- optimizers ---------------------------------------------------------------------

struct OptimizerCase {
  std::string label;
  OptimizerOptions options;
};

class TrainOptimizer : public ::testing::TestWithParam<OptimizerCase> {};

TEST_P(TrainOptimizer, DecreasesLossOnSeparableData) {
  const TensorDataset data = Blobs(128, 1);
  // Starts wrong way round: class 0 scores high on the class-1 blob.
  Graph g = LinearGraph(torch::tensor({{0.5f, 0.5f}, {-0.5f, -0.5f}}), torch::zeros({2}));
  const EvalResult before = Evaluate(g, data, 64, torch::kCPU);
  ASSERT_GT(before.loss, 1.0);
  ASSERT_LT(before.top1, 0.1);

  TrainOptions o = Quiet();
  o.epochs = 10;
  o.batch_size = 16;
  o.optimizer = GetParam().options;
  const TrainResult r = Train(g, data, nullptr, o, torch::kCPU);
  ASSERT_EQ(r.epochs.size(), 10u);
  EXPECT_LT(r.epochs.back().train_loss, r.epochs.front().train_loss);
  EXPECT_TRUE(std::isnan(r.epochs.back().val_loss));

  const EvalResult after = Evaluate(g, data, 64, torch::kCPU);
  EXPECT_LT(after.loss, 0.5 * before.loss) << "before " << before.loss;
  EXPECT_GE(after.top1, 0.95);
}

OptimizerOptions Opt(const std::string& name, double lr, double momentum = 0,
                     bool nesterov = false, double weight_decay = 0) {
  OptimizerOptions o;
  o.name = name;
  o.lr = lr;
  o.momentum = momentum;
  o.nesterov = nesterov;
  o.weight_decay = weight_decay;
  return o;
}

INSTANTIATE_TEST_SUITE_P(
    All, TrainOptimizer,
    ::testing::Values(OptimizerCase{"sgd", Opt("sgd", 0.1)},
                      OptimizerCase{"sgd_nesterov", Opt("sgd", 0.05, 0.9, true, 1e-4)},
                      OptimizerCase{"adam", Opt("adam", 0.05)},
                      OptimizerCase{"adamw", Opt("adamw", 0.05, 0, false, 0.01)},
                      OptimizerCase{"rmsprop", Opt("rmsprop", 0.01)},
                      OptimizerCase{"rmsprop_momentum", Opt("rmsprop", 0.005, 0.5)},
                      OptimizerCase{"adagrad", Opt("adagrad", 0.2)}),
    [](const ::testing::TestParamInfo<OptimizerCase>& info) { return info.param.label; });

// ---- loss, hooks, validation, determinism ----------------------------------------------

// Mean over samples of (1-eps) * -log p_y + eps * mean_c(-log p_c), by hand.
double SmoothedCrossEntropy(const std::vector<std::vector<double>>& logits,
                            const std::vector<int64_t>& targets, double eps) {
  double total = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    double z = 0;
    for (double v : logits[i]) z += std::exp(v);
    const double log_z = std::log(z);
    double uniform = 0;
    for (double v : logits[i]) uniform += (log_z - v) / static_cast<double>(logits[i].size());
    total += (1 - eps) * (log_z - logits[i][targets[i]]) + eps * uniform;
  }
  return total / static_cast<double>(logits.size());
}

TEST(TrainLoss, LabelSmoothingFollowsTheFormula) {
  // W is the identity on 3 classes / 3 features, b = 0, so logits = x.
  const std::vector<std::vector<double>> x = {
      {2.0, 0.5, -1.0}, {0.0, 1.0, 0.0}, {-0.5, 0.25, 3.0}, {1.0, 1.0, 1.5}};
  const std::vector<int64_t> y = {0, 2, 2, 1};
  TensorDataset data{torch::tensor({2.0f, 0.5f, -1.0f, 0.0f, 1.0f, 0.0f, -0.5f, 0.25f, 3.0f,
                                    1.0f, 1.0f, 1.5f})
                         .reshape({4, 3}),
                     torch::tensor(y, torch::kLong)};
  auto loss_with = [&](double eps) {
    Graph g = LinearGraph(torch::eye(3), torch::zeros({3}));
    TrainOptions o = Quiet();
    o.batch_size = 4;
    o.optimizer.lr = 0;  // measure the loss only
    o.label_smoothing = eps;
    const double loss = Train(g, data, nullptr, o, torch::kCPU).epochs.at(0).train_loss;
    EXPECT_TRUE(torch::equal(g.Weight("W"), torch::eye(3)));  // lr 0: unchanged
    return loss;
  };
  const double plain = loss_with(0.0);
  const double smoothed = loss_with(0.2);
  EXPECT_NEAR(plain, SmoothedCrossEntropy(x, y, 0.0), 1e-6);
  EXPECT_NEAR(smoothed, SmoothedCrossEntropy(x, y, 0.2), 1e-6);
  // The change is eps * (mean uniform CE - target CE), here a definite amount.
  EXPECT_NEAR(smoothed - plain,
              SmoothedCrossEntropy(x, y, 0.2) - SmoothedCrossEntropy(x, y, 0.0), 1e-6);
  EXPECT_GT(std::abs(smoothed - plain), 0.05);
}

TEST(TrainHooks, AfterStepRunsEveryStepAndItsEditsPersist) {
  const TensorDataset data = Blobs(40, 2);
  Graph g = LinearGraph(torch::tensor({{0.5f, 0.5f}, {-0.5f, -0.5f}}), torch::zeros({2}));
  TrainOptions o = Quiet();
  o.epochs = 3;
  o.batch_size = 16;  // 3 batches per epoch
  o.optimizer.lr = 0.5;
  std::vector<int64_t> steps;
  o.after_step = [&](int64_t step) {
    steps.push_back(step);
    g.Weight("W").index_put_({0, 0}, 0.0);  // a pruning mask re-applied in place
  };
  Train(g, data, nullptr, o, torch::kCPU);
  EXPECT_EQ(steps, (std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9}));
  EXPECT_EQ(g.Weight("W")[0][0].item<float>(), 0.0f);
  EXPECT_NE(g.Weight("W")[0][1].item<float>(), 0.5f);  // the rest trained
  EXPECT_FALSE(g.Weight("W").requires_grad());          // restored
}

TEST(TrainSchedules, AreApplied) {
  // "step" with a vanishing gamma: the second epoch must leave the weights unchanged.
  const TensorDataset data = Blobs(32, 3);
  Graph g = LinearGraph(torch::tensor({{0.5f, 0.5f}, {-0.5f, -0.5f}}), torch::zeros({2}));
  TrainOptions o = Quiet();
  o.epochs = 2;
  o.batch_size = 8;  // 4 steps per epoch
  o.optimizer.lr = 0.5;
  o.lr_schedule.name = "step";
  o.lr_schedule.gamma = 1e-30;
  Tensor after_first_epoch;
  o.after_step = [&](int64_t step) {
    if (step == 4) after_first_epoch = g.Weight("W").clone();
  };
  Train(g, data, nullptr, o, torch::kCPU);
  ASSERT_TRUE(after_first_epoch.defined());
  EXPECT_FALSE(torch::equal(after_first_epoch, torch::tensor({{0.5f, 0.5f}, {-0.5f, -0.5f}})));
  EXPECT_TRUE(torch::allclose(g.Weight("W"), after_first_epoch, 0, 1e-12));
}

// The learning rate of every step, read back from plain SGD on a loss whose bias
// gradient is the batch size whatever the weights: lr_k = (b_{k-1} - b_k) / batch.
std::vector<double> StepLearningRates(TrainOptions o) {
  const TensorDataset data = Blobs(32, 4);
  Graph g = LinearGraph(torch::tensor({{0.5f, 0.5f}, {-0.5f, -0.5f}}), torch::zeros({2}));
  o.batch_size = 8;  // 4 steps per epoch
  o.loss = [](const Tensor& logits, const Tensor&, const Tensor&) { return logits.sum(); };
  std::vector<double> lrs;
  double before = 0;
  o.after_step = [&](int64_t) {
    const double now = g.Weight("b")[0].item<double>();
    lrs.push_back((before - now) / 8.0);
    before = now;
  };
  Train(g, data, nullptr, o, torch::kCPU);
  return lrs;
}

TEST(TrainSchedules, WarmupScalesTheScheduleOrPrecedesIt) {
  TrainOptions o = Quiet();
  o.epochs = 2;  // 8 steps
  o.optimizer.lr = 0.1;
  o.lr_schedule.name = "cosine";
  o.warmup_steps = 3;
  const auto cosine = [](double step, double total) {
    return 0.05 * (1 + std::cos(kPi * step / total));
  };
  // Default: the warm-up factor (k + 1) / 3 multiplies the cosine of all 8 steps.
  const std::vector<double> scaled = StepLearningRates(o);
  ASSERT_EQ(scaled.size(), 8u);
  for (int k = 0; k < 8; ++k) {
    const double expected = cosine(k, 8) * std::min(1.0, (k + 1) / 3.0);
    EXPECT_NEAR(scaled[k], expected, 1e-6) << "step " << k;
  }
  // schedule_after_warmup: the ramp to the full rate, then the cosine of the other 5 steps.
  o.schedule_after_warmup = true;
  const std::vector<double> after = StepLearningRates(o);
  ASSERT_EQ(after.size(), 8u);
  for (int k = 0; k < 8; ++k) {
    const double expected = k < 3 ? 0.1 * (k + 1) / 3.0 : cosine(k - 3, 5);
    EXPECT_NEAR(after[k], expected, 1e-6) << "step " << k;
  }
  EXPECT_NEAR(after[3], 0.1, 1e-6);  // the full rate right after the warm-up
}

TEST(TrainClipping, CountsTheStepsItScaledDown) {
  const TensorDataset data = Blobs(32, 5);
  TrainOptions o = Quiet();
  o.epochs = 2;
  o.batch_size = 8;  // 8 steps
  o.optimizer.lr = 0.1;
  // The bias gradient alone has norm 8 * sqrt(2) on this loss: a clip at 1 scales every
  // step, a clip at 100 none.
  o.loss = [](const Tensor& logits, const Tensor&, const Tensor&) { return logits.sum(); };
  for (const auto& [clip, expected] : {std::pair{1.0, 8}, std::pair{100.0, 0}}) {
    Graph g = LinearGraph(torch::tensor({{0.5f, 0.5f}, {-0.5f, -0.5f}}), torch::zeros({2}));
    o.max_grad_norm = clip;
    const TrainResult r = Train(g, data, nullptr, o, torch::kCPU);
    EXPECT_EQ(r.epochs.front().clipped_steps, expected / 2) << "clip " << clip;
    EXPECT_EQ(r.epochs.back().clipped_steps, expected) << "clip " << clip;
    if (clip == 1.0) {
      // Every step's gradient was scaled to norm 1, so the bias moved at most lr = 0.1
      // per step (0.8 in all; unclipped it would move 0.8 per step).
      EXPECT_LE(std::abs(g.Weight("b")[0].item<double>()), 8 * 0.1 + 1e-6);
    }
  }
}

TEST(TrainValidation, ReportsValidationOfTheTrainedGraph) {
  const TensorDataset train = Blobs(64, 4);
  const TensorDataset val = Blobs(32, 5);
  Graph g = LinearGraph(torch::tensor({{0.5f, 0.5f}, {-0.5f, -0.5f}}), torch::zeros({2}));
  TrainOptions o = Quiet();
  o.epochs = 2;
  o.batch_size = 16;
  o.optimizer.lr = 0.2;
  const TrainResult r = Train(g, train, &val, o, torch::kCPU);
  ASSERT_EQ(r.epochs.size(), 2u);
  EXPECT_EQ(r.epochs[0].epoch, 1);
  EXPECT_EQ(r.epochs[1].epoch, 2);
  const EvalResult final_val = Evaluate(g, val, 7, torch::kCPU);
  EXPECT_NEAR(r.epochs[1].val_loss, final_val.loss, 1e-6);
  EXPECT_DOUBLE_EQ(r.epochs[1].val_accuracy, final_val.top1);
  EXPECT_GT(r.epochs[1].samples_per_second, 0);
  EXPECT_GE(r.epochs[1].seconds, 0);
  EXPECT_GE(r.epochs[1].train_accuracy, 0.0);
  EXPECT_LE(r.epochs[1].train_accuracy, 1.0);
  // An empty validation set is skipped.
  TensorDataset empty = val.Slice(0, 0);
  EXPECT_TRUE(std::isnan(Train(g, train, &empty, o, torch::kCPU).epochs[0].val_loss));
}

TEST(TrainDeterminism, SameSeedSameWeights) {
  const TensorDataset data = Blobs(64, 6);
  const Graph start =
      LinearGraph(torch::tensor({{0.5f, 0.5f}, {-0.5f, -0.5f}}), torch::zeros({2}));
  TrainOptions o = Quiet();
  o.epochs = 2;
  o.batch_size = 8;
  o.optimizer = Opt("sgd", 0.1, 0.9);
  o.seed = 3;
  Graph a = start.Clone(), b = start.Clone(), c = start.Clone();
  Train(a, data, nullptr, o, torch::kCPU);
  Train(b, data, nullptr, o, torch::kCPU);
  o.seed = 4;
  Train(c, data, nullptr, o, torch::kCPU);
  EXPECT_TRUE(torch::equal(a.Weight("W"), b.Weight("W")));
  EXPECT_FALSE(torch::equal(a.Weight("W"), c.Weight("W")));
}

// Images [N, 1, 2, 3] -> Flatten -> Gemm: a model whose input augmentation can move.
Graph FlattenLinearGraph(const Tensor& w) {
  Graph g = LinearGraph(w, torch::zeros({w.size(0)}));
  g.inputs[0] = ValueInfo{"img", at::kFloat, std::vector<int64_t>{kDynamicDim, 1, 2, 3}};
  Node flat;
  flat.name = "flatten";
  flat.op_type = "Flatten";
  flat.inputs = {"img"};
  flat.outputs = {"x"};
  g.nodes.insert(g.nodes.begin(), flat);
  return g;
}

// Training augmentation is applied to every batch: a flip with p = 1 trains exactly as
// the mirrored data does without augmentation, and a crop the size of the (unpadded)
// image changes nothing; a p = 0.5 flip differs from both.
TEST(TrainAugmentation, AppliesToEveryBatchAsTheSameDataTransformedWould) {
  auto gen = at::detail::createCPUGenerator(11);
  const Tensor x = torch::randn({32, 1, 2, 3}, gen);
  const Tensor y = (x.narrow(3, 0, 1).sum({1, 2, 3}) > 0).to(torch::kLong);
  const Graph start = FlattenLinearGraph(torch::randn({2, 6}, gen) * 0.1);
  TrainOptions o = Quiet();
  o.epochs = 2;
  o.batch_size = 8;
  o.optimizer = Opt("sgd", 0.1, 0.9);
  o.seed = 3;
  auto trained = [&](const TensorDataset& data, const Augmentation& a) {
    Graph g = start.Clone();
    TrainOptions t = o;
    t.augmentation = a;
    Train(g, data, nullptr, t, torch::kCPU);
    return g.Weight("W").clone();
  };
  Augmentation flip;
  flip.horizontal_flip = 1.0;
  const Tensor flipped = trained({x, y}, flip);
  EXPECT_TRUE(torch::equal(flipped, trained({torch::flip(x, {3}), y}, {})));
  Augmentation full_crop;
  full_crop.random_crop = {2, 3};
  EXPECT_TRUE(torch::equal(trained({x, y}, full_crop), trained({x, y}, {})));
  Augmentation half;
  half.horizontal_flip = 0.5;
  const Tensor halfway = trained({x, y}, half);
  EXPECT_FALSE(torch::equal(halfway, flipped));
  EXPECT_FALSE(torch::equal(halfway, trained({x, y}, {})));
  // Same seed, same draws.
  EXPECT_TRUE(torch::equal(halfway, trained({x, y}, half)));
}

// ---- errors -----------------------------------------------------------------------

TEST(TrainErrors, NonFiniteDataAndLoss) {
  TensorDataset data = Blobs(16, 7);
  Graph g = LinearGraph(torch::tensor({{0.5f, 0.5f}, {-0.5f, -0.5f}}), torch::zeros({2}));
  TensorDataset bad{data.inputs.clone(), data.targets};
  bad.inputs[3][1] = std::nanf("");
  ExpectError([&] { Train(g, bad, nullptr, Quiet(), torch::kCPU); }, ErrorKind::kNumeric,
              "training data: input data contains 1 non-finite value(s) (NaN/Inf), first in "
              "sample 3");
  ExpectError([&] { Train(g, data, &bad, Quiet(), torch::kCPU); }, ErrorKind::kNumeric,
              "validation data: input data contains");

  Graph inf = LinearGraph(torch::tensor({{INFINITY, 0.5f}, {-0.5f, -INFINITY}}), torch::zeros({2}));
  TrainOptions o = Quiet();
  o.batch_size = 8;
  ExpectError([&] { Train(inf, data, nullptr, o, torch::kCPU); }, ErrorKind::kNumeric,
              "at epoch 1, step 1 of 2; expected a finite loss");
}

TEST(TrainErrors, UnsuitableGraphsAndData) {
  const TensorDataset data = Blobs(16, 8);
  Graph two_outputs = LinearGraph(torch::ones({2, 2}), torch::zeros({2}));
  Node relu;
  relu.name = "relu";
  relu.op_type = "Relu";
  relu.inputs = {"logits"};
  relu.outputs = {"r"};
  two_outputs.nodes.push_back(relu);
  two_outputs.outputs.push_back(ValueInfo{"r", at::kFloat, std::nullopt});
  ExpectError([&] { Train(two_outputs, data, nullptr, Quiet(), torch::kCPU); },
              ErrorKind::kUnsupported,
              "Train: graph 'linear' has 1 input(s) and 2 output(s); expected a classifier");

  Graph g = LinearGraph(torch::ones({2, 2}), torch::zeros({2}));
  TensorDataset three_classes{data.inputs, data.targets + 1};
  ExpectError([&] { Train(g, three_classes, nullptr, Quiet(), torch::kCPU); },
              ErrorKind::kRecipe, "label 2 is out of range for a model with 2 outputs");
  ExpectError([&] { Train(g, data.Slice(0, 0), nullptr, Quiet(), torch::kCPU); },
              ErrorKind::kRecipe, "training data: dataset is empty");
  TrainOptions o = Quiet();
  o.optimizer.name = "lion";
  ExpectError([&] { Train(g, data, nullptr, o, torch::kCPU); }, ErrorKind::kRecipe,
              "optimizer.name 'lion'");
}

// End to end on real data (2000 training images): a linear classifier must learn, which
// also shows images and labels are read in step.
TEST(TrainFashionMnist, LinearModelLearnsRealData) {
  FashionMnistOptions data_options;
  // A dependency make test installs (dataset-fashion-mnist): missing is a failure.
  ASSERT_EQ(access((data_options.root + "/train-images-idx3-ubyte.gz").c_str(), R_OK), 0)
      << "Fashion-MNIST not installed at " << data_options.root << " (tools/deps.sh installs it)";
  data_options.validation_size = 500;
  data_options.train_limit = 2000;
  data_options.test_limit = 1000;
  const DatasetSplits splits = LoadFashionMnist(data_options);

  Graph g;
  g.name = "linear-fmnist";
  g.inputs.push_back(ValueInfo{"x", at::kFloat, std::vector<int64_t>{kDynamicDim, 1, 28, 28}});
  g.outputs.push_back(ValueInfo{"logits", at::kFloat, std::vector<int64_t>{kDynamicDim, 10}});
  Node flatten;
  flatten.name = "flatten";
  flatten.op_type = "Flatten";
  flatten.inputs = {"x"};
  flatten.outputs = {"flat"};
  g.nodes.push_back(flatten);
  Node fc;
  fc.name = "fc";
  fc.op_type = "Gemm";
  fc.inputs = {"flat", "W", "b"};
  fc.outputs = {"logits"};
  fc.attrs["transB"] = int64_t{1};
  g.nodes.push_back(fc);
  g.initializers["W"].value = torch::zeros({10, 784});
  g.initializers["b"].value = torch::zeros({10});

  TrainOptions o = Quiet();
  o.epochs = 2;
  o.batch_size = 64;
  o.optimizer = Opt("adam", 1e-3);
  o.lr_schedule.name = "one-cycle";
  const TrainResult r = Train(g, splits.train, &splits.validation, o, torch::kCPU);
  EXPECT_LT(r.epochs[1].train_loss, r.epochs[0].train_loss);
  EXPECT_GT(r.epochs[1].val_accuracy, 0.70);
  const EvalResult test = Evaluate(g, splits.test, 256, torch::kCPU);
  EXPECT_GT(test.top1, 0.70);  // chance is 0.10
  EXPECT_GT(test.top5, 0.95);
}

// "amp": the convolutions run in bfloat16 on CPU (seen by the observer on the conv
// outputs), the weights stay float32, and the convnet learns about as well as in
// float32: after two epochs on 4096 real images, test top-1 (1000 images) within 3
// points (one epoch of 2048 is too early: top-1 still swings by 10 points between runs).
TEST(Train, MixedPrecisionRunsConvolutionsInBfloat16AndStillLearns) {
  const DatasetSplits& data = testing_util::FashionMnistSubset(4096, 128, 1000);
  auto run = [&](bool amp, std::set<std::string>* dtypes) {
    Graph g = BuildZoo("convnet", 2);
    TrainOptions o = Quiet();
    o.epochs = 2;
    o.batch_size = 64;
    o.optimizer = Opt("sgd", 0.02);
    o.optimizer.momentum = 0.9;
    o.amp = amp;
    for (const Node& n : g.nodes) {
      if (n.op_type == "Conv") o.observe.push_back(n.outputs[0]);
    }
    o.observer = [dtypes](const std::string&, const Tensor& t) {
      dtypes->insert(std::string(c10::toString(t.scalar_type())));
    };
    Train(g, data.train, nullptr, o, torch::kCPU);
    for (const auto& name : g.TrainableNames()) {
      EXPECT_EQ(g.initializers.at(name).value.scalar_type(), at::kFloat) << name;
    }
    return Evaluate(g, data.test, 256, torch::kCPU).top1;
  };
  std::set<std::string> amp_types, fp32_types;
  const double amp_top1 = run(true, &amp_types), fp32_top1 = run(false, &fp32_types);
  EXPECT_EQ(amp_types, std::set<std::string>{"BFloat16"});
  EXPECT_EQ(fp32_types, std::set<std::string>{"Float"});
  std::printf("amp: test top-1 %.4f (bfloat16) vs %.4f (float32)\n", amp_top1, fp32_top1);
  EXPECT_GT(amp_top1, 0.75);
  EXPECT_NEAR(amp_top1, fp32_top1, 0.03);
}

}  // namespace
}  // namespace compress
