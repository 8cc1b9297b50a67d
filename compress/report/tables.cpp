// The report's number formatting and its tables (run, stages, latency, exports, layers,
// pass statistics, acceptance, comparison of runs), each built once as a Table and
// rendered as Markdown or HTML.
#include "compress/report/tables.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "compress/ir/graph.h"
#include "compress/report/report.h"

namespace compress::report_detail {

// ---- number formatting ------------------------------------------------------------------

namespace {

const char* const kDash = "\u2014";  // shown for NaN / not measured

}  // namespace

std::string Fixed(double v, int decimals) {
  if (std::isnan(v)) return kDash;
  if (std::isinf(v)) return v > 0 ? "\u221e" : "-\u221e";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string Percent(double fraction, int decimals) {
  return std::isnan(fraction) ? kDash : Fixed(fraction * 100.0, decimals);
}

std::string General(double v, int digits) {
  if (std::isnan(v)) return kDash;
  if (std::isinf(v)) return v > 0 ? "\u221e" : "-\u221e";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*g", digits, v);
  return buf;
}

namespace {

std::string Scientific(double v) {
  if (std::isnan(v)) return kDash;
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2e", v);
  return buf;
}

// 1234567 -> "1,234,567".
std::string Grouped(int64_t v) {
  std::string digits = std::to_string(v < 0 ? -static_cast<uint64_t>(v) : v);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return v < 0 ? "-" + out : out;
}

std::string Kb(int64_t bytes) { return Fixed(static_cast<double>(bytes) / 1024.0, 1); }

// Pass counters are doubles; most are counts, shown without a fraction.
std::string StatValue(double v) {
  if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 1e15) {
    return Grouped(static_cast<int64_t>(v));
  }
  return General(v, 6);
}

std::string Ratio(double v) { return std::isnan(v) ? kDash : Fixed(v, 2) + "\u00d7"; }

std::string ShapeText(const std::vector<int64_t>& dims) { return ShapeString(dims); }

}  // namespace

// ---- derived values shared by the renderers ----------------------------------------------

const StageReport& FinalStage(const Report& r) {
  return r.stages.empty() ? r.baseline : r.stages.back();
}

namespace {

// Accuracy drop of the final graph against its own baseline, in fraction.
double Top1Drop(const Report& r) { return r.baseline.metrics.top1 - FinalStage(r).metrics.top1; }

}  // namespace

// ---- tables, rendered as Markdown or HTML --------------------------------------------------

std::string MdCell(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '|') out += "\\|";
    else if (c == '\n' || c == '\r') out += ' ';
    else out += c;
  }
  return out;
}

std::string MdTable(const Table& t) {
  std::ostringstream os;
  os << "|";
  for (const auto& h : t.headers) os << " " << MdCell(h) << " |";
  os << "\n|";
  for (size_t i = 0; i < t.headers.size(); ++i) {
    os << (i < t.align.size() && t.align[i] == 'r' ? "---:|" : "---|");
  }
  os << "\n";
  for (const auto& row : t.rows) {
    os << "|";
    for (const auto& c : row) os << " " << MdCell(c) << " |";
    os << "\n";
  }
  return os.str();
}

std::string Html(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string HtmlTable(const Table& t, const std::string& css_class) {
  std::ostringstream os;
  os << "<table" << (css_class.empty() ? "" : " class=\"" + css_class + "\"") << ">\n<thead><tr>";
  for (size_t i = 0; i < t.headers.size(); ++i) {
    os << "<th" << (i < t.align.size() && t.align[i] == 'r' ? " class=\"r\"" : "") << ">"
       << Html(t.headers[i]) << "</th>";
  }
  os << "</tr></thead>\n<tbody>\n";
  for (const auto& row : t.rows) {
    os << "<tr>";
    for (size_t i = 0; i < row.size(); ++i) {
      os << "<td" << (i < t.align.size() && t.align[i] == 'r' ? " class=\"r\"" : "") << ">"
         << Html(row[i]) << "</td>";
    }
    os << "</tr>\n";
  }
  os << "</tbody></table>\n";
  return os.str();
}

Table RunTable(const Report& r) {
  Table t{{"run", ""}, "ll", {}};
  t.rows = {{"model", r.model},
            {"device", r.device},
            {"seed", std::to_string(r.seed)},
            {"threads", std::to_string(r.threads)},
            {"processes", std::to_string(r.world_size)},
            {"recipe hash", r.recipe_hash},
            {"mcompress", r.mcompress_version},
            {"LibTorch", r.torch_version},
            {"total time", Fixed(r.total_seconds, 1) + " s"},
            {"compression", Ratio(r.compression_ratio)},
            {"verdict", r.accepted ? "ACCEPTED" : "REJECTED"}};
  return t;
}

namespace {

// Whether any stage compared its outputs with the baseline's (see Metrics).
bool HasComparison(const Report& r) {
  for (const auto& s : r.stages) {
    if (!std::isnan(s.metrics.agreement) || !std::isnan(s.metrics.sqnr_db)) return true;
  }
  return false;
}

std::vector<std::string> StageRow(const StageReport& s, bool is_baseline, bool comparison) {
  std::vector<std::string> row{is_baseline ? "base" : std::to_string(s.index),
                               s.pass,
                               Percent(s.metrics.top1),
                               Percent(s.metrics.top5),
                               Fixed(s.metrics.loss, 4)};
  if (comparison) {
    row.push_back(Percent(s.metrics.agreement));
    row.push_back(Fixed(s.metrics.sqnr_db, 1));
    row.push_back(Fixed(s.metrics.max_rel_error, 4));
  }
  for (std::string cell : {Grouped(s.size.parameters), Grouped(s.size.nonzeros),
                           Kb(s.size.bytes_fp32), Kb(s.size.bytes_int8), Kb(s.size.bytes_sparse),
                           // A report from before bytes_compact existed: unknown, not zero.
                           s.size.bytes_compact == 0 && s.size.parameters > 0
                               ? std::string("\u2014")
                               : Kb(s.size.bytes_compact),
                           Fixed(s.seconds, 2)}) {
    row.push_back(std::move(cell));
  }
  row.push_back(is_baseline ? "" : (s.changed ? "yes" : "no"));
  return row;
}

}  // namespace

// The agreement, SQNR and relative-error columns appear only when a stage measured
// them, so reports of labeled runs keep their familiar width.
Table StageTable(const Report& r) {
  const bool comparison = HasComparison(r);
  Table t{{"#", "pass", "top-1 %", "top-5 %", "loss"}, "rlrrr", {}};
  if (comparison) {
    t.headers.insert(t.headers.end(), {"agreement %", "SQNR dB", "max rel err"});
    t.align += "rrr";
  }
  t.headers.insert(t.headers.end(), {"params", "non-zeros", "FP32 KB", "INT8 KB", "sparse KB",
                                     "compact KB", "seconds", "changed"});
  t.align += "rrrrrrrl";
  t.rows.push_back(StageRow(r.baseline, true, comparison));
  for (const auto& s : r.stages) t.rows.push_back(StageRow(s, false, comparison));
  return t;
}

Table LatencyTable(const Report& r) {
  Table t{{"", "batch 1 ms", "batch 32 ms"}, "lrr", {}};
  t.rows.push_back({"baseline", Fixed(r.latency_baseline.batch1_ms, 3),
                    Fixed(r.latency_baseline.batch32_ms, 3)});
  t.rows.push_back(
      {"final", Fixed(r.latency_final.batch1_ms, 3), Fixed(r.latency_final.batch32_ms, 3)});
  t.rows.push_back({"speed-up",
                    Ratio(r.latency_baseline.batch1_ms / r.latency_final.batch1_ms),
                    Ratio(r.latency_baseline.batch32_ms / r.latency_final.batch32_ms)});
  return t;
}

namespace {

// "9/10": quantized layers on integer kernels, of all quantized layers; a dash when
// not measured.
std::string Int8Kernels(const ExportReport& e) {
  if (e.int8_quantized_layers <= 0) return kDash;
  return std::to_string(e.int8_integer_layers.size()) + "/" +
         std::to_string(e.int8_quantized_layers);
}

}  // namespace

Table ExportTable(const Report& r) {
  Table t{{"format", "path", "bytes", "verified", "max |\u0394|", "INT8 target", "INT8 kernels"},
          "llrlrlr",
          {}};
  for (const auto& e : r.exports) {
    t.rows.push_back({e.format, e.path, Grouped(e.bytes), e.verified ? "yes" : "no",
                      Scientific(e.max_abs_diff), e.int8_target.empty() ? kDash : e.int8_target,
                      Int8Kernels(e)});
  }
  return t;
}

Table Int8FallbackTable(const Report& r) {
  Table t{{"export", "layer not on integer kernels", "reason"}, "lll", {}};
  for (const auto& e : r.exports) {
    for (const auto& f : e.int8_fallback_layers) t.rows.push_back({e.path, f.layer, f.reason});
  }
  return t;
}

Table LayersTable(const Report& r) {
  Table t{{"layer", "op", "shape", "params", "sparsity %", "bits", "MACs"}, "lllrrrr", {}};
  int64_t params = 0, macs = 0;
  double zeros = 0;
  for (const auto& l : r.layers) {
    const std::string shape = l.baseline_shape.empty()
                                  ? ShapeText(l.weight_shape)
                                  : ShapeText(l.baseline_shape) + " \u2192 " + ShapeText(l.weight_shape);
    t.rows.push_back({l.name, l.op, shape, Grouped(l.params),
                      Percent(l.sparsity, 1), std::to_string(l.bits), Grouped(l.macs)});
    params += l.params;
    macs += l.macs;
    int64_t wnumel = 1;
    for (int64_t d : l.weight_shape) wnumel *= d;
    zeros += l.sparsity * static_cast<double>(wnumel);
  }
  if (!r.layers.empty()) {
    int64_t wtotal = 0;
    for (const auto& l : r.layers) {
      int64_t n = 1;
      for (int64_t d : l.weight_shape) n *= d;
      wtotal += n;
    }
    t.rows.push_back({"total", "", "", Grouped(params),
                      wtotal > 0 ? Percent(zeros / static_cast<double>(wtotal), 1) : kDash,
                      "", Grouped(macs)});
  }
  return t;
}

Table AcceptanceTable(const Report& r) {
  Table t{{"criterion", "threshold", "value", "result"}, "lrrl", {}};
  for (const auto& a : r.acceptance) {
    t.rows.push_back(
        {a.criterion, General(a.threshold), General(a.value), a.passed ? "PASS" : "FAIL"});
  }
  return t;
}

std::string Verdict(const Report& r) {
  size_t failed = 0;
  for (const auto& a : r.acceptance) failed += a.passed ? 0 : 1;
  std::string why;
  if (r.acceptance.empty()) {
    why = "no acceptance criteria";
  } else if (failed == 0) {
    why = "all " + std::to_string(r.acceptance.size()) + " criteria met";
  } else {
    why = std::to_string(failed) + " of " + std::to_string(r.acceptance.size()) +
          " criteria failed";
  }
  return std::string(r.accepted ? "ACCEPTED" : "REJECTED") + " (" + why + ")";
}

std::string StageTitle(const StageReport& s) {
  return "Stage " + std::to_string(s.index) + ": " + s.pass;
}

bool HasStatsOrSkips(const StageReport& s) {
  return !s.stats.empty() || !s.skipped.empty() || !s.sensitivity.empty() ||
         !s.quant_sensitivity.empty() || !s.fallback_trials.empty() ||
         !s.latency_trials.empty();
}

namespace {

// A value in quant_metric's unit: top-1 as %, SQNR in dB.
std::string QuantMetricCell(const StageReport& s, double v) {
  if (std::isnan(v)) return kDash;
  return s.quant_metric == "val_top1" ? Percent(v, 2) : Fixed(v, 2);
}

std::string QuantMetricUnit(const StageReport& s) {
  return s.quant_metric == "val_top1" ? "validation top-1 %" : "output SQNR dB";
}

}  // namespace

Table QuantSensitivityTable(const StageReport& s) {
  const std::string unit = QuantMetricUnit(s);
  Table t{{"layer", unit + ", only this layer INT8", unit + ", all but this layer INT8"}, "lrr", {}};
  for (const auto& row : s.quant_sensitivity) {
    t.rows.push_back({row.layer, QuantMetricCell(s, row.only_this),
                      QuantMetricCell(s, row.all_but_this)});
  }
  return t;
}

Table FallbackTable(const StageReport& s) {
  Table t{{"trial", "layers kept FP32", QuantMetricUnit(s), "target met"}, "rlrl", {}};
  for (size_t i = 0; i < s.fallback_trials.size(); ++i) {
    const FallbackTrial& trial = s.fallback_trials[i];
    std::string layers;
    for (const auto& l : trial.fp32_layers) layers += (layers.empty() ? "" : ", ") + l;
    t.rows.push_back({std::to_string(i), layers.empty() ? kDash : layers,
                      QuantMetricCell(s, trial.metric), trial.met ? "yes" : "no"});
  }
  return t;
}

Table LatencyTrialTable(const StageReport& s) {
  Table t{{"scan", "layer", "ONNX Runtime ms, this layer FP32 too", "saving vs the scan's start %",
           "to FP32"},
          "rlrrl", {}};
  for (const auto& trial : s.latency_trials) {
    t.rows.push_back({std::to_string(trial.step), trial.layer,
                      std::isnan(trial.ms) ? kDash : Fixed(trial.ms, 3),
                      std::isnan(trial.saving) ? kDash : Percent(trial.saving, 1),
                      trial.fp32 ? "yes" : "no"});
  }
  return t;
}

// Validation top-1 per layer (rows) and scanned sparsity (columns), plus the target
// derived from it.
Table SensitivityTable(const StageReport& s) {
  Table t{{"layer"}, "l", {}};
  for (double sp : s.sensitivity.front().sparsities) {
    t.headers.push_back("top-1 % @ " + Percent(sp, 0) + "% sparse");
    t.align += "r";
  }
  t.headers.push_back("chosen sparsity %");
  t.align += "r";
  for (const auto& row : s.sensitivity) {
    std::vector<std::string> cells{row.layer};
    for (double a : row.top1) cells.push_back(Percent(a, 2));
    cells.push_back(std::isnan(row.chosen) ? kDash : Percent(row.chosen, 0));
    t.rows.push_back(cells);
  }
  return t;
}

Table StatsTable(const StageReport& s) {
  Table t{{"stat", "value"}, "lr", {}};
  for (const auto& [k, v] : s.stats) t.rows.push_back({k, StatValue(v)});
  return t;
}

Table SkippedTable(const StageReport& s) {
  Table t{{"skipped layer", "reason"}, "ll", {}};
  for (const auto& k : s.skipped) t.rows.push_back({k.layer, k.reason});
  return t;
}

Table CompareTable(const std::vector<Report>& runs, const std::vector<std::string>& names) {
  Table t{{"run", "model", "final top-1 %", "drop (pp)", "final bytes", "ratio", "b1 ms",
           "b32 ms", "accepted"},
          "llrrrrrrl",
          {}};
  for (size_t i = 0; i < runs.size(); ++i) {
    const Report& r = runs[i];
    const std::string name = i < names.size() ? names[i] : "run " + std::to_string(i + 1);
    t.rows.push_back({name, r.model, Percent(FinalStage(r).metrics.top1), Percent(Top1Drop(r)),
                      Grouped(StoredBytes(r)), Ratio(r.compression_ratio),
                      Fixed(r.latency_final.batch1_ms, 3), Fixed(r.latency_final.batch32_ms, 3),
                      r.accepted ? "yes" : "no"});
  }
  return t;
}

}  // namespace compress::report_detail
