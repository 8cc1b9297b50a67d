// prune-magnitude: plan the masks of every selected layer, then apply them; with a
// gradual schedule, once per AGP step.
#include "pruning/prune_magnitude.h"

#include <torch/torch.h>

#include "pruning/magnitude.h"

namespace compress {

namespace {

// Masks every weight in `selected` to `sparsity` (per layer or globally); earlier
// masks stay in force, so pruned weights never come back. Returns (zeros, total).
std::pair<int64_t, int64_t> ApplyMagnitude(Graph& graph, const std::vector<WeightedLayer>& selected,
                                           double sparsity, bool global) {
  torch::NoGradGuard no_grad;
  // Plan all masks on the current (possibly already masked) values, then apply.
  std::vector<Tensor> weights;
  for (const auto& l : selected) weights.push_back(graph.Weight(l.weight));
  std::vector<Tensor> masks;
  if (global) {
    masks = GlobalMagnitudeMasks(weights, sparsity);
  } else {
    for (const auto& w : weights) masks.push_back(MagnitudeMask(w, sparsity));
  }
  int64_t zeros = 0, total = 0;
  for (size_t i = 0; i < selected.size(); ++i) {
    zeros += ApplyPersistentMask(graph.initializers.at(selected[i].weight), masks[i]);
    total += masks[i].numel();
  }
  return {zeros, total};
}

}  // namespace

std::unique_ptr<Pass> PruneMagnitudePass::Create(OptionReader& r) {
  PruneMagnitudeOptions o;
  r.Read("sparsity", o.sparsity, 0.0, 0.999999, "fraction of weights to zero, in [0, 1)");
  r.ReadEnum("scope", o.global, {{"layer", false}, {"global", true}},
             "per-layer target or one global ranking");
  ReadLayerFilter(r, o.layers);
  ReadGradualOptions(r, o.gradual, o.sparsity);
  return std::make_unique<PruneMagnitudePass>(o);
}

PassResult PruneMagnitudePass::Run(Graph& graph, PassContext& ctx) {
  PassResult result;
  const auto selected = SelectLayers(graph, options_.layers, "prune-magnitude", &result.skipped);
  std::pair<int64_t, int64_t> counts{0, 0};
  RunPruneSchedule(graph, ctx, options_.gradual, options_.sparsity,
                   [&](Graph& g, double target) {
                     counts = ApplyMagnitude(g, selected, target, options_.global);
                   },
                   result);
  const auto [zeros, total] = counts;
  result.changed = options_.sparsity > 0 || zeros > 0;
  result.stats["layers_pruned"] = static_cast<double>(selected.size());
  result.stats["weights_pruned"] = static_cast<double>(zeros);
  result.stats["sparsity"] = total > 0 ? static_cast<double>(zeros) / total : 0.0;
  ctx.log("prune-magnitude: " + std::to_string(selected.size()) + " layers, sparsity " +
          std::to_string(result.stats["sparsity"]));
  return result;
}

}  // namespace compress
