// `train`: baseline training or fine-tuning with the Core trainer on the recipe's
// training split (validation each epoch).
#pragma once

#include "compress/pass/options.h"
#include "compress/pass/pass.h"
#include "compress/pass/train_context.h"
#include "compress/train/train.h"

namespace compress {

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
