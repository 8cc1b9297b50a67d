// Magnitude masks: rank |w| once with a stable sort, zero the first k.
#include "pruning/magnitude.h"

#include <torch/torch.h>

#include <cmath>

#include "compress/base/error.h"

namespace compress {

namespace {

void CheckSparsity(double sparsity) {
  if (!(sparsity >= 0.0 && sparsity < 1.0)) {
    throw Error(ErrorKind::kRecipe, "sparsity " + std::to_string(sparsity) +
                                        " is out of range; expected 0 <= sparsity < 1");
  }
}

// Mask of a flat score vector with its k smallest entries zeroed (stable order).
at::Tensor FlatMask(const at::Tensor& scores, int64_t k) {
  at::Tensor mask = torch::ones_like(scores);
  if (k <= 0) return mask;
  at::Tensor order = std::get<1>(scores.sort(/*stable=*/true, /*dim=*/0, /*descending=*/false));
  mask.index_fill_(0, order.slice(0, 0, k), 0);
  return mask;
}

}  // namespace

at::Tensor MagnitudeMask(const at::Tensor& weight, double sparsity) {
  CheckSparsity(sparsity);
  const int64_t k = std::llround(sparsity * static_cast<double>(weight.numel()));
  at::Tensor scores = weight.detach().abs().reshape(-1).to(torch::kFloat);
  return FlatMask(scores, k).reshape(weight.sizes()).to(weight.scalar_type());
}

std::vector<at::Tensor> GlobalMagnitudeMasks(const std::vector<at::Tensor>& weights,
                                             double sparsity) {
  CheckSparsity(sparsity);
  if (weights.empty()) return {};
  std::vector<at::Tensor> flat;
  int64_t total = 0;
  for (const auto& w : weights) {
    flat.push_back(w.detach().abs().reshape(-1).to(torch::kFloat).cpu());
    total += w.numel();
  }
  const int64_t k = std::llround(sparsity * static_cast<double>(total));
  at::Tensor mask = FlatMask(torch::cat(flat), k);
  std::vector<at::Tensor> masks;
  int64_t offset = 0;
  for (const auto& w : weights) {
    masks.push_back(mask.slice(0, offset, offset + w.numel())
                        .reshape(w.sizes())
                        .to(w.device(), w.scalar_type()));
    offset += w.numel();
  }
  return masks;
}

int64_t ApplyPersistentMask(Initializer& init, const at::Tensor& mask) {
  torch::NoGradGuard no_grad;
  at::Tensor m = mask.to(init.value.device(), init.value.scalar_type());
  if (init.mask.defined()) m = m * init.mask.to(m.device(), m.scalar_type());
  init.value.mul_(m);
  init.mask = m;
  return (m == 0).sum().item<int64_t>();
}

}  // namespace compress
