// The distillation objective: the loss of a student against one or several weighted
// teachers (Hinton KD + hard-label CE, FitNets hints, attention transfer; the math is in
// distill/losses.h), its recipe options and the choice of teachers. It is training
// machinery shared by pass families: the `distill` pass trains with it, and so does
// `quantize-qat` with its `distill` option (tools/check_layers.sh lets any family
// include this header and distill/losses.h, never distill/distill.h).
//
// Choices (docs/distill.md):
//   - Several teachers: the soft term is the weighted mean of each teacher's KD term,
//     KD = Σ_k w̄_k · KD(s, t_k; T) with w̄_k = w_k / Σ_j w_j: KD against each teacher's
//     own softened distribution, averaged. (Its gradient equals that of KD against the
//     mixture Σ_k w̄_k softmax(t_k/T); the values differ by a student-independent term.)
//     Feature and attention terms read one teacher each: `teacher_index` (default 0).
//   - Each teacher runs in eval mode without autograd on the training device and never
//     changes (it is cloned when it is elsewhere or shares tensors with the student). A
//     teacher no term reads has its logits computed once for the whole training split
//     and read by sample index; the others run on every batch.
//   - alpha and each term's weight may ramp linearly over the epochs (compress/pass/ramp.h);
//     the trainer's before_epoch hook tells the objective the epoch.
#pragma once

#include <c10/core/Device.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "compress/pass/options.h"
#include "compress/pass/pass.h"
#include "compress/pass/ramp.h"
#include "compress/runtime/executor.h"
#include "compress/train/train.h"
#include "distill/losses.h"

namespace compress {

// A loss term between a value of the student graph and one of a teacher graph.
struct ValuePair {
  std::string student;
  std::string teacher;     // empty: the student's name
  Ramp weight = 1;         // >= 0 at both ends
  int64_t teacher_index = 0;  // which teacher's value (0: the first)
};

// What the loss is: the distill pass's loss options, and quantize-qat's `distill` object.
struct DistillLossOptions {
  double temperature = 4;  // > 0
  Ramp alpha = 0.9;        // weight of the soft (KD) term; 1 - alpha on the hard labels
  // Of the hard term. The trainer leaves it to a custom loss, so the passes copy their
  // trainer's label_smoothing here.
  double label_smoothing = 0;
  std::vector<ValuePair> features;   // hint MSE terms
  std::vector<ValuePair> attention;  // attention-transfer terms
  std::string where = "distill";     // prefix of messages: the recipe path of the options
};

// Declares the loss options on `r` (temperature, alpha, features, attention) and sets
// options.where to r's path. The one reader of both the distill pass and quantize-qat.
void ReadDistillLossOptions(OptionReader& r, DistillLossOptions& options);

// Throws Error(kRecipe) naming `where` and the field: temperature <= 0, alpha outside
// [0, 1] at either end of its ramp, a pair without a student name, a negative weight
// or teacher_index.
void ValidateDistillLoss(const DistillLossOptions& options);

// The teachers a pass distils from: the recipe's (ctx.teachers), else the baseline
// (weight 1, where "baseline"). Throws Error(kRecipe) naming `where` when there is
// neither.
std::vector<TeacherRef> DistillTeachers(const PassContext& ctx, const std::string& where);

// Means over the batches Loss saw since the last TakeEpoch.
struct DistillEpoch {
  int64_t samples = 0;
  double accuracy = 0;   // student top-1 on the training batches (NaN without labels)
  double agreement = 0;  // how often the student's top-1 is the first teacher's
  double kd = 0;         // the KD term (the teachers' weighted mean, before alpha)
  double hint = 0;       // sum of the unweighted hint terms
  double attention = 0;  // sum of the unweighted attention terms
  double alpha = 0;      // the alpha these batches used
};

// The objective of one student and its teachers: checks the graphs and their values on
// a sample batch, makes the adapters, caches what teacher logits it can, and gives the
// trainer its loss and observer. The student graph must stay the graph Train runs; the
// teachers must outlive this object.
class DistillObjective {
 public:
  // `sample`: a training batch on `device`; the student must be on `device`; `teachers`
  // non-empty with weights > 0. Throws Error(kRecipe) naming the option path for a value
  // missing from a graph, a teacher_index past the teachers, teacher logits of another
  // shape than the student's (naming the teacher's `where`), or value shapes no term can
  // compare; kUnsupported for a graph that is not single-input single-output.
  DistillObjective(const Graph& student, const std::vector<TeacherRef>& teachers,
                   const DistillLossOptions& options, const Tensor& sample,
                   const c10::Device& device, uint64_t seed);
  // One teacher of weight 1.
  DistillObjective(const Graph& student, const Graph& teacher, const DistillLossOptions& options,
                   const Tensor& sample, const c10::Device& device, uint64_t seed);
  DistillObjective(const DistillObjective&) = delete;
  DistillObjective& operator=(const DistillObjective&) = delete;
  ~DistillObjective();

  // Whether some teacher must run on every batch: a feature or attention term reads it,
  // so its logits cannot be cached.
  bool NeedsTeacherPerBatch() const;
  // Runs every teacher no term reads once over `train` (the training split, in dataset
  // order); Loss then reads their logits by sample index. batch_size >= 1.
  void CacheTeacherLogits(const TensorDataset& train, int64_t batch_size);
  bool cached() const { return num_cached() == num_teachers(); }  // every teacher
  int64_t num_cached() const;

  // What Train must observe on the student (TrainOptions.observe / observer): the
  // graph input while a teacher runs per batch, and every term's student value.
  std::vector<std::string> StudentValues() const;
  void Observe(const std::string& value, const Tensor& tensor);

  // Sets alpha and the term weights of epoch `epoch` (0-based) of `epochs` (their
  // ramps); until the first call, epoch 0's.
  void SetEpoch(int64_t epoch, int64_t epochs);
  double alpha() const { return alpha_; }
  // False: the training data has no labels; Loss then reads none (alpha must be 1) and
  // the epoch's accuracy is NaN (its agreement with the teacher still counts).
  void SetLabeled(bool labeled) { labeled_ = labeled; }
  bool labeled() const { return labeled_; }

  // TrainOptions.loss: alpha·KD + (1 − alpha)·CE + Σ weight·hint + Σ weight·attention
  // for one batch, after the student's forward pass (which fed Observe).
  Tensor Loss(const Tensor& logits, const Tensor& targets, const Tensor& indices);

  // The adapters' weight and bias tensors (TrainOptions.extra_parameters).
  std::vector<Tensor> AdapterParameters() const;
  int64_t num_adapters() const;
  int64_t num_classes() const { return classes_; }
  int64_t num_teachers() const { return static_cast<int64_t>(teachers_.size()); }
  // Teacher k as it runs (on the device), its normalised weight and recipe path.
  const Graph& teacher(int64_t k = 0) const;
  double teacher_weight(int64_t k) const;
  const std::string& teacher_where(int64_t k) const;
  // The means since the last call; resets them.
  DistillEpoch TakeEpoch();

 private:
  struct Teacher;
  struct Term {
    ValuePair pair;    // teacher name resolved
    std::string path;  // "stages[2].features[0]", for messages
    bool attention = false;
    bool adapted = false;
    Adapter adapter;
    double weight = 0;  // of the current epoch
  };
  void AddTeachers(const Graph& student, const std::vector<TeacherRef>& teachers);
  void AddTerms(const Graph& student);
  Tensor RunTeacher(Teacher& teacher, const Tensor& input);
  Tensor TeacherLogits(Teacher& teacher, const Tensor& indices);
  const Tensor& Observed(const std::map<std::string, Tensor>& values, const std::string& name,
                         const std::string& model) const;
  void PlanTerms(const Graph& student, const Tensor& sample, uint64_t seed);
  void ResetSums();

  DistillLossOptions options_;
  c10::Device device_;
  std::vector<std::unique_ptr<Teacher>> teachers_;  // stable addresses: observers keep them
  std::string student_input_;
  std::vector<Term> terms_;
  int64_t classes_ = 0;
  double alpha_ = 0;
  std::map<std::string, Tensor> student_values_;  // of the current batch
  bool labeled_ = true;
  Tensor correct_, agree_, kd_sum_, hint_sum_, attention_sum_;  // epoch sums, on the device
  int64_t samples_ = 0;
};

// Unlabeled training data (targets -1): the objective and `t` read no labels, which
// needs alpha 1 in every epoch of `t` (else Error(kRecipe) naming options.where's
// alpha). Labeled data leaves both reading them.
void FitLabels(const TensorDataset& train, const DistillLossOptions& options,
               DistillObjective& objective, TrainOptions& t);

// Distillation reads its teachers' logits from a per-sample cache of the un-augmented
// training inputs, so training augmentation (TrainOptions::augmentation) would pair a
// cropped or flipped student input with the teacher's view of the original: refused with
// Error(kUnsupported) naming `where` until the teacher runs on each augmented batch.
void CheckNoAugmentation(const TrainOptions& t, const std::string& where);

// Gives `options` what Train needs from `objective`: the loss, the adapters, the values
// to observe and the epoch hook that sets the ramps (options.epochs is the ramps' E).
// An observer or before_epoch the caller set already keeps running (first, and its
// observer sees only its own values). Call after CacheTeacherLogits: what the student
// must observe depends on it. The objective must outlive the training.
void AttachDistillObjective(DistillObjective& objective, TrainOptions& options);

// The stats of a distillation run over `epochs` (TakeEpoch's, in order): kd_loss,
// hint_loss / attention_loss (when configured), alpha_first_epoch / alpha_last_epoch
// (the alpha used), teachers, teacher_cached (teachers whose logits were cached),
// adapters.
void AddDistillStats(const DistillObjective& objective, const DistillLossOptions& options,
                     const std::vector<DistillEpoch>& epochs, PassResult& result);

// One line for the log: the teachers with their weights, T, alpha (and its ramp), the
// terms with their weights, and whether logits were cached.
std::string DescribeDistillation(const DistillObjective& objective,
                                 const DistillLossOptions& options);

}  // namespace compress
