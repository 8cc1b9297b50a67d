// 2x2 max pooling with stride 2 on the CPU: one vectorised pass that keeps the winner of
// each window for the backward (when autograd needs it), and a backward that writes each
// window's gradient without a separate zero-fill.
#pragma once

#include <ATen/ATen.h>

namespace compress {

// Whether MaxPool2x2 takes x: a CPU float32 4-D (NCHW) tensor with even, non-zero H and
// W. Everything else is for LibTorch's pooling kernels.
bool MaxPool2x2Applies(const at::Tensor& x);

// max_pool2d(x, 2, 2), with autograd when x requires grad, bit-identical to LibTorch's max_pool2d_with_indices
// and its backward: each window's value is its maximum, NaN propagates, and the gradient
// goes to the window's first maximum in row-major order (or its last NaN), as
// LibTorch's kernel picks them. Precondition: MaxPool2x2Applies(x).
at::Tensor MaxPool2x2(const at::Tensor& x);

}  // namespace compress
