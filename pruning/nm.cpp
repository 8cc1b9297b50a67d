// N:M masks: move the reduction dim last, view as rows of M, rank within each row.
#include "pruning/nm.h"

#include <torch/torch.h>

#include <cmath>
#include <string>

#include "compress/base/error.h"

namespace compress {

namespace {

void CheckShape(const at::Tensor& w, int64_t n, int64_t m, int64_t dim) {
  if (!(n > 0 && n < m)) {
    throw Error(ErrorKind::kRecipe, "N:M pattern " + std::to_string(n) + ":" + std::to_string(m) +
                                        " is invalid; expected 0 < n < m");
  }
  if (dim < 0 || dim >= w.dim() || w.size(dim) % m != 0) {
    throw Error(ErrorKind::kInternal, "N:M: dimension " + std::to_string(dim) + " of a weight " +
                                          "is not a multiple of m=" + std::to_string(m));
  }
}

// The weight as rows of m consecutive entries along `dim`, and how to undo it.
at::Tensor Rows(const at::Tensor& w, int64_t dim, int64_t m) {
  return w.movedim(dim, -1).contiguous().reshape({-1, m});
}

at::Tensor Unrows(const at::Tensor& rows, const at::Tensor& like, int64_t dim) {
  std::vector<int64_t> moved = like.movedim(dim, -1).sizes().vec();
  return rows.reshape(moved).movedim(-1, dim).contiguous();
}

}  // namespace

int64_t ReductionDim(const std::string& op_type, bool trans_b) {
  if (op_type == "Conv") return 1;
  if (op_type == "Gemm") return trans_b ? 1 : 0;
  return 0;  // MatMul: B is [K, N]
}

at::Tensor NMMask(const at::Tensor& weight, int64_t n, int64_t m, int64_t dim,
                  double group_fraction) {
  CheckShape(weight, n, m, dim);
  if (!(group_fraction >= 0.0 && group_fraction <= 1.0)) {
    throw Error(ErrorKind::kInternal, "N:M group fraction out of [0, 1]");
  }
  at::Tensor scores = Rows(weight.detach().abs().to(torch::kFloat), dim, m);
  // Stable descending sort per row: the first n positions are kept.
  at::Tensor order = std::get<1>(scores.sort(/*stable=*/true, /*dim=*/1, /*descending=*/true));
  at::Tensor row_mask = torch::zeros_like(scores);
  row_mask.scatter_(1, order.slice(1, 0, n), 1.0);
  if (group_fraction < 1.0) {
    // Enforce the pattern on the groups where it costs the least magnitude.
    const int64_t groups = scores.size(0);
    const int64_t k = std::llround(group_fraction * static_cast<double>(groups));
    at::Tensor cost = (scores * (1 - row_mask)).sum(1);
    at::Tensor by_cost = std::get<1>(cost.sort(/*stable=*/true, /*dim=*/0, /*descending=*/false));
    at::Tensor dense = torch::ones({groups}, scores.options());
    dense.index_fill_(0, by_cost.slice(0, 0, k), 0);
    row_mask = torch::maximum(row_mask, dense.unsqueeze(1));
  }
  return Unrows(row_mask, weight, dim).to(weight.scalar_type());
}

int64_t CountNMViolations(const at::Tensor& weight, int64_t n, int64_t m, int64_t dim) {
  CheckShape(weight, n, m, dim);
  at::Tensor nonzeros = (Rows(weight.detach(), dim, m) != 0).sum(1);
  return (nonzeros > n).sum().item<int64_t>();
}

}  // namespace compress
