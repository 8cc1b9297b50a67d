// `distill`: trains the current model (the student) against the recipe's teachers (one,
// or several with weights; else the baseline model) with Hinton KD on
// temperature-softened logits plus hard-label cross-entropy, and optionally FitNets
// feature hints and attention transfer on named values. The objective (losses, teachers,
// ramps, logit cache) is distill/objective.h, shared with quantize-qat's `distill`
// option; this pass adds the training run around it.
//
// Choices (docs/distill.md):
//   - Stability: a linear warm-up (warmup_epochs, capped at half the run), gradient-norm
//     clipping, and a guard that stops with Error(kNumeric) when an epoch after the
//     warm-up ends with training accuracy at chance.
#pragma once

#include <memory>

#include "compress/pass/options.h"
#include "compress/pass/pass.h"
#include "compress/train/train.h"
#include "distill/objective.h"

namespace compress {

// The trainer's defaults for distillation: SGD (lr 0.01) with momentum 0.9 on a cosine
// schedule that starts at the full rate when the warm-up ends (schedule_after_warmup),
// gradients clipped at global norm 5, the recipe's batch size (0).
TrainOptions DistillTrainDefaults();

struct DistillOptions {
  // epochs, batch_size (0 = the recipe's), optimizer, lr_schedule, label_smoothing (of
  // the hard term), max_grad_norm, schedule_after_warmup. The pass sets loss,
  // warmup_steps, observe/observer, extra_parameters and before_epoch itself.
  TrainOptions train = DistillTrainDefaults();
  DistillLossOptions loss;   // temperature, alpha, features, attention; where
  double warmup_epochs = 1;  // linear lr warm-up in epochs (fractions allowed)
};

// Throws Error(kRecipe) naming loss.where and the field: ValidateDistillLoss's checks
// and a negative warm-up.
void ValidateDistillOptions(const DistillOptions& options);

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
