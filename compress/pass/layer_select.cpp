// Layer selection shared by the pruning passes.
#include "compress/pass/layer_select.h"

#include <algorithm>
#include <regex>

#include "compress/base/error.h"

namespace compress {

namespace {

bool ValidRegex(const std::string& pattern) {
  try {
    std::regex r(pattern);
    return true;
  } catch (const std::regex_error&) {
    return false;
  }
}

}  // namespace

void ReadLayerFilter(OptionReader& r, LayerFilter& f, bool first_last) {
  r.Read("include", f.include, {}, "regex: prune only layers whose node or weight name matches");
  r.Read("exclude", f.exclude, {}, "regex: leave matching layers alone");
  if (first_last) {
    r.Read("skip_first_last", f.skip_first_last, "leave the first and last weighted layers alone");
  }
  if (!ValidRegex(f.include)) r.AddProblem("include", "not a valid regular expression");
  if (!ValidRegex(f.exclude)) r.AddProblem("exclude", "not a valid regular expression");
}

bool FilterMatches(const LayerFilter& f, const std::string& name) {
  if (!f.include.empty() && !std::regex_search(name, std::regex(f.include))) return false;
  return f.exclude.empty() || !std::regex_search(name, std::regex(f.exclude));
}

std::vector<WeightedLayer> WeightedLayers(const Graph& g) {
  std::vector<WeightedLayer> layers;
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const Node& n = g.nodes[i];
    if ((n.op_type == "Conv" || n.op_type == "Gemm" || n.op_type == "MatMul") && n.HasInput(1) &&
        g.IsInitializer(n.inputs[1]) && g.Weight(n.inputs[1]).is_floating_point()) {
      layers.push_back({static_cast<int>(i), n.inputs[1]});
    }
  }
  return layers;
}

std::vector<WeightedLayer> SelectLayers(const Graph& graph, const LayerFilter& filter,
                                        const std::string& pass,
                                        std::vector<SkippedLayer>* skipped) {
  const auto layers = WeightedLayers(graph);
  const std::regex include(filter.include.empty() ? ".*" : filter.include);
  const std::regex exclude(filter.exclude);
  std::vector<WeightedLayer> selected;
  for (size_t i = 0; i < layers.size(); ++i) {
    const std::string& node = graph.nodes[layers[i].node].name;
    const std::string& weight = layers[i].weight;
    auto matches = [&](const std::regex& re) {
      return std::regex_search(node, re) || std::regex_search(weight, re);
    };
    auto skip = [&](const std::string& reason) { skipped->push_back({node, reason}); };
    if (filter.skip_first_last && (i == 0 || i + 1 == layers.size())) {
      skip(i == 0 ? "first weighted layer (skip_first_last)"
                  : "last weighted layer (skip_first_last)");
    } else if (!matches(include)) {
      skip("does not match include \"" + filter.include + "\"");
    } else if (!filter.exclude.empty() && matches(exclude)) {
      skip("matches exclude \"" + filter.exclude + "\"");
    } else if (std::any_of(selected.begin(), selected.end(),
                           [&](const WeightedLayer& l) { return l.weight == weight; })) {
      skip("weight '" + weight + "' is shared with an earlier layer");
    } else {
      selected.push_back(layers[i]);
    }
  }
  if (selected.empty()) {
    std::string names;
    for (const auto& l : layers) names += (names.empty() ? "" : ", ") + graph.nodes[l.node].name;
    throw Error(ErrorKind::kRecipe, pass + ": no layer selected (include \"" + filter.include +
                                        "\", exclude \"" + filter.exclude +
                                        "\"); weighted layers are: " + names);
  }
  return selected;
}

}  // namespace compress
