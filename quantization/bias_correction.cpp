// Empirical bias correction (Nagel et al., "Data-Free Quantization Through Weight
// Equalization and Bias Correction", ICCV 2019, sec. 4.2): a layer y = W x + b whose
// weights are rounded to W_q is biased by E[(W - W_q) x] = (W - W_q) E[x]; adding that
// to b restores the expected output. E[x] is the per-input-channel mean over the
// calibration data (for Conv, over batch and space: the zero padding at the borders is
// not modelled).
#include <torch/torch.h>

#include "compress/runtime/executor.h"
#include "quantization/quantize.h"

namespace compress {

namespace {

// Per-channel mean of a layer input: axis 1 of [N, C, ...] (Conv) or the last axis of
// [N, K] (Gemm); streaming sums in double.
struct ChannelMean {
  Tensor sum;
  int64_t count = 0;
  void Add(const Tensor& x) {
    const Tensor xd = x.detach().to(torch::kDouble);
    Tensor s;
    int64_t n = 0;
    if (xd.dim() >= 3) {
      std::vector<int64_t> dims{0};
      for (int64_t d = 2; d < xd.dim(); ++d) dims.push_back(d);
      s = xd.sum(dims);
      n = xd.numel() / xd.size(1);
    } else {
      s = xd.reshape({-1, xd.size(-1)}).sum(0);
      n = xd.numel() / xd.size(-1);
    }
    sum = sum.defined() ? sum + s : s;
    count += n;
  }
  Tensor Mean() const { return sum / static_cast<double>(std::max<int64_t>(1, count)); }
};

// (W - W_q) E[x] per output channel, for Conv (groups included) and Gemm.
Tensor OutputShift(const Node& node, const Tensor& delta, const Tensor& mean) {
  if (node.op_type == "Conv") {
    const int64_t groups = node.GetInt("group", 1);
    const int64_t cout = delta.size(0), cin_g = delta.size(1);
    std::vector<int64_t> spatial;
    for (int64_t d = 2; d < delta.dim(); ++d) spatial.push_back(d);
    const Tensor dsum = spatial.empty() ? delta : delta.sum(spatial);  // [Cout, Cin_g]
    // Output channel o reads input channels of group o / (Cout / groups).
    const Tensor group_of = torch::div(torch::arange(cout, torch::kLong), cout / groups, "floor");
    const Tensor means = mean.reshape({groups, cin_g}).index_select(0, group_of);
    return (dsum * means).sum(1);
  }
  // Gemm: y = x W^T (transB=1, W [N, K]) or x W (W [K, N]).
  return node.GetInt("transB", 0) != 0 ? delta.matmul(mean) : mean.matmul(delta);
}

}  // namespace

int64_t CorrectBiases(Graph& graph, const QdqPlan& plan,
                      const std::map<std::string, AffineParams>& params,
                      const CalibrationBatches& drawn, const QdqOptions& options) {
  torch::NoGradGuard no_grad;
  const CalibrationBatches batches = OnGraphDevice(graph, drawn);
  // Every planned value's parameters, shared values resolved to their root's (as
  // ApplyQdq resolves them).
  std::map<std::string, AffineParams> resolved;
  for (const auto& a : plan.activations) {
    resolved[a.value] = a.share.empty() ? params.at(a.value) : resolved.at(a.share);
  }
  // Which layers have a float bias to correct, and the means of their inputs.
  std::vector<const WeightedLayer*> layers;
  std::map<std::string, ChannelMean> means;
  for (const auto& l : plan.layers) {
    const Node& node = graph.nodes[l.node];
    if (node.op_type == "MatMul" || !node.HasInput(2) || !graph.IsInitializer(node.inputs[2])) continue;
    if (!at::isFloatingType(graph.Weight(node.inputs[2]).scalar_type())) continue;
    layers.push_back(&l);
    means.emplace(node.inputs[0], ChannelMean());
  }
  if (layers.empty()) return 0;
  std::vector<std::string> values;
  for (const auto& [v, m] : means) values.push_back(v);
  Executor exec(graph);
  exec.SetTraining(false);
  exec.SetObserver(values, [&](const std::string& v, const Tensor& t) { means.at(v).Add(t); });
  for (int64_t k = 0; k < batches.count; ++k) exec.Run({batches.batch(k)});

  for (const WeightedLayer* l : layers) {
    const Node& node = graph.nodes[l->node];
    Initializer& winit = graph.initializers.at(l->weight);
    Tensor w = winit.value.detach();
    if (winit.mask.defined()) w = w * winit.mask.to(w.device());
    const int64_t axis = options.per_channel ? WeightAxis(node, w) : -1;
    Tensor& bias = graph.initializers.at(node.inputs[2]).value;
    // The weights ApplyQdq will write: same bias-driven minimum scale.
    Tensor min_scale = BiasMinWeightScale(bias, resolved.at(node.inputs[0]).scale);
    if (axis < 0) min_scale = min_scale.max();
    const WeightQuant wq = QuantizeWeightSymmetric(w, axis, min_scale, WeightQmax(options.target));
    Tensor s = wq.scale;
    if (axis >= 0) {
      std::vector<int64_t> shape(w.dim(), 1);
      shape[axis] = -1;
      s = s.reshape(shape);
    }
    const Tensor delta = (w.to(torch::kFloat) - wq.q.to(torch::kFloat) * s).to(torch::kDouble).cpu();
    const Tensor shift = OutputShift(node, delta, means.at(node.inputs[0]).Mean().cpu());
    bias = (bias + shift.to(bias.options())).contiguous();
  }
  return static_cast<int64_t>(layers.size());
}

}  // namespace compress
