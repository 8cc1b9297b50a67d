// The pass interface: a named transformation with one entry point. A pass walks the
// graph, calls pure math functions, and returns what changed; everything it needs
// from the run (data, device, seed, teacher, logging) comes in the PassContext.
#pragma once

#include <c10/core/Device.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "compress/data/data.h"
#include "compress/dist/dist.h"
#include "compress/ir/graph.h"
#include "compress/report/report.h"

namespace compress {

// One teacher of distillation: the model, its weight among the teachers (> 0; the
// objective normalises the weights to sum 1), and where the recipe names it
// ("teacher", "teacher[1]"), for messages.
struct TeacherRef {
  const Graph* model = nullptr;
  double weight = 1;
  std::string where = "teacher";
};

struct PassContext {
  // The recipe's teachers (distillation), in recipe order; empty: none (distillation
  // then learns from `baseline`). A recipe's single "teacher" string is one of weight 1.
  std::vector<TeacherRef> teachers;
  // The model as it was before the first compression stage (after the leading train
  // stages): distillation's default teacher. Set by the engine once it exists.
  const Graph* baseline = nullptr;
  const DatasetSplits* data = nullptr;     // train / validation / test
  c10::Device device = c10::Device(c10::kCPU);
  uint64_t seed = 0;
  int64_t batch_size = 128;                // recipe's data.batch_size
  int64_t calibration_samples = 512;
  std::string progress = "auto";           // trainer progress display
  std::function<void(const std::string&)> log = [](const std::string&) {};
  // Called after every optimizer step of any training a pass runs (after the trainer
  // has re-applied pruning masks); passes forward it to the trainer. Unset by default.
  std::function<void(Graph&)> after_step;
  // Data parallelism: the job's communicator (null or a world of one: one process).
  // Every rank runs every pass on the same graph and data; training takes each rank's
  // slice of every global batch and sums the gradients (TrainOptions::comm), so passes
  // that only call the trainer need nothing more. A pass that gathers statistics of
  // its own during training (QAT's range observer) reduces them over the ranks here.
  std::shared_ptr<Communicator> comm;
  bool sync_batchnorm = false;  // TrainOptions::sync_batchnorm of every training
};

struct PassResult {
  bool changed = false;
  std::map<std::string, double> stats;      // pass-defined counters, shown in the report
  std::vector<SkippedLayer> skipped;        // layers left alone, with the reason
  std::vector<SensitivityRow> sensitivity;  // per-layer scan (prune-sensitivity)
  // quantize-sensitivity's scan / accuracy-aware quantization's trials, in quant_metric.
  std::string quant_metric;
  std::vector<QuantSensitivityRow> quant_sensitivity;
  std::vector<FallbackTrial> fallback_trials;
  std::vector<LatencyTrial> latency_trials;  // quantize's latency_fallback scan
  // Metrics the pass measured itself (the evaluate pass); NaN when not measured.
  Metrics metrics;
};

class Pass {
 public:
  virtual ~Pass() = default;
  // Runs on `graph` in place. Throws compress::Error on failure; "not applicable" is
  // a no-op result, not an error.
  virtual PassResult Run(Graph& graph, PassContext& ctx) = 0;
};

}  // namespace compress
