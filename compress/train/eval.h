// Accuracy and latency of a compress::Graph classifier: top-1/top-5, mean
// cross-entropy and per-class accuracy over a dataset, and the batch latency of one
// forward pass (median of timed runs after warm-up).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "compress/data/data.h"
#include "compress/ir/graph.h"

namespace compress {

struct EvalResult {
  double top1 = 0;  // fractions in [0, 1]; NaN when evaluated without labels
  double top5 = 0;  // target among the top min(5, classes) logits
  double loss = 0;  // mean cross-entropy (no label smoothing)
  int64_t samples = 0;
  std::vector<double> per_class_accuracy;  // index = class; NaN for a class with no sample
  // Against EvalOptions::reference (NaN without one): the fraction of samples whose
  // arg-max over dim 1 matches the reference's (outputs of rank 2 only), the output
  // SQNR 10 log10(sum ref^2 / sum (y - ref)^2) in dB (SqnrDb), and max |y - ref| /
  // max |ref| over the whole split.
  double agreement = std::numeric_limits<double>::quiet_NaN();
  double sqnr_db = std::numeric_limits<double>::quiet_NaN();
  double max_rel_error = std::numeric_limits<double>::quiet_NaN();
};

struct EvalOptions {
  // false: the targets are not read (unlabeled data, or a model that is no classifier):
  // top1/top5/loss are NaN and the output may have any shape [N, ...].
  bool labels = true;
  // The outputs (float, [N, ...] for the N samples in order, any device) to compare
  // against: another model's Evaluate(..., outputs) on the same dataset.
  const Tensor* reference = nullptr;
  // When set, receives the graph's outputs over the dataset (float, on the CPU).
  Tensor* outputs = nullptr;
};

// Runs `graph` (one input, one output of logits [N, classes]) in eval mode without
// autograd over `dataset` in order, `batch_size` samples at a time. When the graph's
// initializers are not on `device`, a copy is moved there (the graph is not changed).
// Throws Error(kRecipe) for an empty or malformed dataset or a label >= classes,
// kNumeric for NaN/Inf inputs, kUnsupported for an unsuitable graph.
EvalResult Evaluate(const Graph& graph, const TensorDataset& dataset, int64_t batch_size,
                    const c10::Device& device, const EvalOptions& options = {});

// 10 log10(sum reference^2 / sum (reference - y)^2): the signal-to-noise ratio of `y`
// as an approximation of `reference`, in dB, in double; 200 dB (the cap) for an exact
// match.
double SqnrDb(const Tensor& reference, const Tensor& y);

struct LatencyResult {
  int64_t batch = 0;
  double median_ms = 0, p90_ms = 0, min_ms = 0;
  int runs = 0;
};

// Times `runs` forward passes of a [batch, sample_shape...] float input (seeded random
// values) under c10::InferenceMode after `warmup` untimed ones, synchronizing the device
// around each run. p90 is the nearest-rank 90th percentile. Requires a single-input
// graph; throws Error(kRecipe) for batch < 1, runs < 1 or warmup < 0.
LatencyResult MeasureLatency(const Graph& graph, const std::vector<int64_t>& sample_shape,
                             int64_t batch, int warmup, int runs, const c10::Device& device);

}  // namespace compress
