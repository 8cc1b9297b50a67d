// Which layers INT8 hurts: the quantize-sensitivity scan, the accuracy-aware mode of
// quantize (max_accuracy_drop), empirical bias correction, and their report tables.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "compress/data/data.h"
#include "compress/runtime/executor.h"
#include "compress/train/eval.h"
#include "compress/zoo/zoo.h"
#include "quantization/fold_batchnorm.h"
#include "quantization/quant_sensitivity.h"
#include "quantization/quantize.h"
#include "tests/test_util.h"

namespace compress {
namespace {

using testing_util::ExpectError;
using testing_util::RunPassFromJson;

const DatasetSplits& Data() { return testing_util::FashionMnistSubset(1024, 500, 256); }

PassContext Context() { return testing_util::SplitsContext(Data(), 128, 256); }

Graph Trained(const std::string& name) {
  Graph g = BuildZoo(name, 2);
  RunPassFromJson("train", g, {{"epochs", 2}, {"optimizer", {{"name", "adam"}, {"lr", 0.003}}}},
                  Context());
  return g;
}

double ValTop1(const Graph& g) { return Evaluate(g, Data().validation, 128, c10::Device(c10::kCPU)).top1; }

TEST(QuantizeSensitivity, ScansEveryLayerBothWaysAndLeavesTheModelAlone) {
  const Graph g = Trained("convnet");
  Graph scanned = g.Clone();
  const PassResult r = RunPassFromJson("quantize-sensitivity", scanned, nlohmann::json::object(),
                                       Context());
  EXPECT_FALSE(r.changed);
  for (const auto& [name, init] : g.initializers) {
    EXPECT_TRUE(torch::equal(scanned.Weight(name), init.value)) << name;
  }
  EXPECT_EQ(r.quant_metric, "val_top1");
  ASSERT_EQ(r.quant_sensitivity.size(), 4u);  // conv1, conv2, fc1, fc2
  for (const auto& row : r.quant_sensitivity) {
    // One INT8 layer costs at most a little; all-but-one sits near all-INT8.
    EXPECT_GT(row.only_this, r.stats.at("fp32") - 0.03) << row.layer;
    EXPECT_GT(row.all_but_this, r.stats.at("all_int8") - 0.03) << row.layer;
    EXPECT_LE(row.only_this, 1.0) << row.layer;
  }
  // Without labels the scan measures output SQNR against FP32 instead: finite, and
  // one INT8 layer is cleaner than all of them.
  DatasetSplits unlabeled = Data();
  unlabeled.validation.targets = torch::full_like(unlabeled.validation.targets, -1);
  PassContext ctx = Context();
  ctx.data = &unlabeled;
  Graph copy = g.Clone();
  const PassResult s = RunPassFromJson("quantize-sensitivity", copy, {{"eval_samples", 200}}, ctx);
  EXPECT_EQ(s.quant_metric, "sqnr_db");
  // Noise of independent quantizers adds up, so one INT8 layer is at least about as
  // clean as all of them (errors of different layers may partly cancel: measured
  // -0.5 dB for fc2 alone), and the cleanest single layer clearly cleaner.
  double cleanest = -1e9;
  for (const auto& row : s.quant_sensitivity) {
    EXPECT_GT(row.only_this, s.stats.at("all_int8") - 1.0) << row.layer;
    EXPECT_LT(row.only_this, 200) << row.layer;
    cleanest = std::max(cleanest, row.only_this);
  }
  EXPECT_GT(cleanest, s.stats.at("all_int8") + 1.0);
  ExpectError([&] { RunPassFromJson("quantize-sensitivity", copy, {{"metric", "top1"}}, ctx); },
              ErrorKind::kRecipe, "metric top1 needs a labelled validation split");
}

// A PTQ setting that clips hard (per-tensor weights, activations clipped at their 90th
// percentiles) misses a 0.1 pt target on mobilenet-tiny; the accuracy-aware mode returns
// the most harmful layers to FP32 until the target holds, and always ends with the best
// model it found. (Per-tensor vs per-channel on fully trained models: bench/qat.sh.)
TEST(QuantizeAccuracyAware, ReturnsHarmfulLayersToFp32UntilTheTargetHolds) {
  Graph fp32 = BuildZoo("mobilenet-tiny", 2);
  RunPassFromJson("train", fp32,
                  {{"epochs", 4}, {"batch_size", 64}, {"optimizer", {{"name", "adam"}, {"lr", 0.01}}}},
                  Context());
  Graph folded = fp32.Clone();
  FoldBatchNorm(folded);
  const double base = ValTop1(folded);
  ASSERT_GT(base, 0.5);  // trained, so accuracy has something to lose
  const nlohmann::json harsh = {{"weights", "per_tensor"}, {"calibration", "percentile"},
                                {"percentile", 90.0}};
  Graph plain = fp32.Clone();
  RunPassFromJson("quantize", plain, harsh, Context());
  std::printf("mobilenet-tiny val top-1: fp32 %.4f, harsh PTQ %.4f\n", base, ValTop1(plain));
  ASSERT_GT(base - ValTop1(plain), 0.001);  // plain PTQ misses the target

  Graph g = fp32.Clone();
  nlohmann::json aware = harsh;
  aware["max_accuracy_drop"] = 0.001;
  const PassResult r = RunPassFromJson("quantize", g, aware, Context());
  ASSERT_GE(r.fallback_trials.size(), 2u);  // plain per-tensor PTQ misses 0.1 pt
  EXPECT_TRUE(r.fallback_trials.front().fp32_layers.empty());
  EXPECT_FALSE(r.fallback_trials.front().met);
  EXPECT_NEAR(r.stats.at("fp32_val_top1"), base, 1e-9);
  // The model kept is the chosen trial: its measured accuracy is the trial's.
  EXPECT_NEAR(ValTop1(g), r.stats.at("int8_val_top1"), 1e-9);
  double best = 0;
  for (const auto& t : r.fallback_trials) best = std::max(best, t.metric);
  if (r.stats.at("accuracy_target_met") == 1) {
    EXPECT_LE(base - ValTop1(g), 0.001 + 1e-12);
  } else {
    EXPECT_NEAR(r.stats.at("int8_val_top1"), best, 1e-12);
  }
  int kept = 0;
  for (const auto& s : r.skipped) kept += s.reason.find("accuracy-aware") != std::string::npos;
  EXPECT_EQ(kept, r.stats.at("layers_kept_fp32"));
  // A loose target holds at once: one trial, nothing kept FP32.
  Graph loose = fp32.Clone();
  const PassResult l = RunPassFromJson("quantize", loose, {{"max_accuracy_drop", 0.5}}, Context());
  EXPECT_EQ(l.fallback_trials.size(), 1u);
  EXPECT_EQ(l.stats.at("layers_kept_fp32"), 0);
  ExpectError([&] {
    Graph h = fp32.Clone();
    RunPassFromJson("quantize", h, {{"max_accuracy_drop", 0.01}, {"bias_correction", true}},
                    Context());
  }, ErrorKind::kRecipe, "stages[0].bias_correction");
}

// After correction, E[W_q x + b'] = W_q E[x] + b + (W - W_q) E[x] = E[W x + b]: a Gemm
// whose input is float keeps its mean output exactly over the calibration data.
TEST(BiasCorrection, GemmKeepsItsMeanOutputOverTheCalibrationData) {
  Graph g = Trained("lenet5");
  const QdqPlan plan = PlanQdq(g, LayerFilter{});
  const CalibrationBatches batches = ContextCalibrationBatches(Context(), 256, nullptr);
  const auto params = Calibrate(g, plan, batches, CalibrationMethod::kMinMax, 99.99, at::kByte);
  // The inputs of fc1 over the calibration batches, from the float graph.
  const Node* fc1 = nullptr;
  for (const auto& n : g.nodes) {
    if (n.op_type == "Gemm" && n.inputs[1] == "fc1.weight") fc1 = &n;
  }
  ASSERT_NE(fc1, nullptr);
  std::vector<Tensor> xs;
  {
    torch::NoGradGuard ng;
    Executor exec(g);
    exec.SetObserver({fc1->inputs[0]}, [&](const std::string&, const Tensor& t) { xs.push_back(t.clone()); });
    for (int64_t k = 0; k < batches.count; ++k) exec.Run({batches.batch(k)});
  }
  const Tensor x = torch::cat(xs).to(torch::kDouble);
  const Tensor w = g.Weight(fc1->inputs[1]).to(torch::kDouble);
  const Tensor b = g.Weight(fc1->inputs[2]).to(torch::kDouble);
  const Tensor mean_float = (x.matmul(w.t()) + b).mean(0);

  Graph corrected = g.Clone();
  QdqOptions qo;
  EXPECT_EQ(CorrectBiases(corrected, plan, params, batches, qo), 5);  // every layer has a bias
  const Tensor b2 = corrected.Weight(fc1->inputs[2]).to(torch::kDouble);
  // fc1 reads Flatten's output, which shares the grid of the ReLU before the pool.
  std::map<std::string, AffineParams> resolved;
  for (const auto& a : plan.activations) {
    resolved[a.value] = a.share.empty() ? params.at(a.value) : resolved.at(a.share);
  }
  const WeightQuant wq = QuantizeWeightSymmetric(
      g.Weight(fc1->inputs[1]), 0, BiasMinWeightScale(g.Weight(fc1->inputs[2]),
                                                      resolved.at(fc1->inputs[0]).scale),
      WeightQmax(qo.target));
  const Tensor wdq = wq.q.to(torch::kDouble) * wq.scale.to(torch::kDouble).unsqueeze(1);
  const Tensor mean_q = (x.matmul(wdq.t()) + b2).mean(0);
  EXPECT_LT((mean_q - mean_float).abs().max().item<double>(), 1e-4);
  EXPECT_GT((b2 - b).abs().max().item<double>(), 1e-6);  // it did move
  // Through the pass: the option is counted in the stats.
  Graph q = g.Clone();
  const PassResult r = RunPassFromJson("quantize", q, {{"bias_correction", true}}, Context());
  EXPECT_EQ(r.stats.at("biases_corrected"), 5);
}

TEST(QuantReport, SensitivityAndTrialsRoundTripAndRender) {
  Report rep;
  rep.baseline.pass = "baseline";
  StageReport s;
  s.index = 0;
  s.pass = "quantize";
  s.quant_metric = "val_top1";
  s.quant_sensitivity = {{"conv1", 0.91, 0.85}, {"fc2", 0.905, 0.88}};
  s.fallback_trials = {{{}, 0.84, false}, {{"fc2"}, 0.88, false}, {{"conv1", "fc2"}, 0.905, true}};
  rep.stages.push_back(s);
  const Report back = ReportFromJson(nlohmann::json::parse(ReportJsonText(rep)), "report.json");
  ASSERT_EQ(back.stages.size(), 1u);
  const StageReport& b = back.stages[0];
  EXPECT_EQ(b.quant_metric, "val_top1");
  ASSERT_EQ(b.quant_sensitivity.size(), 2u);
  EXPECT_EQ(b.quant_sensitivity[1].layer, "fc2");
  EXPECT_DOUBLE_EQ(b.quant_sensitivity[1].all_but_this, 0.88);
  ASSERT_EQ(b.fallback_trials.size(), 3u);
  EXPECT_EQ(b.fallback_trials[2].fp32_layers, (std::vector<std::string>{"conv1", "fc2"}));
  EXPECT_TRUE(b.fallback_trials[2].met);
  const std::string md = RenderMarkdown(rep);
  EXPECT_NE(md.find("| conv1 | 91.00 | 85.00 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| 2 | conv1, fc2 | 90.50 | yes |"), std::string::npos) << md;
  const std::string html = RenderHtml(rep);
  EXPECT_NE(html.find("Quantization sensitivity per layer"), std::string::npos);
}

}  // namespace
}  // namespace compress
