// `prune-sensitivity`: per-layer sensitivity scan. Each selected layer alone is pruned
// by magnitude to each scanned sparsity and the model is evaluated on the validation
// split; the table goes into the report. Optionally derives per-layer targets (the
// highest scanned sparsity whose top-1 drop stays within a bound) and applies them.
#pragma once

#include <memory>
#include <vector>

#include "compress/pass/options.h"
#include "compress/pass/pass.h"
#include "compress/pass/layer_select.h"

namespace compress {

struct PruneSensitivityOptions {
  std::vector<double> sparsities = {0.3, 0.5, 0.7, 0.9};
  int64_t samples = 2000;  // validation samples per evaluation; 0 = the whole split
  LayerFilter layers;
  // >= 0: prune each layer to the highest scanned sparsity whose validation top-1 is
  // at most this far (fraction) below the unpruned model's; < 0: scan only.
  double apply_max_drop = -1;
};

class PruneSensitivityPass : public Pass {
 public:
  explicit PruneSensitivityPass(PruneSensitivityOptions options) : options_(std::move(options)) {}
  static std::unique_ptr<Pass> Create(OptionReader& options);
  PassResult Run(Graph& graph, PassContext& ctx) override;

 private:
  PruneSensitivityOptions options_;
};

// The highest of `sparsities` whose `top1` is >= reference - max_drop; 0 when none
// is. Pure.
double ChooseSparsity(const std::vector<double>& sparsities, const std::vector<double>& top1,
                      double reference, double max_drop);

}  // namespace compress
