// distill: pick the teachers -> check the models on a sample batch and plan the terms
// (adapters) -> cache the logits of every teacher no feature term reads -> train with
// the distillation loss, the warm-up and the divergence guard -> stats.
#include "distill/distill.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <sstream>

#include "compress/base/error.h"
#include "compress/pass/train_context.h"
#include "compress/train/eval.h"

namespace compress {

namespace {

// An accuracy at most this far above 1/classes counts as "at chance".
constexpr double kChanceMargin = 0.02;
// The divergence guard judges only epochs that end at least this many optimizer steps
// into the run: on a small split a healthy student can still sit at chance after a few
// dozen steps (seen in a PyTorch run of lenet5 on 1024 samples, KD with SGD lr 0.01:
// training accuracy 0.108 over steps 17-32, 0.33 by step 64).
constexpr int64_t kGuardMinSteps = 100;

std::string Number(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

// The steps of linear warm-up: warmup_epochs of steps, at most half of the run.
int64_t WarmupSteps(double warmup_epochs, int64_t steps_per_epoch, int64_t epochs) {
  const auto wanted = static_cast<int64_t>(
      std::llround(warmup_epochs * static_cast<double>(steps_per_epoch)));
  return std::min(wanted, steps_per_epoch * epochs / 2);
}

const TensorDataset& TrainingSplit(const PassContext& ctx, const std::string& where) {
  if (ctx.data == nullptr || ctx.data->train.size() == 0) {
    throw Error(ErrorKind::kRecipe, where + ": distill needs training data; the recipe's "
                                            "training split is missing or empty");
  }
  return ctx.data->train;
}

// The divergence guard: an epoch that ends after the warm-up (and kGuardMinSteps into
// the run) with training accuracy at chance means dead units or a run-away step size;
// stop before a dead model is exported. Without labels the student's agreement with the
// teacher's top-1 stands in for accuracy (a dead student agrees at about chance too).
void CheckNotAtChance(const DistillEpoch& e, int64_t epoch, int64_t classes,
                      int64_t steps_per_epoch, int64_t warmup_steps, const DistillOptions& o) {
  const int64_t steps_done = epoch * steps_per_epoch;
  if (e.samples == 0 || classes < 2 || steps_done <= warmup_steps) return;
  if (steps_done < kGuardMinSteps) return;
  const double chance = 1.0 / static_cast<double>(classes) + kChanceMargin;
  const bool labeled = !std::isnan(e.accuracy);
  const double measured = labeled ? e.accuracy : e.agreement;
  if (measured > chance) return;
  throw Error(ErrorKind::kNumeric,
              o.loss.where + ": distillation diverged: " +
                  (labeled ? "training accuracy " : "agreement with the teacher's top-1 ") +
                  Number(measured) +
                  " in epoch " + std::to_string(epoch) + " is at chance (<= 1/" +
                  std::to_string(classes) + " + " + Number(kChanceMargin) +
                  ") after the warm-up; lower optimizer.lr or lengthen warmup_epochs (now " +
                  Number(o.warmup_epochs) + ")");
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// The teachers' accuracy on the validation split, before training: teacher_val_accuracy
// for the first, teacher_<k>_val_accuracy for the others.
void AddTeacherAccuracy(const DistillObjective& objective, const PassContext& ctx,
                        int64_t batch_size, PassResult& result) {
  if (ctx.data->validation.size() == 0 || !HasLabels(ctx.data->validation)) return;
  for (int64_t k = 0; k < objective.num_teachers(); ++k) {
    const std::string key =
        k == 0 ? "teacher_val_accuracy" : "teacher_" + std::to_string(k) + "_val_accuracy";
    result.stats[key] =
        Evaluate(objective.teacher(k), ctx.data->validation, batch_size, ctx.device).top1;
  }
}

}  // namespace

TrainOptions DistillTrainDefaults() {
  TrainOptions t;
  t.batch_size = 0;
  t.optimizer.momentum = 0.9;
  t.lr_schedule.name = "cosine";
  t.max_grad_norm = 5;
  t.schedule_after_warmup = true;
  return t;
}

void ValidateDistillOptions(const DistillOptions& o) {
  ValidateDistillLoss(o.loss);
  if (!(o.warmup_epochs >= 0)) {
    throw Error(ErrorKind::kRecipe, o.loss.where + ".warmup_epochs: must be >= 0; got " +
                                        Number(o.warmup_epochs));
  }
}

std::unique_ptr<Pass> DistillPass::Create(OptionReader& r) {
  DistillOptions o;
  ReadTrainOptions(r, o.train, "epochs");
  ReadDistillLossOptions(r, o.loss);
  r.Read("warmup_epochs", o.warmup_epochs, 0.0, 1000.0,
         "linear learning-rate warm-up in epochs (fractions allowed; at most half the run)");
  r.Read("max_grad_norm", o.train.max_grad_norm, 0.0, 1e6,
         "clip the global gradient L2 norm to this (0 = off)");
  r.Read("schedule_after_warmup", o.train.schedule_after_warmup,
         "true: the lr schedule starts at the full rate when the warm-up ends; false: the "
         "warm-up scales the schedule from step 0");
  return std::make_unique<DistillPass>(std::move(o));
}

PassResult DistillPass::Run(Graph& graph, PassContext& ctx) {
  ValidateDistillOptions(options_);
  const std::string& where = options_.loss.where;

  // Step 1: teachers, data, and the objective (every check before training starts).
  const std::vector<TeacherRef> teachers = DistillTeachers(ctx, where);
  const TensorDataset& train = TrainingSplit(ctx, where);
  TrainOptions t = options_.train;
  if (t.batch_size == 0) t.batch_size = ctx.batch_size;
  ValidateTrainOptions(t);
  CheckNoAugmentation(t, where);
  graph.To(ctx.device);
  const Tensor sample =
      train.Slice(0, t.batch_size).Materialized().inputs.to(ctx.device);
  DistillLossOptions loss = options_.loss;
  loss.label_smoothing = t.label_smoothing;
  DistillObjective objective(graph, teachers, loss, sample, ctx.device, ctx.seed);
  FitLabels(train, loss, objective, t);

  // Step 2: the teachers' accuracy, and the logits of those no term reads, once.
  PassResult result;
  AddTeacherAccuracy(objective, ctx, t.batch_size, result);
  const auto cache_start = std::chrono::steady_clock::now();
  objective.CacheTeacherLogits(train, t.batch_size);
  result.stats["teacher_cache_seconds"] = objective.num_cached() > 0 ? SecondsSince(cache_start) : 0.0;

  // Step 3: train with the objective, the warm-up and the divergence guard.
  const int64_t steps_per_epoch = (train.size() + t.batch_size - 1) / t.batch_size;
  t.warmup_steps = WarmupSteps(options_.warmup_epochs, steps_per_epoch, t.epochs);
  std::vector<DistillEpoch> epochs;
  auto guard = [&](int64_t finished_epoch) {
    epochs.push_back(objective.TakeEpoch());
    CheckNotAtChance(epochs.back(), finished_epoch, objective.num_classes(), steps_per_epoch,
                     t.warmup_steps, options_);
  };
  t.before_epoch = [&](int64_t epoch) {
    if (epoch > 0) guard(epoch);
  };
  AttachDistillObjective(objective, t);
  const TrainResult trained = TrainInContext(graph, ctx, t);
  guard(static_cast<int64_t>(trained.epochs.size()));

  // Step 4: what happened.
  result.changed = true;
  AddTrainStats(trained, result);
  AddDistillStats(objective, loss, epochs, result);
  result.stats["warmup_steps"] = static_cast<double>(t.warmup_steps);
  ctx.log("distill: " + DescribeDistillation(objective, loss) + "; final KD loss " +
          Number(epochs.back().kd));
  return result;
}

}  // namespace compress
