// prune-sensitivity: scan (one layer at a time, restored after each point), then
// optionally derive and apply per-layer magnitude targets.
#include "pruning/prune_sensitivity.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "compress/base/error.h"
#include "compress/train/eval.h"
#include "pruning/magnitude.h"

namespace compress {

double ChooseSparsity(const std::vector<double>& sparsities, const std::vector<double>& top1,
                      double reference, double max_drop) {
  double best = 0;
  for (size_t i = 0; i < sparsities.size() && i < top1.size(); ++i) {
    if (top1[i] >= reference - max_drop - 1e-12) best = std::max(best, sparsities[i]);
  }
  return best;
}

std::unique_ptr<Pass> PruneSensitivityPass::Create(OptionReader& r) {
  PruneSensitivityOptions o;
  r.Read("sparsities", o.sparsities, 0.0, 0.999999, "sparsities scanned for every layer");
  r.Read("samples", o.samples, 0, 1 << 30, "validation samples per evaluation; 0 = all");
  ReadLayerFilter(r, o.layers);
  r.Read("apply_max_drop", o.apply_max_drop, -1.0, 1.0,
         ">= 0: prune each layer to its highest sparsity within this top-1 drop; < 0: scan only");
  std::sort(o.sparsities.begin(), o.sparsities.end());
  return std::make_unique<PruneSensitivityPass>(o);
}

PassResult PruneSensitivityPass::Run(Graph& graph, PassContext& ctx) {
  if (ctx.data == nullptr || ctx.data->validation.size() == 0) {
    throw Error(ErrorKind::kRecipe, "prune-sensitivity: needs a validation split (data.validation_size > 0)");
  }
  PassResult result;
  const auto selected = SelectLayers(graph, options_.layers, "prune-sensitivity", &result.skipped);
  const TensorDataset val = options_.samples > 0
                                ? ctx.data->validation.Slice(0, options_.samples)
                                : ctx.data->validation;
  const int64_t batch = std::max<int64_t>(ctx.batch_size, 256);
  const double reference = Evaluate(graph, val, batch, ctx.device).top1;
  result.stats["reference_val_top1"] = reference;

  // Step 1: scan. Each point prunes one layer on the live graph and restores it.
  torch::NoGradGuard no_grad;
  for (const auto& layer : selected) {
    SensitivityRow row;
    row.layer = graph.nodes[layer.node].name;
    row.sparsities = options_.sparsities;
    Tensor& w = graph.Weight(layer.weight);
    const Tensor saved = w.clone();
    for (double s : options_.sparsities) {
      w.mul_(MagnitudeMask(w, s));
      row.top1.push_back(Evaluate(graph, val, batch, ctx.device).top1);
      w.copy_(saved);
    }
    ctx.log("prune-sensitivity: " + row.layer + " scanned");
    result.sensitivity.push_back(std::move(row));
  }

  // Step 2: optional targets, planned for every layer, then applied.
  if (options_.apply_max_drop >= 0) {
    int64_t zeros = 0, total = 0;
    for (size_t i = 0; i < selected.size(); ++i) {
      SensitivityRow& row = result.sensitivity[i];
      row.chosen = ChooseSparsity(row.sparsities, row.top1, reference, options_.apply_max_drop);
    }
    for (size_t i = 0; i < selected.size(); ++i) {
      Initializer& init = graph.initializers.at(selected[i].weight);
      zeros += ApplyPersistentMask(init, MagnitudeMask(init.value, result.sensitivity[i].chosen));
      total += init.value.numel();
    }
    result.changed = zeros > 0;
    result.stats["sparsity"] = total > 0 ? static_cast<double>(zeros) / total : 0.0;
  }
  result.stats["layers_scanned"] = static_cast<double>(selected.size());
  return result;
}

}  // namespace compress
