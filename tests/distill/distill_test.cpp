// Distillation: each loss against a hand computation, the adapters' initialisation, the
// objective's gradients (student and adapters, never the teacher) and teacher cache, and
// the distill pass on Fashion-MNIST (a pruned student keeps its masks, the teacher stays
// bit-identical, lenet5 learns from a convnet with the textbook settings, the divergence
// guard, and clear errors for bad input).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <iostream>

#include "compress/data/data.h"
#include "compress/runtime/executor.h"
#include "compress/train/eval.h"
#include "compress/zoo/builder.h"
#include "compress/zoo/zoo.h"
#include "distill/distill.h"
#include "distill/losses.h"
#include "tests/test_util.h"

namespace compress {
namespace {

using testing_util::ExpectError;
using testing_util::RunPassFromJson;
using nlohmann::json;

const c10::Device kCpu(c10::kCPU);

// ---- the losses ------------------------------------------------------------------------

// T = 2, two samples, three classes; ln 2 makes the softened distributions simple:
//   sample 1: t/T = [0, ln 2, 0] -> p_t = [1/4, 1/2, 1/4]; s = 0 -> p_s = [1/3, 1/3, 1/3]
//     KL = 1/4 ln(3/4) + 1/2 ln(3/2) + 1/4 ln(3/4) = 1/2 ln(9/8) = 0.0588915
//   sample 2: t = 0 -> p_t = 1/3 each; s/T = [0, ln 2, 0] -> p_s = [1/4, 1/2, 1/4]
//     KL = 1/3 (ln(4/3) + ln(2/3) + ln(4/3)) = 1/3 ln(32/27) = 0.0566330
//   batchmean (0.0588915 + 0.0566330) / 2 = 0.0577623, times T² = 4: 0.2310491.
// The gradient with respect to the student's logits is T (p_s − p_t) / N: for sample 1
// 2 · (1/3 − 1/4, 1/3 − 1/2, 1/3 − 1/4) / 2 = (1/12, −1/6, 1/12).
TEST(DistillLosses, KdIsBatchmeanKlOfSoftenedLogitsTimesTSquared) {
  const double l2 = 2 * std::log(2.0);
  Tensor s = torch::tensor({0.0, 0.0, 0.0, 0.0, l2, 0.0}, torch::kFloat).reshape({2, 3});
  s.requires_grad_(true);
  Tensor t = torch::tensor({0.0, l2, 0.0, 0.0, 0.0, 0.0}, torch::kFloat).reshape({2, 3});
  t.requires_grad_(true);
  const Tensor loss = KdLoss(s, t, 2.0);
  EXPECT_NEAR(loss.item<double>(), 0.2310491, 1e-6);
  loss.backward();
  const Tensor want = torch::tensor({1.0 / 12, -1.0 / 6, 1.0 / 12}, torch::kFloat);
  EXPECT_TRUE(torch::allclose(s.grad()[0], want, 1e-5, 1e-6)) << s.grad();
  EXPECT_FALSE(t.grad().defined());  // the teacher side is detached
  EXPECT_NEAR(KdLoss(t.detach(), t.detach(), 3.0).item<double>(), 0.0, 1e-7);
  EXPECT_THROW(KdLoss(s, t, 0.0), Error);
}

// The hard term is the trainer's cross-entropy: -ln softmax at the label.
TEST(DistillLosses, HardLabelLossIsCrossEntropy) {
  const Tensor logits = torch::tensor({0.0f, std::log(3.0f)}).reshape({1, 2});  // p = 1/4, 3/4
  EXPECT_NEAR(HardLabelLoss(logits, torch::tensor({1}, torch::kLong)).item<double>(),
              -std::log(0.75), 1e-6);
  // Label smoothing 0.5 over 2 classes: targets (1/4, 3/4): −(1/4 ln 1/4 + 3/4 ln 3/4).
  EXPECT_NEAR(HardLabelLoss(logits, torch::tensor({1}, torch::kLong), 0.5).item<double>(),
              -(0.25 * std::log(0.25) + 0.75 * std::log(0.75)), 1e-6);
}

// s − t = [0, 2, 3, 0]: (0 + 4 + 9 + 0) / 4 = 3.25.
TEST(DistillLosses, HintIsTheMeanSquaredError) {
  Tensor s = torch::tensor({1.0f, 2.0f, 3.0f, 4.0f}).reshape({2, 2}).requires_grad_(true);
  const Tensor t = torch::tensor({1.0f, 0.0f, 0.0f, 4.0f}).reshape({2, 2});
  const Tensor loss = HintLoss(s, t);
  EXPECT_NEAR(loss.item<double>(), 3.25, 1e-6);
  loss.backward();  // d/ds = 2 (s − t) / 4
  EXPECT_TRUE(torch::allclose(s.grad(), torch::tensor({0.0f, 1.0f, 1.5f, 0.0f}).reshape({2, 2})));
}

// A 1×2×2×2 feature, channel 0 = [[1, 2], [0, 2]], channel 1 = [[−1, 0], [2, −2]]:
//   mean over channels of f² = [(1+1)/2, (4+0)/2, (0+4)/2, (4+4)/2] = [1, 2, 2, 4],
//   ‖·‖₂ = sqrt(1 + 4 + 4 + 16) = 5, so the map is [0.2, 0.4, 0.4, 0.8].
// Against a one-channel teacher [[1, 0], [0, 0]] (map [1, 0, 0, 0]):
//   (0.2 − 1)² + 0.4² + 0.4² + 0.8² = 0.64 + 0.16 + 0.16 + 0.64 = 1.6.
TEST(DistillLosses, AttentionMapsAreUnitNormChannelMeansOfSquares) {
  const Tensor f = torch::tensor({1.0f, 2.0f, 0.0f, 2.0f, -1.0f, 0.0f, 2.0f, -2.0f})
                       .reshape({1, 2, 2, 2});
  const Tensor map = AttentionMap(f);
  EXPECT_TRUE(torch::allclose(map, torch::tensor({{0.2f, 0.4f, 0.4f, 0.8f}}), 1e-6, 1e-6)) << map;
  const Tensor t = torch::tensor({1.0f, 0.0f, 0.0f, 0.0f}).reshape({1, 1, 2, 2});
  EXPECT_NEAR(AttentionLoss(f, t).item<double>(), 1.6, 1e-5);
  // The batch mean: the same sample twice gives the same loss; an all-zero feature
  // has a zero map, not NaN.
  EXPECT_NEAR(AttentionLoss(torch::cat({f, f}), torch::cat({t, t})).item<double>(), 1.6, 1e-5);
  EXPECT_EQ(AttentionMap(torch::zeros({1, 3, 2, 2})).abs().sum().item<float>(), 0.0f);
  EXPECT_THROW(AttentionMap(torch::ones({2, 3})), Error);
}

TEST(DistillLosses, AdaptersStartSemiOrthogonalAndMapChannels) {
  const Adapter widen = InitAdapter(32, 6, 7, kCpu);  // orthonormal columns
  ASSERT_EQ(widen.weight.sizes(), (std::vector<int64_t>{32, 6}));
  EXPECT_TRUE(torch::allclose(widen.weight.t().mm(widen.weight), torch::eye(6), 1e-5, 1e-5));
  EXPECT_EQ(widen.bias.abs().sum().item<float>(), 0.0f);
  const Adapter narrow = InitAdapter(4, 10, 7, kCpu);  // orthonormal rows
  EXPECT_TRUE(torch::allclose(narrow.weight.mm(narrow.weight.t()), torch::eye(4), 1e-5, 1e-5));
  EXPECT_TRUE(torch::equal(InitAdapter(32, 6, 7, kCpu).weight, widen.weight));  // seeded
  EXPECT_FALSE(torch::equal(InitAdapter(32, 6, 8, kCpu).weight, widen.weight));

  torch::manual_seed(0);
  const Tensor x4 = torch::randn({2, 6, 3, 3});
  const Tensor y4 = ApplyAdapter(widen, x4);  // a 1×1 conv: per pixel, W x
  ASSERT_EQ(y4.sizes(), (std::vector<int64_t>{2, 32, 3, 3}));
  const Tensor pixel = x4.index({1, torch::indexing::Slice(), 2, 0});
  EXPECT_TRUE(torch::allclose(y4.index({1, torch::indexing::Slice(), 2, 0}),
                              widen.weight.mv(pixel), 1e-5, 1e-5));
  // An isometry: the adapted feature keeps the student's norm at initialisation.
  EXPECT_NEAR(y4.norm().item<double>(), x4.norm().item<double>(), 1e-4);
  const Tensor x2 = torch::randn({5, 6});
  EXPECT_TRUE(torch::allclose(ApplyAdapter(widen, x2), x2.mm(widen.weight.t()), 1e-5, 1e-5));
  EXPECT_THROW(ApplyAdapter(widen, torch::randn({2, 6, 3})), Error);
}

// ---- data and models -------------------------------------------------------------------

const DatasetSplits& Data() { return testing_util::FashionMnistSubset(1024, 256, 512); }

const DatasetSplits& SmallData() {
  static const DatasetSplits small = {Data().train.Slice(0, 256), Data().validation.Slice(0, 64),
                                      Data().test.Slice(0, 64)};
  return small;
}

PassContext Context(const DatasetSplits& data) { return testing_util::SplitsContext(data, 64); }

// The pass built from recipe JSON at "stages[0]" (through its own Create, so the tests
// do not depend on the registry row).
PassResult RunDistill(Graph& student, const json& options, PassContext ctx) {
  std::vector<Problem> problems;
  OptionReader reader(options, "stages[0]", &problems);
  auto pass = DistillPass::Create(reader);
  reader.Finish();
  if (!problems.empty()) {
    throw Error(ErrorKind::kRecipe, problems[0].path + ": " + problems[0].message);
  }
  return pass->Run(student, ctx);
}

// A convnet trained briefly (2 epochs of Adam on the 1024 samples), as a teacher; a
// deep copy each time, so no test changes another's teacher.
Graph TrainedConvnet() {
  static const Graph trained = [] {
    Graph g = BuildZoo("convnet", 7);
    RunPassFromJson("train", g, {{"epochs", 2}, {"optimizer", {{"name", "adam"}, {"lr", 0.002}}}},
                    Context(Data()));
    return g;
  }();
  return trained.Clone();
}

std::map<std::string, Tensor> Snapshot(const Graph& g) {
  std::map<std::string, Tensor> values;
  for (const auto& [name, init] : g.initializers) values[name] = init.value.detach().clone();
  return values;
}

// ---- the objective ---------------------------------------------------------------------

// lenet5 "MaxPool" [N,6,14,14] vs convnet "MaxPool" [N,32,14,14] and "fc1" [N,120] vs
// [N,128] need adapters; attention on the first ReLUs ([N,6,28,28] vs [N,32,28,28]).
DistillLossOptions FeatureOptions() {
  DistillLossOptions o;
  o.features = {{"MaxPool", "MaxPool", 1.0}, {"fc1", "fc1", 0.5}};
  o.attention = {{"Relu", "Relu", 2.0}};
  return o;
}

TEST(DistillObjective, GradientsReachTheStudentAndTheAdaptersButNotTheTeacher) {
  Graph student = BuildZoo("lenet5", 1);
  Graph teacher = BuildZoo("convnet", 2);
  // Were the teacher run with autograd, these flags would give its weights gradients.
  for (const auto& name : teacher.TrainableNames()) teacher.Weight(name).requires_grad_(true);
  const Tensor x = Data().train.inputs.slice(0, 0, 32);
  const Tensor y = Data().train.targets.slice(0, 0, 32);
  DistillObjective objective(student, teacher, FeatureOptions(), x, kCpu, 0);
  EXPECT_TRUE(objective.NeedsTeacherPerBatch());
  EXPECT_EQ(objective.num_adapters(), 2);
  EXPECT_EQ(objective.num_classes(), 10);
  EXPECT_EQ(objective.StudentValues(),
            (std::vector<std::string>{"input", "MaxPool", "fc1", "Relu"}));

  for (const auto& name : student.TrainableNames()) student.Weight(name).requires_grad_(true);
  const std::vector<Tensor> adapters = objective.AdapterParameters();
  ASSERT_EQ(adapters.size(), 4u);
  for (const Tensor& a : adapters) a.requires_grad_(true);
  Executor run(student);
  run.SetObserver(objective.StudentValues(),
                  [&](const std::string& v, const Tensor& t) { objective.Observe(v, t); });
  const Tensor loss = objective.Loss(run.Run({x}).at(0), y, torch::arange(32));
  ASSERT_TRUE(std::isfinite(loss.item<double>()));
  loss.backward();

  for (const Tensor& a : adapters) {
    ASSERT_TRUE(a.grad().defined());
    EXPECT_GT(a.grad().abs().sum().item<double>(), 0);
  }
  for (const char* w : {"conv1.weight", "conv2.weight", "fc1.weight", "fc3.weight"}) {
    ASSERT_TRUE(student.Weight(w).grad().defined()) << w;
    EXPECT_GT(student.Weight(w).grad().abs().sum().item<double>(), 0) << w;
  }
  for (const auto& [name, init] : teacher.initializers) {
    EXPECT_FALSE(init.value.grad().defined()) << name;
  }
  const DistillEpoch e = objective.TakeEpoch();
  EXPECT_EQ(e.samples, 32);
  EXPECT_GT(e.hint, 0);
  EXPECT_GT(e.attention, 0);
  EXPECT_LE(e.attention, 4.0);  // one attention term: a squared distance of unit vectors
}

TEST(DistillObjective, CachedTeacherLogitsGiveTheLossOfRecomputingTheTeacher) {
  Graph student = BuildZoo("lenet5", 1);
  const Graph teacher = TrainedConvnet();
  const TensorDataset& train = Data().train;
  DistillLossOptions o;
  o.temperature = 3;
  o.alpha = 0.7;
  const Tensor sample = train.inputs.slice(0, 0, 16);
  DistillObjective cached(student, teacher, o, sample, kCpu, 0);
  DistillObjective live(student, teacher, o, sample, kCpu, 0);
  cached.CacheTeacherLogits(train, 100);  // other batch boundaries than the step's
  ASSERT_TRUE(cached.cached());
  EXPECT_TRUE(cached.StudentValues().empty());
  EXPECT_EQ(live.StudentValues(), std::vector<std::string>{"input"});

  // A shuffled batch, as the loader serves one: the cache is read by sample index.
  const Tensor idx = torch::tensor({5, 900, 17, 333, 64, 1000, 2, 511}, torch::kLong);
  const Tensor x = train.inputs.index_select(0, idx), y = train.targets.index_select(0, idx);
  Executor run(student);
  run.SetObserver({"input"}, [&](const std::string& v, const Tensor& t) { live.Observe(v, t); });
  at::NoGradGuard no_grad;
  const Tensor logits = run.Run({x}).at(0);
  const double from_cache = cached.Loss(logits, y, idx).item<double>();
  const double recomputed = live.Loss(logits, y, idx).item<double>();
  const Tensor teacher_logits = Executor(teacher).Run({x}).at(0);
  const double want = 0.7 * KdLoss(logits, teacher_logits, 3).item<double>() +
                      0.3 * HardLabelLoss(logits, y).item<double>();
  EXPECT_NEAR(from_cache, recomputed, 1e-5 * std::max(1.0, want));
  EXPECT_NEAR(recomputed, want, 1e-5 * std::max(1.0, want));
  // The KD term alone (the hard term is the same either way), and it is a real one: a
  // fresh student is far from the trained teacher.
  const double kd = KdLoss(logits, teacher_logits, 3).item<double>();
  const DistillEpoch c = cached.TakeEpoch(), l = live.TakeEpoch();
  EXPECT_GT(kd, 0.5);
  EXPECT_NEAR(c.kd, kd, 1e-5 * kd);
  EXPECT_NEAR(l.kd, kd, 1e-5 * kd);
  EXPECT_EQ(c.samples, 8);
  EXPECT_EQ(c.accuracy, l.accuracy);
}

// ---- the pass --------------------------------------------------------------------------

TEST(Distill, KeepsThePrunedStudentsMasksAndTheTeacherBitIdentical) {
  PassContext ctx = Context(SmallData());
  const Graph teacher = BuildZoo("convnet", 2);
  ctx.teachers = {{&teacher}};
  const std::map<std::string, Tensor> teacher_before = Snapshot(teacher);
  Graph student = BuildZoo("lenet5", 1);
  RunPassFromJson("prune-magnitude", student, {{"sparsity", 0.7}}, ctx);
  std::map<std::string, Tensor> masks;
  for (const auto& [name, init] : student.initializers) {
    if (init.mask.defined()) masks[name] = init.mask.clone();
  }
  ASSERT_EQ(masks.size(), 5u);
  const std::map<std::string, Tensor> student_before = Snapshot(student);

  const PassResult r = RunDistill(student, json::parse(R"({
    "epochs": 1, "optimizer": {"lr": 0.02},
    "features": [{"student": "MaxPool", "teacher": "MaxPool"},
                 {"student": "fc1", "teacher": "fc1", "weight": 0.5}],
    "attention": [{"student": "Relu", "teacher": "Relu", "weight": 2}]
  })"), ctx);
  EXPECT_TRUE(r.changed);
  EXPECT_EQ(r.stats.at("epochs"), 1);
  EXPECT_EQ(r.stats.at("adapters"), 2);
  EXPECT_EQ(r.stats.at("teacher_cached"), 0);
  EXPECT_EQ(r.stats.at("teacher_cache_seconds"), 0);
  EXPECT_TRUE(std::isfinite(r.stats.at("hint_loss")) && r.stats.at("hint_loss") > 0);
  EXPECT_TRUE(std::isfinite(r.stats.at("attention_loss")));
  EXPECT_TRUE(std::isfinite(r.stats.at("kd_loss")));

  for (const auto& [name, value] : teacher_before) {  // BatchNorm statistics included
    EXPECT_TRUE(torch::equal(teacher.initializers.at(name).value, value)) << name;
  }
  bool trained = false;
  for (const auto& [name, value] : student_before) {
    trained = trained || !torch::equal(student.initializers.at(name).value, value);
  }
  EXPECT_TRUE(trained);
  for (const auto& [name, mask] : masks) {
    const Initializer& init = student.initializers.at(name);
    EXPECT_TRUE(torch::equal(init.mask, mask)) << name;
    EXPECT_EQ((init.value * (1 - mask)).abs().sum().item<float>(), 0.0f) << name;
  }
}

// The "must not change" case: with learning rate 0 (and no weight decay) every
// student weight is bit-identical after a distill run, hints and adapters included.
TEST(Distill, LearningRateZeroLeavesTheStudentAsItIs) {
  PassContext ctx = Context(SmallData());
  const Graph teacher = BuildZoo("convnet", 2);
  ctx.teachers = {{&teacher}};
  Graph student = BuildZoo("lenet5", 1);
  const std::map<std::string, Tensor> before = Snapshot(student);
  const PassResult r = RunDistill(student, json::parse(R"({
    "epochs": 1, "optimizer": {"lr": 0},
    "features": [{"student": "fc1", "teacher": "fc1"}]
  })"), ctx);
  EXPECT_EQ(r.stats.at("adapters"), 1);
  for (const auto& [name, value] : before) {
    EXPECT_TRUE(torch::equal(student.initializers.at(name).value, value)) << name;
  }
}

// schedule_after_warmup is read and on by default: the default run equals the explicit
// `true` bit for bit (training is deterministic for a seed and thread count), and
// `false` (the warm-up scaling a cosine already decaying) trains other weights.
TEST(Distill, ScheduleStartsAfterTheWarmupByDefault) {
  PassContext ctx = Context(SmallData());
  const Graph teacher = BuildZoo("convnet", 2);
  ctx.teachers = {{&teacher}};
  const auto run = [&](const json& options) {
    Graph student = BuildZoo("lenet5", 1);
    const PassResult r = RunDistill(student, options, ctx);
    EXPECT_GT(r.stats.at("warmup_steps"), 0);
    return Snapshot(student);
  };
  const json base = json::parse(R"({"epochs": 2, "optimizer": {"lr": 0.02}})");
  json on = base, off = base;
  on["schedule_after_warmup"] = true;
  off["schedule_after_warmup"] = false;
  const auto by_default = run(base), with_true = run(on), with_false = run(off);
  bool any_differs = false;
  for (const auto& [name, value] : by_default) {
    EXPECT_TRUE(torch::equal(with_true.at(name), value)) << name;
    any_differs = any_differs || !torch::equal(with_false.at(name), value);
  }
  EXPECT_TRUE(any_differs);
}

// The issue's textbook settings (T 4, alpha 0.9, SGD momentum 0.9, lr 0.05, cosine) with
// the default warm-up and clipping; the baseline is the default teacher. Batch 32: 32
// steps an epoch, so the divergence guard judges epochs 4 and 5 (>= 100 steps).
TEST(Distill, Lenet5LearnsFromAConvnetWithTheTextbookSettings) {
  const Graph teacher = TrainedConvnet();
  PassContext ctx = Context(Data());
  ctx.batch_size = 32;
  ctx.baseline = &teacher;
  Graph student = BuildZoo("lenet5", 1);
  const double kd_before =
      KdLoss(Executor(student).Run({Data().train.inputs}).at(0).detach(),
             Executor(teacher).Run({Data().train.inputs}).at(0).detach(), 4).item<double>();
  const PassResult r = RunDistill(student, json::parse(R"({
    "epochs": 5, "temperature": 4, "alpha": 0.9, "lr_schedule": "cosine",
    "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}
  })"), ctx);
  const double student_top1 = Evaluate(student, Data().test, 128, kCpu).top1;
  const double teacher_top1 = Evaluate(teacher, Data().test, 128, kCpu).top1;
  std::cout << "[ distill  ] lenet5 from convnet, test top-1 (512 images): teacher "
            << teacher_top1 << ", student " << student_top1 << "; KD loss " << kd_before
            << " -> " << r.stats.at("kd_loss") << "\n";
  EXPECT_EQ(r.stats.at("epochs"), 5);
  EXPECT_EQ(r.stats.at("warmup_steps"), 32);
  EXPECT_EQ(r.stats.at("teacher_cached"), 1);
  EXPECT_GE(r.stats.at("teacher_cache_seconds"), 0);
  EXPECT_GT(r.stats.at("teacher_val_accuracy"), 0.55);
  EXPECT_GT(r.stats.at("train_accuracy"), 0.5);
  EXPECT_GT(r.stats.at("val_accuracy"), 0.5);
  EXPECT_GT(student_top1, 0.5);  // chance is 0.1
  EXPECT_LT(r.stats.at("kd_loss"), 0.25 * kd_before);  // about 8.5 -> 0.3 in a PyTorch run
}

// A teacher whose classes are rotated by one (logit j is the trained logit j - 1) with
// alpha 1 drives the student's training accuracy towards 0: after 100 steps the guard
// must stop the run with a numeric error instead of returning the model.
TEST(Distill, DivergenceGuardStopsAStudentAtChance) {
  Graph teacher = TrainedConvnet();
  {
    at::NoGradGuard no_grad;
    for (const char* name : {"fc2.weight", "fc2.bias"}) {
      Tensor& w = teacher.Weight(name);
      w.copy_(w.roll(1, 0));
    }
  }
  PassContext ctx = Context(Data());
  ctx.teachers = {{&teacher}};
  ctx.batch_size = 16;  // 64 steps an epoch: epoch 2 ends at step 128
  Graph student = BuildZoo("lenet5", 1);
  try {
    RunDistill(student, {{"epochs", 3}, {"alpha", 1.0}, {"warmup_epochs", 0}}, ctx);
    ADD_FAILURE() << "expected the divergence guard to stop the run";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_EQ(e.kind(), ErrorKind::kNumeric) << what;
    EXPECT_NE(what.find("stages[0]: distillation diverged: training accuracy"), std::string::npos)
        << what;
    EXPECT_NE(what.find("in epoch 2 is at chance (<= 1/10 + 0.02)"), std::string::npos) << what;
    EXPECT_NE(what.find("lower optimizer.lr or lengthen warmup_epochs (now 0)"), std::string::npos)
        << what;
  }
}

// Unlabeled training data (targets -1, as an image folder without class folders or a
// tensor file without targets gives it): with alpha 1 the student learns from the
// teacher's soft targets alone, the trainer reads no labels, and the teacher's top-1
// agreement is what is reported; a hard-label weight is refused before training.
TEST(Distill, LearnsFromTheTeacherOnUnlabeledData) {
  const Graph teacher = TrainedConvnet();
  const auto unlabeled = [](const TensorDataset& d) {
    return TensorDataset{d.inputs, torch::full_like(d.targets, -1)};
  };
  const DatasetSplits data{unlabeled(Data().train), unlabeled(Data().validation),
                           unlabeled(Data().test), /*labeled=*/false};
  PassContext ctx = Context(data);
  ctx.teachers = {{&teacher}};
  ctx.batch_size = 32;
  Graph student = BuildZoo("lenet5", 1);
  ExpectError([&] { RunDistill(student, {{"epochs", 2}, {"alpha", 0.9}}, ctx); },
              ErrorKind::kRecipe,
              "stages[0].alpha: the training split has no labels, but alpha is 0.9 in epoch 1 "
              "(1 - alpha weighs the hard labels); expected alpha 1 on unlabeled data");
  const PassResult r = RunDistill(student, json::parse(R"({
    "epochs": 4, "alpha": 1, "temperature": 4, "lr_schedule": "cosine",
    "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}
  })"), ctx);
  // Nothing to count accuracy against during training...
  EXPECT_EQ(r.stats.count("train_accuracy"), 0u);
  EXPECT_EQ(r.stats.count("val_accuracy"), 0u);
  EXPECT_EQ(r.stats.count("teacher_val_accuracy"), 0u);
  // ...but the student follows the teacher, and on the labeled test images it has
  // learned the classes it never saw a label of (chance is 0.1).
  EXPECT_GT(r.stats.at("teacher_agreement"), 0.7);
  const double student_top1 = Evaluate(student, Data().test, 128, kCpu).top1;
  const double teacher_top1 = Evaluate(teacher, Data().test, 128, kCpu).top1;
  std::cout << "[ distill  ] unlabeled: lenet5 from convnet, test top-1 (512 images): teacher "
            << teacher_top1 << ", student " << student_top1 << ", train agreement "
            << r.stats.at("teacher_agreement") << "\n";
  EXPECT_GT(student_top1, 0.6);
  // Plain training has nothing to learn from here, and says so.
  Graph plain = BuildZoo("lenet5", 1);
  ExpectError([&] { RunPassFromJson("train", plain, {{"epochs", 1}}, ctx); }, ErrorKind::kRecipe,
              "training data: targets must be class indices >= 0; found -1 (unlabeled data: "
              "distill with alpha 1 trains without labels)");
}

Graph FiveClassModel() {
  GraphBuilder b("five-classes", 3);
  const std::string x = b.Input("input", {kDynamicDim, 1, 28, 28});
  b.Output("logits", b.Linear(b.Op1("Flatten", {x}, {{"axis", int64_t{1}}}), 784, 5, true, "fc"));
  return b.Build();
}

TEST(Distill, BadInputIsAClearError) {
  const Graph teacher = BuildZoo("convnet", 2);
  PassContext ctx = Context(SmallData());
  ctx.teachers = {{&teacher}};
  Graph student = BuildZoo("lenet5", 1);
  auto fails = [&](const json& options, const PassContext& c, ErrorKind kind,
                   const std::string& message) {
    ExpectError([&] { RunDistill(student, options, c); }, kind, message);
  };
  PassContext no_teacher = ctx;
  no_teacher.teachers.clear();
  fails(json::object(), no_teacher, ErrorKind::kRecipe, "stages[0]: distill has no teacher");
  PassContext no_data = ctx;
  no_data.data = nullptr;
  fails(json::object(), no_data, ErrorKind::kRecipe, "distill needs training data");
  fails({{"temperature", 0}}, ctx, ErrorKind::kRecipe, "stages[0].temperature");
  fails({{"temperature", -2}}, ctx, ErrorKind::kRecipe, "out of range");
  fails({{"alpha", 1.5}}, ctx, ErrorKind::kRecipe, "stages[0].alpha");
  fails({{"temprature", 2}}, ctx, ErrorKind::kRecipe, "did you mean \"temperature\"");
  fails({{"features", "conv1"}}, ctx, ErrorKind::kRecipe, "expected an array of objects");
  fails(json::parse(R"({"features": [{"teacher": "conv1"}]})"), ctx, ErrorKind::kRecipe,
        "stages[0].features[0].student: required");
  fails(json::parse(R"({"features": [{"student": "conv1", "wieght": 1}]})"), ctx,
        ErrorKind::kRecipe, "stages[0].features[0].wieght: unknown option");

  // Names that do not exist, in either model.
  fails(json::parse(R"({"features": [{"student": "nope", "teacher": "conv1"}]})"), ctx,
        ErrorKind::kRecipe,
        "stages[0].features[0].student: 'nope' is not a value of the student model 'lenet5'");
  fails(json::parse(R"({"attention": [{"student": "conv1", "teacher": "nope"}]})"), ctx,
        ErrorKind::kRecipe,
        "stages[0].attention[0].teacher: 'nope' is not a value of the teacher model 'convnet'");
  // Shapes no term can compare: conv2 is [N,16,10,10] in lenet5, [N,64,14,14] in convnet.
  fails(json::parse(R"({"attention": [{"student": "conv2"}]})"), ctx, ErrorKind::kRecipe,
        "stages[0].attention[0]: the student's 'conv2' is [N,16,10,10] and the teacher's "
        "'conv2' is [N,64,14,14]; attention transfer needs");
  fails(json::parse(R"({"features": [{"student": "conv2"}]})"), ctx, ErrorKind::kRecipe,
        "differ only in channels");

  // A teacher of other classes.
  const Graph five = FiveClassModel();
  PassContext other = ctx;
  other.teachers = {{&five}};
  fails(json::object(), other, ErrorKind::kRecipe,
        "the teacher 'five-classes' outputs [N,5] but the student 'lenet5' outputs [N,10]");

  // C++ callers get the same checks.
  DistillOptions o;
  o.loss.alpha = -0.1;
  o.loss.where = "mine";
  ExpectError([&] { ValidateDistillOptions(o); }, ErrorKind::kRecipe, "mine.alpha");
  // None of the failures above trained the student.
  const std::map<std::string, Tensor> fresh = Snapshot(BuildZoo("lenet5", 1));
  for (const auto& [name, value] : fresh) {
    EXPECT_TRUE(torch::equal(student.initializers.at(name).value, value)) << name;
  }
}

}  // namespace
}  // namespace compress
