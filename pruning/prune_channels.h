// `prune-channels`: structured pruning of output channels/filters by L1, L2 or
// BatchNorm-scale importance over dependency groups (channel_groups.h), with physical
// shrinking of every tensor in a group and a built-in check that the shrunk graph
// computes what the original computes with those channels' uses zeroed.
#pragma once

#include <memory>

#include "compress/pass/options.h"
#include "compress/pass/pass.h"
#include "compress/pass/layer_select.h"
#include "compress/pass/schedule.h"
#include "pruning/channel_groups.h"

namespace compress {

struct PruneChannelsOptions {
  double ratio = 0.5;             // fraction of each group's channels removed, [0, 1)
  ChannelCriterion criterion = ChannelCriterion::kL1;
  int64_t round_to = 1;           // kept channel counts rounded up to a multiple
  LayerFilter layers;             // include/exclude on the producing layers' names
  bool verify = true;             // compare shrunk vs zeroed original (max |Δ| <= 1e-5)
  GradualOptions gradual;         // AGP on the ratio, fine-tuning between steps
};

class PruneChannelsPass : public Pass {
 public:
  explicit PruneChannelsPass(PruneChannelsOptions options) : options_(std::move(options)) {}
  static std::unique_ptr<Pass> Create(OptionReader& options);
  PassResult Run(Graph& graph, PassContext& ctx) override;

 private:
  PruneChannelsOptions options_;
};

// Largest |a - b| over all outputs of the graphs run on the same inputs (eval mode),
// relative to max(1, max |b|). Used by the built-in verification; exposed for tests.
double RelativeOutputDifference(const Graph& a, const Graph& b, const std::vector<Tensor>& inputs);

}  // namespace compress
