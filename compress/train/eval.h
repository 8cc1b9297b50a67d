// Accuracy and latency of a compress::Graph classifier: top-1/top-5, mean
// cross-entropy and per-class accuracy over a dataset, and the batch latency of one
// forward pass (median of timed runs after warm-up).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <string>
#include <vector>

#include "compress/data/data.h"
#include "compress/ir/graph.h"

namespace compress {

struct EvalResult {
  double top1 = 0;  // fractions in [0, 1]
  double top5 = 0;  // target among the top min(5, classes) logits
  double loss = 0;  // mean cross-entropy (no label smoothing)
  int64_t samples = 0;
  std::vector<double> per_class_accuracy;  // index = class; NaN for a class with no sample
};

// Runs `graph` (one input, one output of logits [N, classes]) in eval mode without
// autograd over `dataset` in order, `batch_size` samples at a time. When the graph's
// initializers are not on `device`, a copy is moved there (the graph is not changed).
// Throws Error(kRecipe) for an empty or malformed dataset or a label >= classes,
// kNumeric for NaN/Inf inputs, kUnsupported for an unsuitable graph.
EvalResult Evaluate(const Graph& graph, const TensorDataset& dataset, int64_t batch_size,
                    const c10::Device& device);

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
