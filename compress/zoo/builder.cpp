// GraphBuilder: node/initializer construction with unique names and seeded init.
#include "compress/zoo/builder.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <cmath>

#include "compress/runtime/executor.h"
#include "compress/runtime/ops.h"

namespace compress {

GraphBuilder::GraphBuilder(std::string graph_name, uint64_t seed, int64_t opset)
    : seed_(seed) {
  graph_.name = std::move(graph_name);
  graph_.opset = opset;
}

Tensor GraphBuilder::Uniform(const std::vector<int64_t>& shape, double bound) {
  // One generator per tensor, seeded from (seed, draw index): a layer's init does not
  // depend on how many random numbers earlier layers consumed.
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed_ * 1000003ULL + draws_++);
  return torch::rand(shape, gen, torch::kFloat) * (2 * bound) - bound;
}

std::string GraphBuilder::Input(const std::string& name, const std::vector<int64_t>& dims,
                                at::ScalarType dtype) {
  graph_.inputs.push_back(ValueInfo{name, dtype, dims});
  names_.Reserve(name);
  return name;
}

std::string GraphBuilder::Constant(const std::string& name, const Tensor& value) {
  if (graph_.initializers.count(name)) {
    throw Error(ErrorKind::kInternal, "GraphBuilder: initializer '" + name + "' exists");
  }
  graph_.initializers[name].value = value;
  names_.Reserve(name);
  return name;
}

std::vector<std::string> GraphBuilder::Op(const std::string& op_type,
                                          const std::vector<std::string>& inputs,
                                          std::map<std::string, AttrValue> attrs,
                                          int num_outputs, const std::string& name) {
  Node node;
  node.name = name.empty() ? FreshName(op_type) : name;
  names_.Reserve(node.name);
  node.op_type = op_type;
  node.inputs = inputs;
  node.attrs = std::move(attrs);
  for (int i = 0; i < num_outputs; ++i) {
    node.outputs.push_back(num_outputs == 1 ? node.name
                                            : node.name + ":" + std::to_string(i));
    names_.Reserve(node.outputs.back());
  }
  graph_.nodes.push_back(node);
  return graph_.nodes.back().outputs;
}

std::string GraphBuilder::Op1(const std::string& op_type,
                              const std::vector<std::string>& inputs,
                              std::map<std::string, AttrValue> attrs,
                              const std::string& name) {
  return Op(op_type, inputs, std::move(attrs), 1, name)[0];
}

std::string GraphBuilder::Conv(const std::string& x, int64_t in_channels,
                               int64_t out_channels, int64_t kernel, int64_t stride,
                               int64_t pad, int64_t groups, bool bias,
                               const std::string& name) {
  const std::string base = name.empty() ? FreshName("conv") : name;
  const int64_t fan_in = in_channels / groups * kernel * kernel;
  const double bound = 1.0 / std::sqrt(static_cast<double>(fan_in));
  std::vector<std::string> inputs = {
      x, Constant(base + ".weight",
                  Uniform({out_channels, in_channels / groups, kernel, kernel}, bound))};
  if (bias) inputs.push_back(Constant(base + ".bias", Uniform({out_channels}, bound)));
  return Op1("Conv", inputs,
             {{"kernel_shape", std::vector<int64_t>{kernel, kernel}},
              {"strides", std::vector<int64_t>{stride, stride}},
              {"pads", std::vector<int64_t>{pad, pad, pad, pad}},
              {"group", groups}},
             base);
}

std::string GraphBuilder::Linear(const std::string& x, int64_t in_features,
                                 int64_t out_features, bool bias,
                                 const std::string& name) {
  const std::string base = name.empty() ? FreshName("fc") : name;
  const double bound = 1.0 / std::sqrt(static_cast<double>(in_features));
  std::vector<std::string> inputs = {
      x, Constant(base + ".weight", Uniform({out_features, in_features}, bound))};
  if (bias) inputs.push_back(Constant(base + ".bias", Uniform({out_features}, bound)));
  return Op1("Gemm", inputs, {{"transB", int64_t{1}}}, base);
}

std::string GraphBuilder::BatchNorm(const std::string& x, int64_t channels,
                                    const std::string& name) {
  const std::string base = name.empty() ? FreshName("bn") : name;
  return Op1("BatchNormalization",
             {x, Constant(base + ".weight", torch::ones({channels})),
              Constant(base + ".bias", torch::zeros({channels})),
              Constant(base + ".running_mean", torch::zeros({channels})),
              Constant(base + ".running_var", torch::ones({channels}))},
             {{"epsilon", 1e-5}, {"momentum", 0.9}}, base);
}

void GraphBuilder::Output(const std::string& value, at::ScalarType dtype) {
  graph_.outputs.push_back(ValueInfo{value, dtype, std::nullopt});
}

void GraphBuilder::Output(const std::string& name, const std::string& value,
                          at::ScalarType dtype) {
  for (auto& node : graph_.nodes) {
    for (auto& v : node.inputs) {
      if (v == value) v = name;
    }
    for (auto& v : node.outputs) {
      if (v == value) v = name;
    }
  }
  names_.Reserve(name);
  Output(name, dtype);
}

Graph GraphBuilder::Build() {
  ValidateGraph(graph_, "GraphBuilder(" + graph_.name + ")");
  InferShapes(graph_);
  return graph_;
}

}  // namespace compress
