// Distillation's ramps and several teachers: RampAt against hand values; the alpha and
// hint weight of each epoch in the loss, the trainer's hooks, the pass's stats and log;
// ramp errors with their JSON paths. Two teachers: identical ones give the single-teacher
// loss, different ones a KD term that is the weighted mean of each one's, each teacher's
// logits cached unless a term reads it (teacher_index picks it), the teacher named in
// shape errors, and a recipe with two teachers end to end.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <tuple>
#include <unistd.h>

#include "compress/data/data.h"
#include "compress/engine/engine.h"
#include "compress/runtime/executor.h"
#include "compress/zoo/builder.h"
#include "compress/zoo/zoo.h"
#include "distill/distill.h"
#include "distill/objective.h"
#include "tests/test_util.h"

namespace compress {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using testing_util::ExpectError;
using testing_util::RunPassFromJson;

const c10::Device kCpu(c10::kCPU);

const DatasetSplits& Data() { return testing_util::FashionMnistSubset(1024, 256, 512); }

const DatasetSplits& SmallData() {
  static const DatasetSplits small = {Data().train.Slice(0, 256), Data().validation.Slice(0, 64),
                                      Data().test.Slice(0, 64)};
  return small;
}

PassContext Context() { return testing_util::SplitsContext(SmallData(), 64); }

// A shuffled batch of 16 of the 256 small training samples, as the loader serves one.
struct Batch {
  Tensor indices, x, y;
};
Batch ShuffledBatch() {
  const TensorDataset& train = SmallData().train;
  Batch b;
  b.indices = torch::tensor({5, 200, 17, 3, 255, 64, 128, 9, 31, 77, 150, 1, 240, 99, 42, 180},
                            torch::kLong);
  b.x = train.inputs.index_select(0, b.indices);
  b.y = train.targets.index_select(0, b.indices);
  return b;
}

// The student's logits on `b`, its observed values fed to `objective` (and kept in `seen`).
Tensor StudentLogits(const Graph& student, DistillObjective& objective, const Batch& b,
                     std::map<std::string, Tensor>* seen = nullptr) {
  Executor run(student);
  const std::vector<std::string> values = objective.StudentValues();
  if (!values.empty()) {
    run.SetObserver(values, [&](const std::string& v, const Tensor& t) {
      objective.Observe(v, t);
      if (seen) (*seen)[v] = t;
    });
  }
  return run.Run({b.x}).at(0);
}

// A convnet whose last layer is scaled by `scale`: more confident teachers for larger ones.
Graph ScaledConvnet(uint64_t seed, double scale) {
  Graph g = BuildZoo("convnet", seed);
  at::NoGradGuard no_grad;
  for (const char* name : {"fc2.weight", "fc2.bias"}) g.Weight(name).mul_(scale);
  return g;
}

Graph FiveClassModel() {
  GraphBuilder b("five-classes", 3);
  const std::string x = b.Input("input", {kDynamicDim, 1, 28, 28});
  b.Output("logits", b.Linear(b.Op1("Flatten", {x}, {{"axis", int64_t{1}}}), 784, 5, true, "fc"));
  return b.Build();
}

// ---- ramps ---------------------------------------------------------------------------

// from + (to - from) · e / max(1, E - 1): 0.5 -> 0.9 over 3 epochs is 0.5, 0.7, 0.9.
TEST(DistillRamp, RampAtGoesLinearlyFromTheFirstToTheLastEpoch) {
  const Ramp r(0.5, 0.9);
  EXPECT_NEAR(RampAt(r, 0, 3), 0.5, 1e-12);
  EXPECT_NEAR(RampAt(r, 1, 3), 0.7, 1e-12);
  EXPECT_NEAR(RampAt(r, 2, 3), 0.9, 1e-12);
  EXPECT_NEAR(RampAt(r, 7, 3), 0.9, 1e-12);   // clamped, never extrapolated
  EXPECT_NEAR(RampAt(r, -1, 3), 0.5, 1e-12);
  EXPECT_NEAR(RampAt(r, 0, 1), 0.5, 1e-12);   // one epoch: the `from` value
  EXPECT_NEAR(RampAt(Ramp(0, 2), 3, 5), 1.5, 1e-12);  // steps of 2/4
  EXPECT_EQ(RampAt(Ramp(0.3), 4, 5), 0.3);     // a number is a flat ramp
  EXPECT_TRUE(Ramp(0.3).constant());
  EXPECT_FALSE(r.constant());
}

// Epoch 0 of 3 uses alpha 0.2 and hint weight 0; epoch 2 alpha 0.8 and weight 2:
//   loss = alpha · KD + (1 − alpha) · CE + weight · hint, with KD and hint as measured.
TEST(DistillRamp, TheLossUsesEachEpochsAlphaAndTermWeights) {
  const Graph student = BuildZoo("lenet5", 1);
  const Graph teacher = BuildZoo("convnet", 2);
  DistillLossOptions o;
  o.temperature = 2;
  o.alpha = Ramp(0.2, 0.8);
  o.features = {{"fc1", "fc1", Ramp(0, 2)}};  // [N,120] vs [N,128]: an adapter
  const Batch b = ShuffledBatch();
  DistillObjective objective(student, teacher, o, b.x, kCpu, 0);
  EXPECT_EQ(objective.alpha(), 0.2);  // epoch 0's until told otherwise
  at::NoGradGuard no_grad;
  for (const auto& [epoch, alpha, weight] :
       {std::tuple<int64_t, double, double>{0, 0.2, 0.0}, {2, 0.8, 2.0}}) {
    objective.SetEpoch(epoch, 3);
    EXPECT_NEAR(objective.alpha(), alpha, 1e-12) << epoch;
    const Tensor logits = StudentLogits(student, objective, b);
    const double loss = objective.Loss(logits, b.y, b.indices).item<double>();
    const DistillEpoch e = objective.TakeEpoch();
    EXPECT_NEAR(e.alpha, alpha, 1e-12) << epoch;
    ASSERT_GT(e.kd, 0) << epoch;
    ASSERT_GT(e.hint, 0) << epoch;
    const double want = alpha * e.kd + (1 - alpha) * HardLabelLoss(logits, b.y).item<double>() +
                        weight * e.hint;
    EXPECT_NEAR(loss, want, 1e-5 * want) << epoch;
  }
}

// AttachDistillObjective keeps the caller's hooks: its before_epoch runs, then the ramp
// moves; its observer sees only its own values, the objective only its own.
TEST(DistillRamp, AttachingTheObjectiveChainsTheCallersHooks) {
  const Graph student = BuildZoo("lenet5", 1);
  const Graph teacher = BuildZoo("convnet", 2);
  DistillLossOptions o;
  o.alpha = Ramp(0.1, 0.7);
  o.features = {{"fc1", "fc1", 1.0}};
  const Batch b = ShuffledBatch();
  DistillObjective objective(student, teacher, o, b.x, kCpu, 0);
  TrainOptions t;
  t.epochs = 4;
  std::vector<int64_t> epochs_seen;
  std::vector<std::string> mine;
  t.before_epoch = [&](int64_t e) { epochs_seen.push_back(e); };
  t.observe = {"conv1", "fc1"};
  t.observer = [&](const std::string& v, const Tensor&) { mine.push_back(v); };
  AttachDistillObjective(objective, t);
  EXPECT_EQ(t.observe, (std::vector<std::string>{"conv1", "fc1", "input"}));
  EXPECT_EQ(t.extra_parameters.size(), 2u);  // the fc1 adapter's weight and bias
  ASSERT_TRUE(t.loss);
  t.before_epoch(3);
  EXPECT_EQ(epochs_seen, std::vector<int64_t>{3});
  EXPECT_NEAR(objective.alpha(), 0.7, 1e-12);
  t.before_epoch(1);
  EXPECT_NEAR(objective.alpha(), 0.3, 1e-12);  // 0.1 + 0.6 · 1/3

  // One forward pass through the combined observer, then the loss: it ran on what the
  // objective observed (input and fc1), and the caller saw conv1 and fc1 only.
  Executor run(student);
  run.SetObserver(t.observe, t.observer);
  at::NoGradGuard no_grad;
  const Tensor logits = run.Run({b.x}).at(0);
  EXPECT_EQ(mine, (std::vector<std::string>{"conv1", "fc1"}));
  EXPECT_TRUE(std::isfinite(t.loss(logits, b.y, b.indices).item<double>()));
  EXPECT_EQ(objective.TakeEpoch().samples, 16);
}

TEST(DistillRamp, ThePassReportsTheAlphaOfItsFirstAndLastEpoch) {
  const Graph teacher = BuildZoo("convnet", 2);
  PassContext ctx = Context();
  ctx.teachers = {{&teacher}};
  std::string log;
  ctx.log = [&](const std::string& line) { log += line + "\n"; };
  Graph student = BuildZoo("lenet5", 1);
  const PassResult r = RunPassFromJson("distill", student, json::parse(R"({
    "epochs": 3, "alpha": {"from": 0.2, "to": 0.8},
    "features": [{"student": "fc1", "weight": {"from": 0, "to": 1}}]
  })"), ctx);
  EXPECT_EQ(r.stats.at("epochs"), 3);
  EXPECT_NEAR(r.stats.at("alpha_first_epoch"), 0.2, 1e-12);
  EXPECT_NEAR(r.stats.at("alpha_last_epoch"), 0.8, 1e-12);
  EXPECT_EQ(r.stats.at("teachers"), 1);
  EXPECT_TRUE(std::isfinite(r.stats.at("kd_loss")) && r.stats.at("kd_loss") > 0);
  EXPECT_TRUE(std::isfinite(r.stats.at("hint_loss")) && r.stats.at("hint_loss") > 0);
  EXPECT_NE(log.find("alpha 0.2 -> 0.8"), std::string::npos) << log;
  EXPECT_NE(log.find("(features[0].weight 0 -> 1)"), std::string::npos) << log;
}

TEST(DistillRamp, BadRampsAreClearErrors) {
  const Graph teacher = BuildZoo("convnet", 2);
  PassContext ctx = Context();
  ctx.teachers = {{&teacher}};
  Graph student = BuildZoo("lenet5", 1);
  auto fails = [&](const char* options, const std::string& message) {
    ExpectError([&] { RunPassFromJson("distill", student, json::parse(options), ctx); },
                ErrorKind::kRecipe, message);
  };
  fails(R"({"alpha": {"from": 0.5, "to": 1.5}})",
        "stages[0].alpha.to: value 1.5 is out of range; expected 0 <= value <= 1");
  fails(R"({"alpha": {"from": -0.5, "to": 1}})", "stages[0].alpha.from: value -0.5 is out of range");
  fails(R"({"alpha": {"from": 0.5}})", "stages[0].alpha.to: missing; a ramp is {\"from\": a");
  fails(R"({"alpha": {"from": 0.1, "too": 1}})",
        "stages[0].alpha.too: unknown option (did you mean \"to\"?)");
  fails(R"({"alpha": "high"})",
        "stages[0].alpha: expected a number or {\"from\": a, \"to\": b}, found string");
  fails(R"({"features": [{"student": "fc1", "weight": {"from": -1, "to": 1}}]})",
        "stages[0].features[0].weight.from: value -1 is out of range");

  // C++ callers get the same checks, naming the end at fault.
  DistillLossOptions o;
  o.where = "mine";
  o.alpha = Ramp(0.5, 1.2);
  ExpectError([&] { ValidateDistillLoss(o); }, ErrorKind::kRecipe,
              "mine.alpha.to: must be in [0, 1]; got 1.2");
  o.alpha = 0.5;
  o.features = {{"fc1", "", Ramp(1, -2)}};
  ExpectError([&] { ValidateDistillLoss(o); }, ErrorKind::kRecipe,
              "mine.features[0].weight.to: must be a finite number >= 0; got -2");
}

// ---- several teachers ------------------------------------------------------------------

// Weights 1 and 3 normalise to 1/4 and 3/4; the same teacher twice is the teacher once:
// 1/4 · KD + 3/4 · KD = KD. Both objectives read cached logits (each of the pair's two
// teachers has its own cache), made with the same batches so the logits are identical.
TEST(DistillTeachers, IdenticalTeachersOfWeightsOneAndThreeGiveTheSingleTeacherLoss) {
  const Graph student = BuildZoo("lenet5", 1);
  const Graph teacher = ScaledConvnet(2, 4);
  DistillLossOptions o;
  o.temperature = 2;
  o.alpha = 0.6;
  const Batch b = ShuffledBatch();
  DistillObjective single(student, teacher, o, b.x, kCpu, 0);
  DistillObjective pair(student, {{&teacher, 1, "teacher[0]"}, {&teacher, 3, "teacher[1]"}}, o,
                        b.x, kCpu, 0);
  EXPECT_EQ(pair.num_teachers(), 2);
  EXPECT_NEAR(pair.teacher_weight(0), 0.25, 1e-12);
  EXPECT_NEAR(pair.teacher_weight(1), 0.75, 1e-12);
  EXPECT_EQ(pair.num_cached(), 0);
  pair.CacheTeacherLogits(SmallData().train, 100);
  single.CacheTeacherLogits(SmallData().train, 100);
  EXPECT_EQ(pair.num_cached(), 2);
  EXPECT_TRUE(pair.cached());

  at::NoGradGuard no_grad;
  const Tensor logits = StudentLogits(student, single, b);
  const double one = single.Loss(logits, b.y, b.indices).item<double>();
  const double two = pair.Loss(logits, b.y, b.indices).item<double>();
  EXPECT_GT(one, 0.1);
  EXPECT_NEAR(two, one, 1e-6);
  const double kd_one = single.TakeEpoch().kd, kd_two = pair.TakeEpoch().kd;
  EXPECT_GT(kd_one, 0);
  EXPECT_NEAR(kd_two, kd_one, 1e-6);
}

// Two different teachers (the second far more confident), weights 1 and 3, alpha 1:
//   loss = KD = 1/4 · KD(s, t_a; T) + 3/4 · KD(s, t_b; T),
// each KD computed here by hand from the teachers' own logits.
TEST(DistillTeachers, KdIsTheWeightedMeanOfEachTeachersKd) {
  const Graph student = BuildZoo("lenet5", 1);
  const Graph a = BuildZoo("convnet", 2);
  const Graph bt = ScaledConvnet(3, 8);
  DistillLossOptions o;
  o.temperature = 1;
  o.alpha = 1;
  const Batch b = ShuffledBatch();
  DistillObjective objective(student, {{&a, 1, "teacher[0]"}, {&bt, 3, "teacher[1]"}}, o, b.x,
                             kCpu, 0);
  EXPECT_EQ(objective.StudentValues(), std::vector<std::string>{"input"});  // both run live
  at::NoGradGuard no_grad;
  const Tensor logits = StudentLogits(student, objective, b);
  const double loss = objective.Loss(logits, b.y, b.indices).item<double>();
  const double kd_a = KdLoss(logits, Executor(a).Run({b.x}).at(0), 1).item<double>();
  const double kd_b = KdLoss(logits, Executor(bt).Run({b.x}).at(0), 1).item<double>();
  const double want = 0.25 * kd_a + 0.75 * kd_b;
  EXPECT_GT(std::abs(kd_a - kd_b), 0.05);  // so the mean is neither teacher's term alone
  EXPECT_NEAR(loss, want, 1e-5 * want);
  EXPECT_NEAR(objective.TakeEpoch().kd, want, 1e-5 * want);
}

// A hint on the second teacher (teacher_index 1): that teacher runs per batch with an
// observer, the first is cached; the hint is the MSE against the second teacher's value.
TEST(DistillTeachers, TermsReadTheTeacherTheyNameAndTheOthersAreCached) {
  const Graph student = BuildZoo("lenet5", 1);
  const Graph first = BuildZoo("convnet", 2);
  const Graph second = BuildZoo("lenet5", 4);  // fc1 [N,120], as the student's: no adapter
  DistillLossOptions o;
  o.temperature = 3;
  o.alpha = 0.5;
  o.features = {{"fc1", "fc1", 1.0, 1}};
  const Batch b = ShuffledBatch();
  DistillObjective objective(student, {{&first, 1, "teacher[0]"}, {&second, 1, "teacher[1]"}}, o,
                             b.x, kCpu, 0);
  EXPECT_TRUE(objective.NeedsTeacherPerBatch());
  EXPECT_EQ(objective.num_adapters(), 0);
  objective.CacheTeacherLogits(SmallData().train, 64);
  EXPECT_EQ(objective.num_cached(), 1);
  EXPECT_FALSE(objective.cached());
  EXPECT_EQ(objective.StudentValues(), (std::vector<std::string>{"input", "fc1"}));
  EXPECT_NE(DescribeDistillation(objective, o).find("cached for 1 of 2 teachers"),
            std::string::npos);

  at::NoGradGuard no_grad;
  std::map<std::string, Tensor> seen;
  const Tensor logits = StudentLogits(student, objective, b, &seen);
  objective.Loss(logits, b.y, b.indices);
  const DistillEpoch e = objective.TakeEpoch();
  Tensor second_fc1;
  Executor second_run(second);
  second_run.SetObserver({"fc1"}, [&](const std::string&, const Tensor& t) { second_fc1 = t; });
  const Tensor second_logits = second_run.Run({b.x}).at(0);
  const double hint = HintLoss(seen.at("fc1"), second_fc1).item<double>();
  ASSERT_GT(hint, 0);
  EXPECT_NEAR(e.hint, hint, 1e-5 * hint);
  const double kd = 0.5 * KdLoss(logits, Executor(first).Run({b.x}).at(0), 3).item<double>() +
                    0.5 * KdLoss(logits, second_logits, 3).item<double>();
  // The first teacher's logits were cached from batches of 64 in dataset order and are
  // recomputed here on the shuffled batch: kernels picked by batch shape differ in the
  // last float bits, and KD (a small difference of log-probabilities) shows it (2.1e-5
  // relative on an AVX512-VNNI Xeon; within 1e-5 on the AVX2 EPYC this was written on).
  EXPECT_NEAR(e.kd, kd, 1e-4 * kd);
}

TEST(DistillTeachers, ErrorsNameTheTeacher) {
  const Graph student = BuildZoo("lenet5", 1);
  const Graph convnet = BuildZoo("convnet", 2);
  const Graph five = FiveClassModel();
  const Batch b = ShuffledBatch();
  DistillLossOptions o;
  ExpectError([&] {
    DistillObjective probe(student, {{&convnet, 1, "teacher[0]"}, {&five, 1, "teacher[1]"}}, o,
                           b.x, kCpu, 0);
  }, ErrorKind::kRecipe,
              "distill: the teacher 'five-classes' (teacher[1]) outputs [N,5] but the student "
              "'lenet5' outputs [N,10]");
  ExpectError([&] { DistillObjective probe(student, {{&convnet, 0, "teacher[0]"}}, o, b.x, kCpu, 0); },
              ErrorKind::kRecipe, "distill: teacher[0].weight: must be a finite number > 0; got 0");
  o.features = {{"fc1", "fc1", 1.0, 2}};
  ExpectError([&] {
    DistillObjective probe(student, {{&convnet, 1, "teacher[0]"}, {&convnet, 1, "teacher[1]"}}, o,
                           b.x, kCpu, 0);
  }, ErrorKind::kRecipe,
              "distill.features[0].teacher_index: 2 is past the teachers; there are 2 (indices 0 "
              "to 1)");

  // Through the pass, with the baseline as the one teacher.
  PassContext ctx = Context();
  ctx.baseline = &convnet;
  Graph trained = BuildZoo("lenet5", 1);
  ExpectError([&] {
    RunPassFromJson("distill", trained,
                    json::parse(R"({"features": [{"student": "fc1", "teacher_index": 1}]})"), ctx);
  }, ErrorKind::kRecipe,
              "stages[0].features[0].teacher_index: 1 is past the teachers; there is 1 teacher "
              "(index 0)");
}

// The engine loads every teacher of the recipe's list, with its weight and path.
TEST(DistillTeachers, ARecipeWithTwoTeachersDistilsFromBoth) {
  const fs::path dir =
      fs::temp_directory_path() / ("mc_distill_teachers_" + std::to_string(getpid()));
  fs::remove_all(dir);
  Recipe recipe = ParseRecipe(json::parse(R"({
    "model": "zoo:lenet5",
    "teacher": [{"model": "zoo:convnet"}, {"model": "zoo:lenet5?width=2", "weight": 3}],
    "data": {"batch_size": 64, "validation_size": 64, "train_limit": 320, "test_limit": 64},
    "device": "cpu", "seed": 1, "threads": 2,
    "stages": [{"pass": "distill", "epochs": 1}],
    "report": {"formats": ["json"], "latency": false}
  })"), "teachers.json", "");
  RunOptions options;
  options.out_dir = (dir / "run").string();
  options.progress = "quiet";
  std::string log;
  options.log = [&](const std::string& line) { log += line + "\n"; };
  const RunOutcome out = RunRecipe(recipe, options);
  ASSERT_EQ(out.report.stages.size(), 1u);
  const auto& stats = out.report.stages[0].stats;
  EXPECT_EQ(stats.at("teachers"), 2);
  EXPECT_EQ(stats.at("teacher_cached"), 2);
  EXPECT_TRUE(std::isfinite(stats.at("kd_loss")) && stats.at("kd_loss") > 0);
  EXPECT_GE(stats.at("teacher_val_accuracy"), 0);
  EXPECT_GE(stats.at("teacher_1_val_accuracy"), 0);
  EXPECT_NE(log.find("'convnet' (teacher[0], weight 0.25)"), std::string::npos) << log;
  EXPECT_NE(log.find("(teacher[1], weight 0.75)"), std::string::npos) << log;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace compress
