// prune-nm: select layers whose input dimension fits the pattern, plan every mask,
// apply, then check the pattern on every pruned weight.
#include "pruning/prune_nm.h"

#include <torch/torch.h>

#include "compress/base/error.h"
#include "pruning/magnitude.h"
#include "pruning/nm.h"

namespace compress {

namespace {

struct NMLayer {
  std::string node;
  std::string weight;
  int64_t dim = 1;  // reduction dimension of the weight
};

void ApplyNM(Graph& graph, const std::vector<NMLayer>& layers, int64_t n, int64_t m,
             double group_fraction) {
  torch::NoGradGuard no_grad;
  std::vector<Tensor> masks;
  for (const auto& l : layers) masks.push_back(NMMask(graph.Weight(l.weight), n, m, l.dim, group_fraction));
  for (size_t i = 0; i < layers.size(); ++i) {
    ApplyPersistentMask(graph.initializers.at(layers[i].weight), masks[i]);
  }
}

}  // namespace

std::unique_ptr<Pass> PruneNMPass::Create(OptionReader& r) {
  PruneNMOptions o;
  r.Read("n", o.n, 1, 64, "weights kept in each group");
  r.Read("m", o.m, 2, 64, "group length along the input dimension");
  if (o.n >= o.m) r.AddProblem("n", "must be smaller than m (" + std::to_string(o.m) + ")");
  ReadLayerFilter(r, o.layers);
  ReadGradualOptions(r, o.gradual, 1.0);
  return std::make_unique<PruneNMPass>(o);
}

PassResult PruneNMPass::Run(Graph& graph, PassContext& ctx) {
  PassResult result;
  const std::string pattern = std::to_string(options_.n) + ":" + std::to_string(options_.m);
  // Step 1: layers whose reduction dimension is a multiple of m.
  std::vector<NMLayer> layers;
  for (const auto& l : SelectLayers(graph, options_.layers, "prune-nm", &result.skipped)) {
    const Node& node = graph.nodes[l.node];
    const int64_t dim = ReductionDim(node.op_type, node.GetInt("transB", 0) != 0);
    const Tensor& w = graph.Weight(l.weight);
    if (w.dim() < 2 || w.size(dim) % options_.m != 0) {
      result.skipped.push_back(
          {node.name, "input dimension " + std::to_string(w.dim() < 2 ? w.numel() : w.size(dim)) +
                          " is not a multiple of m=" + std::to_string(options_.m)});
      continue;
    }
    layers.push_back({node.name, l.weight, dim});
  }
  if (layers.empty()) {
    ctx.log("prune-nm: no layer fits the " + pattern + " pattern; nothing pruned");
    return result;
  }

  // Step 2: the pattern, in one shot or ramped over the groups by the AGP schedule.
  RunPruneSchedule(graph, ctx, options_.gradual, 1.0,
                   [&](Graph& g, double fraction) {
                     ApplyNM(g, layers, options_.n, options_.m, fraction);
                   },
                   result);

  // Step 3: the checker. A violation here is a bug in the mask math, never user error.
  int64_t zeros = 0, total = 0;
  for (const auto& l : layers) {
    const Tensor& w = graph.Weight(l.weight);
    const int64_t bad = CountNMViolations(w, options_.n, options_.m, l.dim);
    if (bad != 0) {
      throw Error(ErrorKind::kInternal, "prune-nm: weight '" + l.weight + "' of " + l.node +
                                            " has " + std::to_string(bad) + " groups violating " +
                                            pattern);
    }
    zeros += (w == 0).sum().item<int64_t>();
    total += w.numel();
  }
  result.changed = true;
  result.stats["layers_pruned"] = static_cast<double>(layers.size());
  result.stats["weights_pruned"] = static_cast<double>(zeros);
  result.stats["sparsity"] = total > 0 ? static_cast<double>(zeros) / total : 0.0;
  ctx.log("prune-nm: " + pattern + " on " + std::to_string(layers.size()) + " layers, sparsity " +
          std::to_string(result.stats["sparsity"]));
  return result;
}

}  // namespace compress
