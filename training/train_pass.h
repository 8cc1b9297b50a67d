// `train`: baseline training or fine-tuning with the Core trainer on the recipe's
// training split (validation each epoch).
#pragma once

#include "compress/options.h"
#include "compress/pass.h"
#include "compress/train.h"

namespace compress {

// Declares the trainer's options on `r` (the epoch count under `epochs_key`, so other
// passes can embed fine-tuning as e.g. "finetune_epochs"). batch_size 0 means the
// recipe's data.batch_size.
void ReadTrainOptions(OptionReader& r, TrainOptions& options, const std::string& epochs_key);

// Trains `graph` on ctx.data's training split (validation each epoch) with ctx's seed,
// progress display and after_step hook; batch_size 0 takes ctx.batch_size.
TrainResult TrainInContext(Graph& graph, PassContext& ctx, TrainOptions options);

class TrainPass : public Pass {
 public:
  // `batch_size` 0 means the recipe's data.batch_size.
  explicit TrainPass(TrainOptions options) : options_(std::move(options)) {}
  static std::unique_ptr<Pass> Create(OptionReader& options);
  PassResult Run(Graph& graph, PassContext& ctx) override;

 private:
  TrainOptions options_;
};

}  // namespace compress
