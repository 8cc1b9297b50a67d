// `prune-magnitude`: unstructured L1-magnitude pruning of Conv/Gemm/MatMul weights,
// per layer or with one global threshold. Masks are stored on the initializers and
// re-applied after every later optimizer step, so sparsity never decays.
#pragma once

#include <memory>
#include <string>

#include "compress/pass/options.h"
#include "compress/pass/pass.h"
#include "compress/pass/layer_select.h"
#include "compress/pass/schedule.h"

namespace compress {

struct PruneMagnitudeOptions {
  double sparsity = 0.5;      // fraction of weights zeroed, in [0, 1)
  bool global = false;  // recipe "scope": "layer" (each layer at `sparsity`) or "global" (one ranking)
  LayerFilter layers;         // include / exclude / skip_first_last
  GradualOptions gradual;     // AGP steps with fine-tuning; steps 0 = one-shot
};

class PruneMagnitudePass : public Pass {
 public:
  explicit PruneMagnitudePass(PruneMagnitudeOptions options) : options_(std::move(options)) {}
  static std::unique_ptr<Pass> Create(OptionReader& options);
  PassResult Run(Graph& graph, PassContext& ctx) override;

 private:
  PruneMagnitudeOptions options_;
};

}  // namespace compress
