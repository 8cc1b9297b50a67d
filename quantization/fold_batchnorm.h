// BatchNorm folding: a BatchNormalization that only normalises a Conv's (or a
// Gemm transB=1's) output is folded into that layer's weight and bias, in inference
// form (running statistics). Quantization folds first so the integer kernel sees the
// weights the model really applies (Jacob et al. 2018, "Quantization and Training of
// Neural Networks for Efficient Integer-Arithmetic-Only Inference", sec. 3.2):
//   k = gamma / sqrt(var + eps),  W' = W * k (per output channel),  b' = (b - mean) * k + beta.
#pragma once

#include <memory>

#include "compress/pass/options.h"
#include "compress/pass/pass.h"

namespace compress {

// The folding math, pure: k = gamma / sqrt(var + eps) per output channel (axis 0 of
// `w`), W' = W * k, b' = (b - mean) * k + beta, with an undefined `b` read as zeros. In
// double; the caller stores the results in the layer's dtypes.
struct FoldedWeights {
  Tensor weight, bias;
};
FoldedWeights FoldBatchNormWeights(const Tensor& w, const Tensor& b, const Tensor& gamma,
                                   const Tensor& beta, const Tensor& mean, const Tensor& var,
                                   double eps);

// Folds every foldable BatchNormalization in place and returns how many were folded.
// A BN is folded when its input is the only use of a Conv/Gemm output (not a graph
// output), the layer's weight/bias and the BN's parameters are initializers used by
// nobody else, and only its first output is used. Pruning masks stay valid (scaling
// keeps zeros). Others are left alone and listed in `skipped` with the reason.
int64_t FoldBatchNorm(Graph& graph, std::vector<SkippedLayer>* skipped = nullptr);

// `fold-batchnorm`: the pass around FoldBatchNorm (no options).
class FoldBatchNormPass : public Pass {
 public:
  static std::unique_ptr<Pass> Create(OptionReader& options);
  PassResult Run(Graph& graph, PassContext& ctx) override;
};

}  // namespace compress
