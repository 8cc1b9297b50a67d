// The train pass: options from the recipe, then the Core trainer.
#include "training/train_pass.h"

#include <cmath>

namespace compress {

std::unique_ptr<Pass> TrainPass::Create(OptionReader& r) {
  TrainOptions o;
  o.batch_size = 0;
  ReadTrainOptions(r, o, "epochs");
  return std::make_unique<TrainPass>(o);
}

PassResult TrainPass::Run(Graph& graph, PassContext& ctx) {
  TrainResult r = TrainInContext(graph, ctx, options_);
  PassResult result;
  result.changed = true;
  if (!r.epochs.empty()) {
    const EpochStats& last = r.epochs.back();
    result.stats["epochs"] = static_cast<double>(r.epochs.size());
    result.stats["train_loss"] = last.train_loss;
    result.stats["train_accuracy"] = last.train_accuracy;
    if (!std::isnan(last.val_accuracy)) result.stats["val_accuracy"] = last.val_accuracy;
    double sps = 0;
    for (const auto& e : r.epochs) sps += e.samples_per_second;
    result.stats["samples_per_second"] = sps / r.epochs.size();
  }
  return result;
}

}  // namespace compress
