// ONNX operator kernels on LibTorch, and the one table registering them. Semantics
// follow the ONNX operator specification (onnx/docs/Operators.md), including the
// attribute-to-input moves between opsets (Clip 11, Slice 10, Squeeze/Unsqueeze/Split
// 13, Softmax 13, Split num_outputs 18).
#include "compress/runtime/ops.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "compress/runtime/fake_quant.h"
#include "compress/runtime/linear.h"
#include "compress/runtime/max_pool.h"

namespace compress {

namespace {

using Outputs = std::vector<Tensor>;

// ---- helpers ----------------------------------------------------------------------

const Tensor& In(const KernelContext& ctx, size_t i) { return ctx.inputs.at(i); }
bool Has(const KernelContext& ctx, size_t i) {
  return i < ctx.inputs.size() && ctx.inputs[i].defined();
}

[[noreturn]] void Fail(const KernelContext& ctx, const std::string& msg) {
  throw Error(ErrorKind::kUnsupported, ctx.node.Describe() + ": " + msg);
}

int64_t NormAxis(const KernelContext& ctx, int64_t axis, int64_t rank) {
  if (axis < -rank || axis >= std::max<int64_t>(rank, 1)) {
    throw Error(ErrorKind::kIo, ctx.node.Describe() + ": axis " + std::to_string(axis) +
                                    " out of range for rank " + std::to_string(rank));
  }
  return axis < 0 ? axis + rank : axis;
}

// A small int64 tensor (shape, axes, pads...) as a vector; it may live on any device.
std::vector<int64_t> ToInts(const Tensor& t) {
  Tensor c = t.to(torch::kCPU, torch::kLong).contiguous();
  return std::vector<int64_t>(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
}

// Lowest value of a dtype (padding value for max pooling).
at::Scalar Lowest(at::ScalarType t) {
  if (at::isFloatingType(t)) return -std::numeric_limits<double>::infinity();
  switch (t) {
    case at::kByte: return 0;
    case at::kChar: return -128;
    case at::kShort: return std::numeric_limits<int16_t>::min();
    case at::kInt: return std::numeric_limits<int32_t>::min();
    default: return std::numeric_limits<int64_t>::min();
  }
}

// Pads of a conv/pool window per spatial dim as (begin, end) lists, resolving
// auto_pad (SAME_UPPER puts the odd cell at the end, SAME_LOWER at the start).
struct Window {
  std::vector<int64_t> kernel, strides, dilations, pad_begin, pad_end;
};

Window ResolveWindow(const KernelContext& ctx, const Tensor& x,
                     const std::vector<int64_t>& kernel) {
  const Node& node = ctx.node;
  const size_t n = kernel.size();
  Window w;
  w.kernel = kernel;
  w.strides = node.GetInts("strides", std::vector<int64_t>(n, 1));
  w.dilations = node.GetInts("dilations", std::vector<int64_t>(n, 1));
  std::vector<int64_t> pads = node.GetInts("pads", std::vector<int64_t>(2 * n, 0));
  if (w.strides.size() != n || w.dilations.size() != n || pads.size() != 2 * n) {
    throw Error(ErrorKind::kIo, node.Describe() + ": strides/dilations/pads do not match " +
                                    std::to_string(n) + " spatial dims");
  }
  w.pad_begin.assign(pads.begin(), pads.begin() + n);
  w.pad_end.assign(pads.begin() + n, pads.end());
  const std::string auto_pad = node.GetString("auto_pad", "NOTSET");
  if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
    for (size_t i = 0; i < n; ++i) {
      int64_t in = x.size(2 + i);
      int64_t out = (in + w.strides[i] - 1) / w.strides[i];
      int64_t total = std::max<int64_t>(
          0, (out - 1) * w.strides[i] + (kernel[i] - 1) * w.dilations[i] + 1 - in);
      int64_t small = total / 2, big = total - small;
      w.pad_begin[i] = auto_pad == "SAME_UPPER" ? small : big;
      w.pad_end[i] = auto_pad == "SAME_UPPER" ? big : small;
    }
  } else if (auto_pad == "VALID") {
    std::fill(w.pad_begin.begin(), w.pad_begin.end(), 0);
    std::fill(w.pad_end.begin(), w.pad_end.end(), 0);
  } else if (auto_pad != "NOTSET") {
    throw Error(ErrorKind::kIo, node.Describe() + ": unknown auto_pad '" + auto_pad + "'");
  }
  return w;
}

// Explicit padding of the spatial dims (constant_pad_nd takes the last dim first).
Tensor PadSpatial(const Tensor& x, const std::vector<int64_t>& begin,
                  const std::vector<int64_t>& end, const at::Scalar& value) {
  std::vector<int64_t> pad;
  for (size_t i = begin.size(); i-- > 0;) {
    pad.push_back(begin[i]);
    pad.push_back(end[i]);
  }
  return at::constant_pad_nd(x, pad, value);
}

// Window fits PyTorch's symmetric padding argument.
bool SymmetricPads(const Window& w, bool limit_half_kernel) {
  for (size_t i = 0; i < w.kernel.size(); ++i) {
    if (w.pad_begin[i] != w.pad_end[i]) return false;
    if (limit_half_kernel && w.pad_begin[i] > ((w.kernel[i] - 1) * w.dilations[i] + 1) / 2) {
      return false;
    }
  }
  return true;
}

// Extra end padding that makes ceil_mode's last window fit (ONNX output size
// ceil((in + pads - dilated_kernel) / stride) + 1).
std::vector<int64_t> CeilExtra(const Tensor& x, const Window& w) {
  std::vector<int64_t> extra;
  for (size_t i = 0; i < w.kernel.size(); ++i) {
    int64_t span = x.size(2 + i) + w.pad_begin[i] + w.pad_end[i];
    int64_t k = (w.kernel[i] - 1) * w.dilations[i] + 1;
    int64_t out = (span - k + w.strides[i] - 1) / w.strides[i] + 1;
    extra.push_back(std::max<int64_t>(0, (out - 1) * w.strides[i] + k - span));
  }
  return extra;
}

std::vector<int64_t> Add(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  std::vector<int64_t> r(a);
  for (size_t i = 0; i < r.size(); ++i) r[i] += b[i];
  return r;
}

// Reshape a per-axis parameter (length C) so it broadcasts along `axis` of `rank`.
Tensor AlongAxis(const Tensor& p, int64_t axis, int64_t rank) {
  if (p.dim() == 0) return p;
  std::vector<int64_t> shape(rank, 1);
  shape[axis] = p.numel();
  return p.reshape(shape);
}

// ---- kernels --------------------------------------------------------------------

Outputs Conv(const KernelContext& ctx) {
  const Tensor& x = In(ctx, 0);
  const Tensor& weight = In(ctx, 1);
  std::vector<int64_t> kernel(weight.sizes().begin() + 2, weight.sizes().end());
  kernel = ctx.node.GetInts("kernel_shape", kernel);
  Window w = ResolveWindow(ctx, x, kernel);
  Tensor input = x;
  std::vector<int64_t> padding = w.pad_begin;
  if (!SymmetricPads(w, false)) {
    input = PadSpatial(x, w.pad_begin, w.pad_end, 0);
    std::fill(padding.begin(), padding.end(), 0);
  }
  Tensor bias = Has(ctx, 2) ? In(ctx, 2) : Tensor();
  const int64_t groups = ctx.node.GetInt("group", 1);
  // conv1d/2d/3d rather than at::convolution: they are the ops autocast (mixed
  // precision) casts; at::convolution itself is not on its lists.
  switch (kernel.size()) {
    case 1: return {at::conv1d(input, weight, bias, w.strides, padding, w.dilations, groups)};
    case 2: return {at::conv2d(input, weight, bias, w.strides, padding, w.dilations, groups)};
    case 3: return {at::conv3d(input, weight, bias, w.strides, padding, w.dilations, groups)};
    default: break;
  }
  return {at::convolution(input, weight, bias, w.strides, padding, w.dilations, false,
                          std::vector<int64_t>(kernel.size(), 0), groups)};
}

Outputs Gemm(const KernelContext& ctx) {
  const double alpha = ctx.node.GetFloat("alpha", 1.0);
  const double beta = ctx.node.GetFloat("beta", 1.0);
  const bool trans_a = ctx.node.GetInt("transA", 0) != 0;
  const bool trans_b = ctx.node.GetInt("transB", 0) != 0;
  const Tensor& a = In(ctx, 0);
  const Tensor& b = In(ctx, 1);
  // Fast path: a fully connected layer.
  if (!trans_a && trans_b && alpha == 1.0 && beta == 1.0 && (!Has(ctx, 2) || In(ctx, 2).dim() == 1)) {
    return {Linear(a, b, Has(ctx, 2) ? In(ctx, 2) : Tensor())};
  }
  Tensor y = at::mm(trans_a ? a.t() : a, trans_b ? b.t() : b);
  if (alpha != 1.0) y = y * alpha;
  if (Has(ctx, 2)) y = beta == 1.0 ? y + In(ctx, 2) : y + In(ctx, 2) * beta;
  return {y};
}

Outputs MatMul(const KernelContext& ctx) { return {at::matmul(In(ctx, 0), In(ctx, 1))}; }
Outputs AddOp(const KernelContext& ctx) { return {In(ctx, 0) + In(ctx, 1)}; }
Outputs SubOp(const KernelContext& ctx) { return {In(ctx, 0) - In(ctx, 1)}; }
Outputs MulOp(const KernelContext& ctx) { return {In(ctx, 0) * In(ctx, 1)}; }
Outputs DivOp(const KernelContext& ctx) {
  const Tensor& a = In(ctx, 0);
  // ONNX integer Div truncates toward zero (C semantics).
  if (!a.is_floating_point()) return {at::div(a, In(ctx, 1), "trunc")};
  return {a / In(ctx, 1)};
}

Outputs Relu(const KernelContext& ctx) { return {at::relu(In(ctx, 0))}; }
Outputs LeakyRelu(const KernelContext& ctx) {
  return {at::leaky_relu(In(ctx, 0), ctx.node.GetFloat("alpha", 0.01))};
}
Outputs Sigmoid(const KernelContext& ctx) { return {at::sigmoid(In(ctx, 0))}; }
Outputs Tanh(const KernelContext& ctx) { return {at::tanh(In(ctx, 0))}; }
Outputs HardSigmoid(const KernelContext& ctx) {
  const double alpha = ctx.node.GetFloat("alpha", 0.2);
  const double beta = ctx.node.GetFloat("beta", 0.5);
  return {at::clamp(In(ctx, 0) * alpha + beta, 0.0, 1.0)};
}
Outputs HardSwish(const KernelContext& ctx) { return {at::hardswish(In(ctx, 0))}; }
Outputs Erf(const KernelContext& ctx) { return {at::erf(In(ctx, 0))}; }
Outputs Gelu(const KernelContext& ctx) {
  return {at::gelu(In(ctx, 0), ctx.node.GetString("approximate", "none"))};
}

Outputs Clip(const KernelContext& ctx) {
  const Tensor& x = In(ctx, 0);
  if (ctx.opset < 11) {
    c10::optional<at::Scalar> lo, hi;
    if (ctx.node.HasAttr("min")) lo = ctx.node.GetFloat("min");
    if (ctx.node.HasAttr("max")) hi = ctx.node.GetFloat("max");
    if (!lo && !hi) return {x};
    return {at::clamp(x, lo, hi)};
  }
  c10::optional<Tensor> lo, hi;
  if (Has(ctx, 1)) lo = In(ctx, 1).to(x.scalar_type());
  if (Has(ctx, 2)) hi = In(ctx, 2).to(x.scalar_type());
  if (!lo && !hi) return {x};
  return {at::clamp(x, lo, hi)};
}

Outputs BatchNormalization(const KernelContext& ctx) {
  const Tensor& x = In(ctx, 0);
  const Tensor& scale = In(ctx, 1);
  const Tensor& bias = In(ctx, 2);
  // Running statistics are never differentiated (detach shares storage, so the
  // in-place update in training mode still reaches the graph's tensors).
  Tensor mean = In(ctx, 3).detach();
  Tensor var = In(ctx, 4).detach();
  const double eps = ctx.node.GetFloat("epsilon", 1e-5);
  const double momentum = ctx.node.GetFloat("momentum", 0.9);
  const bool onnx_training = ctx.node.GetInt("training_mode", 0) != 0;
  if (onnx_training) {
    // ONNX reference semantics (opset 14+): normalise with the biased batch variance
    // and return running statistics blended with `momentum`; inputs stay untouched.
    std::vector<int64_t> axes = {0};
    for (int64_t d = 2; d < x.dim(); ++d) axes.push_back(d);
    Tensor batch_mean = x.mean(axes);
    Tensor batch_var = x.var(axes, /*unbiased=*/false);
    Tensor y = at::batch_norm(x, scale, bias, Tensor(), Tensor(), true, 0.0, eps, false);
    return {y, In(ctx, 3) * momentum + batch_mean * (1 - momentum),
            In(ctx, 4) * momentum + batch_var * (1 - momentum)};
  }
  if (ctx.training && ctx.replica_sum != nullptr) {
    // Synchronised BatchNorm (data-parallel): per-channel sums of x and x^2 and the
    // count, summed over the replicas, give the global batch's mean and biased
    // variance; the running variance takes the unbiased one, as PyTorch's does.
    std::vector<int64_t> axes = {0};
    for (int64_t d = 2; d < x.dim(); ++d) axes.push_back(d);
    const int64_t channels = x.size(1);
    const Tensor xf = x.to(at::kFloat);
    const Tensor count = at::full({1}, static_cast<double>(x.numel() / std::max<int64_t>(channels, 1)),
                                  xf.options());
    const Tensor sums = (*ctx.replica_sum)(at::cat({xf.sum(axes), (xf * xf).sum(axes), count}));
    const Tensor n = sums.narrow(0, 2 * channels, 1);
    const Tensor batch_mean = sums.narrow(0, 0, channels) / n;
    const Tensor batch_var = (sums.narrow(0, channels, channels) / n - batch_mean * batch_mean).clamp_min(0);
    std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
    shape[1] = channels;
    const Tensor y = (xf - batch_mean.view(shape)) * at::rsqrt(batch_var.view(shape) + eps) *
                         scale.view(shape) + bias.view(shape);
    {
      // Tensor arithmetic throughout: no host sync on an accelerator.
      at::NoGradGuard no_grad;
      const double pt_momentum = 1.0 - momentum;
      mean.mul_(1 - pt_momentum).add_(batch_mean.detach().to(mean.scalar_type()), pt_momentum);
      const Tensor unbiased = batch_var.detach() * (n / (n - 1).clamp_min(1));
      var.mul_(1 - pt_momentum).add_(unbiased.to(var.scalar_type()), pt_momentum);
    }
    return {y.to(x.scalar_type())};
  }
  if (ctx.training) {
    // Executor training mode: PyTorch semantics, running statistics updated in place
    // (PyTorch's momentum is 1 - ONNX's momentum).
    return {at::batch_norm(x, scale, bias, mean, var, true, 1.0 - momentum, eps, false)};
  }
  return {at::batch_norm(x, scale, bias, mean, var, false, 0.0, eps, false)};
}

// A 2-D pool whose windows tile the input exactly: kernel == stride, no padding, no
// dilation, and each spatial size a multiple of the kernel (ceil_mode then changes
// nothing).
bool NonOverlappingPool(const Tensor& x, const Window& w, const std::vector<int64_t>& padding) {
  if (w.kernel.size() != 2 || x.dim() != 4 || !x.is_floating_point()) return false;
  for (size_t i = 0; i < 2; ++i) {
    const int64_t k = w.kernel[i];
    if (k < 1 || k > 3 || w.strides[i] != k || padding[i] != 0 || w.dilations[i] != 1 ||
        x.size(2 + static_cast<int64_t>(i)) % k != 0 || x.size(2 + static_cast<int64_t>(i)) == 0) {
      return false;
    }
  }
  return true;
}

Outputs MaxPool(const KernelContext& ctx) {
  const Tensor& x = In(ctx, 0);
  const Window w = ResolveWindow(ctx, x, ctx.node.GetInts("kernel_shape"));
  const bool ceil_mode = ctx.node.GetInt("ceil_mode", 0) != 0;
  const bool want_indices = ctx.node.outputs.size() > 1 && !ctx.node.outputs[1].empty();
  const size_t n = w.kernel.size();
  if (n < 1 || n > 3) Fail(ctx, "only 1-D, 2-D and 3-D MaxPool are supported");
  Tensor input = x;
  std::vector<int64_t> padding = w.pad_begin;
  bool use_ceil = ceil_mode;
  const bool integer = !x.is_floating_point();
  if (integer) input = input.to(torch::kFloat);  // pooling kernels are float-only
  if (!SymmetricPads(w, true)) {
    if (want_indices) Fail(ctx, "Indices output with asymmetric padding is not supported");
    std::vector<int64_t> end = w.pad_end;
    if (ceil_mode) end = Add(end, CeilExtra(x, w));
    input = PadSpatial(input, w.pad_begin, end, Lowest(x.scalar_type()));
    std::fill(padding.begin(), padding.end(), 0);
    use_ceil = false;
  }
  Tensor y, indices;
  const bool tiled = !want_indices && NonOverlappingPool(input, w, padding);
  if (tiled && w.kernel[0] == 2 && w.kernel[1] == 2 && MaxPool2x2Applies(input)) {
    // 2x2 windows with stride 2 (the zoo's pools) on CPU float32: one vectorised pass,
    // bit-identical to LibTorch's kernel and its gradient, 20x faster than LibTorch
    // 1.13's NCHW kernel in the forward (max_pool.h; bench/RESULTS.md "Every core, no
    // page faults").
    y = MaxPool2x2(input);
  } else if (tiled && !(at::GradMode::is_enabled() && input.requires_grad())) {
    // Other tiling windows at inference: the maximum of the k^2 strided views,
    // elementwise. Bit-identical to max_pool2d_with_indices (a maximum is exact; NaN
    // propagates in both) and 2-4x faster than LibTorch 1.13's NCHW max_pool2d
    // kernel. Not with autograd: at::maximum splits a tie's gradient, the pooling
    // kernel gives it to the first maximum.
    const int64_t kh = w.kernel[0], kw = w.kernel[1];
    const int64_t oh = input.size(2) / kh, ow = input.size(3) / kw;
    for (int64_t i = 0; i < kh; ++i) {
      for (int64_t j = 0; j < kw; ++j) {
        const Tensor v = input.slice(2, i, i + (oh - 1) * kh + 1, kh)
                             .slice(3, j, j + (ow - 1) * kw + 1, kw);
        y = y.defined() ? at::maximum(y, v) : v;
      }
    }
    if (kh * kw == 1) y = y.clone();
  } else if (n == 1) {
    std::tie(y, indices) = at::max_pool1d_with_indices(input, w.kernel, w.strides, padding,
                                                       w.dilations, use_ceil);
  } else if (n == 2) {
    std::tie(y, indices) = at::max_pool2d_with_indices(input, w.kernel, w.strides, padding,
                                                       w.dilations, use_ceil);
  } else {
    std::tie(y, indices) = at::max_pool3d_with_indices(input, w.kernel, w.strides, padding,
                                                       w.dilations, use_ceil);
  }
  if (integer) y = y.to(x.scalar_type());
  if (!want_indices) return {y};
  // PyTorch indexes within each (n, c) plane; ONNX flattens the whole tensor, in
  // row-major order (storage_order 0) or column-major order (storage_order 1).
  int64_t plane = 1;
  for (size_t i = 0; i < n; ++i) plane *= x.size(2 + i);
  Tensor base = torch::arange(x.size(0) * x.size(1), indices.options()) * plane;
  std::vector<int64_t> base_shape = {x.size(0), x.size(1)};
  base_shape.resize(x.dim(), 1);
  base = base.reshape(base_shape);
  if (ctx.node.GetInt("storage_order", 0) == 1) {
    if (n != 2) Fail(ctx, "storage_order=1 is supported for 2-D pooling only");
    Tensor h = indices.div(x.size(3), "floor");
    Tensor wcol = indices.remainder(x.size(3));
    indices = wcol * x.size(2) + h;
  }
  return {y, indices + base};
}

Outputs AveragePool(const KernelContext& ctx) {
  const Tensor& x = In(ctx, 0);
  const Window w = ResolveWindow(ctx, x, ctx.node.GetInts("kernel_shape"));
  const bool ceil_mode = ctx.node.GetInt("ceil_mode", 0) != 0;
  const bool include_pad = ctx.node.GetInt("count_include_pad", 0) != 0;
  const size_t n = w.kernel.size();
  if (n < 1 || n > 3) Fail(ctx, "only 1-D, 2-D and 3-D AveragePool are supported");
  for (auto d : w.dilations) {
    if (d != 1) Fail(ctx, "dilated AveragePool is not supported");
  }
  auto pool = [&](const Tensor& t, const std::vector<int64_t>& padding, bool ceil,
                  bool count_pad) {
    if (n == 1) return at::avg_pool1d(t, w.kernel, w.strides, padding, ceil, count_pad);
    if (n == 2) {
      return at::avg_pool2d(t, w.kernel, w.strides, padding, ceil, count_pad, c10::nullopt);
    }
    return at::avg_pool3d(t, w.kernel, w.strides, padding, ceil, count_pad, c10::nullopt);
  };
  if (SymmetricPads(w, true)) return {pool(x, w.pad_begin, ceil_mode, include_pad)};
  // General padding: sum of the padded window divided by the number of cells that
  // count (real cells, plus pad cells when count_include_pad; never cells that only
  // exist to complete a ceil_mode window).
  std::vector<int64_t> end = w.pad_end;
  std::vector<int64_t> extra(n, 0);
  if (ceil_mode) extra = CeilExtra(x, w);
  const std::vector<int64_t> zeros(n, 0);
  Tensor ones = torch::ones({1, 1}, x.options());
  std::vector<int64_t> plane_shape = {1, 1};
  for (size_t i = 0; i < n; ++i) plane_shape.push_back(x.size(2 + i));
  ones = torch::ones(plane_shape, x.options());
  Tensor count = PadSpatial(ones, w.pad_begin, w.pad_end, include_pad ? 1.0 : 0.0);
  count = PadSpatial(count, zeros, extra, 0.0);
  Tensor padded = PadSpatial(PadSpatial(x, w.pad_begin, w.pad_end, 0.0), zeros, extra, 0.0);
  Tensor sums = pool(padded, zeros, false, true);
  Tensor counts = pool(count, zeros, false, true);
  return {sums / counts};
}

Outputs GlobalAveragePool(const KernelContext& ctx) {
  const Tensor& x = In(ctx, 0);
  std::vector<int64_t> dims;
  for (int64_t d = 2; d < x.dim(); ++d) dims.push_back(d);
  return {x.mean(dims, /*keepdim=*/true)};
}

Outputs Flatten(const KernelContext& ctx) {
  const Tensor& x = In(ctx, 0);
  int64_t axis = ctx.node.GetInt("axis", 1);
  const int64_t given = axis;
  if (axis < 0) axis += x.dim();
  if (axis < 0 || axis > x.dim()) {
    throw Error(ErrorKind::kIo, ctx.node.Describe() + ": attribute axis=" + std::to_string(given) +
                                    " is out of range for a rank-" + std::to_string(x.dim()) +
                                    " input; expected " + std::to_string(-x.dim()) + ".." +
                                    std::to_string(x.dim()));
  }
  int64_t outer = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= x.size(d);
  return {x.reshape({outer, outer == 0 ? 0 : x.numel() / std::max<int64_t>(outer, 1)})};
}

Outputs Reshape(const KernelContext& ctx) {
  const Tensor& x = In(ctx, 0);
  std::vector<int64_t> shape = ToInts(In(ctx, 1));
  const bool allow_zero = ctx.node.GetInt("allowzero", 0) != 0;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == 0 && !allow_zero) {
      if (static_cast<int64_t>(i) >= x.dim()) Fail(ctx, "0 in shape beyond input rank");
      shape[i] = x.size(i);
    }
  }
  return {x.reshape(shape)};
}

Outputs Transpose(const KernelContext& ctx) {
  const Tensor& x = In(ctx, 0);
  std::vector<int64_t> perm;
  for (int64_t d = x.dim() - 1; d >= 0; --d) perm.push_back(d);
  return {x.permute(ctx.node.GetInts("perm", perm))};
}

std::vector<int64_t> AxesArg(const KernelContext& ctx, size_t input_index) {
  if (ctx.opset >= 13) return Has(ctx, input_index) ? ToInts(In(ctx, input_index))
                                                     : std::vector<int64_t>{};
  return ctx.node.GetInts("axes");
}

Outputs Squeeze(const KernelContext& ctx) {
  const Tensor& x = In(ctx, 0);
  std::vector<int64_t> axes = AxesArg(ctx, 1);
  if (axes.empty()) {
    std::vector<int64_t> shape;
    for (int64_t d = 0; d < x.dim(); ++d) {
      if (x.size(d) != 1) shape.push_back(x.size(d));
    }
    return {x.reshape(shape)};
  }
  std::vector<bool> drop(x.dim(), false);
  for (auto a : axes) {
    a = NormAxis(ctx, a, x.dim());
    if (x.size(a) != 1) Fail(ctx, "cannot squeeze axis " + std::to_string(a) + " of size " + std::to_string(x.size(a)));
    drop[a] = true;
  }
  std::vector<int64_t> shape;
  for (int64_t d = 0; d < x.dim(); ++d) {
    if (!drop[d]) shape.push_back(x.size(d));
  }
  return {x.reshape(shape)};
}

Outputs Unsqueeze(const KernelContext& ctx) {
  Tensor x = In(ctx, 0);
  std::vector<int64_t> axes = AxesArg(ctx, 1);
  const int64_t out_rank = x.dim() + static_cast<int64_t>(axes.size());
  for (auto& a : axes) a = NormAxis(ctx, a, out_rank);
  std::sort(axes.begin(), axes.end());
  for (auto a : axes) x = x.unsqueeze(a);
  return {x};
}

Outputs Concat(const KernelContext& ctx) {
  std::vector<Tensor> parts;
  for (const auto& t : ctx.inputs) {
    if (t.defined()) parts.push_back(t);
  }
  int64_t axis = NormAxis(ctx, ctx.node.GetInt("axis"), parts.at(0).dim());
  return {at::cat(parts, axis)};
}

Outputs Split(const KernelContext& ctx) {
  const Tensor& x = In(ctx, 0);
  const int64_t axis = NormAxis(ctx, ctx.node.GetInt("axis", 0), x.dim());
  const int64_t parts = static_cast<int64_t>(ctx.node.outputs.size());
  std::vector<int64_t> sizes;
  if (ctx.opset >= 13) {
    if (Has(ctx, 1)) sizes = ToInts(In(ctx, 1));
  } else {
    sizes = ctx.node.GetInts("split");
  }
  if (sizes.empty()) {
    // Equal parts; since opset 18 the last part may be smaller (ceil division).
    int64_t dim = x.size(axis);
    int64_t chunk = (dim + parts - 1) / parts;
    for (int64_t i = 0; i < parts; ++i) {
      sizes.push_back(std::max<int64_t>(0, std::min(chunk, dim - i * chunk)));
    }
  }
  if (static_cast<int64_t>(sizes.size()) != parts) {
    Fail(ctx, "split sizes count " + std::to_string(sizes.size()) + " != outputs " +
                  std::to_string(parts));
  }
  return at::split_with_sizes(x, sizes, axis);
}

Outputs SliceOp(const KernelContext& ctx) {
  Tensor x = In(ctx, 0);
  std::vector<int64_t> starts, ends, axes, steps;
  if (ctx.opset < 10) {
    starts = ctx.node.GetInts("starts");
    ends = ctx.node.GetInts("ends");
    axes = ctx.node.GetInts("axes");
  } else {
    starts = ToInts(In(ctx, 1));
    ends = ToInts(In(ctx, 2));
    if (Has(ctx, 3)) axes = ToInts(In(ctx, 3));
    if (Has(ctx, 4)) steps = ToInts(In(ctx, 4));
  }
  if (axes.empty()) {
    for (size_t i = 0; i < starts.size(); ++i) axes.push_back(static_cast<int64_t>(i));
  }
  if (steps.empty()) steps.assign(starts.size(), 1);
  if (ends.size() != starts.size() || axes.size() != starts.size() ||
      steps.size() != starts.size()) {
    throw Error(ErrorKind::kIo, ctx.node.Describe() + ": starts/ends/axes/steps lengths differ");
  }
  for (size_t i = 0; i < starts.size(); ++i) {
    const int64_t axis = NormAxis(ctx, axes[i], x.dim());
    const int64_t dim = x.size(axis);
    const int64_t step = steps[i];
    if (step == 0) throw Error(ErrorKind::kIo, ctx.node.Describe() + ": step 0");
    // Clamp as the spec says: negative indices count from the end; positive steps
    // clamp to [0, dim], negative steps to [-1, dim-1].
    auto clamp = [&](int64_t v, int64_t lo, int64_t hi) {
      if (v < 0) v = v <= std::numeric_limits<int64_t>::min() + dim ? lo : v + dim;
      return std::min(std::max(v, lo), hi);
    };
    if (step > 0) {
      int64_t s = clamp(starts[i], 0, dim);
      int64_t e = clamp(ends[i], 0, dim);
      x = x.slice(axis, s, std::max(s, e), step);
    } else {
      int64_t s = clamp(starts[i], -1, dim - 1);
      int64_t e = clamp(ends[i], -1, dim - 1);
      if (s <= e) {
        x = x.slice(axis, 0, 0);
      } else {
        Tensor index = torch::arange(s, e, step, torch::TensorOptions().dtype(torch::kLong).device(x.device()));
        x = x.index_select(axis, index);
      }
    }
  }
  return {x};
}

Outputs Softmax(const KernelContext& ctx) {
  const Tensor& x = In(ctx, 0);
  if (ctx.opset < 13) {
    // Before opset 13 the input is coerced to 2-D at `axis` and normalised per row.
    int64_t axis = NormAxis(ctx, ctx.node.GetInt("axis", 1), x.dim());
    int64_t outer = 1;
    for (int64_t d = 0; d < axis; ++d) outer *= x.size(d);
    return {at::softmax(x.reshape({outer, -1}), 1).reshape(x.sizes())};
  }
  return {at::softmax(x, NormAxis(ctx, ctx.node.GetInt("axis", -1), x.dim()))};
}

Outputs LayerNormalization(const KernelContext& ctx) {
  const Tensor& x = In(ctx, 0);
  const int64_t axis = NormAxis(ctx, ctx.node.GetInt("axis", -1), x.dim());
  const double eps = ctx.node.GetFloat("epsilon", 1e-5);
  std::vector<int64_t> norm_shape(x.sizes().begin() + axis, x.sizes().end());
  const Tensor& scale = In(ctx, 1);
  Tensor bias = Has(ctx, 2) ? In(ctx, 2) : Tensor();
  const bool want_stats = ctx.node.outputs.size() > 1;
  if (!want_stats && scale.sizes().vec() == norm_shape &&
      (!bias.defined() || bias.sizes().vec() == norm_shape)) {
    return {at::layer_norm(x, norm_shape, scale, bias, eps)};
  }
  // General form (broadcast scale/bias, Mean and InvStdDev outputs).
  std::vector<int64_t> dims;
  for (int64_t d = axis; d < x.dim(); ++d) dims.push_back(d);
  Tensor mean = x.mean(dims, true);
  Tensor inv_std = at::rsqrt(x.var(dims, false, true) + eps);
  Tensor y = (x - mean) * inv_std * scale;
  if (bias.defined()) y = y + bias;
  return {y, mean, inv_std};
}

Outputs Dropout(const KernelContext& ctx) {
  const Tensor& x = In(ctx, 0);
  double ratio = ctx.opset < 12 ? ctx.node.GetFloat("ratio", 0.5)
                                : (Has(ctx, 1) ? In(ctx, 1).item<double>() : 0.5);
  bool training = ctx.training || (Has(ctx, 2) && In(ctx, 2).item<bool>());
  if (!training || ratio == 0.0) {
    return {x, torch::ones(x.sizes(), x.options().dtype(torch::kBool))};
  }
  Tensor keep = torch::rand(x.sizes(), x.options()) >= ratio;
  return {x * keep / (1.0 - ratio), keep};
}

Outputs Identity(const KernelContext& ctx) { return {In(ctx, 0)}; }

Outputs ConstantOp(const KernelContext& ctx) {
  const Node& node = ctx.node;
  if (node.HasAttr("value")) return {node.GetTensor("value")};
  if (node.HasAttr("value_float")) return {torch::scalar_tensor(node.GetFloat("value_float"), torch::kFloat)};
  if (node.HasAttr("value_int")) return {torch::scalar_tensor(node.GetInt("value_int"), torch::kLong)};
  if (node.HasAttr("value_floats")) {
    return {torch::tensor(node.GetFloats("value_floats"), torch::kDouble).to(torch::kFloat)};
  }
  if (node.HasAttr("value_ints")) return {torch::tensor(node.GetInts("value_ints"), torch::kLong)};
  Fail(ctx, "only value, value_float(s) and value_int(s) Constants are supported");
}

// Quantization parameters broadcast for per-tensor (scalar) or per-axis (1-D).
std::pair<Tensor, Tensor> QParams(const KernelContext& ctx, const Tensor& x,
                                  at::ScalarType zp_default) {
  Tensor scale = In(ctx, 1);
  Tensor zp = Has(ctx, 2) ? In(ctx, 2) : torch::zeros({}, scale.options().dtype(zp_default));
  if (scale.dim() == 1 && scale.numel() > 1) {
    const int64_t axis = NormAxis(ctx, ctx.node.GetInt("axis", 1), x.dim());
    scale = AlongAxis(scale, axis, x.dim());
    zp = AlongAxis(zp, axis, x.dim());
  }
  return {scale, zp};
}

Outputs QuantizeLinear(const KernelContext& ctx) {
  const Tensor& x = In(ctx, 0);
  auto [scale, zp] = QParams(ctx, x, torch::kByte);
  const at::ScalarType out_type = zp.scalar_type();
  double lo, hi;
  switch (out_type) {
    case at::kByte: lo = 0; hi = 255; break;
    case at::kChar: lo = -128; hi = 127; break;
    default: Fail(ctx, "QuantizeLinear to " + DtypeName(out_type) + " is not supported");
  }
  // Round half to even (torch::round), then saturate: the spec's formula (x / scale,
  // a division, as ONNX Runtime computes it). In place on the one temporary: these
  // tensors are activation-sized and the ops memory-bound.
  Tensor q = x / scale;
  q.round_().add_(zp.to(q.scalar_type())).clamp_(lo, hi);
  return {q.to(out_type)};
}

Outputs DequantizeLinear(const KernelContext& ctx) {
  const Tensor& x = In(ctx, 0);
  auto [scale, zp] = QParams(ctx, x, x.scalar_type());
  Tensor y = x.to(scale.scalar_type());
  if (x.scalar_type() == scale.scalar_type()) y = y.clone();  // never write the input
  return {y.sub_(zp.to(scale.scalar_type())).mul_(scale)};
}

// Training-only fake quantization (compress/runtime/fake_quant.h). Inputs x, scale,
// zero point; with x alone the scale is the symmetric max|x| / qmax per `axis` (the
// weights of quantize-qat when scales are not learned) and the zero point 0.
Outputs FakeQuantizeOp(const KernelContext& ctx) {
  // Under mixed precision a bfloat16/float16 input is quantized in float32: the grid
  // (and LSQ's scale gradient) needs float32's mantissa.
  const Tensor& input = In(ctx, 0);
  const Tensor x = input.is_floating_point() && input.element_size() < 4 ? input.to(at::kFloat) : input;
  FakeQuantSpec spec;
  spec.axis = ctx.node.GetInt("axis", -1);
  if (spec.axis >= 0) spec.axis = NormAxis(ctx, spec.axis, x.dim());
  spec.qmin = static_cast<double>(ctx.node.GetInt("qmin", 0));
  spec.qmax = static_cast<double>(ctx.node.GetInt("qmax", 255));
  spec.clipped = ctx.node.GetInt("clipped", 1) != 0;
  spec.grad_scale = ctx.node.GetFloat("grad_scale", 1.0);
  spec.scale_max = ctx.node.GetFloat("scale_max", 0.0);
  if (!(spec.qmax > spec.qmin)) Fail(ctx, "qmax must be greater than qmin");
  if (!(spec.scale_max >= 0)) Fail(ctx, "scale_max must be 0 (none) or positive");
  if (!Has(ctx, 1)) {
    const Tensor scale = SymmetricWeightScale(x, spec.axis, spec.qmax);
    return {FakeQuantizeSte(x, scale, torch::zeros_like(scale), spec)};
  }
  if (!Has(ctx, 2)) Fail(ctx, "a scale needs a zero point input");
  return {FakeQuantizeSte(x, In(ctx, 1), In(ctx, 2), spec)};
}

constexpr int kMany = 1 << 20;

// The registry table, sorted by op type.
const std::vector<OpSpec> kOps = {
    {"Add", AddOp, 2, 2, 1, 1, kElementwiseBinary},
    {"AveragePool", AveragePool, 1, 1, 1, 1, kChannelPool},
    {"BatchNormalization", BatchNormalization, 5, 5, 1, 5},
    {"Clip", Clip, 1, 3, 1, 1, kChannelwise},
    {"Concat", Concat, 1, kMany, 1, 1},
    {"Constant", ConstantOp, 0, 0, 1, 1},
    {"Conv", Conv, 2, 3, 1, 1},
    {"DequantizeLinear", DequantizeLinear, 2, 3, 1, 1},
    {"Div", DivOp, 2, 2, 1, 1, kElementwiseBinary},
    {"Dropout", Dropout, 1, 3, 1, 2, kChannelwise},
    {"Erf", Erf, 1, 1, 1, 1, kChannelwise},
    {"Flatten", Flatten, 1, 1, 1, 1, kSharesInputGrid},
    {"Gelu", Gelu, 1, 1, 1, 1, kChannelwise},
    {"Gemm", Gemm, 2, 3, 1, 1},
    {"GlobalAveragePool", GlobalAveragePool, 1, 1, 1, 1, kChannelPool},
    {"HardSigmoid", HardSigmoid, 1, 1, 1, 1, kChannelwise},
    {"HardSwish", HardSwish, 1, 1, 1, 1, kChannelwise},
    {"Identity", Identity, 1, 1, 1, 1, kChannelwise},
    {"LayerNormalization", LayerNormalization, 2, 3, 1, 3},
    {"LeakyRelu", LeakyRelu, 1, 1, 1, 1, kChannelwise},
    {"MatMul", MatMul, 2, 2, 1, 1},
    {"MaxPool", MaxPool, 1, 1, 1, 2, kChannelPool | kSharesInputGrid},
    {"Mul", MulOp, 2, 2, 1, 1, kElementwiseBinary},
    {"QuantizeLinear", QuantizeLinear, 2, 3, 1, 1},
    {"Relu", Relu, 1, 1, 1, 1, kChannelwise},
    {"Reshape", Reshape, 2, 2, 1, 1, kSharesInputGrid},
    {"Sigmoid", Sigmoid, 1, 1, 1, 1, kChannelwise},
    {"Slice", SliceOp, 1, 5, 1, 1},
    {"Softmax", Softmax, 1, 1, 1, 1},
    {"Split", Split, 1, 2, 1, kMany},
    {"Squeeze", Squeeze, 1, 2, 1, 1, kSharesInputGrid},
    {"Sub", SubOp, 2, 2, 1, 1, kElementwiseBinary},
    {"Tanh", Tanh, 1, 1, 1, 1, kChannelwise},
    {"Transpose", Transpose, 1, 1, 1, 1, kSharesInputGrid},
    {"Unsqueeze", Unsqueeze, 1, 2, 1, 1, kSharesInputGrid},
};

// Ops of kInternalDomain: training-time only, never imported or exported.
const std::vector<OpSpec> kInternalOps = {
    {"FakeQuantize", FakeQuantizeOp, 1, 3, 1, 1},
};

}  // namespace

const std::vector<OpSpec>& OpRegistry() { return kOps; }

const OpSpec* FindNodeOp(const Node& node) {
  if (node.domain.empty() || node.domain == "ai.onnx") return FindOp(node.op_type);
  if (node.domain != kInternalDomain) return nullptr;
  for (const OpSpec& spec : kInternalOps) {
    if (node.op_type == spec.op_type) return &spec;
  }
  return nullptr;
}

bool HasTrait(const std::string& op_type, OpTrait trait) {
  const OpSpec* spec = FindOp(op_type);
  return spec != nullptr && (spec->traits & trait) != 0;
}

const OpSpec* FindOp(const std::string& op_type) {
  auto it = std::lower_bound(kOps.begin(), kOps.end(), op_type,
                             [](const OpSpec& spec, const std::string& name) {
                               return name.compare(spec.op_type) > 0;
                             });
  return it != kOps.end() && op_type == it->op_type ? &*it : nullptr;
}

void ValidateGraph(const Graph& graph, const std::string& where, ErrorKind kind) {
  graph.Validate(where, kind, [kind](const Node& node, const std::string& prefix) {
    auto fail = [&](const std::string& msg) { throw Error(kind, prefix + msg); };
    const OpSpec* spec = FindNodeOp(node);
    if (spec == nullptr) {
      throw Error(ErrorKind::kUnsupported,
                  prefix + node.Describe() + ": op '" +
                      (node.domain.empty() ? "" : node.domain + "::") + node.op_type +
                      "' is not supported");
    }
    const int n_in = static_cast<int>(node.inputs.size());
    const int n_out = static_cast<int>(node.outputs.size());
    if (n_in < spec->min_inputs || n_in > spec->max_inputs) {
      fail(node.Describe() + " has " + std::to_string(n_in) + " inputs, expected " +
           std::to_string(spec->min_inputs) + ".." + std::to_string(spec->max_inputs));
    }
    if (n_out < spec->min_outputs || n_out > spec->max_outputs) {
      fail(node.Describe() + " has " + std::to_string(n_out) + " outputs, expected " +
           std::to_string(spec->min_outputs) + ".." + std::to_string(spec->max_outputs));
    }
  });
}

}  // namespace compress
