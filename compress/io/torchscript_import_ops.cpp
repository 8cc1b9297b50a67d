// TorchScript import, the op mappers: each rewrites one family of aten ops into our
// ops with ONNX semantics, reading constant arguments through the Importer. Mappers()
// is their table, which the walk in torchscript_import.cpp dispatches through.
#include "compress/io/torchscript_importer.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <string>
#include <vector>

namespace compress::ts_import {

namespace {

// ---- op mappings (ONNX semantics per onnx/docs/Operators.md) ------------------------

std::vector<int64_t> Repeat(std::vector<int64_t> v, size_t n) {
  if (v.size() == 1 && n > 1) v.assign(n, v[0]);
  return v;
}

int64_t NormDim(int64_t dim, int64_t rank) {
  if (dim < -rank || dim >= std::max<int64_t>(rank, 1)) {
    throw Unmappable{"dim " + std::to_string(dim) + " out of range for rank " + std::to_string(rank)};
  }
  return dim < 0 ? dim + rank : dim;
}

std::string GraphIn(Importer& im, jit::Node* n, size_t i) {
  if (!im.IsGraphValue(n, i)) return im.TensorIn(n, i);
  return im.V(n, i).name;
}

// aten::_convolution / convolution (x, w, b, stride, padding, dilation, transposed,
// output_padding, groups, ...) and aten::conv{1,2,3}d (x, w, b, stride, padding,
// dilation, groups) -> Conv with explicit pads.
void MapConv(Importer& im, jit::Node* n) {
  const std::string kind = Kind(n);
  const bool full = kind == "aten::_convolution" || kind == "aten::convolution";
  if (full && im.Bool(n, 6)) throw Unmappable{"transposed convolution (no ConvTranspose kernel)"};
  const std::string x = GraphIn(im, n, 0);
  const std::string w = im.Param(n, 1, "weight");
  const std::vector<int64_t> wshape = im.Shape(w);
  const size_t k = wshape.size() - 2;
  std::vector<int64_t> kernel(wshape.begin() + 2, wshape.end());
  const std::vector<int64_t> strides = Repeat(im.Ints(n, 3), k);
  const std::vector<int64_t> dilations = Repeat(im.Ints(n, 5), k);
  std::vector<int64_t> pads;
  const c10::IValue& padding = im.StaticArg(n, 4);
  if (padding.isString()) {
    // torch "same" puts the odd cell at the end (stride 1 only); "valid" pads nothing.
    pads.assign(2 * k, 0);
    if (padding.toStringRef() == "same") {
      for (size_t d = 0; d < k; ++d) {
        int64_t total = dilations[d] * (kernel[d] - 1);
        pads[d] = total / 2;
        pads[d + k] = total - total / 2;
      }
    }
  } else {
    std::vector<int64_t> p = Repeat(padding.toIntVector(), k);
    pads = p;
    pads.insert(pads.end(), p.begin(), p.end());
  }
  std::vector<std::string> inputs = {x, w};
  if (!im.IsNone(n, 2)) inputs.push_back(im.Param(n, 2, "bias"));
  const int64_t groups = im.Int(n, full ? 8 : 6);
  im.BindGraph(n->output(0), im.Emit1(n, "Conv", inputs,
                                      {{"kernel_shape", kernel}, {"strides", strides},
                                       {"pads", pads}, {"dilations", dilations},
                                       {"group", groups}}));
}

// aten::batch_norm(x, weight, bias, running_mean, running_var, training, momentum, eps,
// cudnn_enabled). ONNX momentum weighs the running value: 1 - PyTorch's momentum.
void MapBatchNorm(Importer& im, jit::Node* n) {
  if (im.Bool(n, 5)) throw Unmappable{"batch_norm in training mode (put the model in eval mode)"};
  const std::string x = GraphIn(im, n, 0);
  if (im.IsNone(n, 3) || im.IsNone(n, 4)) throw Unmappable{"batch_norm without running statistics"};
  const std::string mean = im.Param(n, 3, "running_mean");
  const std::string var = im.Param(n, 4, "running_var");
  const int64_t c = im.Shape(mean)[0];
  const std::string scale = im.IsNone(n, 1) ? im.Initializer(n, "weight", torch::ones({c}))
                                            : im.Param(n, 1, "weight");
  const std::string bias = im.IsNone(n, 2) ? im.Initializer(n, "bias", torch::zeros({c}))
                                           : im.Param(n, 2, "bias");
  const double momentum = im.IsNone(n, 6) ? 0.1 : im.Double(n, 6);
  im.BindGraph(n->output(0),
               im.Emit1(n, "BatchNormalization", {x, scale, bias, mean, var},
                        {{"epsilon", im.Double(n, 7)}, {"momentum", 1.0 - momentum}}));
}

// aten::layer_norm(x, normalized_shape, weight, bias, eps, cudnn_enable) ->
// LayerNormalization (opset 17) over the trailing normalized dims.
void MapLayerNorm(Importer& im, jit::Node* n) {
  const std::string x = GraphIn(im, n, 0);
  const std::vector<int64_t> shape = im.Ints(n, 1);
  const int64_t rank = im.Rank(x);
  int64_t numel = 1;
  for (auto d : shape) numel *= d;
  const std::string scale = im.IsNone(n, 2) ? im.Initializer(n, "weight", torch::ones(shape))
                                            : im.Param(n, 2, "weight");
  std::vector<std::string> inputs = {x, scale};
  if (!im.IsNone(n, 3)) inputs.push_back(im.Param(n, 3, "bias"));
  im.NoteOpset(17);
  im.BindGraph(n->output(0), im.Emit1(n, "LayerNormalization", inputs,
                                      {{"axis", rank - static_cast<int64_t>(shape.size())},
                                       {"epsilon", im.Double(n, 4)}}));
}

Tensor Transposed(const Tensor& w) { return w.t(); }

// aten::linear(x, weight, bias): Gemm(transB=1) for 2-D inputs, else MatMul with the
// transposed weight (stored as <layer>.weight, [in, out]) plus Add.
void MapLinear(Importer& im, jit::Node* n) {
  const std::string x = GraphIn(im, n, 0);
  if (im.Rank(x) == 2) {
    std::vector<std::string> inputs = {x, im.Param(n, 1, "weight")};
    if (!im.IsNone(n, 2)) inputs.push_back(im.Param(n, 2, "bias"));
    im.BindGraph(n->output(0), im.Emit1(n, "Gemm", inputs, {{"transB", int64_t{1}}}));
    return;
  }
  std::string y = im.Emit1(n, "MatMul", {x, im.Param(n, 1, "weight", Transposed)});
  if (!im.IsNone(n, 2)) y = im.Emit1(n, "Add", {y, im.Param(n, 2, "bias")});
  im.BindGraph(n->output(0), y);
}

// aten::addmm(input, mat1, mat2, beta, alpha) = beta * input + alpha * mat1 @ mat2 ->
// Gemm. A weight traced as t(W) (C++ Linear) is stored as W with transB=1.
void MapAddmm(Importer& im, jit::Node* n) {
  std::map<std::string, AttrValue> attrs = {{"alpha", im.Double(n, 4)}, {"beta", im.Double(n, 3)}};
  const std::string a = GraphIn(im, n, 1);
  std::string b;
  jit::Node* producer = n->input(2)->node();
  if (!im.IsGraphValue(n, 2) && Kind(producer) == "aten::t" && !im.IsGraphValue(producer, 0)) {
    b = im.Param(producer, 0, "weight");
    attrs["transB"] = int64_t{1};
  } else {
    b = im.TensorIn(n, 2, "weight");
  }
  const std::string c = im.IsGraphValue(n, 0) ? im.V(n, 0).name : im.Param(n, 0, "bias");
  im.BindGraph(n->output(0), im.Emit1(n, "Gemm", {a, b, c}, attrs));
}

void MapMatMul(Importer& im, jit::Node* n) {
  im.BindGraph(n->output(0), im.Emit1(n, "MatMul", {GraphIn(im, n, 0), GraphIn(im, n, 1)}));
}

// Operand of an elementwise op: a graph value, a static tensor (initializer), or a
// number (a scalar Constant of the graph operand's dtype).
std::string Operand(Importer& im, jit::Node* n, size_t i, at::ScalarType dtype) {
  const Val& v = im.V(n, i);
  if (v.kind == Val::kTensor) return v.name;
  if (v.IsStaticTensor()) {
    if (v.batch_dep) throw Unmappable{"an operand depends on the batch size"};
    const Tensor& t = v.lane[0].toTensor();
    if (t.dim() == 0 && v.hint.empty()) return im.Scalar(n, t.item<double>(), dtype);
    return im.TensorIn(n, i);
  }
  return im.Scalar(n, im.Double(n, i), dtype);
}

at::ScalarType GraphDtype(Importer& im, jit::Node* n) {
  for (size_t i = 0; i < n->inputs().size(); ++i) {
    if (im.IsGraphValue(n, i)) return im.Dtype(im.V(n, i).name);
  }
  return at::kFloat;
}

// aten::add/sub(a, b, alpha): a ± alpha * b; aten::rsub(a, b, alpha): b - alpha * a.
void MapAddSub(Importer& im, jit::Node* n) {
  const std::string kind = Kind(n);
  const bool rsub = kind == "aten::rsub";
  const bool sub = rsub || kind.rfind("aten::sub", 0) == 0;
  const at::ScalarType dtype = GraphDtype(im, n);
  std::string a = Operand(im, n, rsub ? 1 : 0, dtype);
  std::string b = Operand(im, n, rsub ? 0 : 1, dtype);
  const double alpha = n->inputs().size() > 2 ? im.Double(n, 2) : 1.0;
  if (alpha != 1.0) b = im.Emit1(n, "Mul", {b, im.Scalar(n, alpha, dtype)});
  im.BindGraph(n->output(0), im.Emit1(n, sub ? "Sub" : "Add", {a, b}));
}

void MapMulDiv(Importer& im, jit::Node* n) {
  const std::string kind = Kind(n);
  const bool div = kind.rfind("aten::div", 0) == 0;
  if (div && n->inputs().size() > 2 && !im.IsNone(n, 2)) {
    throw Unmappable{"division with a rounding mode"};
  }
  const at::ScalarType dtype = GraphDtype(im, n);
  const std::string a = Operand(im, n, 0, dtype);
  const std::string b = Operand(im, n, 1, dtype);
  im.BindGraph(n->output(0), im.Emit1(n, div ? "Div" : "Mul", {a, b}));
}

// aten::baddbmm(input, b1, b2, beta, alpha) = beta * input + alpha * (b1 @ b2).
void MapBaddbmm(Importer& im, jit::Node* n) {
  const at::ScalarType dtype = GraphDtype(im, n);
  std::string prod = im.Emit1(n, "MatMul", {GraphIn(im, n, 1), GraphIn(im, n, 2)});
  const double beta = im.Double(n, 3), alpha = im.Double(n, 4);
  if (alpha != 1.0) prod = im.Emit1(n, "Mul", {prod, im.Scalar(n, alpha, dtype)});
  if (beta == 0.0) return im.BindGraph(n->output(0), prod);
  std::string in = Operand(im, n, 0, dtype);
  if (beta != 1.0) in = im.Emit1(n, "Mul", {in, im.Scalar(n, beta, dtype)});
  im.BindGraph(n->output(0), im.Emit1(n, "Add", {in, prod}));
}

void MapUnary(Importer& im, jit::Node* n, const std::string& op,
              std::map<std::string, AttrValue> attrs = {}) {
  im.BindGraph(n->output(0), im.Emit1(n, op, {GraphIn(im, n, 0)}, std::move(attrs)));
}

void MapRelu(Importer& im, jit::Node* n) { MapUnary(im, n, "Relu"); }
void MapSigmoid(Importer& im, jit::Node* n) { MapUnary(im, n, "Sigmoid"); }
void MapTanh(Importer& im, jit::Node* n) { MapUnary(im, n, "Tanh"); }
void MapHardSwish(Importer& im, jit::Node* n) {
  im.NoteOpset(14);  // HardSwish entered ONNX in opset 14
  MapUnary(im, n, "HardSwish");
}
// PyTorch hardsigmoid is relu6(x + 3) / 6: ONNX HardSigmoid with alpha 1/6, beta 1/2.
void MapHardSigmoid(Importer& im, jit::Node* n) {
  MapUnary(im, n, "HardSigmoid", {{"alpha", 1.0 / 6.0}, {"beta", 0.5}});
}
void MapLeakyRelu(Importer& im, jit::Node* n) {
  MapUnary(im, n, "LeakyRelu", {{"alpha", n->inputs().size() > 1 ? im.Double(n, 1) : 0.01}});
}

// SiLU: x * sigmoid(x).
void MapSilu(Importer& im, jit::Node* n) {
  const std::string x = GraphIn(im, n, 0);
  im.BindGraph(n->output(0), im.Emit1(n, "Mul", {x, im.Emit1(n, "Sigmoid", {x})}));
}

// hardtanh(x, min, max) and relu6 -> Clip with min/max inputs (opset 11+).
void MapHardtanh(Importer& im, jit::Node* n) {
  const std::string x = GraphIn(im, n, 0);
  const bool relu6 = Kind(n).rfind("aten::relu6", 0) == 0;
  const double lo = relu6 ? 0.0 : im.Double(n, 1);
  const double hi = relu6 ? 6.0 : im.Double(n, 2);
  const at::ScalarType dtype = im.Dtype(x);
  im.BindGraph(n->output(0), im.Emit1(n, "Clip", {x, im.Scalar(n, lo, dtype), im.Scalar(n, hi, dtype)}));
}

// GELU without the opset-20 Gelu op: 0.5 x (1 + erf(x / sqrt 2)), or the tanh form
// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
void MapGelu(Importer& im, jit::Node* n) {
  const std::string x = GraphIn(im, n, 0);
  const at::ScalarType dtype = im.Dtype(x);
  const bool tanh_form = n->inputs().size() > 1 && im.Str(n, 1) == "tanh";
  std::string inner;
  if (tanh_form) {
    std::string cube = im.Emit1(n, "Mul", {im.Emit1(n, "Mul", {x, x}), x});
    std::string sum = im.Emit1(n, "Add", {x, im.Emit1(n, "Mul", {cube, im.Scalar(n, 0.044715, dtype)})});
    inner = im.Emit1(n, "Tanh", {im.Emit1(n, "Mul", {sum, im.Scalar(n, std::sqrt(2.0 / M_PI), dtype)})});
  } else {
    inner = im.Emit1(n, "Erf", {im.Emit1(n, "Mul", {x, im.Scalar(n, M_SQRT1_2, dtype)})});
  }
  std::string one_plus = im.Emit1(n, "Add", {inner, im.Scalar(n, 1.0, dtype)});
  std::string half_x = im.Emit1(n, "Mul", {x, im.Scalar(n, 0.5, dtype)});
  im.BindGraph(n->output(0), im.Emit1(n, "Mul", {half_x, one_plus}));
}

void MapSoftmax(Importer& im, jit::Node* n) {
  const std::string x = GraphIn(im, n, 0);
  if (n->inputs().size() > 2 && !im.IsNone(n, 2)) throw Unmappable{"softmax with a dtype"};
  MapUnary(im, n, "Softmax", {{"axis", NormDim(im.Int(n, 1), im.Rank(x))}});
}

// Identity in eval mode: dropout variants (train must be false), contiguous, clone,
// detach.
void MapAlias(Importer& im, jit::Node* n) {
  const std::string kind = Kind(n);
  if (kind.find("dropout") != std::string::npos && im.Bool(n, 2)) {
    throw Unmappable{"dropout in training mode (put the model in eval mode)"};
  }
  if (!im.IsGraphValue(n, 0)) throw Unmappable{"input is not a graph tensor"};
  im.Alias(n);
}

// The spatial rank of a pooling op from its name (aten::max_pool2d -> 2): a C++ caller
// may pass one kernel size for all dims ({2}), which Python's _pair would have expanded.
size_t PoolRank(jit::Node* n) {
  const std::string kind = Kind(n);
  const char last = kind.empty() ? '2' : kind[kind.size() - 2];  // "...pool2d"
  return last >= '1' && last <= '3' ? static_cast<size_t>(last - '0') : 2;
}

// aten::max_pool2d(x, kernel, stride, padding, dilation, ceil_mode).
// A pool's window, every list at the op's rank: kernel, strides (the kernel's when
// empty) and ONNX pads (begin then end).
struct PoolWindow {
  size_t rank = 2;
  std::vector<int64_t> kernel, strides, pads;
};

PoolWindow ReadPoolWindow(Importer& im, jit::Node* n) {
  PoolWindow w;
  w.rank = PoolRank(n);
  w.kernel = Repeat(im.Ints(n, 1), w.rank);
  w.strides = im.Ints(n, 2);
  w.strides = Repeat(w.strides.empty() ? w.kernel : w.strides, w.rank);
  w.pads = Repeat(im.Ints(n, 3), w.rank);
  w.pads.insert(w.pads.end(), w.pads.begin(), w.pads.end());
  return w;
}

void MapMaxPool(Importer& im, jit::Node* n) {
  const std::string x = GraphIn(im, n, 0);
  const PoolWindow w = ReadPoolWindow(im, n);
  im.BindGraph(n->output(0),
               im.Emit1(n, "MaxPool", {x},
                        {{"kernel_shape", w.kernel}, {"strides", w.strides}, {"pads", w.pads},
                         {"dilations", Repeat(im.Ints(n, 4), w.rank)},
                         {"ceil_mode", int64_t{im.Bool(n, 5)}}}));
}

// aten::avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad,
// divisor_override).
void MapAvgPool(Importer& im, jit::Node* n) {
  const std::string x = GraphIn(im, n, 0);
  if (n->inputs().size() > 6 && !im.IsNone(n, 6)) throw Unmappable{"avg_pool with divisor_override"};
  const PoolWindow w = ReadPoolWindow(im, n);
  im.BindGraph(n->output(0),
               im.Emit1(n, "AveragePool", {x},
                        {{"kernel_shape", w.kernel}, {"strides", w.strides}, {"pads", w.pads},
                         {"ceil_mode", int64_t{im.Bool(n, 4)}},
                         {"count_include_pad", int64_t{im.Bool(n, 5)}}}));
}

// adaptive_avg_pool2d: GlobalAveragePool for output 1x1, AveragePool when the input
// divides evenly, Identity when sizes already match.
void MapAdaptiveAvgPool(Importer& im, jit::Node* n) {
  const std::string x = GraphIn(im, n, 0);
  const std::vector<int64_t> shape = im.Shape(x);
  std::vector<int64_t> out = im.Ints(n, 1);
  const size_t k = shape.size() - 2;
  out = Repeat(out, k);
  bool global = true, same = true, even = true;
  std::vector<int64_t> kernel;
  for (size_t d = 0; d < k; ++d) {
    const int64_t in = shape[2 + d];
    global &= out[d] == 1;
    same &= out[d] == in;
    even &= out[d] > 0 && in % out[d] == 0;
    kernel.push_back(out[d] > 0 ? in / out[d] : 0);
  }
  if (global) return im.BindGraph(n->output(0), im.Emit1(n, "GlobalAveragePool", {x}));
  if (same) return im.Alias(n);
  if (!even) throw Unmappable{"adaptive pooling to a size that does not divide the input"};
  im.BindGraph(n->output(0), im.Emit1(n, "AveragePool", {x},
                                      {{"kernel_shape", kernel}, {"strides", kernel}}));
}

// aten::mean(x, dims, keepdim, dtype) over all spatial dims -> GlobalAveragePool
// (+ Flatten for keepdim=False on 4-D input).
void MapMean(Importer& im, jit::Node* n) {
  const std::string x = GraphIn(im, n, 0);
  const int64_t rank = im.Rank(x);
  if (n->inputs().size() < 3) throw Unmappable{"mean over all dims"};
  std::vector<int64_t> dims = im.Ints(n, 1);
  for (auto& d : dims) d = NormDim(d, rank);
  std::sort(dims.begin(), dims.end());
  std::vector<int64_t> spatial;
  for (int64_t d = 2; d < rank; ++d) spatial.push_back(d);
  if (dims != spatial || spatial.empty()) throw Unmappable{"mean over dims other than the spatial ones"};
  if (n->inputs().size() > 3 && !im.IsNone(n, 3)) throw Unmappable{"mean with a dtype"};
  std::string y = im.Emit1(n, "GlobalAveragePool", {x});
  if (!im.Bool(n, 2)) y = im.Emit1(n, "Flatten", {y}, {{"axis", int64_t{1}}});
  im.BindGraph(n->output(0), y);
}

// Reshape target with the batch kept symbolic: a dim equal across both lanes is a
// constant; one that follows the input dim at the same position is 0 (copy); the one
// remaining batch-dependent dim is -1.
void EmitReshape(Importer& im, jit::Node* n, const std::string& x,
                 const std::vector<int64_t>& out0, const std::vector<int64_t>& out1) {
  const std::vector<int64_t> in0 = im.Shape(x, 0);
  const std::vector<int64_t> in1 = im.Shape(x, im.NumLanes() - 1);
  if (out0.size() != out1.size()) throw Unmappable{"the result rank depends on the batch size"};
  std::vector<int64_t> target(out0.size());
  int inferred = 0;
  for (size_t d = 0; d < out0.size(); ++d) {
    if (out0[d] == out1[d]) {
      target[d] = out0[d];
      if (out0[d] == 0) throw Unmappable{"reshape to an empty dim"};
    } else if (d < in0.size() && in0[d] == out0[d] && in1[d] == out1[d]) {
      target[d] = 0;
    } else {
      target[d] = -1;
      ++inferred;
    }
  }
  if (inferred > 1) throw Unmappable{"a reshape whose target depends on the batch size in several dims"};
  if (in0 == out0 && in1 == out1) return im.Alias(n);
  im.BindGraph(n->output(0), im.Emit1(n, "Reshape", {x, im.Int64s(n, "shape", target)}));
}

void MapReshapeLike(Importer& im, jit::Node* n) {
  const std::string x = GraphIn(im, n, 0);
  const std::string kind = Kind(n);
  if (kind == "aten::flatten" && im.Rank(x) >= 2 && im.Int(n, 1) == 1 &&
      NormDim(im.Int(n, 2), im.Rank(x)) == im.Rank(x) - 1) {
    if (im.Rank(x) == 2) return im.Alias(n);
    return im.BindGraph(n->output(0), im.Emit1(n, "Flatten", {x}, {{"axis", int64_t{1}}}));
  }
  auto outs = im.RunOriginal(n);
  EmitReshape(im, n, x, outs[0][0].toTensor().sizes().vec(), outs[0][1].toTensor().sizes().vec());
}

void MapTranspose(Importer& im, jit::Node* n) {
  const std::string x = GraphIn(im, n, 0);
  const int64_t rank = im.Rank(x);
  std::vector<int64_t> perm(rank);
  for (int64_t d = 0; d < rank; ++d) perm[d] = d;
  const std::string kind = Kind(n);
  if (kind == "aten::permute") {
    perm = im.Ints(n, 1);
    for (auto& d : perm) d = NormDim(d, rank);
  } else if (kind == "aten::t" || kind == "aten::t_") {
    if (rank < 2) return im.Alias(n);
    std::swap(perm[0], perm[1]);
  } else {
    std::swap(perm[NormDim(im.Int(n, 1), rank)], perm[NormDim(im.Int(n, 2), rank)]);
  }
  bool identity = true;
  for (int64_t d = 0; d < rank; ++d) identity &= perm[d] == d;
  if (identity) return im.Alias(n);
  im.BindGraph(n->output(0), im.Emit1(n, "Transpose", {x}, {{"perm", perm}}));
}

void MapUnsqueeze(Importer& im, jit::Node* n) {
  const std::string x = GraphIn(im, n, 0);
  const int64_t axis = NormDim(im.Int(n, 1), im.Rank(x) + 1);
  im.BindGraph(n->output(0), im.Emit1(n, "Unsqueeze", {x, im.Int64s(n, "axes", {axis})}));
}

// squeeze(x[, dim(s)]): only dims of size 1 at both batch sizes (PyTorch leaves other
// dims alone, and never squeezes the batch).
void MapSqueeze(Importer& im, jit::Node* n) {
  const std::string x = GraphIn(im, n, 0);
  const int64_t rank = im.Rank(x);
  const std::vector<int64_t> s0 = im.Shape(x, 0), s1 = im.Shape(x, im.NumLanes() - 1);
  std::vector<int64_t> candidates;
  if (n->inputs().size() > 1) {
    for (auto d : im.Ints(n, 1)) candidates.push_back(NormDim(d, rank));
  } else {
    for (int64_t d = 0; d < rank; ++d) candidates.push_back(d);
  }
  std::vector<int64_t> axes;
  for (auto d : candidates) {
    if (s0[d] == 1 && s1[d] == 1) axes.push_back(d);
  }
  if (axes.empty()) return im.Alias(n);
  im.BindGraph(n->output(0), im.Emit1(n, "Squeeze", {x, im.Int64s(n, "axes", axes)}));
}

// cat(tensors, dim) -> Concat.
void MapCat(Importer& im, jit::Node* n) {
  const Val list = im.V(n, 0);
  if (list.kind != Val::kList) throw Unmappable{"a tensor list that is not a list literal"};
  std::vector<std::string> inputs;
  for (size_t i = 0; i < list.items.size(); ++i) {
    const Val& item = list.items[i];
    if (item.kind != Val::kTensor) throw Unmappable{"concatenation of a constant tensor"};
    inputs.push_back(item.name);
  }
  const int64_t axis = NormDim(im.Int(n, 1), im.Rank(inputs[0]));
  im.BindGraph(n->output(0), im.Emit1(n, "Concat", inputs, {{"axis", axis}}));
}

// chunk / split / split_with_sizes -> Split with explicit sizes; the result is a list.
void MapSplit(Importer& im, jit::Node* n) {
  const std::string x = GraphIn(im, n, 0);
  const std::string kind = Kind(n);
  const std::vector<int64_t> s0 = im.Shape(x, 0), s1 = im.Shape(x, im.NumLanes() - 1);
  const int64_t axis = NormDim(im.Int(n, 2), im.Rank(x));
  if (s0[axis] != s1[axis]) throw Unmappable{"splitting the batch dim"};
  const int64_t dim = s0[axis];
  std::vector<int64_t> sizes;
  if (kind.find("chunk") != std::string::npos) {
    const int64_t chunks = im.Int(n, 1);
    const int64_t size = (dim + chunks - 1) / chunks;
    for (int64_t start = 0; start < dim; start += size) sizes.push_back(std::min(size, dim - start));
  } else if (im.StaticArg(n, 1).isInt()) {
    const int64_t size = im.Int(n, 1);
    for (int64_t start = 0; start < dim; start += size) sizes.push_back(std::min(size, dim - start));
  } else {
    sizes = im.Ints(n, 1);
  }
  if (sizes.empty()) throw Unmappable{"splitting an empty dim"};
  auto parts = im.Emit(n, "Split", {x, im.Int64s(n, "split", sizes)}, {{"axis", axis}},
                       static_cast<int>(sizes.size()));
  Val list;
  list.kind = Val::kList;
  for (const auto& p : parts) list.items.push_back(Val::Graph(p));
  im.Bind(n->output(0), std::move(list));
}

// slice(x, dim, start, end, step) -> Slice (ONNX clamps out-of-range bounds as
// PyTorch does); the full range is an alias.
void MapSlice(Importer& im, jit::Node* n) {
  const std::string x = GraphIn(im, n, 0);
  const int64_t axis = NormDim(im.Int(n, 1), im.Rank(x));
  const int64_t start = im.IsNone(n, 2) ? 0 : im.Int(n, 2);
  const int64_t end = im.IsNone(n, 3) ? std::numeric_limits<int64_t>::max() : im.Int(n, 3);
  const int64_t step = im.Int(n, 4);
  if (start == 0 && end >= std::max(im.Shape(x, 0)[axis], im.Shape(x, im.NumLanes() - 1)[axis]) &&
      step == 1) {
    return im.Alias(n);
  }
  im.BindGraph(n->output(0),
               im.Emit1(n, "Slice", {x, im.Int64s(n, "starts", {start}), im.Int64s(n, "ends", {end}),
                                     im.Int64s(n, "axes", {axis}), im.Int64s(n, "steps", {step})}));
}

// select(x, dim, index) -> Slice of one + Squeeze.
void MapSelect(Importer& im, jit::Node* n) {
  const std::string x = GraphIn(im, n, 0);
  const int64_t axis = NormDim(im.Int(n, 1), im.Rank(x));
  int64_t index = im.Int(n, 2);
  const int64_t size0 = im.Shape(x, 0)[axis], size1 = im.Shape(x, im.NumLanes() - 1)[axis];
  if (index < 0) {
    if (size0 != size1) throw Unmappable{"a negative index into the batch dim"};
    index += size0;
  }
  std::string s = im.Emit1(n, "Slice", {x, im.Int64s(n, "starts", {index}),
                                        im.Int64s(n, "ends", {index + 1}),
                                        im.Int64s(n, "axes", {axis})});
  im.BindGraph(n->output(0), im.Emit1(n, "Squeeze", {s, im.Int64s(n, "axes", {axis})}));
}

}  // namespace

const std::map<std::string, MapFn>& Mappers() {
  static const std::map<std::string, MapFn> kMappers = {
      {"aten::_convolution", MapConv},
      {"aten::adaptive_avg_pool1d", MapAdaptiveAvgPool},
      {"aten::adaptive_avg_pool2d", MapAdaptiveAvgPool},
      {"aten::adaptive_avg_pool3d", MapAdaptiveAvgPool},
      {"aten::add", MapAddSub},
      {"aten::add_", MapAddSub},
      {"aten::addmm", MapAddmm},
      {"aten::alpha_dropout", MapAlias},
      {"aten::avg_pool1d", MapAvgPool},
      {"aten::avg_pool2d", MapAvgPool},
      {"aten::avg_pool3d", MapAvgPool},
      {"aten::baddbmm", MapBaddbmm},
      {"aten::batch_norm", MapBatchNorm},
      {"aten::bmm", MapMatMul},
      {"aten::cat", MapCat},
      {"aten::chunk", MapSplit},
      {"aten::clone", MapAlias},
      {"aten::concat", MapCat},
      {"aten::contiguous", MapAlias},
      {"aten::conv1d", MapConv},
      {"aten::conv2d", MapConv},
      {"aten::conv3d", MapConv},
      {"aten::convolution", MapConv},
      {"aten::detach", MapAlias},
      {"aten::div", MapMulDiv},
      {"aten::div_", MapMulDiv},
      {"aten::dropout", MapAlias},
      {"aten::dropout_", MapAlias},
      {"aten::feature_alpha_dropout", MapAlias},
      {"aten::feature_dropout", MapAlias},
      {"aten::feature_dropout_", MapAlias},
      {"aten::flatten", MapReshapeLike},
      {"aten::gelu", MapGelu},
      {"aten::gelu_", MapGelu},
      {"aten::hardsigmoid", MapHardSigmoid},
      {"aten::hardsigmoid_", MapHardSigmoid},
      {"aten::hardswish", MapHardSwish},
      {"aten::hardswish_", MapHardSwish},
      {"aten::hardtanh", MapHardtanh},
      {"aten::hardtanh_", MapHardtanh},
      {"aten::layer_norm", MapLayerNorm},
      {"aten::leaky_relu", MapLeakyRelu},
      {"aten::leaky_relu_", MapLeakyRelu},
      {"aten::linear", MapLinear},
      {"aten::matmul", MapMatMul},
      {"aten::max_pool1d", MapMaxPool},
      {"aten::max_pool2d", MapMaxPool},
      {"aten::max_pool3d", MapMaxPool},
      {"aten::mean", MapMean},
      {"aten::mul", MapMulDiv},
      {"aten::mul_", MapMulDiv},
      {"aten::permute", MapTranspose},
      {"aten::relu", MapRelu},
      {"aten::relu6", MapHardtanh},
      {"aten::relu6_", MapHardtanh},
      {"aten::relu_", MapRelu},
      {"aten::reshape", MapReshapeLike},
      {"aten::rsub", MapAddSub},
      {"aten::select", MapSelect},
      {"aten::sigmoid", MapSigmoid},
      {"aten::sigmoid_", MapSigmoid},
      {"aten::silu", MapSilu},
      {"aten::silu_", MapSilu},
      {"aten::slice", MapSlice},
      {"aten::softmax", MapSoftmax},
      {"aten::split", MapSplit},
      {"aten::split_with_sizes", MapSplit},
      {"aten::squeeze", MapSqueeze},
      {"aten::sub", MapAddSub},
      {"aten::sub_", MapAddSub},
      {"aten::t", MapTranspose},
      {"aten::tanh", MapTanh},
      {"aten::tanh_", MapTanh},
      {"aten::transpose", MapTranspose},
      {"aten::unflatten", MapReshapeLike},
      {"aten::unsafe_chunk", MapSplit},
      {"aten::unsafe_split", MapSplit},
      {"aten::unsqueeze", MapUnsqueeze},
      {"aten::view", MapReshapeLike},
  };
  return kMappers;
}

}  // namespace compress::ts_import
