// distill: pick the teacher -> check both models on a sample batch and plan the terms
// (adapters) -> cache the teacher's logits when no feature term needs it per batch ->
// train with the distillation loss, the warm-up and the divergence guard -> stats.
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

// "[N,16,10,10]": a batch of values, shown with the batch dimension symbolic.
std::string BatchShape(const Tensor& t) {
  std::string s = "[N";
  for (int64_t d = 1; d < t.dim(); ++d) s += "," + std::to_string(t.size(d));
  return s + "]";
}

std::string PairPath(const DistillOptions& o, bool attention, size_t i) {
  return o.where + (attention ? ".attention[" : ".features[") + std::to_string(i) + "]";
}

const std::string& TeacherName(const ValuePair& p) {
  return p.teacher.empty() ? p.student : p.teacher;
}

// Whether `value` is a graph input, an initializer or a node output of `graph`.
bool HasValue(const Graph& graph, const std::string& value) {
  if (graph.IsInitializer(value)) return true;
  for (const auto& in : graph.inputs) {
    if (in.name == value) return true;
  }
  for (const auto& n : graph.nodes) {
    if (std::find(n.outputs.begin(), n.outputs.end(), value) != n.outputs.end()) return true;
  }
  return false;
}

void CheckClassifier(const Graph& g, const char* model, const std::string& where) {
  if (g.inputs.size() == 1 && g.outputs.size() == 1) return;
  throw Error(ErrorKind::kUnsupported,
              where + ": the " + model + " '" + g.name + "' has " +
                  std::to_string(g.inputs.size()) + " input(s) and " +
                  std::to_string(g.outputs.size()) +
                  " output(s); distill needs classifiers with one input and one output (logits)");
}

// Whether the teacher can run as it is: on `device` and sharing no tensor with the
// student (which training updates in place).
bool UsableAsIs(const Graph& teacher, const Graph& student, const c10::Device& device) {
  for (const auto& [name, init] : teacher.initializers) {
    if (!init.value.defined()) continue;
    if (init.value.device() != device) return false;
    for (const auto& [other, s] : student.initializers) {
      if (s.value.defined() && init.value.is_alias_of(s.value)) return false;
    }
  }
  return true;
}

// The steps of linear warm-up: warmup_epochs of steps, at most half of the run.
int64_t WarmupSteps(double warmup_epochs, int64_t steps_per_epoch, int64_t epochs) {
  const auto wanted = static_cast<int64_t>(
      std::llround(warmup_epochs * static_cast<double>(steps_per_epoch)));
  return std::min(wanted, steps_per_epoch * epochs / 2);
}

}  // namespace

TrainOptions DistillTrainDefaults() {
  TrainOptions t;
  t.batch_size = 0;
  t.optimizer.momentum = 0.9;
  t.lr_schedule.name = "cosine";
  t.max_grad_norm = 5;
  return t;
}

void ValidateDistillOptions(const DistillOptions& o) {
  auto fail = [&](const std::string& field, const std::string& message) {
    throw Error(ErrorKind::kRecipe, o.where + "." + field + ": " + message);
  };
  if (!(o.temperature > 0) || !std::isfinite(o.temperature)) {
    fail("temperature", "must be > 0; got " + Number(o.temperature));
  }
  if (!(o.alpha >= 0 && o.alpha <= 1)) fail("alpha", "must be in [0, 1]; got " + Number(o.alpha));
  if (!(o.warmup_epochs >= 0)) {
    fail("warmup_epochs", "must be >= 0; got " + Number(o.warmup_epochs));
  }
  for (bool attention : {false, true}) {
    const auto& pairs = attention ? o.attention : o.features;
    for (size_t i = 0; i < pairs.size(); ++i) {
      const std::string key = (attention ? "attention[" : "features[") + std::to_string(i) + "]";
      if (pairs[i].student.empty()) fail(key + ".student", "required: a value of the student");
      if (!(pairs[i].weight >= 0) || !std::isfinite(pairs[i].weight)) {
        fail(key + ".weight", "must be a finite number >= 0; got " + Number(pairs[i].weight));
      }
    }
  }
}

// ---- the objective -------------------------------------------------------------------

DistillObjective::DistillObjective(const Graph& student, const Graph& teacher,
                                   const DistillOptions& options, const Tensor& sample,
                                   const c10::Device& device, uint64_t seed)
    : options_(options), device_(device) {
  ValidateDistillOptions(options_);
  const std::string& where = options_.where;
  CheckClassifier(student, "student", where);
  CheckClassifier(teacher, "teacher", where);
  student_input_ = student.inputs[0].name;

  // Step 1: every named value exists where the recipe says.
  for (bool attention : {false, true}) {
    const auto& pairs = attention ? options_.attention : options_.features;
    for (size_t i = 0; i < pairs.size(); ++i) {
      const std::string path = PairPath(options_, attention, i);
      if (!HasValue(student, pairs[i].student)) {
        throw Error(ErrorKind::kRecipe, path + ".student: '" + pairs[i].student +
                                            "' is not a value of the student model '" +
                                            student.name + "'");
      }
      if (!HasValue(teacher, TeacherName(pairs[i]))) {
        throw Error(ErrorKind::kRecipe, path + ".teacher: '" + TeacherName(pairs[i]) +
                                            "' is not a value of the teacher model '" +
                                            teacher.name + "'");
      }
      Term term;
      term.pair = pairs[i];
      term.pair.teacher = TeacherName(pairs[i]);
      term.attention = attention;
      term.path = path;
      terms_.push_back(term);
    }
  }

  // Step 2: the teacher on the device, never sharing a tensor with the student.
  teacher_ = &teacher;
  if (!UsableAsIs(teacher, student, device_)) {
    teacher_copy_ = teacher.Clone();
    teacher_copy_.To(device_);
    teacher_ = &teacher_copy_;
  }
  teacher_run_ = std::make_unique<Executor>(*teacher_);  // eval mode: BN statistics frozen
  std::vector<std::string> teacher_values;
  for (const Term& t : terms_) teacher_values.push_back(t.pair.teacher);
  if (!teacher_values.empty()) {
    teacher_run_->SetObserver(teacher_values, [this](const std::string& v, const Tensor& x) {
      teacher_values_[v] = x.detach();
    });
  }

  // Step 3: shapes on the sample batch, and the adapters.
  PlanTerms(student, sample, seed);
  ResetSums();
}

void DistillObjective::PlanTerms(const Graph& student, const Tensor& sample, uint64_t seed) {
  at::NoGradGuard no_grad;
  const std::string& where = options_.where;
  Executor student_run(student);
  std::vector<std::string> names;
  for (const Term& t : terms_) names.push_back(t.pair.student);
  std::map<std::string, Tensor> observed;
  if (!names.empty()) {
    student_run.SetObserver(names, [&](const std::string& v, const Tensor& x) { observed[v] = x; });
  }
  const Tensor s = student_run.Run({sample}).at(0);
  Tensor t;
  try {
    t = RunTeacher(sample);
  } catch (const Error& e) {
    throw Error(e.kind(), where + ": the teacher '" + teacher_->name +
                              "' cannot run on the training inputs: " + e.what());
  }
  if (s.dim() != 2 || s.sizes() != t.sizes()) {
    std::ostringstream msg;
    msg << where << ": the teacher '" << teacher_->name << "' outputs " << BatchShape(t)
        << " but the student '" << student.name << "' outputs " << BatchShape(s)
        << "; distillation needs logits [N, classes] of the same classes";
    throw Error(ErrorKind::kRecipe, msg.str());
  }
  classes_ = s.size(1);

  for (size_t i = 0; i < terms_.size(); ++i) {
    Term& term = terms_[i];
    const Tensor& sv = Observed(observed, term.pair.student, "student");
    const Tensor& tv = Observed(teacher_values_, term.pair.teacher, "teacher");
    const bool only_channels = sv.dim() == tv.dim() && (sv.dim() == 2 || sv.dim() == 4) &&
                               sv.size(0) == tv.size(0) &&
                               sv.sizes().slice(2) == tv.sizes().slice(2);
    const bool same_map = sv.dim() == 4 && tv.dim() == 4 && sv.size(0) == tv.size(0) &&
                          sv.sizes().slice(2) == tv.sizes().slice(2);
    const std::string& path = term.path;
    const std::string shapes = "the student's '" + term.pair.student + "' is " + BatchShape(sv) +
                               " and the teacher's '" + term.pair.teacher + "' is " +
                               BatchShape(tv);
    if (term.attention) {
      if (!same_map) {
        throw Error(ErrorKind::kRecipe,
                    path + ": " + shapes +
                        "; attention transfer needs [N, C, H, W] features of the same H and W "
                        "(pick values at the same resolution)");
      }
    } else if (sv.sizes() != tv.sizes()) {
      if (!only_channels) {
        throw Error(ErrorKind::kRecipe,
                    path + ": " + shapes +
                        "; a hint needs the same shape, or [N, C] / [N, C, H, W] features that "
                        "differ only in channels (a learned adapter maps those)");
      }
      term.adapted = true;
      term.adapter = InitAdapter(tv.size(1), sv.size(1), seed * 1000003ULL + i + 1, device_);
    }
  }
  teacher_values_.clear();
}

Tensor DistillObjective::RunTeacher(const Tensor& input) {
  at::NoGradGuard no_grad;
  teacher_values_.clear();
  return teacher_run_->Run({input}).at(0).detach();
}

const Tensor& DistillObjective::Observed(const std::map<std::string, Tensor>& values,
                                         const std::string& name, const char* model) const {
  auto it = values.find(name);
  if (it == values.end() || !it->second.defined()) {
    throw Error(ErrorKind::kInternal, options_.where + ": the " + model + "'s value '" + name +
                                          "' was not observed in the forward pass");
  }
  return it->second;
}

void DistillObjective::CacheTeacherLogits(const Tensor& inputs, int64_t batch_size) {
  if (NeedsTeacherPerBatch() || batch_size < 1) {
    throw Error(ErrorKind::kInternal, "DistillObjective: no logit cache with feature terms or "
                                      "a batch size below 1");
  }
  std::vector<Tensor> parts;
  const int64_t n = inputs.size(0);
  for (int64_t start = 0; start < n; start += batch_size) {
    const Tensor x = inputs.slice(0, start, std::min(n, start + batch_size)).to(device_);
    parts.push_back(RunTeacher(x).to(torch::kFloat));
  }
  cache_ = torch::cat(parts);
  // Also waits for the device, so the pass's timing of the cache is real.
  if (!torch::isfinite(cache_).all().item<bool>()) {
    throw Error(ErrorKind::kNumeric, options_.where + ": the teacher '" + teacher_->name +
                                         "' gives NaN or Inf logits on the training data");
  }
}

std::vector<std::string> DistillObjective::StudentValues() const {
  std::vector<std::string> values;
  if (!cached()) values.push_back(student_input_);
  for (const Term& t : terms_) {
    if (std::find(values.begin(), values.end(), t.pair.student) == values.end()) {
      values.push_back(t.pair.student);
    }
  }
  return values;
}

void DistillObjective::Observe(const std::string& value, const Tensor& tensor) {
  student_values_[value] = tensor;
}

Tensor DistillObjective::Loss(const Tensor& logits, const Tensor& targets,
                              const Tensor& indices) {
  // Step 1: the teacher's logits (and features) for this batch.
  const Tensor teacher_logits =
      cached() ? cache_.index_select(0, indices.to(cache_.device()))
               : RunTeacher(Observed(student_values_, student_input_, "student"));

  // Step 2: the logit terms.
  const Tensor kd = KdLoss(logits, teacher_logits, options_.temperature);
  Tensor loss = kd * options_.alpha;
  if (options_.alpha < 1) {
    loss = loss + HardLabelLoss(logits, targets, options_.train.label_smoothing) *
                      (1 - options_.alpha);
  }

  // Step 3: the feature terms.
  Tensor hint = torch::zeros({}, torch::dtype(torch::kFloat).device(logits.device()));
  Tensor attention = hint.clone();
  for (const Term& term : terms_) {
    Tensor s = Observed(student_values_, term.pair.student, "student");
    const Tensor& t = Observed(teacher_values_, term.pair.teacher, "teacher");
    if (term.attention) {
      const Tensor value = AttentionLoss(s, t);
      loss = loss + value * term.pair.weight;
      attention = attention + value.detach();
    } else {
      if (term.adapted) s = ApplyAdapter(term.adapter, s);
      const Tensor value = HintLoss(s, t);
      loss = loss + value * term.pair.weight;
      hint = hint + value.detach();
    }
  }

  // Step 4: the epoch's sums (on the device: no synchronisation per step).
  const int64_t n = logits.size(0);
  correct_ += logits.detach().argmax(1).eq(targets).sum();
  kd_sum_ += kd.detach() * static_cast<double>(n);
  hint_sum_ += hint * static_cast<double>(n);
  attention_sum_ += attention * static_cast<double>(n);
  samples_ += n;
  student_values_.clear();
  teacher_values_.clear();
  return loss;
}

std::vector<Tensor> DistillObjective::AdapterParameters() const {
  std::vector<Tensor> params;
  for (const Term& t : terms_) {
    if (!t.adapted) continue;
    params.push_back(t.adapter.weight);
    params.push_back(t.adapter.bias);
  }
  return params;
}

int64_t DistillObjective::num_adapters() const {
  return static_cast<int64_t>(AdapterParameters().size() / 2);
}

void DistillObjective::ResetSums() {
  const auto f = torch::dtype(torch::kFloat).device(device_);
  correct_ = torch::zeros({}, torch::dtype(torch::kLong).device(device_));
  kd_sum_ = torch::zeros({}, f);
  hint_sum_ = torch::zeros({}, f);
  attention_sum_ = torch::zeros({}, f);
  samples_ = 0;
}

DistillEpoch DistillObjective::TakeEpoch() {
  DistillEpoch e;
  e.samples = samples_;
  if (samples_ > 0) {
    const auto n = static_cast<double>(samples_);
    e.accuracy = static_cast<double>(correct_.item<int64_t>()) / n;
    e.kd = kd_sum_.item<double>() / n;
    e.hint = hint_sum_.item<double>() / n;
    e.attention = attention_sum_.item<double>() / n;
  }
  ResetSums();
  return e;
}

// ---- the pass ------------------------------------------------------------------------

namespace {

std::vector<ValuePair> ReadPairs(OptionReader& r, const std::string& key, const std::string& doc) {
  std::vector<ValuePair> pairs;
  for (OptionReader& e : r.Objects(key, doc)) {
    ValuePair p;
    e.Read("student", p.student, {}, "value of the student graph");
    e.Read("teacher", p.teacher, {}, "value of the teacher graph (default: the student's name)");
    e.Read("weight", p.weight, 0.0, 1e6, "weight of the term in the loss");
    e.Finish();
    if (p.student.empty()) e.AddProblem("student", "required: the name of a student value");
    if (p.teacher.empty()) p.teacher = p.student;
    pairs.push_back(p);
  }
  return pairs;
}

const Graph& TeacherOf(const PassContext& ctx, const std::string& where) {
  if (ctx.teacher != nullptr) return *ctx.teacher;
  if (ctx.baseline != nullptr) return *ctx.baseline;
  throw Error(ErrorKind::kRecipe,
              where + ": distill has no teacher: set the recipe's \"teacher\" (any importable "
                      "model), or run it where the baseline model exists");
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
// stop before a dead model is exported.
void CheckNotAtChance(const DistillEpoch& e, int64_t epoch, int64_t classes,
                      int64_t steps_per_epoch, int64_t warmup_steps, const DistillOptions& o) {
  const int64_t steps_done = epoch * steps_per_epoch;
  if (e.samples == 0 || classes < 2 || steps_done <= warmup_steps) return;
  if (steps_done < kGuardMinSteps) return;
  const double chance = 1.0 / static_cast<double>(classes) + kChanceMargin;
  if (e.accuracy > chance) return;
  throw Error(ErrorKind::kNumeric,
              o.where + ": distillation diverged: training accuracy " + Number(e.accuracy) +
                  " in epoch " + std::to_string(epoch) + " is at chance (<= 1/" +
                  std::to_string(classes) + " + " + Number(kChanceMargin) +
                  ") after the warm-up; lower optimizer.lr or lengthen warmup_epochs (now " +
                  Number(o.warmup_epochs) + ")");
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

std::unique_ptr<Pass> DistillPass::Create(OptionReader& r) {
  DistillOptions o;
  o.where = r.path().empty() ? "distill" : r.path();
  ReadTrainOptions(r, o.train, "epochs");
  r.Read("temperature", o.temperature, 0.01, 1000.0,
         "softmax temperature T of the KD term (Hinton et al. 2015); the term is scaled by T^2");
  r.Read("alpha", o.alpha, 0.0, 1.0,
         "weight of the KD term; 1 - alpha weighs the hard-label cross-entropy");
  r.Read("warmup_epochs", o.warmup_epochs, 0.0, 1000.0,
         "linear learning-rate warm-up in epochs (fractions allowed; at most half the run)");
  r.Read("max_grad_norm", o.train.max_grad_norm, 0.0, 1e6,
         "clip the global gradient L2 norm to this (0 = off)");
  o.features = ReadPairs(r, "features",
                         "hint (MSE) terms: [{\"student\": value, \"teacher\": value, "
                         "\"weight\": 1}], with a learned adapter when channels differ");
  o.attention = ReadPairs(r, "attention",
                          "attention-transfer terms on [N,C,H,W] values of the same H, W: "
                          "[{\"student\": value, \"teacher\": value, \"weight\": 1}]");
  return std::make_unique<DistillPass>(std::move(o));
}

PassResult DistillPass::Run(Graph& graph, PassContext& ctx) {
  ValidateDistillOptions(options_);
  const std::string& where = options_.where;

  // Step 1: teacher, data, and the objective (every check before training starts).
  const Graph& teacher = TeacherOf(ctx, where);
  const TensorDataset& train = TrainingSplit(ctx, where);
  TrainOptions t = options_.train;
  if (t.batch_size == 0) t.batch_size = ctx.batch_size;
  ValidateTrainOptions(t);
  graph.To(ctx.device);
  const Tensor sample =
      train.inputs.slice(0, 0, std::min(t.batch_size, train.size())).to(ctx.device);
  DistillObjective objective(graph, teacher, options_, sample, ctx.device, ctx.seed);

  // Step 2: the teacher's accuracy, and its logits once when no term needs it per batch.
  PassResult result;
  if (ctx.data->validation.size() > 0) {
    result.stats["teacher_val_accuracy"] =
        Evaluate(objective.teacher(), ctx.data->validation, t.batch_size, ctx.device).top1;
  }
  const auto cache_start = std::chrono::steady_clock::now();
  if (!objective.NeedsTeacherPerBatch()) objective.CacheTeacherLogits(train.inputs, t.batch_size);
  result.stats["teacher_cache_seconds"] = objective.cached() ? SecondsSince(cache_start) : 0.0;

  // Step 3: train with the objective, the warm-up and the divergence guard.
  const int64_t steps_per_epoch = (train.size() + t.batch_size - 1) / t.batch_size;
  t.warmup_steps = WarmupSteps(options_.warmup_epochs, steps_per_epoch, t.epochs);
  t.loss = [&objective](const Tensor& logits, const Tensor& y, const Tensor& indices) {
    return objective.Loss(logits, y, indices);
  };
  t.extra_parameters = objective.AdapterParameters();
  t.observe = objective.StudentValues();
  if (!t.observe.empty()) {
    t.observer = [&objective](const std::string& v, const Tensor& x) { objective.Observe(v, x); };
  }
  DistillEpoch last;
  auto guard = [&](int64_t finished_epoch) {
    last = objective.TakeEpoch();
    CheckNotAtChance(last, finished_epoch, objective.num_classes(), steps_per_epoch,
                     t.warmup_steps, options_);
  };
  t.before_epoch = [&](int64_t epoch) {
    if (epoch > 0) guard(epoch);
  };
  const TrainResult trained = TrainInContext(graph, ctx, t);
  guard(static_cast<int64_t>(trained.epochs.size()));

  // Step 4: what happened.
  result.changed = true;
  AddTrainStats(trained, result);
  result.stats["kd_loss"] = last.kd;
  if (!options_.features.empty()) result.stats["hint_loss"] = last.hint;
  if (!options_.attention.empty()) result.stats["attention_loss"] = last.attention;
  result.stats["adapters"] = static_cast<double>(objective.num_adapters());
  result.stats["warmup_steps"] = static_cast<double>(t.warmup_steps);
  result.stats["teacher_cached"] = objective.cached() ? 1.0 : 0.0;
  ctx.log("distill: teacher '" + teacher.name + "' (" +
          (ctx.teacher != nullptr ? "recipe teacher" : "baseline") + "), T " +
          Number(options_.temperature) + ", alpha " + Number(options_.alpha) + ", " +
          std::to_string(options_.features.size()) + " hint and " +
          std::to_string(options_.attention.size()) + " attention terms; teacher logits " +
          (objective.cached() ? "cached" : "recomputed per batch") + "; final KD loss " +
          Number(last.kd));
  return result;
}

}  // namespace compress
