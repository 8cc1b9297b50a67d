// Runs an ONNX file in ONNX Runtime, the independent reference runtime every export is
// checked against: spawns `node tools/ort/run_model.js` (onnxruntime-node, CPU
// execution provider) with the inputs as raw files in a private temporary folder.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "compress/ir/graph.h"

namespace compress {

struct OrtOptions {
  int threads = 1;  // ORT intra-op threads (fixed, so runs are reproducible)
  std::string graph_optimization_level = "all";  // disabled|basic|extended|layout|all
  int bench_runs = 0;    // > 0: also time this many runs after `bench_warmup` ones
  int bench_warmup = 0;
  // Not empty: also write the graph ONNX Runtime executes (level "extended", where QDQ
  // groups become QLinearConv, QGemm, ...) to this path, for the caller to remove.
  std::string optimized_model_path;
};

// Per-run latencies of a --bench run, in milliseconds.
struct OrtLatency {
  int runs = 0, warmup = 0;
  double median_ms = 0, mean_ms = 0, min_ms = 0, max_ms = 0, p90_ms = 0;
  std::vector<double> latencies_ms;
};

struct OrtRun {
  std::string ort_version;                // onnxruntime-node's version
  std::vector<std::string> output_names;  // the model's outputs, in its order
  std::vector<Tensor> outputs;            // CPU tensors, same order
  OrtLatency latency;                     // filled when options.bench_runs > 0
};

// Runs `model_path` once on `inputs` (any device; given in the model's input order,
// all in one session.run) and returns every output. One node process per call
// (~0.3-0.5 s of start-up): batch the samples into the inputs rather than calling
// this per sample.
// Finding things: node is MCOMPRESS_NODE when set, else `node` on PATH; the script
// folder is MCOMPRESS_ORT_DIR when set, else the source tree's tools/ort.
// Throws compress::Error: kUnsupported when node, the script or onnxruntime-node is
// missing (the message says to run `make deps`) or when ONNX Runtime rejects or fails
// to run the model (its own message, on one line); kIo for temporary-file trouble or
// unreadable outputs.
OrtRun RunOrt(const std::string& model_path, const std::vector<Tensor>& inputs,
              const OrtOptions& options = {});
// RunOrt's outputs only.
std::vector<Tensor> RunInOrt(const std::string& model_path, const std::vector<Tensor>& inputs,
                             const OrtOptions& options = {});

// How CompareOrtLatency times its models.
struct OrtLatencyOptions {
  int threads = 1;  // ORT intra-op threads
  int rounds = 5;   // rounds over all models, their order rotating each round
  int runs = 20;    // timed runs of each model per round
  int warmup = 5;   // untimed runs of each model before the first round
};

struct OrtLatencyComparison {
  std::string ort_version;
  std::vector<OrtLatency> models;  // per model, in the order given: rounds × runs latencies
};

// Times every model of `model_paths` on the same `inputs` in one ONNX Runtime process
// (tools/ort/latency.js, graph optimizations "all"): all sessions are created and warmed
// up, then each round times every model `runs` times, the order rotating, so that the
// models share the machine's conditions. Compare medians. Errors as RunOrt's.
OrtLatencyComparison CompareOrtLatency(const std::vector<std::string>& model_paths,
                                       const std::vector<Tensor>& inputs,
                                       const OrtLatencyOptions& options = {});

// The folder holding run_model.js, latency.js and node_modules/ (see RunOrt).
std::string OrtScriptDir();

}  // namespace compress
