// prune-channels: analyze groups, choose channels per group (plan), shrink (apply),
// verify against the zeroed original; with a gradual schedule, once per AGP step.
#include "pruning/prune_channels.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <map>

#include "compress/base/error.h"
#include "compress/runtime/executor.h"
#include "compress/report/report.h"
#include "pruning/channel_groups.h"

namespace compress {

namespace {

// Outputs may differ only by float rounding (shorter sums), relative to output scale.
constexpr double kShrinkTolerance = 1e-5;

std::string ProducerNames(const Graph& g, const ChannelGroup& group) {
  std::string s;
  for (int p : group.producers) s += (s.empty() ? "" : ",") + g.nodes[p].name;
  return s;
}

// A few real samples when the run has data, else seeded normal noise, shaped for
// every graph input (dynamic dims become 4).
std::vector<Tensor> VerificationInputs(const Graph& g, const PassContext& ctx, c10::Device device) {
  std::vector<Tensor> inputs;
  if (g.inputs.size() == 1 && ctx.data != nullptr && ctx.data->test.size() > 0) {
    inputs.push_back(ctx.data->test.Slice(0, 16).Materialized().inputs.to(device));
    return inputs;
  }
  auto gen = at::detail::createCPUGenerator(ctx.seed);
  for (const ValueInfo& in : g.inputs) {
    std::vector<int64_t> shape = in.shape.value_or(std::vector<int64_t>{});
    for (auto& d : shape) d = d == kDynamicDim ? 4 : d;
    inputs.push_back(torch::randn(shape, gen, torch::kFloat).to(device));
  }
  return inputs;
}

c10::Device GraphDevice(const Graph& g) {
  for (const auto& [name, init] : g.initializers) {
    if (init.value.defined()) return init.value.device();
  }
  return c10::Device(c10::kCPU);
}

bool HasAllShapes(const Graph& g) {
  for (const Node& n : g.nodes) {
    for (const auto& o : n.outputs) {
      if (!o.empty() && !g.FindValue(o)) return false;
    }
  }
  return true;
}

}  // namespace

double RelativeOutputDifference(const Graph& a, const Graph& b, const std::vector<Tensor>& inputs) {
  torch::NoGradGuard no_grad;
  const auto out_a = Executor(a).Run(inputs);
  const auto out_b = Executor(b).Run(inputs);
  double worst = 0;
  for (size_t i = 0; i < out_a.size() && i < out_b.size(); ++i) {
    const double scale = std::max(1.0, out_b[i].abs().max().item<double>());
    worst = std::max(worst, (out_a[i] - out_b[i]).abs().max().item<double>() / scale);
  }
  return worst;
}

std::unique_ptr<Pass> PruneChannelsPass::Create(OptionReader& r) {
  PruneChannelsOptions o;
  r.Read("ratio", o.ratio, 0.0, 0.999999, "fraction of each group's channels removed, in [0, 1)");
  r.ReadEnum("criterion", o.criterion,
             {{"l1", ChannelCriterion::kL1}, {"l2", ChannelCriterion::kL2}, {"bn", ChannelCriterion::kBn}},
         "channel importance: weight L1/L2 norm, or |BatchNorm scale|");
  r.Read("round_to", o.round_to, 1, 4096, "round kept channel counts up to a multiple of this");
  ReadLayerFilter(r, o.layers, /*first_last=*/false);
  r.Read("verify", o.verify, "check the shrunk graph against the zeroed original");
  ReadGradualOptions(r, o.gradual, o.ratio);
  return std::make_unique<PruneChannelsPass>(o);
}

PassResult PruneChannelsPass::Run(Graph& graph, PassContext& ctx) {
  PassResult result;
  if (!HasAllShapes(graph)) InferShapes(graph);
  const SizeStats before = ComputeSize(graph);

  // Step 1: the groups and which of them this pass may touch (same on every step:
  // shrinking keeps the structure, and group numbering follows node order).
  const ChannelAnalysis first = AnalyzeChannels(graph);
  std::vector<int> selected;
  std::vector<int64_t> original;  // channels of every group before the pass
  for (size_t i = 0; i < first.groups.size(); ++i) {
    const ChannelGroup& group = first.groups[i];
    original.push_back(group.channels);
    if (group.producers.empty()) continue;
    const std::string names = ProducerNames(graph, group);
    bool match = false;
    for (int p : group.producers) match = match || FilterMatches(options_.layers, graph.nodes[p].name);
    if (!group.blocked.empty()) {
      result.skipped.push_back({names, "not prunable: " + group.blocked});
    } else if (!match) {
      result.skipped.push_back({names, "does not match include/exclude"});
    } else if (options_.criterion == ChannelCriterion::kBn && group.batchnorms.empty()) {
      result.skipped.push_back({names, "criterion bn: no BatchNormalization scales these channels"});
    } else {
      selected.push_back(static_cast<int>(i));
    }
  }

  // Step 2: per step, plan the kept channels of every selected group, then shrink and
  // verify against the original with the removed channels' uses zeroed.
  double worst = 0;
  RunPruneSchedule(graph, ctx, options_.gradual, options_.ratio, [&](Graph& g, double target) {
    const ChannelAnalysis analysis = AnalyzeChannels(g);
    if (analysis.groups.size() != first.groups.size()) {
      throw Error(ErrorKind::kInternal, "prune-channels: group structure changed between steps");
    }
    ChannelSelection kept(analysis.groups.size());
    bool any = false;
    for (int gi : selected) {
      const int64_t keep = ChannelsToKeep(original[gi], target, options_.round_to);
      if (keep >= analysis.groups[gi].channels) continue;
      kept[gi] = KeepHighest(ChannelScores(g, analysis, gi, options_.criterion), keep);
      any = true;
    }
    if (!any) return;
    Graph reference;
    if (options_.verify) {
      reference = g.Clone();
      ZeroRemovedChannels(reference, analysis, kept);
    }
    ShrinkChannels(g, analysis, kept);
    if (options_.verify) {
      const double diff = RelativeOutputDifference(g, reference, VerificationInputs(g, ctx, GraphDevice(g)));
      worst = std::max(worst, diff);
      if (!(diff <= kShrinkTolerance)) {
        throw Error(ErrorKind::kInternal,
                    "prune-channels: the shrunk graph differs from the original with the removed "
                    "channels zeroed by " + std::to_string(diff) + " (relative; tolerance " +
                    std::to_string(kShrinkTolerance) + "): a dependency was missed");
      }
    }
  }, result);

  // Step 3: what changed.
  const ChannelAnalysis after = AnalyzeChannels(graph);
  int64_t ch_before = 0, ch_after = 0;
  for (int gi : selected) {
    ch_before += original[gi];
    ch_after += after.groups[gi].channels;
  }
  const SizeStats now = ComputeSize(graph);
  result.changed = ch_after < ch_before;
  result.stats["groups"] = static_cast<double>(std::count_if(
      first.groups.begin(), first.groups.end(), [](const ChannelGroup& g) { return !g.producers.empty(); }));
  result.stats["groups_pruned"] = static_cast<double>(selected.size());
  result.stats["channels_before"] = static_cast<double>(ch_before);
  result.stats["channels_after"] = static_cast<double>(ch_after);
  result.stats["params_before"] = static_cast<double>(before.parameters);
  result.stats["params_after"] = static_cast<double>(now.parameters);
  result.stats["macs_before"] = static_cast<double>(before.macs);
  result.stats["macs_after"] = static_cast<double>(now.macs);
  if (options_.verify) result.stats["verify_max_rel_diff"] = worst;
  ctx.log("prune-channels: " + std::to_string(selected.size()) + " groups, channels " +
          std::to_string(ch_before) + " -> " + std::to_string(ch_after) + ", MACs " +
          std::to_string(before.macs) + " -> " + std::to_string(now.macs));
  return result;
}

}  // namespace compress
