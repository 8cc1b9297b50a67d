// The TorchScript sources of the `_mc_*` helper methods: ONNX semantics that depend on
// input sizes (auto_pad windows, Reshape 0, Slice clamping, pooling with asymmetric
// pads...), written to match ops.cpp operation for operation so results are bit-exact.
#include "compress/io/torchscript_helpers.h"

#include <vector>

namespace compress::torchscript_detail {

const std::vector<HelperSource>& Helpers() {
  static const std::vector<HelperSource> kHelpers = {
      {"_mc_ints", {}, R"(
def _mc_ints(self, t: Tensor) -> List[int]:
    r: List[int] = t.reshape([-1]).to(4).tolist()
    return r
)"},
      {"_mc_pad", {}, R"(
def _mc_pad(self, x: Tensor, begin: List[int], end: List[int], value: float) -> Tensor:
    pad: List[int] = []
    n = len(begin)
    for j in range(n):
        pad.append(begin[n - 1 - j])
        pad.append(end[n - 1 - j])
    return torch.constant_pad_nd(x, pad, value)
)"},
      {"_mc_window", {}, R"(
def _mc_window(self, x: Tensor, kernel: List[int], strides: List[int], dilations: List[int], pads: List[int], auto_pad: int) -> Tuple[List[int], List[int]]:
    n = len(kernel)
    begin = pads[:n]
    end = pads[n:]
    if auto_pad == 1 or auto_pad == 2:
        for i in range(n):
            size = x.size(2 + i)
            out = (size + strides[i] - 1) // strides[i]
            total = max(0, (out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - size)
            small = total // 2
            big = total - small
            if auto_pad == 1:
                begin[i] = small
                end[i] = big
            else:
                begin[i] = big
                end[i] = small
    elif auto_pad == 3:
        begin = [0] * n
        end = [0] * n
    return begin, end
)"},
      {"_mc_symmetric", {}, R"(
def _mc_symmetric(self, kernel: List[int], dilations: List[int], begin: List[int], end: List[int], limit_half_kernel: bool) -> bool:
    for i in range(len(kernel)):
        if begin[i] != end[i]:
            return False
        if limit_half_kernel and begin[i] > ((kernel[i] - 1) * dilations[i] + 1) // 2:
            return False
    return True
)"},
      {"_mc_ceil_extra", {}, R"(
def _mc_ceil_extra(self, x: Tensor, kernel: List[int], strides: List[int], dilations: List[int], begin: List[int], end: List[int]) -> List[int]:
    extra: List[int] = []
    for i in range(len(kernel)):
        span = x.size(2 + i) + begin[i] + end[i]
        k = (kernel[i] - 1) * dilations[i] + 1
        out = (span - k + strides[i] - 1) // strides[i] + 1
        extra.append(max(0, (out - 1) * strides[i] + k - span))
    return extra
)"},
      {"_mc_conv", {"_mc_window", "_mc_symmetric", "_mc_pad"}, R"(
def _mc_conv(self, x: Tensor, w: Tensor, b: Optional[Tensor], kernel: List[int], strides: List[int], dilations: List[int], pads: List[int], auto_pad: int, group: int) -> Tensor:
    n = len(kernel)
    begin, end = self._mc_window(x, kernel, strides, dilations, pads, auto_pad)
    padding = begin
    if not self._mc_symmetric(kernel, dilations, begin, end, False):
        x = self._mc_pad(x, begin, end, 0.0)
        padding = [0] * n
    return torch.convolution(x, w, b, strides, padding, dilations, False, [0] * n, group)
)"},
      {"_mc_lowest", {}, R"(
def _mc_lowest(self, dtype: int) -> float:
    if dtype == 0:
        return 0.0
    if dtype == 1:
        return -128.0
    if dtype == 2:
        return -32768.0
    if dtype == 3:
        return -2147483648.0
    return -9223372036854775808.0
)"},
      {"_mc_max_pool", {"_mc_window", "_mc_symmetric", "_mc_pad", "_mc_ceil_extra", "_mc_lowest"}, R"(
def _mc_max_pool(self, x: Tensor, kernel: List[int], strides: List[int], dilations: List[int], pads: List[int], auto_pad: int, ceil_mode: bool) -> Tensor:
    n = len(kernel)
    begin, end = self._mc_window(x, kernel, strides, dilations, pads, auto_pad)
    dtype = x.dtype
    integer = not x.is_floating_point()
    lowest = float("-inf")
    if integer:
        lowest = self._mc_lowest(dtype)
        x = x.to(6)
    padding = begin
    use_ceil = ceil_mode
    if not self._mc_symmetric(kernel, dilations, begin, end, True):
        if ceil_mode:
            extra = self._mc_ceil_extra(x, kernel, strides, dilations, begin, end)
            end = [end[i] + extra[i] for i in range(n)]
        x = self._mc_pad(x, begin, end, lowest)
        padding = [0] * n
        use_ceil = False
    if n == 1:
        y = torch.max_pool1d(x, kernel, strides, padding, dilations, use_ceil)
    elif n == 2:
        y = torch.max_pool2d(x, kernel, strides, padding, dilations, use_ceil)
    else:
        y = torch.max_pool3d(x, kernel, strides, padding, dilations, use_ceil)
    if integer:
        y = y.to(dtype)
    return y
)"},
      {"_mc_avg", {}, R"(
def _mc_avg(self, x: Tensor, kernel: List[int], strides: List[int], padding: List[int], ceil_mode: bool, count_pad: bool) -> Tensor:
    n = len(kernel)
    if n == 1:
        return torch.avg_pool1d(x, kernel, strides, padding, ceil_mode, count_pad)
    if n == 2:
        return torch.avg_pool2d(x, kernel, strides, padding, ceil_mode, count_pad, None)
    return torch.avg_pool3d(x, kernel, strides, padding, ceil_mode, count_pad, None)
)"},
      {"_mc_average_pool", {"_mc_window", "_mc_symmetric", "_mc_pad", "_mc_ceil_extra", "_mc_avg"}, R"(
def _mc_average_pool(self, x: Tensor, kernel: List[int], strides: List[int], dilations: List[int], pads: List[int], auto_pad: int, ceil_mode: bool, count_pad: bool) -> Tensor:
    n = len(kernel)
    begin, end = self._mc_window(x, kernel, strides, dilations, pads, auto_pad)
    if self._mc_symmetric(kernel, dilations, begin, end, True):
        return self._mc_avg(x, kernel, strides, begin, ceil_mode, count_pad)
    extra = [0] * n
    if ceil_mode:
        extra = self._mc_ceil_extra(x, kernel, strides, dilations, begin, end)
    zeros = [0] * n
    plane = [1, 1] + x.size()[2:]
    ones = torch.ones(plane, dtype=x.dtype, device=x.device)
    pad_value = 0.0
    if count_pad:
        pad_value = 1.0
    count = self._mc_pad(self._mc_pad(ones, begin, end, pad_value), zeros, extra, 0.0)
    padded = self._mc_pad(self._mc_pad(x, begin, end, 0.0), zeros, extra, 0.0)
    return self._mc_avg(padded, kernel, strides, zeros, False, True) / self._mc_avg(count, kernel, strides, zeros, False, True)
)"},
      {"_mc_global_average_pool", {}, R"(
def _mc_global_average_pool(self, x: Tensor) -> Tensor:
    dims = [d for d in range(2, x.dim())]
    return x.mean(dims, True)
)"},
      {"_mc_flatten", {}, R"(
def _mc_flatten(self, x: Tensor, axis: int) -> Tensor:
    if axis < 0:
        axis += x.dim()
    if axis < 0 or axis > x.dim():
        assert False, "Flatten: axis out of range"
    outer = 1
    for d in range(axis):
        outer *= x.size(d)
    inner = 0
    if outer != 0:
        inner = x.numel() // max(outer, 1)
    return x.reshape([outer, inner])
)"},
      {"_mc_reshape", {}, R"(
def _mc_reshape(self, x: Tensor, shape: List[int], allow_zero: bool) -> Tensor:
    out: List[int] = []
    for i in range(len(shape)):
        s = shape[i]
        if s == 0 and not allow_zero:
            if i >= x.dim():
                assert False, "Reshape: 0 in shape beyond input rank"
            s = x.size(i)
        out.append(s)
    return x.reshape(out)
)"},
      {"_mc_reverse", {}, R"(
def _mc_reverse(self, x: Tensor) -> Tensor:
    return x.permute([x.dim() - 1 - d for d in range(x.dim())])
)"},
      {"_mc_squeeze", {}, R"(
def _mc_squeeze(self, x: Tensor, axes: List[int]) -> Tensor:
    shape: List[int] = []
    if len(axes) == 0:
        for d in range(x.dim()):
            if x.size(d) != 1:
                shape.append(x.size(d))
        return x.reshape(shape)
    drop = [False] * x.dim()
    for a in axes:
        if a < 0:
            a += x.dim()
        if x.size(a) != 1:
            assert False, "Squeeze: cannot squeeze an axis whose size is not 1"
        drop[a] = True
    for d in range(x.dim()):
        if not drop[d]:
            shape.append(x.size(d))
    return x.reshape(shape)
)"},
      {"_mc_unsqueeze", {}, R"(
def _mc_unsqueeze(self, x: Tensor, axes: List[int]) -> Tensor:
    rank = x.dim() + len(axes)
    norm: List[int] = []
    for a in axes:
        if a < 0:
            a += rank
        norm.append(a)
    norm.sort()
    for a in norm:
        x = x.unsqueeze(a)
    return x
)"},
      {"_mc_split", {}, R"(
def _mc_split(self, x: Tensor, axis: int, sizes: List[int], parts: int) -> List[Tensor]:
    if axis < 0:
        axis += x.dim()
    chunks: List[int] = []
    if len(sizes) == 0:
        dim = x.size(axis)
        chunk = (dim + parts - 1) // parts
        for i in range(parts):
            chunks.append(max(0, min(chunk, dim - i * chunk)))
    else:
        chunks = sizes
    if len(chunks) != parts:
        assert False, "Split: sizes count differs from the number of outputs"
    return torch.split_with_sizes(x, chunks, axis)
)"},
      {"_mc_slice", {}, R"(
def _mc_slice(self, x: Tensor, starts: List[int], ends: List[int], axes: List[int], steps: List[int]) -> Tensor:
    for i in range(len(starts)):
        axis = axes[i]
        if axis < 0:
            axis += x.dim()
        dim = x.size(axis)
        step = steps[i]
        if step == 0:
            assert False, "Slice: step 0"
        s = starts[i]
        e = ends[i]
        if s < 0:
            s += dim
        if e < 0:
            e += dim
        if step > 0:
            s = min(max(s, 0), dim)
            e = min(max(e, 0), dim)
            x = x.slice(axis, s, max(s, e), step)
        else:
            s = min(max(s, -1), dim - 1)
            e = min(max(e, -1), dim - 1)
            if s <= e:
                x = x.slice(axis, 0, 0)
            else:
                index = torch.arange(s, e, step, dtype=4, device=x.device)
                x = x.index_select(axis, index)
    return x
)"},
      {"_mc_softmax_2d", {}, R"(
def _mc_softmax_2d(self, x: Tensor, axis: int) -> Tensor:
    if axis < 0:
        axis += x.dim()
    outer = 1
    for d in range(axis):
        outer *= x.size(d)
    return torch.softmax(x.reshape([outer, -1]), 1).reshape(x.size())
)"},
      {"_mc_layer_norm", {"_mc_layer_norm_stats"}, R"(
def _mc_layer_norm(self, x: Tensor, scale: Tensor, bias: Optional[Tensor], axis: int, eps: float) -> Tensor:
    if axis < 0:
        axis += x.dim()
    norm_shape = x.size()[axis:]
    bias_fits = True
    if bias is not None:
        bias_fits = bias.size() == norm_shape
    if scale.size() == norm_shape and bias_fits:
        return torch.layer_norm(x, norm_shape, scale, bias, eps, True)
    y, mean, inv_std = self._mc_layer_norm_stats(x, scale, bias, axis, eps)
    return y
)"},
      {"_mc_layer_norm_stats", {}, R"(
def _mc_layer_norm_stats(self, x: Tensor, scale: Tensor, bias: Optional[Tensor], axis: int, eps: float) -> Tuple[Tensor, Tensor, Tensor]:
    if axis < 0:
        axis += x.dim()
    dims = [d for d in range(axis, x.dim())]
    mean = x.mean(dims, True)
    inv_std = torch.rsqrt(x.var(dims, False, True) + eps)
    y = (x - mean) * inv_std * scale
    if bias is not None:
        y = y + bias
    return y, mean, inv_std
)"},
      {"_mc_div", {}, R"(
def _mc_div(self, a: Tensor, b: Tensor) -> Tensor:
    if not a.is_floating_point():
        return torch.div(a, b, rounding_mode="trunc")
    return a / b
)"},
      {"_mc_along", {}, R"(
def _mc_along(self, p: Tensor, axis: int, x: Tensor) -> Tensor:
    if p.dim() == 0:
        return p
    if axis < 0:
        axis += x.dim()
    shape = [1] * x.dim()
    shape[axis] = p.numel()
    return p.reshape(shape)
)"},
      {"_mc_qparam", {"_mc_along"}, R"(
def _mc_qparam(self, p: Tensor, scale: Tensor, axis: int, x: Tensor) -> Tensor:
    if scale.dim() == 1 and scale.numel() > 1:
        return self._mc_along(p, axis, x)
    return p
)"},
  };
  return kHelpers;
}

}  // namespace compress::torchscript_detail
