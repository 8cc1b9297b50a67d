// Which weighted layers a pruning pass touches: Conv/Gemm/MatMul nodes with a
// floating-point weight initializer, filtered by the include/exclude/skip_first_last
// options every pruning pass shares. Everything left alone is reported with the reason.
#pragma once

#include <string>
#include <vector>

#include "compress/ir/graph.h"
#include "compress/pass/options.h"
#include "compress/report/report.h"

namespace compress {

struct LayerFilter {
  std::string include;           // ECMAScript regex on node or weight name; "" = all
  std::string exclude;           // regex; "" = none
  bool skip_first_last = false;  // leave the first and last weighted layers alone
};

// Declares include/exclude (and skip_first_last when `first_last`) on `r`; invalid
// regexes are recorded as problems.
void ReadLayerFilter(OptionReader& r, LayerFilter& filter, bool first_last = true);

// Whether `name` passes the include/exclude patterns (skip_first_last not considered).
bool FilterMatches(const LayerFilter& filter, const std::string& name);

struct WeightedLayer {
  int node = -1;       // index into graph.nodes
  std::string weight;  // initializer name
};

// Every Conv/Gemm/MatMul with a floating-point weight initializer, in node order.
std::vector<WeightedLayer> WeightedLayers(const Graph& graph);

// The layers `filter` selects (a weight shared by several layers is selected once);
// the others are appended to `skipped`. Throws Error(kRecipe) naming `pass` and the
// weighted layers when nothing is selected.
std::vector<WeightedLayer> SelectLayers(const Graph& graph, const LayerFilter& filter,
                                        const std::string& pass,
                                        std::vector<SkippedLayer>* skipped);

}  // namespace compress
