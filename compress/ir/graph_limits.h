// Limits::max_graph_nodes and max_graph_depth (compress/base/limits.h) for a graph an
// importer built from an untrusted file.
#pragma once

#include <string>

#include "compress/ir/graph.h"

namespace compress {

// The longest chain of nodes from a graph input or initializer to any value (a graph
// of one node has depth 1). `graph` must be valid (Validate: nodes in topological order).
int64_t GraphDepth(const Graph& graph);

// Throws Error(kIo) "<where>: the graph has N nodes, above the limit of M
// (MCOMPRESS_MAX_GRAPH_NODES)", or the same for its depth (MCOMPRESS_MAX_GRAPH_DEPTH).
void CheckGraphLimits(const Graph& graph, const std::string& where);

}  // namespace compress
