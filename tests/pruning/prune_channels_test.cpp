// prune-channels: dependency groups on zoo and hand-built graphs (residual Add, SE Mul,
// Concat, Split, depthwise Conv, Flatten→Gemm, Reshape, GlobalAveragePool), physical
// shrinking checked numerically against the original with the removed channels'
// uses zeroed, blocked groups left whole with their reason, and the pass's options.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "compress/zoo/builder.h"
#include "compress/runtime/executor.h"
#include "compress/report/report.h"
#include "compress/zoo/zoo.h"
#include "pruning/channel_groups.h"
#include "pruning/prune_channels.h"
#include "tests/test_util.h"

namespace compress {
namespace {

using testing_util::ExpectError;
using testing_util::RunPassFromJson;

// Shrinking must match the zeroed original to float rounding.
constexpr double kTol = 1e-5;

// Non-trivial BatchNorm statistics, so a channel removed in error shows up in outputs.
void RandomizeBatchNorms(Graph& g, uint64_t seed = 7) {
  torch::manual_seed(seed);
  torch::NoGradGuard no_grad;
  for (const Node& n : g.nodes) {
    if (n.op_type != "BatchNormalization") continue;
    const int64_t c = g.Weight(n.inputs[1]).numel();
    g.Weight(n.inputs[1]).copy_(torch::rand({c}) + 0.5);
    g.Weight(n.inputs[2]).copy_(torch::randn({c}) * 0.3);
    g.Weight(n.inputs[3]).copy_(torch::randn({c}) * 0.2);
    g.Weight(n.inputs[4]).copy_(torch::rand({c}) + 0.5);
  }
}

// Keeps the highest-L1 channels of every prunable group at `ratio`, shrinks a copy,
// and returns its relative output difference against the zeroed original.
double ShrinkAndCompare(const Graph& g, double ratio, Graph* shrunk_out = nullptr) {
  ChannelAnalysis a = AnalyzeChannels(g);
  ChannelSelection kept(a.groups.size());
  for (size_t i = 0; i < a.groups.size(); ++i) {
    if (!a.groups[i].blocked.empty()) continue;
    kept[i] = KeepHighest(ChannelScores(g, a, static_cast<int>(i), ChannelCriterion::kL1),
                          ChannelsToKeep(a.groups[i].channels, ratio, 1));
  }
  Graph zeroed = g.Clone(), shrunk = g.Clone();
  ZeroRemovedChannels(zeroed, a, kept);
  ShrinkChannels(shrunk, a, kept);
  torch::manual_seed(11);
  std::vector<Tensor> inputs;
  for (const ValueInfo& in : g.inputs) {
    std::vector<int64_t> shape = *in.shape;
    shape[0] = 3;
    inputs.push_back(torch::randn(shape));
  }
  const double diff = RelativeOutputDifference(shrunk, zeroed, inputs);
  // The zeroed original really differs from the untouched one (the check has teeth).
  EXPECT_GT(RelativeOutputDifference(zeroed, g, inputs), 1e-4);
  if (shrunk_out) *shrunk_out = std::move(shrunk);
  return diff;
}

TEST(ChannelMath, KeepCountsAndRanking) {
  EXPECT_EQ(ChannelsToKeep(64, 0.5, 1), 32);
  EXPECT_EQ(ChannelsToKeep(10, 0.5, 8), 8);   // 5 rounded up to 8
  EXPECT_EQ(ChannelsToKeep(16, 0.9, 8), 8);   // never below round_to
  EXPECT_EQ(ChannelsToKeep(6, 0.5, 8), 6);    // never above the width
  EXPECT_EQ(ChannelsToKeep(3, 0.99, 1), 1);   // at least one channel
  EXPECT_EQ(ChannelsToKeep(7, 0.0, 1), 7);
  auto kept = KeepHighest(torch::tensor({0.5f, 2.f, 1.f, 2.f, 0.1f}), 3);
  EXPECT_EQ(kept, (std::vector<int64_t>{1, 2, 3}));
  kept = KeepHighest(torch::tensor({1.f, 1.f, 1.f, 1.f}), 2);  // ties: lower index
  EXPECT_EQ(kept, (std::vector<int64_t>{0, 1}));
}

TEST(ChannelGroups, ResNet8CouplesResidualStages) {
  Graph g = BuildZoo("resnet8");
  ChannelAnalysis a = AnalyzeChannels(g);
  EXPECT_EQ(a.Describe(g),
            "group 0: 16 channels, producers stem.conv layer1.conv2; bn stem.bn layer1.bn2; prunable\n"
            "group 1: 16 channels, producers layer1.conv1; bn layer1.bn1; prunable\n"
            "group 2: 32 channels, producers layer2.conv1; bn layer2.bn1; prunable\n"
            "group 3: 32 channels, producers layer2.conv2 layer2.down.conv; bn layer2.bn2 layer2.down.bn; prunable\n"
            "group 4: 64 channels, producers layer3.conv1; bn layer3.bn1; prunable\n"
            "group 5: 64 channels, producers layer3.conv2 layer3.down.conv; bn layer3.bn2 layer3.down.bn; prunable\n"
            "group 6: 10 channels, producers fc; blocked: channels reach graph output 'logits'\n");
}

TEST(ChannelGroups, ShrunkZooGraphsEqualTheZeroedOriginals) {
  for (const char* name : {"resnet8", "mobilenet-tiny", "convnet", "lenet5", "mlp-300-100"}) {
    Graph g = BuildZoo(name, 3);
    RandomizeBatchNorms(g);
    Graph shrunk;
    EXPECT_LE(ShrinkAndCompare(g, 0.5, &shrunk), kTol) << name;
    EXPECT_LT(shrunk.NumParameters(), g.NumParameters()) << name;
  }
}

TEST(ChannelGroups, DepthwiseAndFlattenShrinkConsistently) {
  Graph g = BuildZoo("mobilenet-tiny");
  RandomizeBatchNorms(g);
  Graph s;
  ShrinkAndCompare(g, 0.5, &s);
  // The depthwise conv follows the pointwise conv before it: filters and group shrink.
  const Node* dw = nullptr;
  for (const Node& n : s.nodes) dw = n.name == "block2.dw" ? &n : dw;
  ASSERT_NE(dw, nullptr);
  EXPECT_EQ(dw->GetInt("group"), 16);
  EXPECT_EQ(s.Weight("block2.dw.weight").sizes(), (std::vector<int64_t>{16, 1, 3, 3}));
  EXPECT_EQ(s.Weight("block1.pw.weight").sizes(), (std::vector<int64_t>{16, 8, 1, 1}));
  EXPECT_EQ(s.Weight("fc.weight").sizes(), (std::vector<int64_t>{10, 64}));
  // convnet: Flatten of 64x7x7 -> fc1 reads blocks of 49 columns per channel.
  Graph c = BuildZoo("convnet");
  RandomizeBatchNorms(c);
  Graph cs;
  EXPECT_LE(ShrinkAndCompare(c, 0.5, &cs), kTol);
  EXPECT_EQ(cs.Weight("fc1.weight").sizes(), (std::vector<int64_t>{64, 32 * 49}));
}

// x -> conv a (8) -> relu -+-> concat(a, b) (16) -> BN -> conv d (reads 16)
//   -> conv b (8) ---------+
// conv d (12) -> split [4, 8] -> (s0: relu) , (s1: SE: GAP -> conv e(8->8) -> sigmoid ->
//  mul with s1) -> concat(s0, mul) (12) -> reshape [N, 12*4*4] -> gemm
Graph BranchyGraph() {
  GraphBuilder b("branchy", 5);
  std::string x = b.Input("input", {kDynamicDim, 3, 4, 4});
  std::string a = b.Op1("Relu", {b.Conv(x, 3, 8, 3, 1, 1, 1, true, "conv_a")});
  std::string bb = b.Conv(x, 3, 8, 1, 1, 0, 1, true, "conv_b");
  std::string cat = b.Op1("Concat", {a, bb}, {{"axis", int64_t{1}}});
  std::string bn = b.BatchNorm(cat, 16, "bn");
  std::string d = b.Conv(bn, 16, 12, 3, 1, 1, 1, true, "conv_d");
  std::string split_sizes = b.Constant("split_sizes", torch::tensor({4, 8}, torch::kLong));
  auto parts = b.Op("Split", {d, split_sizes}, {{"axis", int64_t{1}}}, 2);
  std::string s0 = b.Op1("Relu", {parts[0]});
  std::string gap = b.Op1("GlobalAveragePool", {parts[1]});
  std::string e = b.Op1("Sigmoid", {b.Conv(gap, 8, 8, 1, 1, 0, 1, true, "conv_e")});
  std::string mul = b.Op1("Mul", {parts[1], e});
  std::string joined = b.Op1("Concat", {s0, mul}, {{"axis", int64_t{1}}});
  std::string shape = b.Constant("flat_shape", torch::tensor({-1, 12 * 16}, torch::kLong));
  std::string flat = b.Op1("Reshape", {joined, shape});
  b.Output("logits", b.Linear(flat, 12 * 16, 5, true, "fc"));
  Graph g = b.Build();
  RandomizeBatchNorms(g);
  return g;
}

TEST(ChannelGroups, ConcatSplitSEAndReshapeAreFollowed) {
  Graph g = BranchyGraph();
  ChannelAnalysis a = AnalyzeChannels(g);
  const std::string d = a.Describe(g);
  EXPECT_NE(d.find("8 channels, producers conv_a; prunable"), std::string::npos) << d;
  EXPECT_NE(d.find("8 channels, producers conv_b; prunable"), std::string::npos) << d;
  // conv_d's outputs are split: the whole 12 stay one group; the SE conv joins the
  // 8-channel piece by Mul, but that piece is only part of conv_d's channels.
  EXPECT_NE(d.find("12 channels, producers conv_d; blocked: Mul"), std::string::npos) << d;
  Graph s;
  EXPECT_LE(ShrinkAndCompare(g, 0.5, &s), kTol);
  EXPECT_EQ(s.Weight("conv_d.weight").sizes(), (std::vector<int64_t>{12, 8, 3, 3}));
  EXPECT_EQ(s.Weight("bn.weight").numel(), 8);
}

TEST(ChannelGroups, SplitSizesAreRewritten) {
  GraphBuilder b("split", 1);
  std::string x = b.Input("input", {kDynamicDim, 2, 5, 5});
  std::string c = b.Conv(x, 2, 8, 3, 1, 1, 1, true, "conv");
  auto parts = b.Op("Split", {c, b.Constant("sizes", torch::tensor({8}, torch::kLong))},
                    {{"axis", int64_t{1}}}, 1);
  std::string r = b.Op1("Relu", {parts[0]});
  std::string g2 = b.Op1("GlobalAveragePool", {r});
  std::string f = b.Op1("Flatten", {g2}, {{"axis", int64_t{1}}});
  b.Output("logits", b.Linear(f, 8, 3, true, "fc"));
  Graph g = b.Build();
  Graph s;
  EXPECT_LE(ShrinkAndCompare(g, 0.25, &s), kTol);
  EXPECT_EQ(s.Weight("sizes").item<int64_t>(), 6);
}

TEST(ChannelGroups, UnprovableUsesBlockTheGroup) {
  GraphBuilder b("blocked", 2);
  std::string x = b.Input("input", {kDynamicDim, 3, 4, 4});
  std::string c1 = b.Conv(x, 3, 8, 3, 1, 1, 1, true, "conv1");
  std::string sm = b.Op1("Softmax", {c1}, {{"axis", int64_t{1}}});  // mixes channels
  std::string c2 = b.Conv(sm, 8, 6, 1, 1, 0, 1, true, "conv2");
  std::string added = b.Op1("Add", {c2, b.Op1("Relu", {c2})});
  b.Output("out", added);  // conv2's channels are the model output
  Graph g = b.Build();
  ChannelAnalysis a = AnalyzeChannels(g);
  EXPECT_EQ(a.Describe(g),
            "group 0: 8 channels, producers conv1; blocked: Softmax 'Softmax' is not channel-transparent\n"
            "group 1: 6 channels, producers conv2; blocked: channels reach graph output 'out'\n");
  Graph before = g.Clone();
  PassResult r = RunPassFromJson("prune-channels", g, {{"ratio", 0.5}});
  EXPECT_FALSE(r.changed);
  ASSERT_EQ(r.skipped.size(), 2u);
  EXPECT_EQ(r.skipped[0].layer, "conv1");
  EXPECT_EQ(r.skipped[0].reason, "not prunable: Softmax 'Softmax' is not channel-transparent");
  EXPECT_EQ(g.Weight("conv1.weight").sizes(), before.Weight("conv1.weight").sizes());
}

TEST(PruneChannels, ResNet8HalvesChannelsAndCutsMacs) {
  Graph g = BuildZoo("resnet8");
  RandomizeBatchNorms(g);
  const SizeStats before = ComputeSize(g);
  Graph original = g.Clone();
  PassResult r = RunPassFromJson("prune-channels", g, {{"ratio", 0.5}, {"criterion", "l2"}});
  EXPECT_TRUE(r.changed);
  EXPECT_EQ(r.stats["groups_pruned"], 6);
  EXPECT_EQ(r.stats["channels_before"], 16 + 16 + 32 + 32 + 64 + 64);
  EXPECT_EQ(r.stats["channels_after"], 8 + 8 + 16 + 16 + 32 + 32);
  EXPECT_LE(r.stats["verify_max_rel_diff"], kTol);
  const SizeStats after = ComputeSize(g);
  EXPECT_GE(static_cast<double>(before.macs) / after.macs, 1.9);
  EXPECT_EQ(g.Weight("layer3.conv2.weight").sizes(), (std::vector<int64_t>{32, 32, 3, 3}));
  EXPECT_EQ(g.Weight("fc.weight").sizes(), (std::vector<int64_t>{10, 32}));
  // The shrunk graph still runs at any batch size and keeps its output width.
  torch::NoGradGuard no_grad;
  EXPECT_EQ(Executor(g).Run({torch::randn({5, 1, 28, 28})})[0].sizes(),
            (std::vector<int64_t>{5, 10}));
}

TEST(PruneChannels, BnCriterionRemovesTheSmallestScales) {
  Graph g = BuildZoo("convnet");
  RandomizeBatchNorms(g);
  torch::NoGradGuard no_grad;
  g.Weight("bn1.weight").fill_(1.0);
  for (int c : {3, 9, 17, 30}) g.Weight("bn1.weight")[c].fill_(0.01);
  Tensor old_w = g.Weight("conv1.weight").clone();
  RunPassFromJson("prune-channels", g, {{"ratio", 0.125}, {"criterion", "bn"}, {"include", "conv1"}});
  ASSERT_EQ(g.Weight("conv1.weight").size(0), 28);
  std::vector<int64_t> kept;
  for (int64_t c = 0; c < 32; ++c) {
    if (c != 3 && c != 9 && c != 17 && c != 30) kept.push_back(c);
  }
  EXPECT_TRUE(torch::equal(g.Weight("conv1.weight"), old_w.index_select(0, torch::tensor(kept))));
  EXPECT_EQ(g.Weight("conv2.weight").size(0), 64);  // excluded by include
}

TEST(PruneChannels, RoundToAndZeroRatio) {
  Graph g = BuildZoo("resnet8");
  Graph before = g.Clone();
  PassResult r = RunPassFromJson("prune-channels", g, {{"ratio", 0.0}});
  EXPECT_FALSE(r.changed);
  for (const auto& [name, init] : before.initializers) {
    EXPECT_TRUE(torch::equal(init.value, g.Weight(name))) << name;
  }
  RunPassFromJson("prune-channels", g, {{"ratio", 0.6}, {"round_to", 8}});
  EXPECT_EQ(g.Weight("stem.conv.weight").size(0), 8);      // 16 -> 6.4 -> 8
  EXPECT_EQ(g.Weight("layer2.conv1.weight").size(0), 16);  // 32 -> 13 -> 16
  EXPECT_EQ(g.Weight("layer3.conv1.weight").size(0), 32);  // 64 -> 26 -> 32
  ExpectError([&] { RunPassFromJson("prune-channels", g, {{"ratio", 0.5}, {"criterion", "l3"}}); },
              ErrorKind::kRecipe, "stages[0].criterion");
}

TEST(PruneChannels, QuantizedWeightsAreNotSliced) {
  Graph g = BuildZoo("lenet5");
  QuantParams q;
  q.scale = torch::ones({6});
  q.zero_point = torch::zeros({6}, torch::kInt);
  q.axis = 0;
  g.initializers.at("conv1.weight").quant = q;
  PassResult r = RunPassFromJson("prune-channels", g, {{"ratio", 0.5}});
  ASSERT_FALSE(r.skipped.empty());
  EXPECT_EQ(r.skipped[0].layer, "conv1");
  EXPECT_NE(r.skipped[0].reason.find("is quantized (prune before quantizing)"), std::string::npos);
  EXPECT_EQ(g.Weight("conv1.weight").size(0), 6);
  EXPECT_EQ(g.Weight("conv2.weight").size(0), 8);
}

}  // namespace
}  // namespace compress
