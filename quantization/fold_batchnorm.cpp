// BatchNorm folding into the preceding Conv/Gemm.
#include "quantization/fold_batchnorm.h"

#include <torch/torch.h>

#include <set>

#include "compress/runtime/ops.h"
#include "quantization/qdq.h"

namespace compress {

namespace {

bool UsedOnce(const Graph& graph, const std::string& value) {
  return graph.ConsumerIndices(value).size() == 1 && !graph.IsOutput(value);
}

// Why the BatchNormalization `bn` cannot be folded into its producer; empty if it can.
std::string FoldProblem(const Graph& graph, const Node& bn) {
  const int p = graph.ProducerIndex(bn.inputs[0]);
  if (p < 0) return "its input is not produced by a layer";
  const Node& layer = graph.nodes[p];
  if (layer.op_type != "Conv" && !(layer.op_type == "Gemm" && layer.GetInt("transB", 0) != 0 &&
                                   layer.GetInt("transA", 0) == 0 &&
                                   layer.GetFloat("alpha", 1.0) == 1.0 &&
                                   layer.GetFloat("beta", 1.0) == 1.0)) {
    return "its input comes from " + layer.Describe() + ", not a Conv or Gemm(transB=1)";
  }
  if (!UsedOnce(graph, bn.inputs[0])) return "the layer output is used elsewhere too";
  if (bn.GetInt("training_mode", 0) != 0) return "training_mode=1";
  for (size_t k = 1; k < bn.outputs.size(); ++k) {
    if (!bn.outputs[k].empty() && !graph.ConsumerIndices(bn.outputs[k]).empty()) {
      return "its running-statistics outputs are used";
    }
  }
  for (size_t k = 1; k < 5; ++k) {
    if (!graph.IsInitializer(bn.inputs[k])) return "input " + std::to_string(k) + " is not an initializer";
  }
  if (!graph.IsInitializer(layer.inputs[1]) || !UsedOnce(graph, layer.inputs[1])) {
    return "the layer weight is not an initializer of its own";
  }
  if (layer.HasInput(2) && (!graph.IsInitializer(layer.inputs[2]) || !UsedOnce(graph, layer.inputs[2]))) {
    return "the layer bias is not an initializer of its own";
  }
  const Tensor& w = graph.Weight(layer.inputs[1]);
  if (!at::isFloatingType(w.scalar_type())) return "the layer weight is not floating point";
  if (layer.HasInput(2) && graph.Weight(layer.inputs[2]).dim() != 1) return "the layer bias is not 1-D";
  if (graph.Weight(bn.inputs[1]).numel() != w.size(0)) return "channel counts differ";
  return "";
}

}  // namespace

FoldedWeights FoldBatchNormWeights(const Tensor& w, const Tensor& b, const Tensor& gamma,
                                   const Tensor& beta, const Tensor& mean, const Tensor& var,
                                   double eps) {
  torch::NoGradGuard no_grad;
  const Tensor k = gamma.to(torch::kDouble) / torch::sqrt(var.to(torch::kDouble) + eps);
  std::vector<int64_t> shape(w.dim(), 1);
  shape[0] = -1;
  FoldedWeights f;
  f.weight = w.to(torch::kDouble) * k.reshape(shape);
  const Tensor bias = b.defined() ? b.to(torch::kDouble) : torch::zeros_like(k);
  f.bias = (bias - mean.to(torch::kDouble)) * k + beta.to(torch::kDouble);
  return f;
}

int64_t FoldBatchNorm(Graph& graph, std::vector<SkippedLayer>* skipped) {
  torch::NoGradGuard no_grad;
  int64_t folded = 0;
  std::vector<bool> remove(graph.nodes.size(), false);
  std::set<std::string> dropped;
  NameSource names(graph);
  for (size_t i = 0; i < graph.nodes.size(); ++i) {
    const Node bn = graph.nodes[i];
    if (bn.op_type != "BatchNormalization") continue;
    const std::string why = FoldProblem(graph, bn);
    if (!why.empty()) {
      if (skipped) skipped->push_back({bn.name, "BatchNormalization not folded: " + why});
      continue;
    }
    Node& layer = graph.nodes[graph.ProducerIndex(bn.inputs[0])];
    Tensor& w = graph.Weight(layer.inputs[1]);
    const FoldedWeights f = FoldBatchNormWeights(
        w, layer.HasInput(2) ? graph.Weight(layer.inputs[2]) : Tensor(), graph.Weight(bn.inputs[1]),
        graph.Weight(bn.inputs[2]), graph.Weight(bn.inputs[3]), graph.Weight(bn.inputs[4]),
        bn.GetFloat("epsilon", 1e-5));
    w.copy_(f.weight.to(w.scalar_type()));
    if (layer.HasInput(2)) {
      graph.Weight(layer.inputs[2]).copy_(f.bias);
    } else {
      const std::string name = names.Fresh(layer.name + ".bias");
      graph.initializers[name].value = f.bias.to(w.scalar_type()).to(w.device());
      if (layer.inputs.size() < 3) layer.inputs.resize(3);
      layer.inputs[2] = name;
    }
    graph.value_info.erase(layer.outputs[0]);
    layer.outputs[0] = bn.outputs[0];
    for (size_t j = 1; j < 5; ++j) dropped.insert(bn.inputs[j]);
    remove[i] = true;
    ++folded;
  }
  graph.RemoveNodes(remove, dropped);
  ValidateGraph(graph, "fold-batchnorm");
  return folded;
}

std::unique_ptr<Pass> FoldBatchNormPass::Create(OptionReader&) {
  return std::make_unique<FoldBatchNormPass>();
}

PassResult FoldBatchNormPass::Run(Graph& graph, PassContext& ctx) {
  PassResult result;
  const int64_t folded = FoldBatchNorm(graph, &result.skipped);
  result.changed = folded > 0;
  result.stats["batchnorms_folded"] = static_cast<double>(folded);
  ctx.log("fold-batchnorm: folded " + std::to_string(folded) + " BatchNormalization nodes");
  return result;
}

}  // namespace compress
