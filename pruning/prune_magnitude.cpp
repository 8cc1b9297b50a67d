// prune-magnitude: plan the masks of every selected layer, then apply them.
#include "pruning/prune_magnitude.h"

#include <torch/torch.h>

#include <regex>

#include "pruning/magnitude.h"

namespace compress {

namespace {

// Weighted layers in node order: (node index, weight initializer name).
std::vector<std::pair<int, std::string>> WeightedLayers(const Graph& g) {
  std::vector<std::pair<int, std::string>> layers;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    if ((n.op_type == "Conv" || n.op_type == "Gemm" || n.op_type == "MatMul") && n.HasInput(1) &&
        g.IsInitializer(n.inputs[1]) && g.Weight(n.inputs[1]).is_floating_point()) {
      layers.emplace_back(static_cast<int>(i), n.inputs[1]);
    }
  }
  return layers;
}

bool ValidRegex(const std::string& pattern) {
  try {
    std::regex r(pattern);
    return true;
  } catch (const std::regex_error&) {
    return false;
  }
}

}  // namespace

std::unique_ptr<Pass> PruneMagnitudePass::Create(OptionReader& r) {
  PruneMagnitudeOptions o;
  r.Read("sparsity", o.sparsity, 0.0, 0.999999, "fraction of weights to zero, in [0, 1)");
  r.Read("scope", o.scope, {"layer", "global"}, "per-layer target or one global ranking");
  r.Read("include", o.include, {}, "regex: prune only layers whose node or weight name matches");
  r.Read("exclude", o.exclude, {}, "regex: leave matching layers dense");
  r.Read("skip_first_last", o.skip_first_last, "leave the first and last weighted layers dense");
  if (!ValidRegex(o.include)) r.AddProblem("include", "not a valid regular expression");
  if (!ValidRegex(o.exclude)) r.AddProblem("exclude", "not a valid regular expression");
  return std::make_unique<PruneMagnitudePass>(o);
}

PassResult PruneMagnitudePass::Run(Graph& graph, PassContext& ctx) {
  PassResult result;
  const auto layers = WeightedLayers(graph);
  const std::regex include(options_.include.empty() ? ".*" : options_.include);
  const std::regex exclude(options_.exclude);

  // Step 1: select layers; everything left alone is reported with the reason.
  std::vector<std::string> selected;
  for (size_t i = 0; i < layers.size(); ++i) {
    const std::string& node = graph.nodes[layers[i].first].name;
    const std::string& weight = layers[i].second;
    auto matches = [&](const std::regex& re) {
      return std::regex_search(node, re) || std::regex_search(weight, re);
    };
    if (options_.skip_first_last && (i == 0 || i + 1 == layers.size())) {
      result.skipped.push_back({node, i == 0 ? "first weighted layer (skip_first_last)"
                                             : "last weighted layer (skip_first_last)"});
    } else if (!matches(include)) {
      result.skipped.push_back({node, "does not match include \"" + options_.include + "\""});
    } else if (!options_.exclude.empty() && matches(exclude)) {
      result.skipped.push_back({node, "matches exclude \"" + options_.exclude + "\""});
    } else if (std::find(selected.begin(), selected.end(), weight) != selected.end()) {
      result.skipped.push_back({node, "weight '" + weight + "' is shared with an earlier layer"});
    } else {
      selected.push_back(weight);
    }
  }
  if (selected.empty()) {
    std::string names;
    for (const auto& [idx, w] : layers) names += (names.empty() ? "" : ", ") + graph.nodes[idx].name;
    throw Error(ErrorKind::kRecipe, "prune-magnitude: no layer selected (include \"" +
                                        options_.include + "\", exclude \"" + options_.exclude +
                                        "\"); weighted layers are: " + names);
  }

  // Step 2: plan all masks (on the current, possibly already masked, values).
  torch::NoGradGuard no_grad;
  std::vector<Tensor> weights;
  for (const auto& w : selected) weights.push_back(graph.Weight(w));
  std::vector<Tensor> masks;
  if (options_.scope == "global") {
    masks = GlobalMagnitudeMasks(weights, options_.sparsity);
  } else {
    for (const auto& w : weights) masks.push_back(MagnitudeMask(w, options_.sparsity));
  }

  // Step 3: apply; earlier masks stay in force (pruned weights never come back).
  int64_t zeros = 0, total = 0;
  for (size_t i = 0; i < selected.size(); ++i) {
    Initializer& init = graph.initializers.at(selected[i]);
    Tensor mask = masks[i];
    if (init.mask.defined()) mask = mask * init.mask.to(mask.device(), mask.scalar_type());
    init.value.mul_(mask);
    init.mask = mask;
    zeros += (mask == 0).sum().item<int64_t>();
    total += mask.numel();
  }
  result.changed = options_.sparsity > 0 || zeros > 0;
  result.stats["layers_pruned"] = static_cast<double>(selected.size());
  result.stats["weights_pruned"] = static_cast<double>(zeros);
  result.stats["sparsity"] = total > 0 ? static_cast<double>(zeros) / total : 0.0;
  ctx.log("prune-magnitude: " + std::to_string(selected.size()) + " layers, sparsity " +
          std::to_string(result.stats["sparsity"]));
  return result;
}

}  // namespace compress
