// Distillation losses and adapters: whole-tensor ATen ops, no per-element loops.
#include "distill/losses.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <algorithm>
#include <tuple>

#include "compress/base/error.h"

namespace compress {

Tensor HardLabelLoss(const Tensor& logits, const Tensor& targets, double label_smoothing) {
  // The trainer's own loss, so that alpha = 0 trains exactly as the train pass does.
  return torch::nn::functional::cross_entropy(
      logits.to(torch::kFloat), targets,
      torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(label_smoothing));
}

Tensor KdLoss(const Tensor& student_logits, const Tensor& teacher_logits, double temperature) {
  if (!(temperature > 0)) {
    throw Error(ErrorKind::kRecipe,
                "KdLoss: temperature must be > 0; got " + std::to_string(temperature));
  }
  const Tensor log_p_s = torch::log_softmax(student_logits.to(torch::kFloat) / temperature, 1);
  const Tensor log_p_t =
      torch::log_softmax(teacher_logits.detach().to(torch::kFloat) / temperature, 1);
  // KL(p_t || p_s) = Σ p_t (log p_t − log p_s); log-space keeps p_t = 0 terms at 0.
  const Tensor kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum();
  const auto n = static_cast<double>(std::max<int64_t>(student_logits.size(0), 1));
  return kl * (temperature * temperature / n);
}

Tensor HintLoss(const Tensor& student_feature, const Tensor& teacher_feature) {
  return torch::mse_loss(student_feature.to(torch::kFloat),
                         teacher_feature.detach().to(torch::kFloat));
}

Tensor AttentionMap(const Tensor& feature, double p) {
  if (feature.dim() != 4) {
    throw Error(ErrorKind::kUnsupported, "AttentionMap: expected a feature [N, C, H, W]; got " +
                                             std::to_string(feature.dim()) + " dims");
  }
  const Tensor q = feature.to(torch::kFloat).abs().pow(p).mean(1).flatten(1);
  return q / q.norm(2, {1}, /*keepdim=*/true).clamp_min(1e-12);
}

Tensor AttentionLoss(const Tensor& student_feature, const Tensor& teacher_feature) {
  const Tensor diff = AttentionMap(student_feature) - AttentionMap(teacher_feature.detach());
  return diff.pow(2).sum(1).mean();
}

Adapter InitAdapter(int64_t out, int64_t in, uint64_t seed, const c10::Device& device) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  const Tensor gaussian = torch::randn({std::max(out, in), std::min(out, in)}, gen);
  Tensor q, r;
  std::tie(q, r) = torch::linalg_qr(gaussian);  // reduced: q [max, min], orthonormal columns
  // Fix the signs (R's diagonal positive) so the factor is unique for a given seed.
  q = q * torch::sign(torch::diagonal(r)).unsqueeze(0);
  Adapter a;
  a.weight = (out >= in ? q : q.t()).contiguous().clone().to(device);  // a leaf of its own
  a.bias = torch::zeros({out}, torch::dtype(torch::kFloat).device(device));
  return a;
}

Tensor ApplyAdapter(const Adapter& adapter, const Tensor& feature) {
  const Tensor x = feature.to(torch::kFloat);
  if (x.dim() == 2) return torch::nn::functional::linear(x, adapter.weight, adapter.bias);
  if (x.dim() == 4) {
    return torch::conv2d(x, adapter.weight.unsqueeze(-1).unsqueeze(-1), adapter.bias);
  }
  throw Error(ErrorKind::kUnsupported,
              "ApplyAdapter: expected a feature [N, C] or [N, C, H, W]; got " +
                  std::to_string(x.dim()) + " dims");
}

}  // namespace compress
