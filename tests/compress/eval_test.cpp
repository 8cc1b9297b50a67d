// Tests for compress/eval: top-1/top-5/loss/per-class accuracy of a two-layer graph
// with known weights against a hand computation, batch-size independence, latency
// statistics and the error paths.
#include "tests/test_util.h"
#include "compress/train/eval.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

namespace compress {
namespace {

using testing_util::ExpectError;

Node MakeNode(const std::string& name, const std::string& op, std::vector<std::string> inputs,
              const std::string& output) {
  Node n;
  n.name = name;
  n.op_type = op;
  n.inputs = std::move(inputs);
  n.outputs = {output};
  if (op == "Gemm") n.attrs["transB"] = int64_t{1};
  return n;
}

using Matrix = std::vector<std::vector<double>>;

Tensor ToTensor(const Matrix& m) {
  std::vector<float> flat;
  for (const auto& row : m) flat.insert(flat.end(), row.begin(), row.end());
  return torch::tensor(flat).reshape({static_cast<int64_t>(m.size()),
                                      static_cast<int64_t>(m[0].size())});
}

// x -> Gemm(W1, b1) -> Relu -> Gemm(W2, b2) -> logits
const Matrix kW1 = {{1, 0}, {0, 1}, {1, 1}};
const std::vector<double> kB1 = {0, 0, -1};
const Matrix kW2 = {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}, {0.5, 0.5, 0}, {-1, 0, 0}, {0, 0, 0}};
const std::vector<double> kB2 = {0, 0.1, 0.2, 0.3, 0.4, 0.5};
const Matrix kX = {{2, 0}, {0.25, 3}, {-1, -2}, {1, 2}, {3, 0.5}};
const std::vector<int64_t> kY = {0, 2, 0, 2, 3};

Graph TwoLayerGraph() {
  Graph g;
  g.name = "mlp";
  g.inputs.push_back(ValueInfo{"x", at::kFloat, std::vector<int64_t>{kDynamicDim, 2}});
  g.outputs.push_back(ValueInfo{"logits", at::kFloat, std::vector<int64_t>{kDynamicDim, 6}});
  g.nodes.push_back(MakeNode("fc1", "Gemm", {"x", "W1", "b1"}, "h"));
  g.nodes.push_back(MakeNode("relu", "Relu", {"h"}, "hr"));
  g.nodes.push_back(MakeNode("fc2", "Gemm", {"hr", "W2", "b2"}, "logits"));
  g.initializers["W1"].value = ToTensor(kW1);
  g.initializers["b1"].value = ToTensor({kB1}).reshape({-1});
  g.initializers["W2"].value = ToTensor(kW2);
  g.initializers["b2"].value = ToTensor({kB2}).reshape({-1});
  return g;
}

TensorDataset Samples() {
  return {ToTensor(kX), torch::tensor(kY, torch::kLong)};
}

// The forward pass and the metrics in plain C++.
std::vector<double> HandLogits(const std::vector<double>& x) {
  std::vector<double> h(3), out(6);
  for (int j = 0; j < 3; ++j) {
    h[j] = std::max(0.0, kW1[j][0] * x[0] + kW1[j][1] * x[1] + kB1[j]);
  }
  for (int c = 0; c < 6; ++c) {
    out[c] = kB2[c];
    for (int j = 0; j < 3; ++j) out[c] += kW2[c][j] * h[j];
  }
  return out;
}

TEST(EvalEvaluate, MatchesHandComputation) {
  // Hand computation: rank of the target among the logits and the cross-entropy.
  double loss = 0;
  int top1 = 0, top5 = 0;
  for (size_t i = 0; i < kX.size(); ++i) {
    const auto z = HandLogits(kX[i]);
    int above = 0;  // classes scoring strictly higher than the target
    double sum = 0;
    for (int c = 0; c < 6; ++c) {
      sum += std::exp(z[c]);
      for (int d = 0; d < c; ++d) ASSERT_NE(z[c], z[d]) << "tie in sample " << i;
      if (z[c] > z[kY[i]]) ++above;
    }
    loss += std::log(sum) - z[kY[i]];
    top1 += above == 0;
    top5 += above < 5;
  }
  loss /= static_cast<double>(kX.size());
  // The samples were chosen so: sample 0 and 3 right; 1 and 4 second/third; sample 2's
  // target scores lowest of all six.
  ASSERT_EQ(top1, 2);
  ASSERT_EQ(top5, 4);

  const Graph g = TwoLayerGraph();
  for (int64_t batch : {1, 2, 5, 64}) {
    const EvalResult r = Evaluate(g, Samples(), batch, torch::kCPU);
    EXPECT_EQ(r.samples, 5);
    EXPECT_DOUBLE_EQ(r.top1, 2.0 / 5.0) << "batch " << batch;
    EXPECT_DOUBLE_EQ(r.top5, 4.0 / 5.0) << "batch " << batch;
    EXPECT_NEAR(r.loss, loss, 1e-5) << "batch " << batch;
    ASSERT_EQ(r.per_class_accuracy.size(), 6u);
    EXPECT_DOUBLE_EQ(r.per_class_accuracy[0], 0.5);  // samples 0 (right) and 2 (wrong)
    EXPECT_DOUBLE_EQ(r.per_class_accuracy[2], 0.5);  // samples 1 (wrong) and 3 (right)
    EXPECT_DOUBLE_EQ(r.per_class_accuracy[3], 0.0);  // sample 4 (wrong)
    for (int c : {1, 4, 5}) EXPECT_TRUE(std::isnan(r.per_class_accuracy[c])) << "class " << c;
  }
}

TEST(EvalEvaluate, TopFiveWithFewerClassesIsEverything) {
  Graph g;
  g.inputs.push_back(ValueInfo{"x", at::kFloat, std::vector<int64_t>{kDynamicDim, 3}});
  g.outputs.push_back(ValueInfo{"y", at::kFloat, std::vector<int64_t>{kDynamicDim, 3}});
  g.nodes.push_back(MakeNode("fc", "Gemm", {"x", "W", "b"}, "y"));
  g.initializers["W"].value = torch::eye(3);
  g.initializers["b"].value = torch::zeros({3});
  // Logits = x; argmax is class 0, 1, 2 for the three samples; targets 0, 2, 1.
  const TensorDataset data{torch::tensor({{5.f, 1.f, 0.f}, {0.f, 4.f, 1.f}, {1.f, 0.f, 3.f}}),
                           torch::tensor({0, 2, 1}, torch::kLong)};
  const EvalResult r = Evaluate(g, data, 2, torch::kCPU);
  EXPECT_DOUBLE_EQ(r.top1, 1.0 / 3.0);
  EXPECT_DOUBLE_EQ(r.top5, 1.0);
  EXPECT_DOUBLE_EQ(r.per_class_accuracy[0], 1.0);
  EXPECT_DOUBLE_EQ(r.per_class_accuracy[1], 0.0);
  EXPECT_DOUBLE_EQ(r.per_class_accuracy[2], 0.0);
}

TEST(EvalEvaluate, Errors) {
  const Graph g = TwoLayerGraph();
  TensorDataset nan{Samples().inputs.clone(), Samples().targets};
  nan.inputs[4][0] = std::nanf("");
  ExpectError([&] { Evaluate(g, nan, 2, torch::kCPU); }, ErrorKind::kNumeric,
              "evaluation data: input data contains 1 non-finite value(s) (NaN/Inf), first in "
              "sample 4");
  TensorDataset big_label{Samples().inputs, torch::tensor({0, 1, 6, 2, 3}, torch::kLong)};
  ExpectError([&] { Evaluate(g, big_label, 2, torch::kCPU); }, ErrorKind::kRecipe,
              "label 6 is out of range for a model with 6 outputs; expected labels in 0..5");
  ExpectError([&] { Evaluate(g, Samples().Slice(0, 0), 2, torch::kCPU); }, ErrorKind::kRecipe,
              "evaluation data: dataset is empty");
  ExpectError([&] { Evaluate(g, Samples(), 0, torch::kCPU); }, ErrorKind::kRecipe,
              "batch_size must be >= 1");
  Graph two_inputs = TwoLayerGraph();
  two_inputs.inputs.push_back(ValueInfo{"z", at::kFloat, std::vector<int64_t>{1}});
  ExpectError([&] { Evaluate(two_inputs, Samples(), 2, torch::kCPU); }, ErrorKind::kUnsupported,
              "Evaluate: graph 'mlp' has 2 input(s) and 1 output(s)");
}

// Comparison with a reference model's outputs, against a hand computation: the
// reference is the hand logits with sample 1's top two classes swapped and every
// logit of sample 3 shifted by +0.5, so one arg-max differs and the noise is known.
TEST(EvalEvaluate, ComparisonWithReferenceMatchesHandComputation) {
  Matrix ref_rows, ours;
  for (const auto& x : kX) ours.push_back(HandLogits(x));
  ref_rows = ours;
  auto& r1 = ref_rows[1];
  const auto top = std::max_element(r1.begin(), r1.end()) - r1.begin();
  std::vector<double> sorted = r1;
  std::sort(sorted.rbegin(), sorted.rend());
  const auto second = std::find(r1.begin(), r1.end(), sorted[1]) - r1.begin();
  std::swap(r1[top], r1[second]);
  for (double& v : ref_rows[3]) v += 0.5;
  double signal = 0, noise = 0, max_diff = 0, max_ref = 0;
  for (size_t i = 0; i < ours.size(); ++i) {
    for (size_t c = 0; c < 6; ++c) {
      const double d = ours[i][c] - ref_rows[i][c];
      signal += ref_rows[i][c] * ref_rows[i][c];
      noise += d * d;
      max_diff = std::max(max_diff, std::abs(d));
      max_ref = std::max(max_ref, std::abs(ref_rows[i][c]));
    }
  }
  const Tensor reference = ToTensor(ref_rows);
  const Graph g = TwoLayerGraph();
  for (bool labels : {true, false}) {
    for (int64_t batch : {1, 2, 5}) {
      EvalOptions options;
      options.labels = labels;
      options.reference = &reference;
      Tensor outputs;
      options.outputs = &outputs;
      const EvalResult r = Evaluate(g, Samples(), batch, torch::kCPU, options);
      EXPECT_DOUBLE_EQ(r.agreement, 4.0 / 5.0) << "batch " << batch;
      EXPECT_NEAR(r.sqnr_db, 10 * std::log10(signal / noise), 1e-4) << "batch " << batch;
      EXPECT_NEAR(r.max_rel_error, max_diff / max_ref, 1e-6) << "batch " << batch;
      EXPECT_EQ(labels, !std::isnan(r.top1));
      EXPECT_TRUE(torch::allclose(outputs, ToTensor(ours), 1e-6, 1e-6));
    }
  }
  // Against itself: full agreement, no error, the SQNR cap.
  const Tensor own = ToTensor(ours);
  EvalOptions self;
  self.reference = &own;
  const EvalResult same = Evaluate(g, Samples(), 2, torch::kCPU, self);
  EXPECT_DOUBLE_EQ(same.agreement, 1.0);
  EXPECT_DOUBLE_EQ(same.max_rel_error, 0.0);
  EXPECT_DOUBLE_EQ(same.sqnr_db, 200.0);
  EXPECT_NEAR(SqnrDb(reference, own), 10 * std::log10(signal / noise), 1e-4);
}

// Without labels the targets are not read (-1 here) and any output shape [N, ...] works;
// non-finite outputs are refused, since there is no loss to show them.
TEST(EvalEvaluate, WithoutLabelsReadsNoTargets) {
  Graph g;
  g.inputs.push_back(ValueInfo{"x", at::kFloat, std::vector<int64_t>{kDynamicDim, 2, 2}});
  g.outputs.push_back(ValueInfo{"y", at::kFloat, std::vector<int64_t>{kDynamicDim, 2, 2}});
  Node relu;
  relu.name = "relu";
  relu.op_type = "Relu";
  relu.inputs = {"x"};
  relu.outputs = {"y"};
  g.nodes.push_back(relu);
  const Tensor x = torch::tensor({1.f, -2.f, 3.f, 4.f, -1.f, 0.f, 2.f, 2.f}).reshape({2, 2, 2});
  const TensorDataset unlabeled{x, torch::full({2}, -1, torch::kLong)};
  ExpectError([&] { Evaluate(g, unlabeled, 2, torch::kCPU); }, ErrorKind::kRecipe,
              "targets must be class indices >= 0");
  EvalOptions options;
  options.labels = false;
  const Tensor reference = torch::relu(x) * 2;  // y = ref / 2: SQNR 10 log10(4) dB
  options.reference = &reference;
  const EvalResult r = Evaluate(g, unlabeled, 1, torch::kCPU, options);
  EXPECT_TRUE(std::isnan(r.top1) && std::isnan(r.loss));
  EXPECT_TRUE(std::isnan(r.agreement));  // rank 3: no arg-max over classes
  EXPECT_NEAR(r.sqnr_db, 10 * std::log10(4.0), 1e-9);
  EXPECT_NEAR(r.max_rel_error, 0.5, 1e-9);
  TensorDataset inf = unlabeled;
  inf.inputs = x.clone();
  inf.inputs[1][1][1] = std::numeric_limits<float>::infinity();
  ExpectError([&] { Evaluate(g, inf, 1, torch::kCPU, options); }, ErrorKind::kNumeric,
              "evaluation data: input data contains 1 non-finite value(s)");
  // Finite inputs, non-finite outputs: y = x / x is NaN where x is 0 (sample 1).
  Graph div = g;
  div.nodes[0].op_type = "Div";
  div.nodes[0].inputs = {"x", "x"};
  ExpectError([&] { Evaluate(div, unlabeled, 1, torch::kCPU, options); }, ErrorKind::kNumeric,
              "Evaluate: the model's outputs contain 1 non-finite value(s) (NaN/Inf)");
}

TEST(EvalLatency, StatisticsAreOrdered) {
  const Graph g = TwoLayerGraph();
  const LatencyResult r = MeasureLatency(g, {2}, 8, 2, 7, torch::kCPU);
  EXPECT_EQ(r.batch, 8);
  EXPECT_EQ(r.runs, 7);
  EXPECT_GT(r.min_ms, 0.0);
  EXPECT_LE(r.min_ms, r.median_ms);
  EXPECT_LE(r.median_ms, r.p90_ms);
  EXPECT_LT(r.p90_ms, 1000.0);
  ExpectError([&] { MeasureLatency(g, {2}, 0, 1, 1, torch::kCPU); }, ErrorKind::kRecipe,
              "expected batch >= 1, runs >= 1, warmup >= 0; got batch 0");
  ExpectError([&] { MeasureLatency(g, {2}, 1, 0, 0, torch::kCPU); }, ErrorKind::kRecipe,
              "runs 0");
}

}  // namespace
}  // namespace compress
