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
  AddTrainStats(r, result);
  return result;
}

}  // namespace compress
