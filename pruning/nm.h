// N:M semi-structured sparsity math (pure functions): in every run of M consecutive
// weights along a layer's input (reduction) dimension keep the N largest |w|. With
// N:M = 2:4 this is the pattern NVIDIA's sparse tensor cores accelerate (Mishra et al.
// 2021, "Accelerating Sparse Deep Neural Networks"): for a Conv the runs are M
// consecutive input channels at each (kh, kw) position, as in its implicit GEMM.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>

namespace compress {

// Which weight dimension is the reduction (input) dimension of a layer: 1 for Conv
// [out, in, kh, kw] and Gemm with transB=1 [out, in]; 0 for Gemm transB=0 and MatMul
// [in, out].
int64_t ReductionDim(const std::string& op_type, bool trans_b);

// 0/1 mask (shape and dtype of `weight`) keeping the `n` largest |w| of each group of
// `m` consecutive entries along `dim` (ties kept in index order). With
// `group_fraction` < 1 only that fraction of the groups (round(f * groups)), those
// whose pattern drops the least |w|, gets the pattern; the rest stay dense (gradual
// N:M). Requires 0 < n < m, size(dim) % m == 0, 0 <= group_fraction <= 1.
at::Tensor NMMask(const at::Tensor& weight, int64_t n, int64_t m, int64_t dim,
                  double group_fraction = 1.0);

// Number of groups of `m` consecutive entries along `dim` holding more than `n`
// non-zeros: 0 means the weight satisfies N:M. Requires size(dim) % m == 0.
int64_t CountNMViolations(const at::Tensor& weight, int64_t n, int64_t m, int64_t dim);

}  // namespace compress
