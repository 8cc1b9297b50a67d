// The report's data model (what a run measured) and its writers: versioned JSON,
// Markdown, a self-contained HTML page with inline SVG charts, and the comparison of
// several runs. Pure data + rendering: no engine, no passes.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "compress/ir/graph.h"

namespace compress {

// Bumped when a field changes meaning or disappears (adding fields keeps it).
constexpr int kReportSchemaVersion = 1;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

struct Metrics {
  double top1 = kNaN, top5 = kNaN, loss = kNaN;  // fractions; NaN = not evaluated
  int64_t samples = 0;
  // Outputs against the baseline model's on the same test samples (NaN for the
  // baseline itself and in older reports): top-1 agreement (fraction of samples with
  // the same arg-max; NaN for outputs not [N, classes]), output SQNR in dB (200 = the
  // cap, identical outputs) and max |y - y_base| / max |y_base|. They need no labels.
  double agreement = kNaN, sqnr_db = kNaN, max_rel_error = kNaN;
};

// Storage of the graph's initializers. bytes_int8 counts 1 byte per element of
// weights with quantization parameters (or that would be quantized: Conv/Gemm/MatMul
// weights) and 4 bytes for the rest; bytes_sparse stores each tensor as it is held
// (its own element size: int8 for a quantized weight) in the smaller of dense or COO
// (value + 8-byte index per non-zero). bytes_compact: the same tensors in the smallest of
// dense, a bitmask with the non-zeros, or Deep Compression's 4-bit relative indices
// (report.cpp, CompactBytes) — what a compact sparse format would store, which ONNX
// files cannot (0 in reports written before it existed).
struct SizeStats {
  int64_t parameters = 0, nonzeros = 0;
  int64_t bytes_fp32 = 0, bytes_int8 = 0, bytes_sparse = 0, bytes_compact = 0;
  int64_t macs = 0;  // per sample, Conv/Gemm/MatMul only
};

struct LatencyStats {
  double batch1_ms = kNaN, batch32_ms = kNaN;  // medians
};

// One weighted layer (Conv, Gemm, MatMul with an initializer operand).
struct LayerRow {
  std::string name;  // node name
  std::string op;
  std::string weight;  // initializer name
  std::vector<int64_t> weight_shape;
  // The same layer's weight shape in the baseline when it differs (channel pruning
  // shrank it); empty otherwise.
  std::vector<int64_t> baseline_shape;
  int64_t params = 0;
  double sparsity = 0;  // fraction of zero weights
  int bits = 32;        // 8 when the weight carries quantization parameters
  int64_t macs = 0;     // per sample
};

struct SkippedLayer {
  std::string layer;
  std::string reason;
};

// One layer of a sensitivity scan: validation top-1 with only this layer pruned to
// each scanned sparsity. `chosen` is the derived target (NaN when none was derived).
struct SensitivityRow {
  std::string layer;
  std::vector<double> sparsities;
  std::vector<double> top1;
  double chosen = std::numeric_limits<double>::quiet_NaN();
};

// One layer of quantize-sensitivity's scan: the metric (StageReport::quant_metric) with
// only this layer INT8, and with every other planned layer INT8 but this one FP32.
struct QuantSensitivityRow {
  std::string layer;
  double only_this = std::numeric_limits<double>::quiet_NaN();
  double all_but_this = std::numeric_limits<double>::quiet_NaN();
};

// One trial of accuracy-aware quantization (quantize's max_accuracy_drop): the layers
// kept FP32 and what the model measured (StageReport::quant_metric) on validation.
struct FallbackTrial {
  std::vector<std::string> fp32_layers;
  double metric = std::numeric_limits<double>::quiet_NaN();
  bool met = false;  // the target held
};

// One layer in one scan (`step`, from 0) of quantize's latency_fallback: the median ONNX
// Runtime latency of the scan's starting model with this layer FP32 too, its saving
// against the starting model (a fraction; negative: slower), and whether it went to FP32
// in that scan (and stays FP32).
struct LatencyTrial {
  int64_t step = 0;
  std::string layer;
  double ms = std::numeric_limits<double>::quiet_NaN();
  double saving = std::numeric_limits<double>::quiet_NaN();
  bool fp32 = false;
};

struct StageReport {
  int index = -1;           // -1 for the baseline, else position in recipe stages
  std::string pass;         // "baseline" for the baseline row
  bool changed = false;
  Metrics metrics;          // after the stage (NaN when evaluation was off)
  SizeStats size;
  double seconds = 0;       // wall time of the pass
  std::map<std::string, double> stats;  // pass-defined counters
  std::vector<SkippedLayer> skipped;
  std::vector<SensitivityRow> sensitivity;  // prune-sensitivity's scan; usually empty
  // quantize-sensitivity's scan and accuracy-aware quantization's trials (usually
  // empty), both measured in `quant_metric`: "val_top1" (validation top-1) or
  // "sqnr_db" (output SQNR against the FP32 model, when there are no labels).
  std::string quant_metric;
  std::vector<QuantSensitivityRow> quant_sensitivity;
  std::vector<FallbackTrial> fallback_trials;
  std::vector<LatencyTrial> latency_trials;  // quantize's latency_fallback; usually empty
};

struct ExportReport {
  std::string format;       // "onnx", ...
  std::string path;         // relative to the output directory
  int64_t bytes = 0;
  bool verified = false;    // run in ONNX Runtime and compared with the in-memory graph
  double max_abs_diff = kNaN;
  // Optional in report.json (absent in older reports): how it was verified.
  std::string verified_with;     // "onnxruntime-node 1.30.0"
  int64_t verify_samples = 0;    // test samples run on both sides
  double max_rel_diff = kNaN;    // max |Δ| / output scale (max |output|, at least 1)
  double top1_agreement = kNaN;  // fraction of samples with the same arg-max
  bool sparse = false;           // sparse initializers allowed in the file
  // INT8 formats: the INT8 target the file meets ("portable", "full_range"); empty for
  // FP32 formats and older reports.
  std::string int8_target;
  // INT8 formats verified in ONNX Runtime: how the INT8 rule held ("end to end", or
  // "value by value: ..." for a deep network whose one-step roundings accumulate; see
  // VerifyReport::int8_rule); empty otherwise and in older reports.
  std::string int8_rule;
  // INT8 formats: how the runtime runs the quantized layers. int8_quantized_layers is
  // 0 when not measured (FP32 formats, older reports); the integer layers and the
  // fallbacks ({layer, why it runs in float / fake-quant}) together make it up.
  int64_t int8_quantized_layers = 0;
  std::vector<std::string> int8_integer_layers;
  std::vector<SkippedLayer> int8_fallback_layers;
};

struct AcceptanceCheck {
  std::string criterion;    // "max_accuracy_drop", "min_compression", "min_agreement", "min_sqnr_db"
  double threshold = 0;
  double value = 0;
  bool passed = true;
};

struct Report {
  int schema_version = kReportSchemaVersion;
  std::string mcompress_version, torch_version;
  std::string recipe_hash;  // hex
  std::string model;        // model spec from the recipe
  std::string device;
  uint64_t seed = 0;
  int threads = 0;          // per process
  int64_t world_size = 1;   // processes that ran the recipe (data-parallel training)
  StageReport baseline;
  std::vector<StageReport> stages;
  LatencyStats latency_baseline, latency_final;
  std::vector<LayerRow> layers;  // of the final graph
  std::vector<ExportReport> exports;
  std::vector<AcceptanceCheck> acceptance;
  bool accepted = true;
  double compression_ratio = 1;  // baseline bytes_fp32 / final best-storage bytes
  double total_seconds = 0;
};

// Per-layer table and size statistics of a graph (shapes from graph.value_info).
std::vector<LayerRow> LayerTable(const Graph& graph);
SizeStats ComputeSize(const Graph& graph);

// Bytes a deployment of the final model stores: the smaller of dense FP32 and sparse
// (COO) storage, and INT8 when the final layers carry quantization (layers[].bits < 32).
// Requires report.layers and the final stage's size to be filled.
int64_t StoredBytes(const Report& report);

nlohmann::json ReportToJson(const Report& report);
// The report.json text: ReportToJson pretty-printed with schema_version first and the
// fields in declaration order (nlohmann::json itself sorts keys).
std::string ReportJsonText(const Report& report);
// Throws compress::Error(kIo) naming `where` and the field on malformed input, and
// explaining a schema_version this build cannot read (newer or older).
Report ReportFromJson(const nlohmann::json& json, const std::string& where);
Report LoadReport(const std::string& path);

std::string RenderMarkdown(const Report& report);
std::string RenderHtml(const Report& report);  // self-contained: no network, inline SVG

// Side-by-side table of runs (accuracy, size, ratio, latency); `names` label columns.
std::string RenderCompareMarkdown(const std::vector<Report>& runs,
                                  const std::vector<std::string>& names);
// HTML page with the table and an accuracy-vs-size scatter plot (inline SVG).
std::string RenderCompareHtml(const std::vector<Report>& runs,
                              const std::vector<std::string>& names);

}  // namespace compress
