// quantize's latency_fallback: the decision against a cost model we control (which
// layers stay FP32, the confirming run, layers already FP32), then the real scan in
// ONNX Runtime through the pass, whose chosen model must still verify under the INT8 rule.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "compress/zoo/zoo.h"
#include "quantization/fold_batchnorm.h"
#include "quantization/latency_fallback.h"
#include "quantization/quant_sensitivity.h"
#include "quantization/quantize.h"
#include "tests/test_util.h"

namespace compress {
namespace {

using testing_util::ExpectError;
using testing_util::RunPassFromJson;

const DatasetSplits& Data() { return testing_util::FashionMnistSubset(512, 256, 256); }

PassContext Context() { return testing_util::SplitsContext(Data(), 64, 128); }

// Exports `g` and verifies it in ONNX Runtime under the INT8 rule (a failed check fails
// the test); returns how many quantized layers the verifier counted.
int64_t Int8LayersVerifiedInOrt(const Graph& g, const std::string& name) {
  return testing_util::VerifyInt8InOrt(g, name, Data().test.inputs).int8.quantized;
}

// Whether `layer`'s weight is read through a DequantizeLinear (the layer is INT8).
bool IsInt8(const Graph& g, const std::string& layer) {
  for (const auto& node : g.nodes) {
    if (node.name != layer) continue;
    for (const auto& producer : g.nodes) {
      if (producer.op_type == "DequantizeLinear" && !producer.outputs.empty() &&
          producer.outputs[0] == node.inputs.at(1)) {
        return true;
      }
    }
    return false;
  }
  ADD_FAILURE() << "no layer " << layer;
  return false;
}

// A cost model: the first layer costs 3 ms in INT8 and 1 ms in FP32 (a conv over one
// input channel), every other layer 0.5 ms in INT8 and 1 ms in FP32.
struct CostModel {
  std::vector<std::string> layers;
  int calls = 0;
  double Latency(const Graph& g) const {
    double ms = 0;
    for (size_t k = 0; k < layers.size(); ++k) {
      const bool int8 = IsInt8(g, layers[k]);
      ms += k == 0 ? (int8 ? 3.0 : 1.0) : (int8 ? 0.5 : 1.0);
    }
    return ms;
  }
};

struct Prepared {
  Graph graph;
  QuantVariants variants;
};

std::unique_ptr<Prepared> PrepareLenet() {
  auto p = std::make_unique<Prepared>();
  p->graph = BuildZoo("lenet5", 3);
  FoldBatchNorm(p->graph, nullptr);
  p->variants = PrepareVariants(p->graph, QuantizeOptions{}, Context(), "quantize");
  return p;
}

// A measurer that times each model by `cost` and records how many models each call got.
struct Timer {
  std::function<double(const Graph&)> cost;
  std::vector<size_t> calls;
  LatencyMeasure Measure() {
    return [this](const std::vector<const Graph*>& models) {
      calls.push_back(models.size());
      std::vector<double> ms;
      for (const Graph* g : models) ms.push_back(cost(*g));
      return ms;
    };
  }
};

TEST(LatencyFallback, KeepsFp32TheLayerWhoseInt8FormIsSlower) {
  const auto p = PrepareLenet();
  CostModel cost{p->variants.LayerNames()};
  const size_t n = cost.layers.size();
  ASSERT_GE(n, 3u);
  Timer timer{[&](const Graph& g) { return cost.Latency(g); }, {}};
  const LatencyFallbackResult r = LatencyFallback(p->variants, {}, 0.05, timer.Measure());
  // Scan 0 (all INT8, each layer FP32, the float model) picks the first layer; scan 1
  // (from there, each other layer FP32 too) finds nothing; then the confirming run.
  EXPECT_EQ(timer.calls, (std::vector<size_t>{n + 2, n + 1, 3}));
  EXPECT_EQ(r.fp32_layers, std::set<std::string>{cost.layers[0]});
  EXPECT_TRUE(r.confirmed);
  const double all_int8 = 3.0 + 0.5 * static_cast<double>(n - 1);
  const double chosen = 1.0 + 0.5 * static_cast<double>(n - 1);
  EXPECT_DOUBLE_EQ(r.int8_ms, all_int8);
  EXPECT_DOUBLE_EQ(r.chosen_ms, chosen);
  EXPECT_DOUBLE_EQ(r.fp32_ms, static_cast<double>(n));
  ASSERT_EQ(r.trials.size(), n + (n - 1));
  for (size_t k = 0; k < n; ++k) {
    const LatencyTrial& t = r.trials[k];
    EXPECT_EQ(t.step, 0);
    EXPECT_EQ(t.layer, cost.layers[k]);
    const double with_fp32 = all_int8 + (k == 0 ? -2.0 : 0.5);
    EXPECT_DOUBLE_EQ(t.ms, with_fp32);
    EXPECT_DOUBLE_EQ(t.saving, (all_int8 - with_fp32) / all_int8);
    EXPECT_EQ(t.fp32, k == 0) << t.layer;
  }
  for (size_t k = n; k < r.trials.size(); ++k) {
    const LatencyTrial& t = r.trials[k];
    EXPECT_EQ(t.step, 1);
    EXPECT_EQ(t.layer, cost.layers[k - n + 1]);
    EXPECT_DOUBLE_EQ(t.saving, -0.5 / chosen);
    EXPECT_FALSE(t.fp32);
  }
}

// The second layer pays in FP32 only once the first one is FP32 (the Q/DQ pair between
// them goes): the second scan finds it; the last INT8 layer never goes, even when FP32
// would be faster still.
TEST(LatencyFallback, LaterScansFindLayersThatPayOnlyOnceANeighbourIsFp32) {
  const auto p = PrepareLenet();
  const std::vector<std::string> layers = p->variants.LayerNames();
  const size_t n = layers.size();
  Timer pair{[&](const Graph& g) {
               const bool first = IsInt8(g, layers[0]), second = IsInt8(g, layers[1]);
               double ms = first ? 3.0 : 1.0;
               ms += second ? (first ? 0.5 : 1.5) : 1.0;
               for (size_t k = 2; k < n; ++k) ms += IsInt8(g, layers[k]) ? 0.5 : 1.0;
               return ms;
             },
             {}};
  const LatencyFallbackResult r = LatencyFallback(p->variants, {}, 0.05, pair.Measure());
  EXPECT_EQ(r.fp32_layers, (std::set<std::string>{layers[0], layers[1]}));
  EXPECT_TRUE(r.confirmed);
  EXPECT_EQ(pair.calls, (std::vector<size_t>{n + 2, n + 1, n, 3}));
  int64_t to_fp32 = 0;
  for (const auto& t : r.trials) {
    if (!t.fp32) continue;
    ++to_fp32;
    EXPECT_EQ(t.layer, layers[static_cast<size_t>(t.step)]);  // scan k takes layer k
  }
  EXPECT_EQ(to_fp32, 2);

  // Every layer slower in INT8: all but the last INT8 one go, one scan each.
  Timer slow{[&](const Graph& g) {
               double ms = 0;
               for (const auto& l : layers) ms += IsInt8(g, l) ? 2.0 : 1.0;
               return ms;
             },
             {}};
  const LatencyFallbackResult all = LatencyFallback(p->variants, {}, 0.05, slow.Measure());
  EXPECT_EQ(all.fp32_layers.size(), n - 1);
  EXPECT_EQ(slow.calls.size(), n);  // n - 1 scans, then the confirming run
  EXPECT_LT(all.fp32_ms, all.chosen_ms);
}

TEST(LatencyFallback, ASavingThatDoesNotHoldUpKeepsEveryLayerInt8) {
  const auto p = PrepareLenet();
  CostModel cost{p->variants.LayerNames()};
  // The first scan sees the cost model; later runs see every model equally fast.
  const LatencyFallbackResult r = LatencyFallback(
      p->variants, {}, 0.05, [&](const std::vector<const Graph*>& models) {
        std::vector<double> ms;
        for (const Graph* g : models) ms.push_back(cost.calls == 0 ? cost.Latency(*g) : 2.0);
        ++cost.calls;
        return ms;
      });
  EXPECT_EQ(cost.calls, 3);  // two scans, the confirming run
  EXPECT_TRUE(r.fp32_layers.empty());
  EXPECT_FALSE(r.confirmed);
  EXPECT_DOUBLE_EQ(r.chosen_ms, r.int8_ms);
  for (const auto& t : r.trials) EXPECT_FALSE(t.fp32) << t.layer;
}

TEST(LatencyFallback, LayersAlreadyFp32AreNeitherTimedAloneNorChosen) {
  const auto p = PrepareLenet();
  CostModel cost{p->variants.LayerNames()};
  const std::set<std::string> fp32{cost.layers[0]};
  const LatencyFallbackResult r = LatencyFallback(
      p->variants, fp32, 0.05, [&](const std::vector<const Graph*>& models) {
        ++cost.calls;
        std::vector<double> ms;
        for (const Graph* g : models) {
          EXPECT_TRUE(g == p->variants.prepared || !IsInt8(*g, cost.layers[0]));
          ms.push_back(cost.Latency(*g));
        }
        return ms;
      });
  EXPECT_EQ(cost.calls, 1);  // nothing chosen: no confirming run
  EXPECT_TRUE(r.fp32_layers.empty());
  ASSERT_EQ(r.trials.size(), cost.layers.size() - 1);
  for (const auto& t : r.trials) {
    EXPECT_NE(t.layer, cost.layers[0]);
    EXPECT_LT(t.saving, 0) << t.layer;  // each of them is faster in INT8
  }
  // A measurer that reports nonsense is an error, not a decision.
  ExpectError(
      [&] {
        LatencyFallback(p->variants, {}, 0.05, [](const std::vector<const Graph*>& models) {
          return std::vector<double>(models.size(), std::nan(""));
        });
      },
      ErrorKind::kNumeric, "latency_fallback: ONNX Runtime reported a latency of nan ms");
}

// The real thing: lenet5 scanned in ONNX Runtime through the pass. Which layers stay
// FP32 depends on this CPU and its load, so the test checks that the model, the report
// rows and the statistics say the same thing, and that the chosen model still verifies
// under the INT8 rule; a saving of 99% no layer can give keeps every layer INT8.
TEST(LatencyFallback, ThePassTimesLayersInOnnxRuntimeAndItsModelVerifies) {
  Graph trained = BuildZoo("lenet5", 3);  // trained: the INT8 rule's top-1 needs clear logits
  RunPassFromJson("train", trained, {{"epochs", 2}, {"optimizer", {{"name", "adam"}, {"lr", 0.003}}}},
                  Context());
  Graph g = trained.Clone();
  const nlohmann::json scan = {{"batch", 16}, {"rounds", 2}, {"runs", 5}, {"warmup", 2}};
  const PassResult r = RunPassFromJson("quantize", g, {{"latency_fallback", scan}}, Context());
  const double layers = r.stats.at("layers_quantized");
  int64_t first_scan = 0;
  for (const auto& t : r.latency_trials) first_scan += t.step == 0;
  ASSERT_EQ(static_cast<double>(first_scan), layers + r.stats.at("layers_fp32_for_latency"));
  EXPECT_GT(r.stats.at("ort_int8_ms"), 0);
  EXPECT_GT(r.stats.at("ort_fp32_ms"), 0);
  EXPECT_GT(r.stats.at("ort_chosen_ms"), 0);
  int64_t kept = 0;
  for (const auto& t : r.latency_trials) {
    std::printf("[ latency ] scan %lld %-8s %.3f ms with it FP32 (saving %+.1f%%)%s\n",
                static_cast<long long>(t.step), t.layer.c_str(), t.ms, 100 * t.saving,
                t.fp32 ? ", to FP32" : "");
    EXPECT_GT(t.ms, 0) << t.layer;
    if (!t.fp32) continue;
    EXPECT_FALSE(IsInt8(g, t.layer)) << t.layer;
    ++kept;
    EXPECT_GE(t.saving, 0.05) << t.layer;
    bool listed = false;
    for (const auto& s : r.skipped) {
      listed |= s.layer == t.layer && s.reason.find("kept FP32 by latency_fallback") == 0;
    }
    EXPECT_TRUE(listed) << t.layer;
  }
  EXPECT_EQ(static_cast<double>(kept), r.stats.at("layers_fp32_for_latency"));
  int64_t int8_layers = 0;  // the others are INT8
  for (const auto& t : r.latency_trials) int8_layers += t.step == 0 && IsInt8(g, t.layer);
  EXPECT_EQ(static_cast<double>(int8_layers), layers);
  EXPECT_EQ(kept > 0, r.stats.at("latency_confirmed") == 1);
  ASSERT_GE(layers, 1);  // lenet5 keeps at least one INT8 layer here

  EXPECT_EQ(Int8LayersVerifiedInOrt(g, "lenet5"), static_cast<int64_t>(layers));

  Graph strict = trained.Clone();
  nlohmann::json never = scan;
  never["min_saving"] = 0.99;
  const PassResult s = RunPassFromJson("quantize", strict, {{"latency_fallback", never}}, Context());
  EXPECT_EQ(s.stats.at("layers_fp32_for_latency"), 0);
  EXPECT_EQ(s.stats.at("layers_quantized"), static_cast<double>(s.latency_trials.size()));
  for (const auto& t : s.latency_trials) {
    EXPECT_EQ(t.step, 0);  // one scan: nothing saves 99%
    EXPECT_FALSE(t.fp32) << t.layer;
  }
}

// quantize-qat with latency_fallback: the scan runs on the calibrated model before
// training, the layers it keeps FP32 are neither fake-quantized in training nor INT8 in
// the result (and say why), and the result verifies under the INT8 rule in ONNX Runtime.
TEST(LatencyFallback, QuantizeQatTrainsAndExportsOnlyTheLayersThatStayInt8) {
  Graph trained = BuildZoo("lenet5", 3);
  RunPassFromJson("train", trained, {{"epochs", 2}, {"optimizer", {{"name", "adam"}, {"lr", 0.003}}}},
                  Context());
  const nlohmann::json scan = {{"batch", 16}, {"rounds", 2}, {"runs", 5}, {"warmup", 2}};
  const nlohmann::json qat = {{"epochs", 1}, {"latency_fallback", scan}};
  Graph g = trained.Clone();
  const PassResult r = RunPassFromJson("quantize-qat", g, qat, Context());
  const double layers = r.stats.at("layers_quantized");
  int64_t first_scan = 0;
  for (const auto& t : r.latency_trials) first_scan += t.step == 0;
  ASSERT_EQ(static_cast<double>(first_scan), layers + r.stats.at("layers_fp32_for_latency"));
  ASSERT_GE(layers, 1);
  int64_t kept = 0;
  for (const auto& t : r.latency_trials) {
    if (!t.fp32) continue;
    ++kept;
    EXPECT_FALSE(IsInt8(g, t.layer)) << t.layer;
    bool listed = false;
    for (const auto& s : r.skipped) {
      listed |= s.layer == t.layer && s.reason.find("kept FP32 by latency_fallback") == 0;
    }
    EXPECT_TRUE(listed) << t.layer;
  }
  EXPECT_EQ(static_cast<double>(kept), r.stats.at("layers_fp32_for_latency"));
  for (const auto& node : g.nodes) EXPECT_NE(node.op_type, "FakeQuantize") << node.name;

  EXPECT_EQ(Int8LayersVerifiedInOrt(g, "lenet5_qat"), static_cast<int64_t>(layers));

  // No layer can save 99%: every layer trains and exports INT8, as without the option.
  nlohmann::json never = qat;
  never["latency_fallback"]["min_saving"] = 0.99;
  Graph strict = trained.Clone();
  const PassResult s = RunPassFromJson("quantize-qat", strict, never, Context());
  EXPECT_EQ(s.stats.at("layers_fp32_for_latency"), 0);
  EXPECT_EQ(s.stats.at("layers_quantized"), static_cast<double>(s.latency_trials.size()));
}

TEST(LatencyFallback, TrialsRoundTripThroughTheReportAndRender) {
  Report rep;
  rep.baseline.pass = "baseline";
  StageReport s;
  s.index = 0;
  s.pass = "quantize";
  s.latency_trials = {{0, "conv1", 0.25, 0.375, true}, {1, "fc1", 0.45, -0.125, false}};
  rep.stages.push_back(s);
  const Report back = ReportFromJson(nlohmann::json::parse(ReportJsonText(rep)), "report.json");
  ASSERT_EQ(back.stages.size(), 1u);
  ASSERT_EQ(back.stages[0].latency_trials.size(), 2u);
  const LatencyTrial& t = back.stages[0].latency_trials[1];
  EXPECT_EQ(t.step, 1);
  EXPECT_EQ(t.layer, "fc1");
  EXPECT_DOUBLE_EQ(t.ms, 0.45);
  EXPECT_DOUBLE_EQ(t.saving, -0.125);
  EXPECT_FALSE(t.fp32);
  EXPECT_TRUE(back.stages[0].latency_trials[0].fp32);
  const std::string md = RenderMarkdown(rep);
  EXPECT_NE(md.find("| 0 | conv1 | 0.250 | 37.5 | yes |"), std::string::npos) << md;
  EXPECT_NE(md.find("| 1 | fc1 | 0.450 | -12.5 | no |"), std::string::npos) << md;
  EXPECT_NE(RenderHtml(rep).find("ONNX Runtime ms, this layer FP32 too"), std::string::npos);
}

}  // namespace
}  // namespace compress
