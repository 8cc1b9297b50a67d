#include "compress/ir/graph_limits.h"

#include <algorithm>
#include <unordered_map>

#include "compress/base/error.h"
#include "compress/base/limits.h"

namespace compress {

int64_t GraphDepth(const Graph& graph) {
  std::unordered_map<std::string, int64_t> depth;  // value -> depth of its producer
  int64_t deepest = 0;
  for (const Node& node : graph.nodes) {
    int64_t d = 0;
    for (const auto& in : node.inputs) {
      auto it = depth.find(in);
      if (it != depth.end()) d = std::max(d, it->second);
    }
    ++d;
    for (const auto& out : node.outputs) depth[out] = d;
    deepest = std::max(deepest, d);
  }
  return deepest;
}

void CheckGraphLimits(const Graph& graph, const std::string& where) {
  const Limits& limits = CurrentLimits();
  const std::string prefix = where.empty() ? "" : where + ": ";
  auto check = [&](int64_t have, int64_t max, const char* what, const char* field) {
    if (have > max) {
      throw Error(ErrorKind::kIo, prefix + "the graph has " + std::to_string(have) + " " + what +
                                      ", above the limit of " + std::to_string(max) + " (" +
                                      LimitVariable(field) + ")");
    }
  };
  check(static_cast<int64_t>(graph.nodes.size()), limits.max_graph_nodes, "nodes",
        "max_graph_nodes");
  check(GraphDepth(graph), limits.max_graph_depth, "levels of nodes (its depth)",
        "max_graph_depth");
}

}  // namespace compress
