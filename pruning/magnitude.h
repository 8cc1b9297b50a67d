// Magnitude pruning math (pure functions on tensors): which weights to zero for a
// target sparsity, per tensor or across tensors (global threshold).
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "compress/ir/graph.h"

namespace compress {

// 0/1 mask (same shape and dtype as `weight`) zeroing exactly round(sparsity * numel)
// entries of smallest |weight|; ties are broken by position (lower index pruned
// first), so the result is deterministic. Requires 0 <= sparsity < 1.
at::Tensor MagnitudeMask(const at::Tensor& weight, double sparsity);

// Masks for several tensors with one global magnitude ranking: exactly
// round(sparsity * total) entries are zeroed over all tensors together.
std::vector<at::Tensor> GlobalMagnitudeMasks(const std::vector<at::Tensor>& weights,
                                             double sparsity);

// Zeroes `init`'s value where `mask` is 0 and keeps the mask on the initializer (the
// product with any earlier mask, so pruned weights never come back). Returns the number
// of zeros of the resulting mask.
int64_t ApplyPersistentMask(Initializer& init, const at::Tensor& mask);

}  // namespace compress
