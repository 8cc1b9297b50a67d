// AGP schedule and the prune / fine-tune loop shared by the pruning passes.
#include "compress/pass/schedule.h"

#include <cmath>
#include <string>

#include "compress/pass/train_context.h"

namespace compress {

void ReadGradualOptions(OptionReader& r, GradualOptions& o, double final_value) {
  OptionReader g = r.Object("gradual", "prune in AGP steps with fine-tuning between them");
  g.Read("steps", o.steps, 0, 1000, "number of pruning steps; 0 = one-shot");
  g.Read("initial", o.initial, 0.0, 0.999999, "fraction pruned by the first step's cubic start");
  o.finetune.epochs = 1;
  o.finetune.batch_size = 0;
  ReadTrainOptions(g, o.finetune, "finetune_epochs");
  g.Finish();
  if (o.steps > 0 && !(o.initial < final_value)) {
    g.AddProblem("initial", "must be below the pass's final target " + std::to_string(final_value));
  }
}

double AgpTarget(double initial, double final_value, int64_t step, int64_t steps) {
  if (steps <= 0 || step >= steps) return final_value;
  const double remaining = 1.0 - static_cast<double>(step) / static_cast<double>(steps);
  return final_value + (initial - final_value) * remaining * remaining * remaining;
}

void RunPruneSchedule(Graph& graph, PassContext& ctx, const GradualOptions& options,
                      double final_value,
                      const std::function<void(Graph&, double)>& prune, PassResult& result) {
  if (options.steps == 0) {
    prune(graph, final_value);
    return;
  }
  int64_t epochs = 0;
  for (int64_t step = 1; step <= options.steps; ++step) {
    const double target = AgpTarget(options.initial, final_value, step, options.steps);
    ctx.log("gradual step " + std::to_string(step) + "/" + std::to_string(options.steps) +
            ": target " + std::to_string(target));
    prune(graph, target);
    if (step < options.steps) {
      TrainInContext(graph, ctx, options.finetune);
      epochs += options.finetune.epochs;
    }
  }
  result.stats["gradual_steps"] = static_cast<double>(options.steps);
  result.stats["finetune_epochs"] = static_cast<double>(epochs);
}

}  // namespace compress
