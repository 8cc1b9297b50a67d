// `prune-nm`: N:M semi-structured pruning (2:4 by default) of Conv/Gemm/MatMul weights
// along their input dimension, with a checker that verifies the pattern on every
// pruned weight. Masks persist through later training like prune-magnitude's.
#pragma once

#include <memory>

#include "compress/pass/options.h"
#include "compress/pass/pass.h"
#include "compress/pass/layer_select.h"
#include "compress/pass/schedule.h"

namespace compress {

struct PruneNMOptions {
  int64_t n = 2;  // weights kept per group
  int64_t m = 4;  // group length along the input dimension
  LayerFilter layers;
  // Gradual N:M: the AGP schedule ramps the fraction of groups that carry the pattern
  // (cheapest groups first) from `initial` to 1.
  GradualOptions gradual;
};

class PruneNMPass : public Pass {
 public:
  explicit PruneNMPass(PruneNMOptions options) : options_(std::move(options)) {}
  static std::unique_ptr<Pass> Create(OptionReader& options);
  PassResult Run(Graph& graph, PassContext& ctx) override;

 private:
  PruneNMOptions options_;
};

}  // namespace compress
