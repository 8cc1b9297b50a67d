// Supervised training of a compress::Graph classifier through the Executor: torch::optim
// optimizers, per-step learning-rate schedules, label smoothing, per-epoch validation,
// and a hook after every optimizer step (pruning re-applies its masks there).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "compress/data/data.h"
#include "compress/data/transforms.h"
#include "compress/dist/dist.h"
#include "compress/ir/graph.h"

namespace compress {

// name: "sgd" (momentum, nesterov, weight_decay), "adam", "adamw", "rmsprop"
// (alpha, eps, momentum, weight_decay), "adagrad" (eps, weight_decay).
// adam/adamw use beta1, beta2, eps; adamw's weight_decay is decoupled.
struct OptimizerOptions {
  std::string name = "sgd";
  double lr = 0.01, momentum = 0, weight_decay = 0;
  bool nesterov = false;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, alpha = 0.99 /*rmsprop*/;
};

// name: "none" (constant lr), "step" (lr * gamma^(epoch / step_size), epoch-based),
// "cosine" (per-step cosine annealing from lr to 0 over all steps), "one-cycle"
// (Smith & Topin 2018, as PyTorch's OneCycleLR with cosine annealing: from
// lr/div_factor up to lr at step pct_start*total-1, then down to
// lr/(div_factor*final_div_factor) at the last step).
struct LrSchedule {
  std::string name = "none";
  int64_t step_size = 1;  // epochs, for "step"
  double gamma = 0.1;
  double pct_start = 0.3;
  double div_factor = 25, final_div_factor = 1e4;
};

// The learning rate to use for optimizer step `step` (0-based, of `total_steps`);
// `steps_per_epoch` converts steps to epochs for "step". Pure; steps outside
// [0, total_steps) are clamped. Assumes ValidateLrSchedule passed.
double LearningRateAt(const LrSchedule& schedule, double base_lr, int64_t step,
                      int64_t total_steps, int64_t steps_per_epoch);

struct TrainOptions {
  int64_t epochs = 1;
  int64_t batch_size = 128;
  OptimizerOptions optimizer;
  LrSchedule lr_schedule;
  double label_smoothing = 0;  // in [0, 1)
  uint64_t seed = 0;           // shuffling, and LibTorch's global generator (Dropout)
  // "auto": a progress bar when stderr is a terminal, else one line per epoch;
  // "on": always the bar; "off": one line per epoch; "quiet": nothing.
  std::string progress = "auto";
  // Called with the global step (1-based count of steps done) after every optimizer
  // step, under a NoGradGuard, so it may modify the graph's weights in place.
  std::function<void(int64_t step)> after_step;
  // Called with the 0-based epoch before each epoch's first step (QAT freezes its
  // observers there).
  std::function<void(int64_t epoch)> before_epoch;
  // When set, called during every training forward pass with each value named in
  // `observe` (the executor's observer; the tensor is part of the autograd graph, so
  // detach before keeping it). QAT tracks activation ranges with it.
  std::vector<std::string> observe;
  std::function<void(const std::string& value, const Tensor& tensor)> observer;
  // When set, replaces the cross-entropy loss (distillation): called with the logits,
  // the labels and the batch's indices into `train` (DataLoader::last_indices, for
  // per-sample caches); returns the scalar loss to minimise. label_smoothing is then
  // the caller's business.
  std::function<Tensor(const Tensor& logits, const Tensor& targets, const Tensor& indices)> loss;
  // False: the data has no labels (targets -1, docs/data.md) and `loss`, which must be
  // set, reads none (distillation with alpha 1). Train and validation accuracy and the
  // validation loss are then NaN (nothing to count them against).
  bool labels = true;
  // Tensors trained with the graph's parameters by the same optimizer (distillation's
  // adapters); leaves on the training device. Their requires_grad is set for the run.
  std::vector<Tensor> extra_parameters;
  // Training augmentation on every batch (torchvision's RandomCrop with padding, then
  // RandomHorizontalFlip), drawn per sample from (seed, epoch, sample index): the same
  // sample gets the same crop and flip whichever batch or rank serves it. Off when
  // random_crop is empty and horizontal_flip is 0.
  Augmentation augmentation;
  // Linear learning-rate warm-up: step k < warmup_steps uses lr * (k + 1) / warmup_steps
  // (Goyal et al. 2017). 0 = none. By default the factor multiplies the schedule's rate
  // at step k (the schedule runs from step 0 through the warm-up); with
  // schedule_after_warmup the schedule starts when the warm-up ends: it runs over the
  // remaining steps as if they were the whole run, from the full rate (the "linear
  // warm-up, then cosine" of most transformer recipes).
  int64_t warmup_steps = 0;
  bool schedule_after_warmup = false;
  // Rescales the gradients so that their global L2 norm is at most this (0 = off).
  double max_grad_norm = 0;
  // Data parallelism (unset, or a world of one: one process). Every rank runs Train with
  // the same options and data: rank 0's parameters are broadcast first; each step every
  // rank takes its slice of the same global batch of batch_size samples (DataLoader::
  // Shard), weights its loss by its share of the batch, and the gradients are summed
  // in buckets, so each step is the one-process step on the whole batch (but for
  // BatchNorm's batch statistics unless sync_batchnorm). Epoch statistics are over all
  // ranks; a global batch smaller than the world is skipped (every rank skips it).
  std::shared_ptr<Communicator> comm;
  // Data parallelism's BatchNorm: true, batch statistics over the global batch
  // (synchronised BatchNorm, two small all-reduces per layer per step); false, each
  // rank's own slice, with the running statistics averaged over the ranks after every
  // epoch. Either way the ranks end with identical statistics.
  bool sync_batchnorm = false;
  // Mixed precision: the forward pass under LibTorch's autocast (matrix products and
  // convolutions in bfloat16 on CPU, float16 on CUDA; reductions, losses and the
  // weights stay float32). On CUDA the float16 loss is scaled dynamically (a gradient
  // scaler: steps with Inf/NaN gradients are skipped and the scale halved, and the
  // scale doubles after 2000 good steps). Off by default.
  bool amp = false;
};

// Throws Error(kRecipe) naming the offending field (unknown optimizer/schedule/progress
// name, non-positive batch size, negative lr, label_smoothing outside [0, 1), ...).
void ValidateTrainOptions(const TrainOptions& options);

struct EpochStats {
  int64_t epoch = 0;  // 1-based, as printed
  double train_loss = 0, train_accuracy = 0;  // means over the epoch's samples
  double val_loss = std::numeric_limits<double>::quiet_NaN();
  double val_accuracy = std::numeric_limits<double>::quiet_NaN();
  double samples_per_second = 0;  // training samples / training time (no validation)
  double seconds = 0;             // whole epoch, validation included
  int64_t world_size = 1;         // processes that trained it together
  int64_t skipped_steps = 0;      // mixed precision: steps the gradient scaler skipped
  // Steps (of the run so far) whose global gradient norm exceeded max_grad_norm and was
  // scaled down to it: how much the clip, rather than the learning rate, set the steps.
  int64_t clipped_steps = 0;
};

struct TrainResult {
  std::vector<EpochStats> epochs;
};

// Trains `graph` (one input, one output of logits [N, classes]) in place with
// cross-entropy on `train`, validating after each epoch on `validation` when it is
// non-null and non-empty. The graph is moved to `device` and stays there; its
// trainable initializers get requires_grad for the run and have it restored after.
// Throws Error(kRecipe) for bad options or data, kUnsupported for a graph that is not
// single-input single-output or whose output is not 2-D, kNumeric for NaN/Inf data or
// a non-finite loss (naming the epoch and step). Pruning masks (Initializer::mask) are
// re-applied after every optimizer step, so pruned weights and N:M patterns survive any
// training, whoever calls it.
TrainResult Train(Graph& graph, const TensorDataset& train, const TensorDataset* validation,
                  const TrainOptions& options, const c10::Device& device);

}  // namespace compress
