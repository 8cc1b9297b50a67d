// `distill`: trains the current model (the student) against a teacher (the recipe's
// `teacher`, else the baseline model) with Hinton KD on temperature-softened logits plus
// hard-label cross-entropy, and optionally FitNets feature hints and attention transfer
// on named values read through the executor's observer (distill/losses.h).
//
// Choices (docs/distill.md):
//   - The teacher runs in eval mode without autograd on the training device and never
//     changes (it is cloned when it is elsewhere or shares tensors with the student).
//     Without feature terms its logits are computed once for the whole training split
//     and read by sample index, so a KD epoch costs about one student epoch.
//   - Hints whose shapes differ only in channels get a learned adapter (1×1 conv or
//     linear, semi-orthogonal init), trained with the student and then dropped; other
//     shape mismatches, and attention maps of different spatial sizes, are errors.
//   - Stability: a linear warm-up (warmup_epochs, capped at half the run), gradient-norm
//     clipping, and a guard that stops with Error(kNumeric) when an epoch after the
//     warm-up ends with training accuracy at chance.
#pragma once

#include <c10/core/Device.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "compress/pass/options.h"
#include "compress/pass/pass.h"
#include "compress/runtime/executor.h"
#include "compress/train/train.h"
#include "distill/losses.h"

namespace compress {

// A loss term between a value of the student graph and one of the teacher graph.
struct ValuePair {
  std::string student;
  std::string teacher;  // empty: the student's name
  double weight = 1;
};

// The trainer's defaults for distillation: SGD (lr 0.01) with momentum 0.9 on a cosine
// schedule, gradients clipped at global norm 5, the recipe's batch size (0).
TrainOptions DistillTrainDefaults();

struct DistillOptions {
  // epochs, batch_size (0 = the recipe's), optimizer, lr_schedule, label_smoothing (of
  // the hard term), max_grad_norm. The pass sets loss, warmup_steps, observe/observer,
  // extra_parameters and before_epoch itself.
  TrainOptions train = DistillTrainDefaults();
  double temperature = 4;    // > 0
  double alpha = 0.9;        // weight of the soft (KD) term; 1 - alpha on the hard labels
  double warmup_epochs = 1;  // linear lr warm-up in epochs (fractions allowed)
  std::vector<ValuePair> features;   // hint MSE terms
  std::vector<ValuePair> attention;  // attention-transfer terms
  std::string where = "distill";     // prefix of messages: the recipe path of the stage
};

// Throws Error(kRecipe) naming `where` and the field: temperature <= 0, alpha outside
// [0, 1], negative warm-up, a pair without a student name or with a negative weight.
void ValidateDistillOptions(const DistillOptions& options);

// Means over the batches Loss saw since the last TakeEpoch.
struct DistillEpoch {
  int64_t samples = 0;
  double accuracy = 0;  // student top-1 on the training batches
  double kd = 0;        // the KD term (before alpha)
  double hint = 0;      // sum of the unweighted hint terms
  double attention = 0; // sum of the unweighted attention terms
};

// The objective of one student and one teacher: checks both graphs and their values on
// a sample batch, makes the adapters, optionally caches the teacher's logits, and gives
// the trainer its loss and observer. The student graph must stay the graph Train runs;
// the teacher must outlive this object.
class DistillObjective {
 public:
  // `sample`: a training batch on `device`; the student must be on `device`. Throws
  // Error(kRecipe) naming the option path for a value missing from either graph, teacher
  // logits of another shape than the student's, or value shapes no term can compare;
  // kUnsupported for a graph that is not single-input single-output.
  DistillObjective(const Graph& student, const Graph& teacher, const DistillOptions& options,
                   const Tensor& sample, const c10::Device& device, uint64_t seed);
  DistillObjective(const DistillObjective&) = delete;
  DistillObjective& operator=(const DistillObjective&) = delete;

  // Whether the teacher must run on every batch (feature or attention terms).
  bool NeedsTeacherPerBatch() const { return !terms_.empty(); }
  // Runs the teacher once over `inputs` (the training split, in dataset order); Loss
  // then reads its logits by sample index. Only when !NeedsTeacherPerBatch().
  void CacheTeacherLogits(const Tensor& inputs, int64_t batch_size);
  bool cached() const { return cache_.defined(); }

  // What Train must observe on the student (TrainOptions.observe / observer): the
  // graph input when the teacher runs per batch, and every term's student value.
  std::vector<std::string> StudentValues() const;
  void Observe(const std::string& value, const Tensor& tensor);

  // TrainOptions.loss: alpha·KD + (1 − alpha)·CE + Σ weight·hint + Σ weight·attention
  // for one batch, after the student's forward pass (which fed Observe).
  Tensor Loss(const Tensor& logits, const Tensor& targets, const Tensor& indices);

  // The adapters' weight and bias tensors (TrainOptions.extra_parameters).
  std::vector<Tensor> AdapterParameters() const;
  int64_t num_adapters() const;
  int64_t num_classes() const { return classes_; }
  // The teacher as it runs (on the device).
  const Graph& teacher() const { return *teacher_; }
  // The means since the last call; resets them.
  DistillEpoch TakeEpoch();

 private:
  struct Term {
    ValuePair pair;    // teacher name resolved
    std::string path;  // "stages[2].features[0]", for messages
    bool attention = false;
    bool adapted = false;
    Adapter adapter;
  };
  Tensor RunTeacher(const Tensor& input);
  const Tensor& Observed(const std::map<std::string, Tensor>& values, const std::string& name,
                         const char* model) const;
  void PlanTerms(const Graph& student, const Tensor& sample, uint64_t seed);
  void ResetSums();

  DistillOptions options_;
  c10::Device device_;
  Graph teacher_copy_;  // used when the teacher had to be cloned
  const Graph* teacher_ = nullptr;
  std::unique_ptr<Executor> teacher_run_;
  std::string student_input_;
  std::vector<Term> terms_;
  int64_t classes_ = 0;
  Tensor cache_;  // [N, classes] teacher logits, when cached
  std::map<std::string, Tensor> student_values_, teacher_values_;  // of the current batch
  Tensor correct_, kd_sum_, hint_sum_, attention_sum_;  // epoch sums, on the device
  int64_t samples_ = 0;
};

class DistillPass : public Pass {
 public:
  explicit DistillPass(DistillOptions options) : options_(std::move(options)) {}
  static std::unique_ptr<Pass> Create(OptionReader& options);
  // Throws Error(kRecipe) without a teacher (no recipe teacher and no baseline) or
  // without training data, and Error(kNumeric) when training diverges.
  PassResult Run(Graph& graph, PassContext& ctx) override;

 private:
  DistillOptions options_;
};

}  // namespace compress
