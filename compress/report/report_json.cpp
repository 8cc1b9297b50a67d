// The versioned JSON form of a Report: writing it with ordered keys (NaN as null,
// infinities as "inf" / "-inf", so the round trip is exact) and reading it back with
// errors that name the file and the JSON path of the first problem.
#include "compress/report/report.h"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "compress/base/error.h"

namespace compress {

namespace {

using Json = nlohmann::json;
// Written with ordered keys so that a report file reads top-down (schema_version first).
using OJson = nlohmann::ordered_json;

// Oldest schema this build can read (kReportSchemaVersion is the newest).
constexpr int kMinReportSchemaVersion = 1;

// ---- JSON writing -------------------------------------------------------------------------

// NaN has no JSON form: written as null. Infinities (e.g. a ratio over zero bytes) as
// the strings "inf" / "-inf", so the round trip stays exact.
OJson NumberJson(double v) {
  if (std::isnan(v)) return nullptr;
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return v;
}

OJson MetricsJson(const Metrics& m) {
  OJson j;
  j["top1"] = NumberJson(m.top1);
  j["top5"] = NumberJson(m.top5);
  j["loss"] = NumberJson(m.loss);
  j["samples"] = m.samples;
  j["agreement"] = NumberJson(m.agreement);
  j["sqnr_db"] = NumberJson(m.sqnr_db);
  j["max_rel_error"] = NumberJson(m.max_rel_error);
  return j;
}

OJson SizeJson(const SizeStats& s) {
  OJson j;
  j["parameters"] = s.parameters;
  j["nonzeros"] = s.nonzeros;
  j["bytes_fp32"] = s.bytes_fp32;
  j["bytes_int8"] = s.bytes_int8;
  j["bytes_sparse"] = s.bytes_sparse;
  j["bytes_compact"] = s.bytes_compact;
  j["macs"] = s.macs;
  return j;
}

OJson StageJson(const StageReport& s) {
  OJson j;
  j["index"] = s.index;
  j["pass"] = s.pass;
  j["changed"] = s.changed;
  j["metrics"] = MetricsJson(s.metrics);
  j["size"] = SizeJson(s.size);
  j["seconds"] = NumberJson(s.seconds);
  OJson stats = OJson::object();
  for (const auto& [k, v] : s.stats) stats[k] = NumberJson(v);
  j["stats"] = stats;
  OJson skipped = OJson::array();
  for (const auto& k : s.skipped) skipped.push_back({{"layer", k.layer}, {"reason", k.reason}});
  j["skipped"] = skipped;
  if (!s.sensitivity.empty()) {
    OJson rows = OJson::array();
    for (const auto& row : s.sensitivity) {
      OJson rj;
      rj["layer"] = row.layer;
      rj["sparsities"] = row.sparsities;
      OJson top1 = OJson::array();
      for (double a : row.top1) top1.push_back(NumberJson(a));
      rj["top1"] = top1;
      rj["chosen"] = NumberJson(row.chosen);
      rows.push_back(rj);
    }
    j["sensitivity"] = rows;
  }
  if (!s.quant_metric.empty()) j["quant_metric"] = s.quant_metric;
  if (!s.quant_sensitivity.empty()) {
    OJson rows = OJson::array();
    for (const auto& row : s.quant_sensitivity) {
      OJson rj;
      rj["layer"] = row.layer;
      rj["only_this"] = NumberJson(row.only_this);
      rj["all_but_this"] = NumberJson(row.all_but_this);
      rows.push_back(rj);
    }
    j["quant_sensitivity"] = rows;
  }
  if (!s.fallback_trials.empty()) {
    OJson rows = OJson::array();
    for (const auto& trial : s.fallback_trials) {
      OJson rj;
      rj["fp32_layers"] = trial.fp32_layers;
      rj["metric"] = NumberJson(trial.metric);
      rj["met"] = trial.met;
      rows.push_back(rj);
    }
    j["fallback_trials"] = rows;
  }
  if (!s.latency_trials.empty()) {
    OJson rows = OJson::array();
    for (const auto& trial : s.latency_trials) {
      OJson rj;
      rj["step"] = trial.step;
      rj["layer"] = trial.layer;
      rj["ms"] = NumberJson(trial.ms);
      rj["saving"] = NumberJson(trial.saving);
      rj["fp32"] = trial.fp32;
      rows.push_back(rj);
    }
    j["latency_trials"] = rows;
  }
  return j;
}

OJson LatencyJson(const LatencyStats& l) {
  OJson j;
  j["batch1_ms"] = NumberJson(l.batch1_ms);
  j["batch32_ms"] = NumberJson(l.batch32_ms);
  return j;
}

OJson Int8KernelsJson(const ExportReport& e) {
  OJson j;
  j["quantized"] = e.int8_quantized_layers;
  j["integer"] = e.int8_integer_layers;
  OJson fallback = OJson::array();
  for (const auto& f : e.int8_fallback_layers) {
    fallback.push_back({{"layer", f.layer}, {"reason", f.reason}});
  }
  j["fallback"] = fallback;
  return j;
}

OJson ReportOrderedJson(const Report& r) {
  OJson j;
  j["schema_version"] = r.schema_version;
  j["mcompress_version"] = r.mcompress_version;
  j["torch_version"] = r.torch_version;
  j["recipe_hash"] = r.recipe_hash;
  j["model"] = r.model;
  j["device"] = r.device;
  j["seed"] = r.seed;
  j["threads"] = r.threads;
  j["world_size"] = r.world_size;
  j["accepted"] = r.accepted;
  j["compression_ratio"] = NumberJson(r.compression_ratio);
  j["total_seconds"] = NumberJson(r.total_seconds);
  j["baseline"] = StageJson(r.baseline);
  OJson stages = OJson::array();
  for (const auto& s : r.stages) stages.push_back(StageJson(s));
  j["stages"] = stages;
  j["latency_baseline"] = LatencyJson(r.latency_baseline);
  j["latency_final"] = LatencyJson(r.latency_final);
  OJson layers = OJson::array();
  for (const auto& l : r.layers) {
    OJson lj;
    lj["name"] = l.name;
    lj["op"] = l.op;
    lj["weight"] = l.weight;
    lj["weight_shape"] = l.weight_shape;
    if (!l.baseline_shape.empty()) lj["baseline_shape"] = l.baseline_shape;
    lj["params"] = l.params;
    lj["sparsity"] = NumberJson(l.sparsity);
    lj["bits"] = l.bits;
    lj["macs"] = l.macs;
    layers.push_back(lj);
  }
  j["layers"] = layers;
  OJson exports = OJson::array();
  for (const auto& e : r.exports) {
    OJson ej;
    ej["format"] = e.format;
    ej["path"] = e.path;
    ej["bytes"] = e.bytes;
    ej["verified"] = e.verified;
    ej["max_abs_diff"] = NumberJson(e.max_abs_diff);
    if (!e.verified_with.empty()) {
      ej["verified_with"] = e.verified_with;
      ej["verify_samples"] = e.verify_samples;
      ej["max_rel_diff"] = NumberJson(e.max_rel_diff);
      ej["top1_agreement"] = NumberJson(e.top1_agreement);
    }
    ej["sparse"] = e.sparse;
    if (!e.int8_target.empty()) ej["int8_target"] = e.int8_target;
    if (!e.int8_rule.empty()) ej["int8_rule"] = e.int8_rule;
    if (e.int8_quantized_layers > 0) ej["int8_kernels"] = Int8KernelsJson(e);
    exports.push_back(ej);
  }
  j["exports"] = exports;
  OJson acceptance = OJson::array();
  for (const auto& a : r.acceptance) {
    OJson aj;
    aj["criterion"] = a.criterion;
    aj["threshold"] = NumberJson(a.threshold);
    aj["value"] = NumberJson(a.value);
    aj["passed"] = a.passed;
    acceptance.push_back(aj);
  }
  j["acceptance"] = acceptance;
  return j;
}

// ---- JSON reading -------------------------------------------------------------------------

// Reads typed fields and names the JSON path of the first problem. Unknown keys are
// ignored: adding fields keeps the schema version, so files from a newer build of the
// same schema stay readable.
class Reader {
 public:
  explicit Reader(std::string where) : where_(std::move(where)) {}

  [[noreturn]] void Fail(const std::string& path, const std::string& what) const {
    throw Error(ErrorKind::kIo, where_ + ": field '" + path + "': " + what);
  }

  const Json& Field(const Json& obj, const std::string& path, const char* key,
                    const char* expected) const {
    auto it = obj.find(key);
    if (it == obj.end()) Fail(Join(path, key), std::string("missing (expected ") + expected + ")");
    return *it;
  }

  static std::string Join(const std::string& path, const std::string& key) {
    return path.empty() ? key : path + "." + key;
  }

  void Expect(const Json& j, const std::string& path, bool ok, const char* expected) const {
    if (!ok) Fail(path, std::string("expected ") + expected + ", found " + Found(j));
  }

  static std::string Found(const Json& j) {
    if (j.is_number_float()) return "number " + j.dump();
    if (j.is_number()) return "integer " + j.dump();
    return j.type_name();
  }

  const Json& Object(const Json& obj, const std::string& path, const char* key) const {
    const Json& j = Field(obj, path, key, "object");
    Expect(j, Join(path, key), j.is_object(), "object");
    return j;
  }
  const Json& Array(const Json& obj, const std::string& path, const char* key) const {
    const Json& j = Field(obj, path, key, "array");
    Expect(j, Join(path, key), j.is_array(), "array");
    return j;
  }
  std::string String(const Json& obj, const std::string& path, const char* key) const {
    const Json& j = Field(obj, path, key, "string");
    Expect(j, Join(path, key), j.is_string(), "string");
    return j.get<std::string>();
  }
  bool Bool(const Json& obj, const std::string& path, const char* key) const {
    const Json& j = Field(obj, path, key, "boolean");
    Expect(j, Join(path, key), j.is_boolean(), "boolean");
    return j.get<bool>();
  }
  double NumberValue(const Json& j, const std::string& path) const {
    if (j.is_null()) return kNaN;
    if (j.is_string()) {
      const auto s = j.get<std::string>();
      if (s == "inf") return std::numeric_limits<double>::infinity();
      if (s == "-inf") return -std::numeric_limits<double>::infinity();
    }
    Expect(j, path, j.is_number(), "number");
    return j.get<double>();
  }
  double Number(const Json& obj, const std::string& path, const char* key) const {
    return NumberValue(Field(obj, path, key, "number"), Join(path, key));
  }
  int64_t IntValue(const Json& j, const std::string& path, int64_t lo, int64_t hi) const {
    Expect(j, path, j.is_number_integer(), "integer");
    if (j.is_number_unsigned() && j.get<uint64_t>() > static_cast<uint64_t>(hi)) {
      Fail(path, "integer " + j.dump() + " out of range");
    }
    const int64_t v = j.get<int64_t>();
    if (v < lo || v > hi) Fail(path, "integer " + j.dump() + " out of range");
    return v;
  }
  int64_t Int(const Json& obj, const std::string& path, const char* key,
              int64_t lo = std::numeric_limits<int64_t>::min(),
              int64_t hi = std::numeric_limits<int64_t>::max()) const {
    return IntValue(Field(obj, path, key, "integer"), Join(path, key), lo, hi);
  }
  uint64_t Unsigned(const Json& obj, const std::string& path, const char* key) const {
    const Json& j = Field(obj, path, key, "integer");
    Expect(j, Join(path, key), j.is_number_unsigned() || (j.is_number_integer() && j.get<int64_t>() >= 0),
           "non-negative integer");
    return j.get<uint64_t>();
  }

 private:
  std::string where_;
};

constexpr int64_t kIntMin = std::numeric_limits<int>::min();
constexpr int64_t kIntMax = std::numeric_limits<int>::max();

std::string Index(const std::string& path, const char* key, size_t i) {
  return Reader::Join(path, key) + "[" + std::to_string(i) + "]";
}

Metrics ReadMetrics(const Reader& rd, const Json& obj, const std::string& path) {
  Metrics m;
  m.top1 = rd.Number(obj, path, "top1");
  m.top5 = rd.Number(obj, path, "top5");
  m.loss = rd.Number(obj, path, "loss");
  m.samples = rd.Int(obj, path, "samples");
  // Added after schema 1 shipped: optional.
  if (obj.contains("agreement")) m.agreement = rd.Number(obj, path, "agreement");
  if (obj.contains("sqnr_db")) m.sqnr_db = rd.Number(obj, path, "sqnr_db");
  if (obj.contains("max_rel_error")) m.max_rel_error = rd.Number(obj, path, "max_rel_error");
  return m;
}

SizeStats ReadSize(const Reader& rd, const Json& obj, const std::string& path) {
  SizeStats s;
  s.parameters = rd.Int(obj, path, "parameters");
  s.nonzeros = rd.Int(obj, path, "nonzeros");
  s.bytes_fp32 = rd.Int(obj, path, "bytes_fp32");
  s.bytes_int8 = rd.Int(obj, path, "bytes_int8");
  s.bytes_sparse = rd.Int(obj, path, "bytes_sparse");
  if (obj.contains("bytes_compact")) s.bytes_compact = rd.Int(obj, path, "bytes_compact");
  s.macs = rd.Int(obj, path, "macs");
  return s;
}

// The optional quant_metric / quant_sensitivity / fallback_trials / latency_trials of a
// stage.
void ReadQuantTables(const Reader& rd, const Json& obj, const std::string& path, StageReport& s) {
  if (obj.contains("quant_metric")) s.quant_metric = rd.String(obj, path, "quant_metric");
  if (obj.contains("quant_sensitivity")) {
    const Json& rows = rd.Array(obj, path, "quant_sensitivity");
    for (size_t i = 0; i < rows.size(); ++i) {
      const std::string p = Index(path, "quant_sensitivity", i);
      rd.Expect(rows[i], p, rows[i].is_object(), "object");
      QuantSensitivityRow row;
      row.layer = rd.String(rows[i], p, "layer");
      row.only_this = rd.Number(rows[i], p, "only_this");
      row.all_but_this = rd.Number(rows[i], p, "all_but_this");
      s.quant_sensitivity.push_back(row);
    }
  }
  if (obj.contains("fallback_trials")) {
    const Json& rows = rd.Array(obj, path, "fallback_trials");
    for (size_t i = 0; i < rows.size(); ++i) {
      const std::string p = Index(path, "fallback_trials", i);
      rd.Expect(rows[i], p, rows[i].is_object(), "object");
      FallbackTrial trial;
      const Json& layers = rd.Array(rows[i], p, "fp32_layers");
      for (size_t k = 0; k < layers.size(); ++k) {
        const std::string lp = Index(p, "fp32_layers", k);
        rd.Expect(layers[k], lp, layers[k].is_string(), "string");
        trial.fp32_layers.push_back(layers[k].get<std::string>());
      }
      trial.metric = rd.Number(rows[i], p, "metric");
      trial.met = rd.Bool(rows[i], p, "met");
      s.fallback_trials.push_back(trial);
    }
  }
  if (obj.contains("latency_trials")) {
    const Json& rows = rd.Array(obj, path, "latency_trials");
    for (size_t i = 0; i < rows.size(); ++i) {
      const std::string p = Index(path, "latency_trials", i);
      rd.Expect(rows[i], p, rows[i].is_object(), "object");
      LatencyTrial trial;
      trial.step = rd.Int(rows[i], p, "step", 0, kIntMax);
      trial.layer = rd.String(rows[i], p, "layer");
      trial.ms = rd.Number(rows[i], p, "ms");
      trial.saving = rd.Number(rows[i], p, "saving");
      trial.fp32 = rd.Bool(rows[i], p, "fp32");
      s.latency_trials.push_back(trial);
    }
  }
}

StageReport ReadStage(const Reader& rd, const Json& obj, const std::string& path) {
  StageReport s;
  s.index = static_cast<int>(rd.Int(obj, path, "index", kIntMin, kIntMax));
  s.pass = rd.String(obj, path, "pass");
  s.changed = rd.Bool(obj, path, "changed");
  s.metrics = ReadMetrics(rd, rd.Object(obj, path, "metrics"), Reader::Join(path, "metrics"));
  s.size = ReadSize(rd, rd.Object(obj, path, "size"), Reader::Join(path, "size"));
  s.seconds = rd.Number(obj, path, "seconds");
  const Json& stats = rd.Object(obj, path, "stats");
  for (auto it = stats.begin(); it != stats.end(); ++it) {
    s.stats[it.key()] = rd.NumberValue(it.value(), Reader::Join(path, "stats") + "." + it.key());
  }
  const Json& skipped = rd.Array(obj, path, "skipped");
  for (size_t i = 0; i < skipped.size(); ++i) {
    const std::string p = Index(path, "skipped", i);
    rd.Expect(skipped[i], p, skipped[i].is_object(), "object");
    s.skipped.push_back({rd.String(skipped[i], p, "layer"), rd.String(skipped[i], p, "reason")});
  }
  if (obj.contains("sensitivity")) {
    const Json& rows = rd.Array(obj, path, "sensitivity");
    for (size_t i = 0; i < rows.size(); ++i) {
      const std::string p = Index(path, "sensitivity", i);
      rd.Expect(rows[i], p, rows[i].is_object(), "object");
      SensitivityRow row;
      row.layer = rd.String(rows[i], p, "layer");
      const Json& sp = rd.Array(rows[i], p, "sparsities");
      const Json& top1 = rd.Array(rows[i], p, "top1");
      rd.Expect(top1, Reader::Join(p, "top1"), top1.size() == sp.size(),
                "one value per sparsity");
      for (size_t k = 0; k < sp.size(); ++k) {
        row.sparsities.push_back(rd.NumberValue(sp[k], Index(p, "sparsities", k)));
        row.top1.push_back(rd.NumberValue(top1[k], Index(p, "top1", k)));
      }
      row.chosen = rd.Number(rows[i], p, "chosen");
      s.sensitivity.push_back(row);
    }
  }
  ReadQuantTables(rd, obj, path, s);
  return s;
}

LatencyStats ReadLatency(const Reader& rd, const Json& obj, const std::string& path) {
  LatencyStats l;
  l.batch1_ms = rd.Number(obj, path, "batch1_ms");
  l.batch32_ms = rd.Number(obj, path, "batch32_ms");
  return l;
}

// An export's optional "int8_kernels": {"quantized": N, "integer": [layer, ...],
// "fallback": [{"layer", "reason"}, ...]}, the two lists making up the N layers.
void ReadInt8Kernels(const Reader& rd, const Json& obj, const std::string& path, ExportReport& e) {
  e.int8_quantized_layers = rd.Int(obj, path, "quantized", 0);
  const Json& integer = rd.Array(obj, path, "integer");
  for (size_t i = 0; i < integer.size(); ++i) {
    const std::string p = Index(path, "integer", i);
    rd.Expect(integer[i], p, integer[i].is_string(), "string");
    e.int8_integer_layers.push_back(integer[i].get<std::string>());
  }
  const Json& fallback = rd.Array(obj, path, "fallback");
  for (size_t i = 0; i < fallback.size(); ++i) {
    const std::string p = Index(path, "fallback", i);
    rd.Expect(fallback[i], p, fallback[i].is_object(), "object");
    e.int8_fallback_layers.push_back(
        {rd.String(fallback[i], p, "layer"), rd.String(fallback[i], p, "reason")});
  }
  const size_t listed = e.int8_integer_layers.size() + e.int8_fallback_layers.size();
  if (static_cast<size_t>(e.int8_quantized_layers) != listed) {
    rd.Fail(Reader::Join(path, "quantized"),
            std::to_string(e.int8_quantized_layers) + " layers, but integer and fallback list " +
                std::to_string(listed));
  }
}

// Each element of array `key` must be an object; `fn(element, path)` reads it.
template <typename T, typename Fn>
std::vector<T> ReadArray(const Reader& rd, const Json& obj, const char* key, Fn fn) {
  const Json& arr = rd.Array(obj, "", key);
  std::vector<T> out;
  for (size_t i = 0; i < arr.size(); ++i) {
    const std::string p = Index("", key, i);
    rd.Expect(arr[i], p, arr[i].is_object(), "object");
    out.push_back(fn(arr[i], p));
  }
  return out;
}

}  // namespace

nlohmann::json ReportToJson(const Report& report) {
  return nlohmann::json(ReportOrderedJson(report));
}

std::string ReportJsonText(const Report& report) {
  return ReportOrderedJson(report).dump(2) + "\n";
}

Report ReportFromJson(const nlohmann::json& json, const std::string& where) {
  if (!json.is_object()) {
    throw Error(ErrorKind::kIo, where + ": expected a JSON object (an mcompress report), found " +
                                    std::string(json.type_name()));
  }
  const Reader rd(where);
  // The version first: a newer or older file is explained, not reported field by field.
  if (!json.contains("schema_version")) {
    throw Error(ErrorKind::kIo,
                where + ": field 'schema_version': missing; not an mcompress report?");
  }
  const int version = static_cast<int>(rd.Int(json, "", "schema_version", kIntMin, kIntMax));
  if (version > kReportSchemaVersion) {
    throw Error(ErrorKind::kIo, where + ": written by a newer mcompress (schema " +
                                    std::to_string(version) + ", this build reads up to " +
                                    std::to_string(kReportSchemaVersion) +
                                    "); upgrade to compare it");
  }
  if (version < kMinReportSchemaVersion) {
    throw Error(ErrorKind::kIo, where + ": written by an older mcompress (schema " +
                                    std::to_string(version) + ", this build reads " +
                                    std::to_string(kMinReportSchemaVersion) + " to " +
                                    std::to_string(kReportSchemaVersion) +
                                    "); re-run its recipe with this build to compare it");
  }
  Report r;
  r.schema_version = version;
  r.mcompress_version = rd.String(json, "", "mcompress_version");
  r.torch_version = rd.String(json, "", "torch_version");
  r.recipe_hash = rd.String(json, "", "recipe_hash");
  r.model = rd.String(json, "", "model");
  r.device = rd.String(json, "", "device");
  r.seed = rd.Unsigned(json, "", "seed");
  r.threads = static_cast<int>(rd.Int(json, "", "threads", kIntMin, kIntMax));
  // Reports before data parallelism ran in one process.
  if (json.contains("world_size")) r.world_size = rd.Int(json, "", "world_size", 1, kIntMax);
  r.accepted = rd.Bool(json, "", "accepted");
  r.compression_ratio = rd.Number(json, "", "compression_ratio");
  r.total_seconds = rd.Number(json, "", "total_seconds");
  r.baseline = ReadStage(rd, rd.Object(json, "", "baseline"), "baseline");
  r.stages = ReadArray<StageReport>(rd, json, "stages", [&](const Json& j, const std::string& p) {
    return ReadStage(rd, j, p);
  });
  r.latency_baseline = ReadLatency(rd, rd.Object(json, "", "latency_baseline"), "latency_baseline");
  r.latency_final = ReadLatency(rd, rd.Object(json, "", "latency_final"), "latency_final");
  r.layers = ReadArray<LayerRow>(rd, json, "layers", [&](const Json& j, const std::string& p) {
    LayerRow l;
    l.name = rd.String(j, p, "name");
    l.op = rd.String(j, p, "op");
    l.weight = rd.String(j, p, "weight");
    const Json& shape = rd.Array(j, p, "weight_shape");
    for (size_t i = 0; i < shape.size(); ++i) {
      l.weight_shape.push_back(rd.IntValue(shape[i], Index(p, "weight_shape", i),
                                           std::numeric_limits<int64_t>::min(),
                                           std::numeric_limits<int64_t>::max()));
    }
    if (j.contains("baseline_shape")) {
      const Json& base = rd.Array(j, p, "baseline_shape");
      for (size_t i = 0; i < base.size(); ++i) {
        l.baseline_shape.push_back(rd.IntValue(base[i], Index(p, "baseline_shape", i),
                                               std::numeric_limits<int64_t>::min(),
                                               std::numeric_limits<int64_t>::max()));
      }
    }
    l.params = rd.Int(j, p, "params");
    l.sparsity = rd.Number(j, p, "sparsity");
    l.bits = static_cast<int>(rd.Int(j, p, "bits", 0, 64));
    l.macs = rd.Int(j, p, "macs");
    return l;
  });
  r.exports = ReadArray<ExportReport>(rd, json, "exports", [&](const Json& j, const std::string& p) {
    ExportReport e;
    e.format = rd.String(j, p, "format");
    e.path = rd.String(j, p, "path");
    e.bytes = rd.Int(j, p, "bytes");
    e.verified = rd.Bool(j, p, "verified");
    e.max_abs_diff = rd.Number(j, p, "max_abs_diff");
    // Added after schema 1 shipped: optional.
    if (j.contains("verified_with")) {
      e.verified_with = rd.String(j, p, "verified_with");
      e.verify_samples = rd.Int(j, p, "verify_samples", 0);
      e.max_rel_diff = rd.Number(j, p, "max_rel_diff");
      e.top1_agreement = rd.Number(j, p, "top1_agreement");
    }
    if (j.contains("sparse")) e.sparse = rd.Bool(j, p, "sparse");
    if (j.contains("int8_target")) e.int8_target = rd.String(j, p, "int8_target");
    if (j.contains("int8_rule")) e.int8_rule = rd.String(j, p, "int8_rule");
    if (j.contains("int8_kernels")) {
      ReadInt8Kernels(rd, rd.Object(j, p, "int8_kernels"), Reader::Join(p, "int8_kernels"), e);
    }
    return e;
  });
  r.acceptance =
      ReadArray<AcceptanceCheck>(rd, json, "acceptance", [&](const Json& j, const std::string& p) {
        AcceptanceCheck a;
        a.criterion = rd.String(j, p, "criterion");
        a.threshold = rd.Number(j, p, "threshold");
        a.value = rd.Number(j, p, "value");
        a.passed = rd.Bool(j, p, "passed");
        return a;
      });
  return r;
}

Report LoadReport(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorKind::kIo, path + ": cannot read: " + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw Error(ErrorKind::kIo, path + ": cannot read: " + std::strerror(errno));
  Json json;
  try {
    json = Json::parse(text.str());
  } catch (const Json::exception& e) {
    // A syntax error or a number beyond double (out_of_range.406): drop nlohmann's
    // "[json.exception.parse_error.101] " prefix.
    std::string what = e.what();
    const auto close = what.find("] ");
    if (close != std::string::npos) what = what.substr(close + 2);
    throw Error(ErrorKind::kIo, path + ": not valid JSON: " + what);
  }
  return ReportFromJson(json, path);
}

}  // namespace compress
