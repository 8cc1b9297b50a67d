// Gradual pruning schedules: Automated Gradual Pruning (Zhu & Gupta 2017, "To prune,
// or not to prune", eq. 1) raises the pruned fraction from an initial to a final value
// along a cubic over N steps, fine-tuning between steps so the network recovers.
// Every pruning pass accepts the same `"gradual": {...}` object.
#pragma once

#include <cstdint>
#include <functional>

#include "compress/pass/options.h"
#include "compress/pass/pass.h"
#include "compress/train/train.h"

namespace compress {

struct GradualOptions {
  int64_t steps = 0;       // 0 = one-shot (no schedule)
  double initial = 0.0;    // fraction pruned at step 1's start (the cubic's s_i)
  TrainOptions finetune;   // between steps; finetune.epochs = "finetune_epochs"
};

// Declares the optional "gradual" object on `r`: steps, initial, finetune_epochs and
// the trainer's optimizer/schedule options. `final_value` is the pass's target, used
// to check initial < final.
void ReadGradualOptions(OptionReader& r, GradualOptions& options, double final_value);

// AGP target after step `step` of `steps` (1-based): s_f + (s_i - s_f) (1 - step/steps)^3.
// Step `steps` gives exactly `final_value`. Pure.
double AgpTarget(double initial, double final_value, int64_t step, int64_t steps);

// Runs prune(graph, target) once with `final_value` when options.steps == 0; otherwise
// once per AGP step, fine-tuning finetune.epochs between steps (not after the last: a
// recipe's next `train` stage does that). Adds "gradual_steps" and
// "finetune_epochs" to result.stats.
void RunPruneSchedule(Graph& graph, PassContext& ctx, const GradualOptions& options,
                      double final_value,
                      const std::function<void(Graph&, double target)>& prune,
                      PassResult& result);

}  // namespace compress
