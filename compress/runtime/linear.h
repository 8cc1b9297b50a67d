// Fully connected layers whose GEMMs use every intra-op thread on the CPU.
#pragma once

#include <ATen/ATen.h>

namespace compress {

// y = x w^T + b for a 2-D x [M, K], w [N, K] and b [N] (or undefined): at::linear, except
// that on CPU float32 tensors with more than one LibTorch thread and BLAS on the calling
// thread (ConfigureThreads pins OpenBLAS there, so only one thread pool runs), a GEMM
// big enough to pay runs as one slice per thread: the forward and the input gradient
// split over rows of x, the weight gradient over rows of w. Differentiable (its own
// autograd function; no double backward). Results equal at::linear's to float
// rounding, not bit for bit: OpenBLAS's summation blocking depends on the GEMM's shape.
// They are deterministic for a given thread count. Anything else (other devices and
// dtypes, autocast, a BLAS with its own threads, small GEMMs) is at::linear.
at::Tensor Linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b);

}  // namespace compress
