// The losses of knowledge distillation as pure tensor functions, each with its source:
// hard-label cross-entropy, Hinton KD on temperature-softened logits, FitNets feature
// hints, attention transfer, and the learned adapters that let a hint compare features
// of different widths. The distill pass only wires them to graph values.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>

namespace compress {

using Tensor = at::Tensor;

// Hard-label loss: LibTorch's mean cross-entropy of `logits` [N, C] against int64
// class indices `targets` [N], with label smoothing in [0, 1).
Tensor HardLabelLoss(const Tensor& logits, const Tensor& targets, double label_smoothing = 0);

// Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network":
//   T² · (1/N) Σ_n KL(softmax(t_n / T) || softmax(s_n / T))
// for student logits s and teacher logits t, both [N, C]; "batchmean" KL (summed over
// classes, averaged over samples), scaled by T² so the soft gradients keep the size of
// the hard ones as T changes. The teacher side is detached. Requires T > 0.
Tensor KdLoss(const Tensor& student_logits, const Tensor& teacher_logits, double temperature);

// Romero et al. 2015, "FitNets: Hints for Thin Deep Nets": the mean squared error
// (1/numel) Σ (s - t)² between a (possibly adapted) student feature and the teacher's
// feature of the same shape. The paper's hint is ½‖·‖²; the mean keeps the weight
// independent of the feature's size. The teacher side is detached.
Tensor HintLoss(const Tensor& student_feature, const Tensor& teacher_feature);

// Zagoruyko & Komodakis 2017, "Paying More Attention to Attention": the spatial
// attention map of a feature f [N, C, H, W],
//   Q_n = mean_c |f_n,c|^p   flattened to H·W,   A_n = Q_n / max(‖Q_n‖₂, 1e-12),
// with p = 2 as in the paper. Returns [N, H·W]; each row has unit L2 norm (or is zero).
Tensor AttentionMap(const Tensor& feature, double p = 2);

// Attention transfer between a student and a teacher feature with the same N, H and W
// (channel counts may differ: the maps average over channels):
//   (1/N) Σ_n ‖A(s)_n − A(t)_n‖₂²,
// the squared distance of the unit-norm maps, summed over the H·W positions and averaged
// over the batch, so each term lies in [0, 4] whatever the spatial size. The paper's
// eq. 2 writes β/2 · ‖·‖₂ (not squared); the authors' reference code squares and then
// averages over positions too, with β = 1000, i.e. our weight β / (2·H·W). The teacher
// side is detached.
Tensor AttentionLoss(const Tensor& student_feature, const Tensor& teacher_feature);

// ---- adapters (FitNets' regressor) ---------------------------------------------------

// A learned map from a student feature with `in` channels to one with `out` channels:
// a 1×1 convolution for [N, C, H, W] features, a linear layer for [N, C] ones (the
// same weight [out, in] serves both). Trained with the student, then dropped.
struct Adapter {
  Tensor weight;  // [out, in]
  Tensor bias;    // [out]
};

// A semi-orthogonal weight (orthonormal columns when out >= in, rows otherwise, from
// the QR factorisation of a seeded Gaussian; Saxe et al. 2014) and a zero bias, on
// `device`: the adapter starts as an isometric embedding (or a projection) of the
// student's feature, so the first hint loss measures the student, not a random
// rescaling of it, and gradients through it keep their size.
Adapter InitAdapter(int64_t out, int64_t in, uint64_t seed, const c10::Device& device);

// The adapter applied to a 2-D [N, in] or 4-D [N, in, H, W] feature.
Tensor ApplyAdapter(const Adapter& adapter, const Tensor& feature);

}  // namespace compress
