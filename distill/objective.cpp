// The distillation objective: option reading and checks, the choice of teachers, and
// the loss of a student against weighted teachers, wired into the trainer's options.
#include "distill/objective.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <set>
#include <sstream>

#include "compress/base/error.h"

namespace compress {

namespace {

std::string Number(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

// "0.9", or "0.5 -> 0.9" for a ramp.
std::string RampText(const Ramp& r) {
  return r.constant() ? Number(r.from) : Number(r.from) + " -> " + Number(r.to);
}

// "[N,16,10,10]": a batch of values, shown with the batch dimension symbolic.
std::string BatchShape(const Tensor& t) {
  std::string s = "[N";
  for (int64_t d = 1; d < t.dim(); ++d) s += "," + std::to_string(t.size(d));
  return s + "]";
}

std::string PairPath(const DistillLossOptions& o, bool attention, size_t i) {
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

// "the teacher 'convnet'", with the recipe path when the recipe lists several
// ("the teacher 'convnet' (teacher[1])").
std::string TeacherLabel(const Graph& g, const std::string& where) {
  return "the teacher '" + g.name + "'" +
         (where.rfind("teacher[", 0) == 0 ? " (" + where + ")" : std::string());
}

void CheckClassifier(const Graph& g, const std::string& label, const std::string& where) {
  if (g.inputs.size() == 1 && g.outputs.size() == 1) return;
  throw Error(ErrorKind::kUnsupported,
              where + ": " + label + " has " + std::to_string(g.inputs.size()) +
                  " input(s) and " + std::to_string(g.outputs.size()) +
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

// The problem of a ramp with an end `ok` rejects: the path ("key" for a constant,
// "key.from" / "key.to" for the end at fault) and the message; empty when both pass.
template <typename Ok>
std::pair<std::string, std::string> RampProblem(const Ramp& r, const std::string& key, Ok ok,
                                                const std::string& expected) {
  for (const auto& [end, v] : {std::pair<const char*, double>{"from", r.from}, {"to", r.to}}) {
    if (ok(v)) continue;
    return {r.constant() ? key : key + "." + end, expected + "; got " + Number(v)};
  }
  return {};
}

std::vector<ValuePair> ReadPairs(OptionReader& r, const std::string& key, const std::string& doc) {
  std::vector<ValuePair> pairs;
  for (OptionReader& e : r.Objects(key, doc)) {
    ValuePair p;
    e.Read("student", p.student, {}, "value of the student graph");
    e.Read("teacher", p.teacher, {}, "value of the teacher graph (default: the student's name)");
    e.Read("weight", p.weight, 0.0, 1e6,
           "weight of the term: a number or {\"from\": a, \"to\": b} ramped over the epochs");
    e.Read("teacher_index", p.teacher_index, 0, 1000,
           "which of the recipe's teachers the term reads (0 = the first)");
    e.Finish();
    if (p.student.empty()) e.AddProblem("student", "required: the name of a student value");
    if (p.teacher.empty()) p.teacher = p.student;
    pairs.push_back(p);
  }
  return pairs;
}

}  // namespace

// ---- options and teachers ----------------------------------------------------------

void ReadDistillLossOptions(OptionReader& r, DistillLossOptions& o) {
  o.where = r.path().empty() ? "distill" : r.path();
  r.Read("temperature", o.temperature, 0.01, 1000.0,
         "softmax temperature T of the KD term (Hinton et al. 2015); the term is scaled by T^2");
  r.Read("alpha", o.alpha, 0.0, 1.0,
         "weight of the KD term (1 - alpha weighs the hard-label cross-entropy): a number or "
         "{\"from\": a, \"to\": b} ramped linearly over the epochs");
  o.features = ReadPairs(r, "features",
                         "hint (MSE) terms: [{\"student\": value, \"teacher\": value, "
                         "\"weight\": 1, \"teacher_index\": 0}], with a learned adapter when "
                         "channels differ");
  o.attention = ReadPairs(r, "attention",
                          "attention-transfer terms on [N,C,H,W] values of the same H, W: "
                          "[{\"student\": value, \"teacher\": value, \"weight\": 1, "
                          "\"teacher_index\": 0}]");
}

void ValidateDistillLoss(const DistillLossOptions& o) {
  auto fail = [&](const std::string& field, const std::string& message) {
    throw Error(ErrorKind::kRecipe, o.where + "." + field + ": " + message);
  };
  if (!(o.temperature > 0) || !std::isfinite(o.temperature)) {
    fail("temperature", "must be > 0; got " + Number(o.temperature));
  }
  const auto alpha =
      RampProblem(o.alpha, "alpha", [](double v) { return v >= 0 && v <= 1; }, "must be in [0, 1]");
  if (!alpha.first.empty()) fail(alpha.first, alpha.second);
  for (bool attention : {false, true}) {
    const auto& pairs = attention ? o.attention : o.features;
    for (size_t i = 0; i < pairs.size(); ++i) {
      const std::string key = (attention ? "attention[" : "features[") + std::to_string(i) + "]";
      if (pairs[i].student.empty()) fail(key + ".student", "required: a value of the student");
      const auto weight =
          RampProblem(pairs[i].weight, key + ".weight",
                      [](double v) { return v >= 0 && std::isfinite(v); },
                      "must be a finite number >= 0");
      if (!weight.first.empty()) fail(weight.first, weight.second);
      if (pairs[i].teacher_index < 0) {
        fail(key + ".teacher_index", "must be >= 0; got " + std::to_string(pairs[i].teacher_index));
      }
    }
  }
}

std::vector<TeacherRef> DistillTeachers(const PassContext& ctx, const std::string& where) {
  if (!ctx.teachers.empty()) return ctx.teachers;
  if (ctx.baseline != nullptr) return {TeacherRef{ctx.baseline, 1.0, "baseline"}};
  throw Error(ErrorKind::kRecipe,
              where + ": distill has no teacher: set the recipe's \"teacher\" (any importable "
                      "model, or a list of {\"model\", \"weight\"}), or run it where the "
                      "baseline model exists");
}

// ---- the objective -------------------------------------------------------------------

struct DistillObjective::Teacher {
  const Graph* graph = nullptr;  // as it runs: the given one, or `copy`
  Graph copy;                    // used when the teacher had to be cloned
  std::unique_ptr<Executor> run;
  double weight = 1;  // normalised: the teachers' weights sum to 1
  std::string where;  // "teacher", "teacher[1]", "baseline"
  bool read_by_terms = false;
  Tensor cache;                          // [N, classes] logits of the split, when cached
  std::map<std::string, Tensor> values;  // observed in the current batch
};

DistillObjective::DistillObjective(const Graph& student, const Graph& teacher,
                                   const DistillLossOptions& options, const Tensor& sample,
                                   const c10::Device& device, uint64_t seed)
    : DistillObjective(student, {TeacherRef{&teacher, 1.0, "teacher"}}, options, sample, device,
                       seed) {}

DistillObjective::DistillObjective(const Graph& student, const std::vector<TeacherRef>& teachers,
                                   const DistillLossOptions& options, const Tensor& sample,
                                   const c10::Device& device, uint64_t seed)
    : options_(options), device_(device) {
  ValidateDistillLoss(options_);
  CheckClassifier(student, "the student '" + student.name + "'", options_.where);
  student_input_ = student.inputs[0].name;
  AddTeachers(student, teachers);
  AddTerms(student);
  PlanTerms(student, sample, seed);
  SetEpoch(0, 1);
  ResetSums();
}

DistillObjective::~DistillObjective() = default;

// Every teacher on the device, never sharing a tensor with the student, in eval mode
// (BatchNorm statistics frozen), with its normalised weight.
void DistillObjective::AddTeachers(const Graph& student, const std::vector<TeacherRef>& refs) {
  if (refs.empty()) {
    throw Error(ErrorKind::kInternal, options_.where + ": DistillObjective needs a teacher");
  }
  double total = 0;
  for (const TeacherRef& ref : refs) {
    if (ref.model == nullptr) {
      throw Error(ErrorKind::kInternal, options_.where + ": " + ref.where + " has no model");
    }
    if (!(ref.weight > 0) || !std::isfinite(ref.weight)) {
      throw Error(ErrorKind::kRecipe, options_.where + ": " + ref.where +
                                          ".weight: must be a finite number > 0; got " +
                                          Number(ref.weight));
    }
    total += ref.weight;
  }
  for (const TeacherRef& ref : refs) {
    CheckClassifier(*ref.model, TeacherLabel(*ref.model, ref.where), options_.where);
    auto t = std::make_unique<Teacher>();
    t->where = ref.where;
    t->weight = ref.weight / total;
    t->graph = ref.model;
    if (!UsableAsIs(*ref.model, student, device_)) {
      t->copy = ref.model->Clone();
      t->copy.To(device_);
      t->graph = &t->copy;
    }
    t->run = std::make_unique<Executor>(*t->graph);
    teachers_.push_back(std::move(t));
  }
}

// Every named value exists where the recipe says, in the teacher the term reads; that
// teacher observes it.
void DistillObjective::AddTerms(const Graph& student) {
  for (bool attention : {false, true}) {
    const auto& pairs = attention ? options_.attention : options_.features;
    for (size_t i = 0; i < pairs.size(); ++i) {
      const std::string path = PairPath(options_, attention, i);
      const ValuePair& p = pairs[i];
      if (!HasValue(student, p.student)) {
        throw Error(ErrorKind::kRecipe, path + ".student: '" + p.student +
                                            "' is not a value of the student model '" +
                                            student.name + "'");
      }
      if (p.teacher_index >= num_teachers()) {
        throw Error(ErrorKind::kRecipe,
                    path + ".teacher_index: " + std::to_string(p.teacher_index) +
                        " is past the teachers; there " +
                        (num_teachers() == 1 ? "is 1 teacher (index 0)"
                                             : "are " + std::to_string(num_teachers()) +
                                                   " (indices 0 to " +
                                                   std::to_string(num_teachers() - 1) + ")"));
      }
      const Teacher& t = *teachers_[static_cast<size_t>(p.teacher_index)];
      if (!HasValue(*t.graph, TeacherName(p))) {
        throw Error(ErrorKind::kRecipe, path + ".teacher: '" + TeacherName(p) +
                                            "' is not a value of the teacher model '" +
                                            t.graph->name + "'");
      }
      Term term;
      term.pair = p;
      term.pair.teacher = TeacherName(p);
      term.attention = attention;
      term.path = path;
      terms_.push_back(term);
    }
  }
  for (int64_t k = 0; k < num_teachers(); ++k) {
    std::vector<std::string> names;
    for (const Term& term : terms_) {
      if (term.pair.teacher_index == k) names.push_back(term.pair.teacher);
    }
    if (names.empty()) continue;
    Teacher* t = teachers_[static_cast<size_t>(k)].get();
    t->read_by_terms = true;
    t->run->SetObserver(names, [t](const std::string& v, const Tensor& x) {
      t->values[v] = x.detach();
    });
  }
}

// Runs the student and every teacher on the sample batch: the logits must agree in
// shape, and each term's values must be comparable (an adapter when only channels
// differ).
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
  for (auto& teacher : teachers_) {
    const std::string label = TeacherLabel(*teacher->graph, teacher->where);
    Tensor t;
    try {
      t = RunTeacher(*teacher, sample);
    } catch (const Error& e) {
      throw Error(e.kind(), where + ": " + label + " cannot run on the training inputs: " +
                                e.what());
    }
    if (s.dim() != 2 || s.sizes() != t.sizes()) {
      std::ostringstream msg;
      msg << where << ": " << label << " outputs " << BatchShape(t) << " but the student '"
          << student.name << "' outputs " << BatchShape(s)
          << "; distillation needs logits [N, classes] of the same classes";
      throw Error(ErrorKind::kRecipe, msg.str());
    }
  }
  classes_ = s.size(1);

  for (size_t i = 0; i < terms_.size(); ++i) {
    Term& term = terms_[i];
    const Teacher& teacher = *teachers_[static_cast<size_t>(term.pair.teacher_index)];
    const Tensor& sv = Observed(observed, term.pair.student, "student");
    const Tensor& tv = Observed(teacher.values, term.pair.teacher, "teacher");
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
  for (auto& t : teachers_) t->values.clear();
}

Tensor DistillObjective::RunTeacher(Teacher& teacher, const Tensor& input) {
  at::NoGradGuard no_grad;
  teacher.values.clear();
  return teacher.run->Run({input}).at(0).detach();
}

Tensor DistillObjective::TeacherLogits(Teacher& teacher, const Tensor& indices) {
  if (teacher.cache.defined()) return teacher.cache.index_select(0, indices.to(teacher.cache.device()));
  return RunTeacher(teacher, Observed(student_values_, student_input_, "student"));
}

const Tensor& DistillObjective::Observed(const std::map<std::string, Tensor>& values,
                                         const std::string& name, const std::string& model) const {
  auto it = values.find(name);
  if (it == values.end() || !it->second.defined()) {
    throw Error(ErrorKind::kInternal, options_.where + ": the " + model + "'s value '" + name +
                                          "' was not observed in the forward pass");
  }
  return it->second;
}

bool DistillObjective::NeedsTeacherPerBatch() const {
  return std::any_of(teachers_.begin(), teachers_.end(),
                     [](const auto& t) { return t->read_by_terms; });
}

int64_t DistillObjective::num_cached() const {
  return std::count_if(teachers_.begin(), teachers_.end(),
                       [](const auto& t) { return t->cache.defined(); });
}

void DistillObjective::CacheTeacherLogits(const TensorDataset& train, int64_t batch_size) {
  if (batch_size < 1) {
    throw Error(ErrorKind::kInternal, "DistillObjective: no logit cache with a batch size below 1");
  }
  for (auto& teacher : teachers_) {
    if (teacher->read_by_terms || teacher->cache.defined()) continue;
    std::vector<Tensor> parts;
    DataLoader loader(train, batch_size, /*shuffle=*/false, /*seed=*/0);
    Tensor x, y;
    while (loader.Next(x, y)) parts.push_back(RunTeacher(*teacher, x.to(device_)).to(torch::kFloat));
    const Tensor cache = torch::cat(parts);
    // Also waits for the device, so the pass's timing of the cache is real.
    if (!torch::isfinite(cache).all().item<bool>()) {
      throw Error(ErrorKind::kNumeric, options_.where + ": " +
                                           TeacherLabel(*teacher->graph, teacher->where) +
                                           " gives NaN or Inf logits on the training data");
    }
    teacher->cache = cache;
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

void DistillObjective::SetEpoch(int64_t epoch, int64_t epochs) {
  alpha_ = RampAt(options_.alpha, epoch, epochs);
  for (Term& t : terms_) t.weight = RampAt(t.pair.weight, epoch, epochs);
}

Tensor DistillObjective::Loss(const Tensor& logits, const Tensor& targets,
                              const Tensor& indices) {
  // Step 1: the soft term, the weighted mean over the teachers of each one's KD term,
  //   KD = Σ_k w̄_k · T² · KL(softmax(t_k/T) ‖ softmax(s/T)), w̄ summing to 1.
  // (One teacher: w̄ = 1 exactly, the single-teacher loss bit for bit.)
  Tensor kd, first_teacher;
  for (auto& teacher : teachers_) {
    const Tensor t = TeacherLogits(*teacher, indices);
    if (!first_teacher.defined()) first_teacher = t;
    const Tensor term = KdLoss(logits, t, options_.temperature) * teacher->weight;
    kd = kd.defined() ? kd + term : term;
  }
  Tensor loss = kd * alpha_;
  if (alpha_ < 1 && !labeled_) {
    throw Error(ErrorKind::kInternal, options_.where + ": alpha " + std::to_string(alpha_) +
                                          " weighs hard labels the training data does not have");
  }
  if (alpha_ < 1) {
    loss = loss + HardLabelLoss(logits, targets, options_.label_smoothing) * (1 - alpha_);
  }

  // Step 2: the feature terms, each against the teacher it names.
  Tensor hint = torch::zeros({}, torch::dtype(torch::kFloat).device(logits.device()));
  Tensor attention = hint.clone();
  for (const Term& term : terms_) {
    Tensor s = Observed(student_values_, term.pair.student, "student");
    const Teacher& teacher = *teachers_[static_cast<size_t>(term.pair.teacher_index)];
    const Tensor& t = Observed(teacher.values, term.pair.teacher, "teacher");
    if (term.attention) {
      const Tensor value = AttentionLoss(s, t);
      loss = loss + value * term.weight;
      attention = attention + value.detach();
    } else {
      if (term.adapted) s = ApplyAdapter(term.adapter, s);
      const Tensor value = HintLoss(s, t);
      loss = loss + value * term.weight;
      hint = hint + value.detach();
    }
  }

  // Step 3: the epoch's sums (on the device: no synchronisation per step).
  const int64_t n = logits.size(0);
  const Tensor top1 = logits.detach().argmax(1);
  if (labeled_) correct_ += top1.eq(targets).sum();
  agree_ += top1.eq(first_teacher.detach().argmax(1)).sum();
  kd_sum_ += kd.detach() * static_cast<double>(n);
  hint_sum_ += hint * static_cast<double>(n);
  attention_sum_ += attention * static_cast<double>(n);
  samples_ += n;
  student_values_.clear();
  for (auto& t : teachers_) t->values.clear();
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

const Graph& DistillObjective::teacher(int64_t k) const {
  return *teachers_.at(static_cast<size_t>(k))->graph;
}

double DistillObjective::teacher_weight(int64_t k) const {
  return teachers_.at(static_cast<size_t>(k))->weight;
}

const std::string& DistillObjective::teacher_where(int64_t k) const {
  return teachers_.at(static_cast<size_t>(k))->where;
}

void DistillObjective::ResetSums() {
  const auto f = torch::dtype(torch::kFloat).device(device_);
  correct_ = torch::zeros({}, torch::dtype(torch::kLong).device(device_));
  agree_ = correct_.clone();
  kd_sum_ = torch::zeros({}, f);
  hint_sum_ = torch::zeros({}, f);
  attention_sum_ = torch::zeros({}, f);
  samples_ = 0;
}

DistillEpoch DistillObjective::TakeEpoch() {
  DistillEpoch e;
  e.samples = samples_;
  e.alpha = alpha_;
  if (samples_ > 0) {
    const auto n = static_cast<double>(samples_);
    e.accuracy = labeled_ ? static_cast<double>(correct_.item<int64_t>()) / n
                          : std::numeric_limits<double>::quiet_NaN();
    e.agreement = static_cast<double>(agree_.item<int64_t>()) / n;
    e.kd = kd_sum_.item<double>() / n;
    e.hint = hint_sum_.item<double>() / n;
    e.attention = attention_sum_.item<double>() / n;
  }
  ResetSums();
  return e;
}

// ---- wiring into the trainer, stats, log ---------------------------------------------

void CheckNoAugmentation(const TrainOptions& t, const std::string& where) {
  if (!Augmenting(t.augmentation)) return;
  throw Error(ErrorKind::kUnsupported,
              where + ".augment: training augmentation is not supported with distillation (the "
                      "teachers' logits are cached for the un-augmented inputs); remove augment "
                      "or augment in a train stage before");
}

void AttachDistillObjective(DistillObjective& objective, TrainOptions& t) {
  t.loss = [&objective](const Tensor& logits, const Tensor& y, const Tensor& indices) {
    return objective.Loss(logits, y, indices);
  };
  const std::vector<Tensor> adapters = objective.AdapterParameters();
  t.extra_parameters.insert(t.extra_parameters.end(), adapters.begin(), adapters.end());

  // One executor observer serves both: each side sees only the values it asked for.
  const std::vector<std::string> mine = objective.StudentValues();
  if (!mine.empty()) {
    const std::set<std::string> theirs(t.observe.begin(), t.observe.end());
    const std::set<std::string> own(mine.begin(), mine.end());
    for (const auto& v : mine) {
      if (theirs.count(v) == 0) t.observe.push_back(v);
    }
    auto before = t.observer;
    t.observer = [&objective, before, theirs, own](const std::string& v, const Tensor& x) {
      if (before && theirs.count(v) != 0) before(v, x);
      if (own.count(v) != 0) objective.Observe(v, x);
    };
  }

  // The ramps follow the epochs; the caller's hook (which may close the last epoch's
  // sums) runs first, so the epoch it closes still reports its own alpha.
  auto before_epoch = t.before_epoch;
  const int64_t epochs = t.epochs;
  t.before_epoch = [&objective, before_epoch, epochs](int64_t epoch) {
    if (before_epoch) before_epoch(epoch);
    objective.SetEpoch(epoch, epochs);
  };
}

void FitLabels(const TensorDataset& train, const DistillLossOptions& options,
               DistillObjective& objective, TrainOptions& t) {
  const bool labeled = HasLabels(train);
  objective.SetLabeled(labeled);
  t.labels = labeled;
  if (labeled) return;
  for (int64_t e = 0; e < t.epochs; ++e) {
    const double alpha = RampAt(options.alpha, e, t.epochs);
    if (alpha < 1) {
      throw Error(ErrorKind::kRecipe,
                  options.where + ".alpha: the training split has no labels, but alpha is " +
                      Number(alpha) + " in epoch " + std::to_string(e + 1) +
                      " (1 - alpha weighs the hard labels); expected alpha 1 on unlabeled data");
    }
  }
}

void AddDistillStats(const DistillObjective& objective, const DistillLossOptions& options,
                     const std::vector<DistillEpoch>& epochs, PassResult& result) {
  const DistillEpoch last = epochs.empty() ? DistillEpoch{} : epochs.back();
  result.stats["kd_loss"] = last.kd;
  if (!options.features.empty()) result.stats["hint_loss"] = last.hint;
  if (!options.attention.empty()) result.stats["attention_loss"] = last.attention;
  if (!epochs.empty()) {
    result.stats["alpha_first_epoch"] = epochs.front().alpha;
    result.stats["alpha_last_epoch"] = last.alpha;
  }
  if (!epochs.empty()) result.stats["teacher_agreement"] = last.agreement;
  result.stats["teachers"] = static_cast<double>(objective.num_teachers());
  result.stats["teacher_cached"] = static_cast<double>(objective.num_cached());
  result.stats["adapters"] = static_cast<double>(objective.num_adapters());
}

std::string DescribeDistillation(const DistillObjective& objective,
                                 const DistillLossOptions& o) {
  std::ostringstream os;
  const int64_t n = objective.num_teachers();
  os << (n == 1 ? "teacher " : "teachers ");
  for (int64_t k = 0; k < n; ++k) {
    os << (k == 0 ? "" : ", ") << "'" << objective.teacher(k).name << "' ("
       << objective.teacher_where(k);
    if (n > 1) os << ", weight " << Number(objective.teacher_weight(k));
    os << ")";
  }
  os << ", T " << Number(o.temperature) << ", alpha " << RampText(o.alpha) << ", "
     << o.features.size() << " hint and " << o.attention.size() << " attention terms";
  for (bool attention : {false, true}) {
    const auto& pairs = attention ? o.attention : o.features;
    for (size_t i = 0; i < pairs.size(); ++i) {
      if (pairs[i].weight.constant()) continue;
      os << " (" << (attention ? "attention[" : "features[") << i << "].weight "
         << RampText(pairs[i].weight) << ")";
    }
  }
  const int64_t cached = objective.num_cached();
  os << "; teacher logits "
     << (cached == n   ? std::string("cached")
         : cached == 0 ? std::string("recomputed per batch")
                       : "cached for " + std::to_string(cached) + " of " + std::to_string(n) +
                             " teachers");
  return os.str();
}

}  // namespace compress
