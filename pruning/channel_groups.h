// Channel dependency groups for structured pruning. A *group* is a set of channels that
// must be removed together: the output channels of every Conv/Gemm/MatMul whose outputs
// are joined elementwise (residual Add, SE Mul, ...), plus every tensor dimension those
// channels index further on: BatchNormalization parameters, depthwise Conv filters
// (their `group` shrinks too), consumers' input channels, Concat offset ranges, Split
// pieces, and Flatten→Gemm column blocks (channel × spatial). Channels whose use cannot
// be proven (a graph output, an op that mixes channels, a shared weight, quantized
// weights, ...) put their group off limits with the reason; they are never broken.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "compress/ir/graph.h"

namespace compress {

// A run of a group's channels [begin, end) as they appear in some tensor dimension.
struct ChannelSegment {
  int group = -1;
  int64_t begin = 0, end = 0;
};

// One initializer dimension indexed by channels: in order, the segments' channels,
// each spanning `block` consecutive indices (block > 1 after a Flatten of C×H×W).
struct ChannelCut {
  enum class Role { kProducer, kConsumer, kFollower };  // writes / reads / rides along
  std::string initializer;
  int64_t dim = 0;
  std::vector<ChannelSegment> layout;
  int64_t block = 1;
  Role role = Role::kFollower;
  int node = -1;  // node the initializer feeds
};

// A node attribute or constant input that holds a channel count.
struct ChannelEdit {
  enum class Kind { kConvGroup, kSplitSizes, kReshapeTarget };
  Kind kind = Kind::kConvGroup;
  int node = -1;
  std::vector<std::vector<ChannelSegment>> layouts;  // one per affected output
  int64_t block = 1;
};

struct ChannelGroup {
  int64_t channels = 0;
  std::vector<int> producers;  // Conv/Gemm/MatMul nodes writing these channels
  std::vector<int> batchnorms; // BatchNormalization nodes scaling exactly these channels
  std::string blocked;         // why the group must stay whole; "" = prunable
};

struct ChannelAnalysis {
  std::vector<ChannelGroup> groups;
  std::vector<ChannelCut> cuts;
  std::vector<ChannelEdit> edits;
  // Readable one-line-per-group description (sources, size, blocked reason), for tests
  // and `mcompress inspect`-style dumps.
  std::string Describe(const Graph& graph) const;
};

// Builds the groups of `graph` (which must have shapes: value_info from InferShapes).
// Pure: the graph is not modified.
ChannelAnalysis AnalyzeChannels(const Graph& graph);

// How a channel's importance is scored (recipe names "l1", "l2", "bn").
enum class ChannelCriterion { kL1, kL2, kBn };

// Per-channel importance of a group: the sum over its producers of the L1 or L2 norm of
// each output channel's weights, or the sum of |gamma| of its BatchNormalizations (kBn;
// requires at least one). Pure.
at::Tensor ChannelScores(const Graph& graph, const ChannelAnalysis& analysis, int group,
                         ChannelCriterion criterion);

// How many channels to keep: C - round(ratio * C), rounded up to a multiple of
// `round_to` (<= 1: no rounding), at least 1 (or round_to) and at most C. Pure.
int64_t ChannelsToKeep(int64_t channels, double ratio, int64_t round_to);

// The kept channel indices (ascending) of the `keep` highest scores; ties keep the
// lower index. Pure.
std::vector<int64_t> KeepHighest(const at::Tensor& scores, int64_t keep);

// kept[g] lists the channels of group g to keep (ascending); an empty list keeps all.
using ChannelSelection = std::vector<std::vector<int64_t>>;

// Physically removes every channel not kept: slices each cut's initializer (masks
// too), rewrites the edits, then re-infers shapes and validates the graph.
void ShrinkChannels(Graph& graph, const ChannelAnalysis& analysis, const ChannelSelection& kept);

// The same selection as masking only: zeroes the consumers' weights that read removed
// channels, leaving shapes alone. ShrinkChannels of the original must compute what
// this computes (the built-in verification).
void ZeroRemovedChannels(Graph& graph, const ChannelAnalysis& analysis,
                         const ChannelSelection& kept);

}  // namespace compress
