// The report layer: per-layer and size statistics of a graph, the versioned JSON form
// of a Report (exact round trip, NaN as null), and its Markdown / self-contained HTML
// renderings with inline SVG charts drawn by the small helpers below.
#include "compress/report.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

namespace compress {

namespace {

using Json = nlohmann::json;
// Written with ordered keys so that a report file reads top-down (schema_version first).
using OJson = nlohmann::ordered_json;

// Oldest schema this build can read (kReportSchemaVersion is the newest).
constexpr int kMinReportSchemaVersion = 1;

// ---- graph statistics ----------------------------------------------------------------

bool IsWeightedOp(const std::string& op) {
  return op == "Conv" || op == "Gemm" || op == "MatMul";
}

// The initializer a weighted node reads as its weight (input 1): directly, or through a
// DequantizeLinear of an initializer (QDQ form), in which case `via_dq` is set.
const std::string* LayerWeightName(const Graph& graph, const Node& node, bool* via_dq) {
  *via_dq = false;
  if (!IsWeightedOp(node.op_type) || !node.HasInput(1)) return nullptr;
  const std::string& w = node.inputs[1];
  if (graph.IsInitializer(w)) return &w;
  const int p = graph.ProducerIndex(w);
  if (p >= 0) {
    const Node& dq = graph.nodes[p];
    if (dq.op_type == "DequantizeLinear" && dq.HasInput(0) && graph.IsInitializer(dq.inputs[0])) {
      *via_dq = true;
      return &dq.inputs[0];
    }
  }
  return nullptr;
}

// The weight as the model computes with it: value with its pruning mask applied.
int64_t CountNonzeros(const Initializer& init) {
  if (!init.value.defined() || init.value.numel() == 0) return 0;
  at::Tensor nz = init.value != 0;
  if (init.mask.defined()) nz = at::logical_and(nz, init.mask.to(init.value.device()) != 0);
  return nz.sum().item<int64_t>();
}

int64_t Product(const std::vector<int64_t>& dims, size_t from) {
  int64_t p = 1;
  for (size_t i = from; i < dims.size(); ++i) {
    if (dims[i] < 0) return -1;  // symbolic
    p *= dims[i];
  }
  return p;
}

// Spatial output size of a Conv from its input shape and attributes, for graphs whose
// value_info lacks the output shape. -1 when unknown.
int64_t ConvSpatialFromInput(const Graph& graph, const Node& node, const at::Tensor& w) {
  auto in = graph.FindValue(node.inputs[0]);
  if (!in || !in->shape || in->shape->size() != static_cast<size_t>(w.dim())) return -1;
  const auto& x = *in->shape;
  const size_t n = x.size() - 2;
  const auto strides = node.GetInts("strides", std::vector<int64_t>(n, 1));
  const auto dil = node.GetInts("dilations", std::vector<int64_t>(n, 1));
  const auto pads = node.GetInts("pads", std::vector<int64_t>(2 * n, 0));
  const std::string auto_pad = node.GetString("auto_pad", "NOTSET");
  int64_t p = 1;
  for (size_t i = 0; i < n; ++i) {
    const int64_t in_i = x[2 + i];
    if (in_i < 0 || i >= strides.size()) return -1;
    int64_t out;
    if (auto_pad == "SAME_UPPER" || auto_pad == "SAME_LOWER") {
      out = (in_i + strides[i] - 1) / strides[i];
    } else {
      const int64_t k = w.size(2 + i);
      const int64_t d = i < dil.size() ? dil[i] : 1;
      const int64_t pad = auto_pad == "VALID" || pads.size() < 2 * n ? 0 : pads[i] + pads[n + i];
      out = (in_i + pad - d * (k - 1) - 1) / strides[i] + 1;
    }
    p *= out;
  }
  return p;
}

int64_t LayerMacs(const Graph& graph, const Node& node, const at::Tensor& w) {
  auto out = graph.FindValue(node.outputs.empty() ? std::string() : node.outputs[0]);
  const std::vector<int64_t>* out_dims = out && out->shape ? &*out->shape : nullptr;
  if (node.op_type == "Conv") {
    // out_C * prod(out spatial) * (in_C / group) * prod(kernel) = prod(spatial) * |W|.
    int64_t spatial = out_dims && out_dims->size() >= 2 ? Product(*out_dims, 2) : -1;
    if (spatial < 0) spatial = ConvSpatialFromInput(graph, node, w);
    return spatial < 0 ? 0 : spatial * w.numel();
  }
  if (node.op_type == "Gemm") {
    if (w.dim() != 2) return 0;
    const bool trans_b = node.GetInt("transB", 0) != 0;
    const int64_t k = trans_b ? w.size(1) : w.size(0);
    const int64_t m_out = trans_b ? w.size(0) : w.size(1);
    return m_out * k;  // one sample = one row of A
  }
  // MatMul: every output element after the batch dimension costs K multiply-adds.
  const int64_t k = w.dim() >= 2 ? w.size(w.dim() - 2) : (w.dim() == 1 ? w.size(0) : 0);
  if (out_dims && out_dims->size() >= 2) {
    const int64_t per_sample = Product(*out_dims, 1);
    return per_sample < 0 ? 0 : per_sample * k;
  }
  if (out_dims && out_dims->size() == 1) return k;  // [N] = [N,K] x [K]
  return w.dim() == 2 ? w.numel() : 0;              // unknown output: one row
}

// ---- number formatting ------------------------------------------------------------------

const char* const kDash = "\u2014";  // shown for NaN / not measured

std::string Fixed(double v, int decimals) {
  if (std::isnan(v)) return kDash;
  if (std::isinf(v)) return v > 0 ? "\u221e" : "-\u221e";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string Percent(double fraction, int decimals = 2) {
  return std::isnan(fraction) ? kDash : Fixed(fraction * 100.0, decimals);
}

std::string General(double v, int digits = 4) {
  if (std::isnan(v)) return kDash;
  if (std::isinf(v)) return v > 0 ? "\u221e" : "-\u221e";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*g", digits, v);
  return buf;
}

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

// ---- derived values shared by the renderers ----------------------------------------------

const StageReport& FinalStage(const Report& r) {
  return r.stages.empty() ? r.baseline : r.stages.back();
}

}  // namespace

int64_t StoredBytes(const Report& r) {
  const SizeStats& s = FinalStage(r).size;
  bool quantized = false;
  for (const auto& l : r.layers) quantized |= l.bits < 32;
  int64_t best = std::min(s.bytes_fp32, s.bytes_sparse);
  if (quantized) best = std::min(best, s.bytes_int8);
  return best;
}

namespace {

// Accuracy drop of the final graph against its own baseline, in fraction.
double Top1Drop(const Report& r) { return r.baseline.metrics.top1 - FinalStage(r).metrics.top1; }

// ---- tables, rendered as Markdown or HTML --------------------------------------------------

struct Table {
  std::vector<std::string> headers;
  std::string align;  // one char per column: 'l' or 'r'
  std::vector<std::vector<std::string>> rows;
};

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

std::string HtmlTable(const Table& t, const std::string& css_class = "") {
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
            {"recipe hash", r.recipe_hash},
            {"mcompress", r.mcompress_version},
            {"LibTorch", r.torch_version},
            {"total time", Fixed(r.total_seconds, 1) + " s"},
            {"compression", Ratio(r.compression_ratio)},
            {"verdict", r.accepted ? "ACCEPTED" : "REJECTED"}};
  return t;
}

std::vector<std::string> StageRow(const StageReport& s, bool is_baseline) {
  return {is_baseline ? "base" : std::to_string(s.index),
          s.pass,
          Percent(s.metrics.top1),
          Percent(s.metrics.top5),
          Fixed(s.metrics.loss, 4),
          Grouped(s.size.parameters),
          Grouped(s.size.nonzeros),
          Kb(s.size.bytes_fp32),
          Kb(s.size.bytes_int8),
          Kb(s.size.bytes_sparse),
          Fixed(s.seconds, 2),
          is_baseline ? "" : (s.changed ? "yes" : "no")};
}

Table StageTable(const Report& r) {
  Table t{{"#", "pass", "top-1 %", "top-5 %", "loss", "params", "non-zeros", "FP32 KB",
           "INT8 KB", "sparse KB", "seconds", "changed"},
          "rlrrrrrrrrrl",
          {}};
  t.rows.push_back(StageRow(r.baseline, true));
  for (const auto& s : r.stages) t.rows.push_back(StageRow(s, false));
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

Table ExportTable(const Report& r) {
  Table t{{"format", "path", "bytes", "verified", "max |\u0394|", "INT8 target"}, "llrlrl", {}};
  for (const auto& e : r.exports) {
    t.rows.push_back({e.format, e.path, Grouped(e.bytes), e.verified ? "yes" : "no",
                      Scientific(e.max_abs_diff), e.int8_target.empty() ? "\u2014" : e.int8_target});
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
  return !s.stats.empty() || !s.skipped.empty() || !s.sensitivity.empty();
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

// ---- SVG helpers ----------------------------------------------------------------------------

const char* const kPalette[] = {"#3b6fb6", "#e07b39", "#4a9a5b", "#b04a8a", "#7a6bb8"};

std::string Num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  return buf;
}

// Axis range [lo, hi] with a round tick step (1, 2 or 5 x 10^k), about 5 ticks.
struct Axis {
  double lo = 0, hi = 1, step = 0.2;
};

Axis NiceAxis(double lo, double hi) {
  if (!(hi > lo)) {
    const double pad = std::max(1.0, std::fabs(hi) * 0.1);
    lo -= pad;
    hi += pad;
  }
  const double raw = (hi - lo) / 5.0;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    step = m * mag;
    if (step >= raw) break;
  }
  return {std::floor(lo / step) * step, std::ceil(hi / step) * step, step};
}

std::string TickLabel(double v, double step) {
  const int decimals = step >= 1 ? 0 : static_cast<int>(std::ceil(-std::log10(step)));
  return Fixed(std::fabs(v) < step * 1e-9 ? 0.0 : v, decimals);
}

class Svg {
 public:
  Svg(int width, int height, const std::string& title) : width_(width), height_(height) {
    os_ << "<svg class=\"chart\" width=\"" << width << "\" height=\"" << height
        << "\" viewBox=\"0 0 " << width << " " << height << "\" role=\"img\" aria-label=\""
        << Html(title) << "\">\n<title>" << Html(title) << "</title>\n";
    Text(width / 2.0, 20, title, "middle", 14, "font-weight=\"bold\"");
  }
  void Line(double x1, double y1, double x2, double y2, const std::string& stroke,
            double width = 1, const std::string& extra = "") {
    os_ << "<line x1=\"" << Num(x1) << "\" y1=\"" << Num(y1) << "\" x2=\"" << Num(x2)
        << "\" y2=\"" << Num(y2) << "\" stroke=\"" << stroke << "\" stroke-width=\"" << width
        << "\"" << (extra.empty() ? "" : " " + extra) << "/>\n";
  }
  void Rect(double x, double y, double w, double h, const std::string& fill,
            const std::string& tooltip = "") {
    os_ << "<rect x=\"" << Num(x) << "\" y=\"" << Num(y) << "\" width=\"" << Num(std::max(0.0, w))
        << "\" height=\"" << Num(std::max(0.0, h)) << "\" fill=\"" << fill << "\">";
    if (!tooltip.empty()) os_ << "<title>" << Html(tooltip) << "</title>";
    os_ << "</rect>\n";
  }
  void Circle(double cx, double cy, double r, const std::string& fill,
              const std::string& tooltip = "") {
    os_ << "<circle cx=\"" << Num(cx) << "\" cy=\"" << Num(cy) << "\" r=\"" << Num(r)
        << "\" fill=\"" << fill << "\">";
    if (!tooltip.empty()) os_ << "<title>" << Html(tooltip) << "</title>";
    os_ << "</circle>\n";
  }
  void Polyline(const std::vector<std::pair<double, double>>& pts, const std::string& stroke) {
    os_ << "<polyline fill=\"none\" stroke=\"" << stroke << "\" stroke-width=\"2\" points=\"";
    for (const auto& [x, y] : pts) os_ << Num(x) << "," << Num(y) << " ";
    os_ << "\"/>\n";
  }
  void Text(double x, double y, const std::string& text, const std::string& anchor = "middle",
            int size = 11, const std::string& extra = "") {
    os_ << "<text x=\"" << Num(x) << "\" y=\"" << Num(y) << "\" text-anchor=\"" << anchor
        << "\" font-size=\"" << size << "\"" << (extra.empty() ? "" : " " + extra) << ">"
        << Html(text) << "</text>\n";
  }
  std::string Finish() {
    os_ << "</svg>\n";
    return os_.str();
  }
  int width() const { return width_; }
  int height() const { return height_; }

 private:
  int width_, height_;
  std::ostringstream os_;
};

// Plot rectangle inside a chart, with a y axis (grid, ticks, label) and an x axis label.
struct Plot {
  double left, top, right, bottom;
  Axis y;
  double Y(double v) const { return bottom - (v - y.lo) / (y.hi - y.lo) * (bottom - top); }
};

void DrawYAxis(Svg& svg, const Plot& p, const std::string& y_label, const std::string& x_label) {
  for (double v = p.y.lo; v <= p.y.hi + p.y.step * 1e-6; v += p.y.step) {
    const double y = p.Y(v);
    svg.Line(p.left, y, p.right, y, "#e3e3e3");
    svg.Text(p.left - 6, y + 4, TickLabel(v, p.y.step), "end", 10);
  }
  svg.Line(p.left, p.top, p.left, p.bottom, "#555");
  svg.Line(p.left, p.bottom, p.right, p.bottom, "#555");
  const double mid = (p.top + p.bottom) / 2;
  svg.Text(16, mid, y_label, "middle", 11,
           "transform=\"rotate(-90 16 " + Num(mid) + ")\"");
  svg.Text((p.left + p.right) / 2, svg.height() - 6, x_label, "middle", 11);
}

void CategoryLabel(Svg& svg, double x, double y, const std::string& label) {
  svg.Text(x, y, label, "end", 10,
           "transform=\"rotate(-25 " + Num(x) + " " + Num(y) + ")\"");
}

std::vector<std::string> StageLabels(const Report& r) {
  std::vector<std::string> labels = {"baseline"};
  for (const auto& s : r.stages) labels.push_back(std::to_string(s.index) + " " + s.pass);
  return labels;
}

std::vector<const StageReport*> AllStages(const Report& r) {
  std::vector<const StageReport*> all = {&r.baseline};
  for (const auto& s : r.stages) all.push_back(&s);
  return all;
}

// Chart 1: top-1 accuracy after each stage, baseline first (line with labelled points).
std::string AccuracyChart(const Report& r) {
  const auto stages = AllStages(r);
  const auto labels = StageLabels(r);
  const int width = std::max(480, 90 * static_cast<int>(stages.size()) + 120);
  Svg svg(width, 340, "Top-1 accuracy per stage");
  double lo = 100, hi = 0;
  for (const auto* s : stages) {
    if (std::isnan(s->metrics.top1)) continue;
    lo = std::min(lo, s->metrics.top1 * 100);
    hi = std::max(hi, s->metrics.top1 * 100);
  }
  if (lo > hi) {
    svg.Text(width / 2.0, 170, "accuracy was not evaluated", "middle", 12);
    return svg.Finish();
  }
  const double pad = std::max(0.5, (hi - lo) * 0.15);
  Axis axis = NiceAxis(std::max(0.0, lo - pad), std::min(100.0, hi + pad));
  Plot p{70, 40, width - 30.0, 250, axis};
  DrawYAxis(svg, p, "top-1 %", "stage");
  const double slot = (p.right - p.left) / stages.size();
  std::vector<std::pair<double, double>> pts;
  for (size_t i = 0; i < stages.size(); ++i) {
    const double x = p.left + slot * (i + 0.5);
    CategoryLabel(svg, x + 4, p.bottom + 16, labels[i]);
    const double v = stages[i]->metrics.top1;
    if (std::isnan(v)) {
      svg.Text(x, p.bottom - 6, "n/a", "middle", 10, "fill=\"#888\"");
      continue;
    }
    pts.emplace_back(x, p.Y(v * 100));
  }
  svg.Polyline(pts, kPalette[0]);
  size_t k = 0;
  for (size_t i = 0; i < stages.size(); ++i) {
    const double v = stages[i]->metrics.top1;
    if (std::isnan(v)) continue;
    const auto [x, y] = pts[k++];
    svg.Circle(x, y, 4, kPalette[0], labels[i] + ": " + Percent(v) + " %");
    svg.Text(x, y - 9, Percent(v), "middle", 10);
  }
  return svg.Finish();
}

// Grouped vertical bars: one group per category, one bar per series.
std::string GroupedBars(const std::string& title, const std::vector<std::string>& categories,
                        const std::vector<std::string>& series,
                        const std::vector<std::vector<double>>& values,  // [category][series]
                        const std::string& y_label, const std::string& x_label) {
  const int width = std::max(480, 110 * static_cast<int>(categories.size()) + 120);
  Svg svg(width, 360, title);
  double hi = 0;
  for (const auto& row : values) {
    for (double v : row) {
      if (std::isfinite(v)) hi = std::max(hi, v);
    }
  }
  Plot p{70, 56, width - 30.0, 260, NiceAxis(0, hi > 0 ? hi : 1)};
  p.y.lo = 0;
  DrawYAxis(svg, p, y_label, x_label);
  // Legend under the title.
  double lx = p.left;
  for (size_t s = 0; s < series.size(); ++s) {
    svg.Rect(lx, 32, 12, 12, kPalette[s % 5]);
    svg.Text(lx + 16, 42, series[s], "start", 11);
    lx += 24 + 8.0 * series[s].size();
  }
  const double slot = (p.right - p.left) / std::max<size_t>(1, categories.size());
  const double bar = slot * 0.8 / std::max<size_t>(1, series.size());
  for (size_t c = 0; c < categories.size(); ++c) {
    const double x0 = p.left + slot * c + slot * 0.1;
    for (size_t s = 0; s < series.size(); ++s) {
      const double v = values[c][s];
      if (!std::isfinite(v)) continue;
      const double y = p.Y(v);
      svg.Rect(x0 + bar * s, y, bar - 2, p.bottom - y, kPalette[s % 5],
               categories[c] + " " + series[s] + ": " + Fixed(v, 1));
    }
    CategoryLabel(svg, p.left + slot * (c + 0.5) + 4, p.bottom + 16, categories[c]);
  }
  return svg.Finish();
}

// Chart 2: storage per stage as FP32 / INT8 / sparse KB.
std::string SizeChart(const Report& r) {
  std::vector<std::vector<double>> values;
  for (const auto* s : AllStages(r)) {
    values.push_back({s->size.bytes_fp32 / 1024.0, s->size.bytes_int8 / 1024.0,
                      s->size.bytes_sparse / 1024.0});
  }
  return GroupedBars("Model size per stage", StageLabels(r), {"FP32", "INT8", "sparse"}, values,
                     "KB", "stage");
}

// Chart 3: sparsity of each weighted layer (horizontal bars), coloured by bit width.
std::string LayerChart(const Report& r) {
  size_t name_len = 8;
  for (const auto& l : r.layers) name_len = std::max(name_len, l.name.size());
  const double left = 20 + 6.5 * std::min<size_t>(name_len, 40);
  const int width = 900;
  const double row = 20;
  const int height = static_cast<int>(90 + row * std::max<size_t>(1, r.layers.size()));
  Svg svg(width, height, "Per-layer sparsity and bit width");
  if (r.layers.empty()) {
    svg.Text(width / 2.0, 60, "no weighted layers", "middle", 12);
    return svg.Finish();
  }
  const double right = width - 120.0, top = 50;
  const double bottom = top + row * r.layers.size();
  for (int t = 0; t <= 4; ++t) {
    const double x = left + (right - left) * t / 4.0;
    svg.Line(x, top - 4, x, bottom, "#e3e3e3");
    svg.Text(x, top - 8, std::to_string(t * 25) + "%", "middle", 10);
  }
  svg.Text((left + right) / 2, height - 12, "sparsity (fraction of zero weights)", "middle", 11);
  // Legend for the colours.
  svg.Rect(right + 14, top, 12, 12, kPalette[0]);
  svg.Text(right + 30, top + 10, "32-bit", "start", 11);
  svg.Rect(right + 14, top + 18, 12, 12, kPalette[1]);
  svg.Text(right + 30, top + 28, "8-bit", "start", 11);
  for (size_t i = 0; i < r.layers.size(); ++i) {
    const LayerRow& l = r.layers[i];
    const double y = top + row * i;
    const std::string color = l.bits < 32 ? kPalette[1] : kPalette[0];
    std::string name = l.name.size() > 40 ? l.name.substr(0, 39) + "\u2026" : l.name;
    svg.Text(left - 6, y + 14, name, "end", 11);
    const double w = (right - left) * std::clamp(l.sparsity, 0.0, 1.0);
    svg.Rect(left, y + 3, std::max(w, 1.0), row - 6, color,
             l.name + ": " + Percent(l.sparsity, 1) + " % zeros, " + std::to_string(l.bits) +
                 "-bit");
    svg.Text(left + std::max(w, 1.0) + 4, y + 14,
             Percent(l.sparsity, 1) + "% \u00b7 " + std::to_string(l.bits) + "-bit", "start", 10);
  }
  svg.Line(left, top - 4, left, bottom, "#555");
  return svg.Finish();
}

// Accuracy (y, top-1 %) against final size (x, KB; log scale when sizes span > 10x).
std::string ScatterChart(const std::vector<Report>& runs, const std::vector<std::string>& names) {
  const int width = 720, height = 420;
  Svg svg(width, height, "Accuracy vs size");
  struct Pt { double kb, acc; std::string name; };
  std::vector<Pt> pts;
  for (size_t i = 0; i < runs.size(); ++i) {
    const double acc = FinalStage(runs[i]).metrics.top1 * 100;
    const double kb = StoredBytes(runs[i]) / 1024.0;
    if (std::isnan(acc) || !(kb > 0)) continue;
    pts.push_back({kb, acc, i < names.size() ? names[i] : "run " + std::to_string(i + 1)});
  }
  if (pts.empty()) {
    svg.Text(width / 2.0, height / 2.0, "no run has both accuracy and size", "middle", 12);
    return svg.Finish();
  }
  double xmin = pts[0].kb, xmax = pts[0].kb, ymin = pts[0].acc, ymax = pts[0].acc;
  for (const auto& p : pts) {
    xmin = std::min(xmin, p.kb);
    xmax = std::max(xmax, p.kb);
    ymin = std::min(ymin, p.acc);
    ymax = std::max(ymax, p.acc);
  }
  const bool log_x = xmax / xmin > 10;
  const double ypad = std::max(0.5, (ymax - ymin) * 0.15);
  Plot p{70, 40, width - 40.0, height - 60.0,
         NiceAxis(std::max(0.0, ymin - ypad), std::min(100.0, ymax + ypad))};
  DrawYAxis(svg, p, "top-1 %", log_x ? "size KB (log scale)" : "size KB");
  double xlo, xhi;
  std::vector<double> ticks;
  if (log_x) {
    xlo = std::floor(std::log10(xmin));
    xhi = std::ceil(std::log10(xmax));
    for (double e = xlo; e <= xhi + 1e-9; e += 1) ticks.push_back(e);
  } else {
    Axis ax = NiceAxis(xmin == xmax ? xmin * 0.5 : xmin - (xmax - xmin) * 0.1,
                       xmin == xmax ? xmax * 1.5 : xmax + (xmax - xmin) * 0.1);
    ax.lo = std::max(0.0, ax.lo);
    xlo = ax.lo;
    xhi = ax.hi;
    for (double v = ax.lo; v <= ax.hi + ax.step * 1e-6; v += ax.step) ticks.push_back(v);
  }
  auto X = [&](double kb) {
    const double v = log_x ? std::log10(kb) : kb;
    return p.left + (v - xlo) / (xhi - xlo) * (p.right - p.left);
  };
  for (double t : ticks) {
    const double kb = log_x ? std::pow(10.0, t) : t;
    const double x = X(kb);
    svg.Line(x, p.top, x, p.bottom, "#eeeeee");
    svg.Text(x, p.bottom + 16, General(kb, 4), "middle", 10);
  }
  for (size_t i = 0; i < pts.size(); ++i) {
    const double x = X(pts[i].kb), y = p.Y(pts[i].acc);
    svg.Circle(x, y, 5, kPalette[i % 5],
               pts[i].name + ": " + Fixed(pts[i].kb, 1) + " KB, " + Fixed(pts[i].acc, 2) + " %");
    svg.Text(x + 8, y - 6, pts[i].name, "start", 11);
  }
  return svg.Finish();
}

const char* const kCss = R"(body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:24px auto;max-width:1150px;color:#222;background:#fff;padding:0 16px}
h1{font-size:1.6em;margin-bottom:4px}h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:4px}h3{margin-bottom:4px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}th,td{border:1px solid #d0d0d0;padding:3px 8px}
th{background:#f2f4f7;text-align:left}td.r,th.r{text-align:right;font-variant-numeric:tabular-nums}
tbody tr:nth-child(even){background:#fafafa}.chart{display:block;margin:10px 0;background:#fff;border:1px solid #eee}
.verdict{display:inline-block;padding:6px 14px;border-radius:4px;font-weight:bold;margin:8px 0}
.ok{background:#e3f4e6;color:#1d6b2c}.bad{background:#fbe4e4;color:#9b1c1c}.muted{color:#777})";

std::string HtmlHead(const std::string& title) {
  return "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>" +
         Html(title) + "</title>\n<style>\n" + kCss + "\n</style>\n</head>\n<body>\n";
}

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
  return j;
}

OJson SizeJson(const SizeStats& s) {
  OJson j;
  j["parameters"] = s.parameters;
  j["nonzeros"] = s.nonzeros;
  j["bytes_fp32"] = s.bytes_fp32;
  j["bytes_int8"] = s.bytes_int8;
  j["bytes_sparse"] = s.bytes_sparse;
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
  return j;
}

OJson LatencyJson(const LatencyStats& l) {
  OJson j;
  j["batch1_ms"] = NumberJson(l.batch1_ms);
  j["batch32_ms"] = NumberJson(l.batch32_ms);
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
  return m;
}

SizeStats ReadSize(const Reader& rd, const Json& obj, const std::string& path) {
  SizeStats s;
  s.parameters = rd.Int(obj, path, "parameters");
  s.nonzeros = rd.Int(obj, path, "nonzeros");
  s.bytes_fp32 = rd.Int(obj, path, "bytes_fp32");
  s.bytes_int8 = rd.Int(obj, path, "bytes_int8");
  s.bytes_sparse = rd.Int(obj, path, "bytes_sparse");
  s.macs = rd.Int(obj, path, "macs");
  return s;
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
  return s;
}

LatencyStats ReadLatency(const Reader& rd, const Json& obj, const std::string& path) {
  LatencyStats l;
  l.batch1_ms = rd.Number(obj, path, "batch1_ms");
  l.batch32_ms = rd.Number(obj, path, "batch32_ms");
  return l;
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

// ---- graph statistics ---------------------------------------------------------------------

std::vector<LayerRow> LayerTable(const Graph& graph) {
  std::vector<LayerRow> rows;
  for (const Node& node : graph.nodes) {
    bool via_dq = false;
    const std::string* wname = LayerWeightName(graph, node, &via_dq);
    if (!wname) continue;
    const Initializer& init = graph.initializers.at(*wname);
    const at::Tensor& w = init.value;
    LayerRow row;
    row.name = node.name;
    row.op = node.op_type;
    row.weight = *wname;
    row.weight_shape = w.sizes().vec();
    row.params = w.numel();
    if (node.op_type != "MatMul" && node.HasInput(2) && graph.IsInitializer(node.inputs[2])) {
      row.params += graph.initializers.at(node.inputs[2]).value.numel();
    }
    row.sparsity = w.numel() == 0 ? 0.0
                                  : 1.0 - static_cast<double>(CountNonzeros(init)) /
                                              static_cast<double>(w.numel());
    row.bits = init.quant ? init.quant->bits : (via_dq ? 8 : 32);
    row.macs = LayerMacs(graph, node, w);
    rows.push_back(std::move(row));
  }
  return rows;
}

SizeStats ComputeSize(const Graph& graph) {
  // Weights the INT8 rule stores in one byte: layer weights and anything quantized.
  std::map<std::string, bool> layer_weight;
  SizeStats s;
  for (const Node& node : graph.nodes) {
    bool via_dq = false;
    if (const std::string* w = LayerWeightName(graph, node, &via_dq)) layer_weight[*w] = true;
  }
  for (const LayerRow& row : LayerTable(graph)) s.macs += row.macs;
  for (const auto& [name, init] : graph.initializers) {
    if (!init.value.defined()) continue;
    const int64_t n = init.value.numel();
    const int64_t nnz = CountNonzeros(init);
    const bool is_weight = layer_weight.count(name) != 0 || init.quant.has_value();
    // FP32 storage: 4 bytes per floating-point element (and per layer weight even when
    // held as int8 behind a DequantizeLinear); other dtypes keep their element size.
    const int64_t elem = at::isFloatingType(init.value.scalar_type()) || is_weight
                             ? 4
                             : static_cast<int64_t>(init.value.element_size());
    s.parameters += n;
    s.nonzeros += nnz;
    s.bytes_fp32 += n * elem;
    s.bytes_int8 += is_weight ? n : n * elem;
    // As stored (sparse where COO pays off), each tensor at its own element size: a
    // quantized weight's int8 bytes, so a quantized model's stored size is real.
    const int64_t stored = static_cast<int64_t>(init.value.element_size());
    s.bytes_sparse += std::min(n * stored, nnz * (stored + 8));
  }
  return s;
}

// ---- JSON ----------------------------------------------------------------------------------

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
  } catch (const Json::parse_error& e) {
    // Drop nlohmann's "[json.exception.parse_error.101] " prefix.
    std::string what = e.what();
    const auto close = what.find("] ");
    if (close != std::string::npos) what = what.substr(close + 2);
    throw Error(ErrorKind::kIo, path + ": not valid JSON: " + what);
  }
  return ReportFromJson(json, path);
}

// ---- Markdown -------------------------------------------------------------------------------

std::string RenderMarkdown(const Report& r) {
  std::ostringstream os;
  os << "# mcompress report: " << MdCell(r.model) << "\n\n";
  os << "**Verdict: " << Verdict(r) << "**\n\n";
  os << "## Run\n\n" << MdTable(RunTable(r)) << "\n";
  os << "## Stages\n\n" << MdTable(StageTable(r)) << "\n";
  os << "## Latency\n\nMedian milliseconds per batch.\n\n" << MdTable(LatencyTable(r)) << "\n";
  os << "## Exports\n\n";
  if (r.exports.empty()) os << "No exports.\n\n";
  else os << MdTable(ExportTable(r)) << "\n";
  os << "## Layers\n\nWeighted layers of the final graph; MACs per sample.\n\n";
  if (r.layers.empty()) os << "No weighted layers.\n\n";
  else os << MdTable(LayersTable(r)) << "\n";
  os << "## Pass statistics\n\n";
  bool any = false;
  for (const auto& s : r.stages) {
    if (!HasStatsOrSkips(s)) continue;
    any = true;
    os << "### " << MdCell(StageTitle(s)) << "\n\n";
    if (!s.stats.empty()) os << MdTable(StatsTable(s)) << "\n";
    if (!s.skipped.empty()) os << MdTable(SkippedTable(s)) << "\n";
    if (!s.sensitivity.empty()) os << MdTable(SensitivityTable(s)) << "\n";
  }
  if (!any) os << "No pass statistics.\n\n";
  os << "## Acceptance\n\n";
  if (r.acceptance.empty()) os << "No acceptance criteria.\n\n";
  else os << MdTable(AcceptanceTable(r)) << "\n";
  os << "**Verdict: " << Verdict(r) << "**\n";
  return os.str();
}

// ---- HTML -----------------------------------------------------------------------------------

std::string RenderHtml(const Report& r) {
  std::ostringstream os;
  os << HtmlHead("mcompress report: " + r.model);
  os << "<h1>mcompress report: " << Html(r.model) << "</h1>\n";
  os << "<div class=\"verdict " << (r.accepted ? "ok" : "bad") << "\">" << Html(Verdict(r))
     << "</div>\n";
  os << "<h2>Run</h2>\n" << HtmlTable(RunTable(r));
  os << "<h2>Accuracy</h2>\n" << AccuracyChart(r);
  os << "<h2>Size</h2>\n" << SizeChart(r);
  os << "<h2>Stages</h2>\n" << HtmlTable(StageTable(r));
  os << "<h2>Latency</h2>\n<p class=\"muted\">Median milliseconds per batch.</p>\n"
     << HtmlTable(LatencyTable(r));
  os << "<h2>Exports</h2>\n";
  if (r.exports.empty()) os << "<p class=\"muted\">No exports.</p>\n";
  else os << HtmlTable(ExportTable(r));
  os << "<h2>Layers</h2>\n<p class=\"muted\">Weighted layers of the final graph; MACs per "
        "sample.</p>\n"
     << LayerChart(r);
  if (!r.layers.empty()) os << HtmlTable(LayersTable(r));
  os << "<h2>Pass statistics</h2>\n";
  bool any = false;
  for (const auto& s : r.stages) {
    if (!HasStatsOrSkips(s)) continue;
    any = true;
    os << "<h3>" << Html(StageTitle(s)) << "</h3>\n";
    if (!s.stats.empty()) os << HtmlTable(StatsTable(s));
    if (!s.skipped.empty()) os << HtmlTable(SkippedTable(s));
    if (!s.sensitivity.empty()) os << HtmlTable(SensitivityTable(s));
  }
  if (!any) os << "<p class=\"muted\">No pass statistics.</p>\n";
  os << "<h2>Acceptance</h2>\n";
  if (r.acceptance.empty()) os << "<p class=\"muted\">No acceptance criteria.</p>\n";
  else os << HtmlTable(AcceptanceTable(r));
  os << "<div class=\"verdict " << (r.accepted ? "ok" : "bad") << "\">" << Html(Verdict(r))
     << "</div>\n</body>\n</html>\n";
  return os.str();
}

// ---- comparison ---------------------------------------------------------------------------

std::string RenderCompareMarkdown(const std::vector<Report>& runs,
                                  const std::vector<std::string>& names) {
  std::ostringstream os;
  os << "# mcompress comparison\n\n"
     << "Final graph of each run; drop in percentage points against the run's own baseline; "
        "bytes in the smallest storage its weights allow; latency in median ms.\n\n"
     << MdTable(CompareTable(runs, names));
  return os.str();
}

std::string RenderCompareHtml(const std::vector<Report>& runs,
                              const std::vector<std::string>& names) {
  std::ostringstream os;
  os << HtmlHead("mcompress comparison");
  os << "<h1>mcompress comparison</h1>\n"
     << "<p class=\"muted\">Final graph of each run; drop in percentage points against the "
        "run's own baseline; bytes in the smallest storage its weights allow; latency in "
        "median ms.</p>\n"
     << HtmlTable(CompareTable(runs, names)) << "<h2>Accuracy vs size</h2>\n"
     << ScatterChart(runs, names) << "</body>\n</html>\n";
  return os.str();
}

// ---- files ----------------------------------------------------------------------------------

void WriteFileAtomic(const std::string& path, const std::string& content) {
  const std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  auto fail = [&](int err, bool remove_tmp) {
    if (remove_tmp) ::unlink(tmp.c_str());
    throw Error(ErrorKind::kIo, path + ": cannot write: " + std::strerror(err));
  };
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail(errno, false);
  const char* p = content.data();
  size_t left = content.size();
  while (left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      fail(err, true);
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 && errno != EINVAL && errno != EROFS) {
    const int err = errno;
    ::close(fd);
    fail(err, true);
  }
  if (::close(fd) != 0) fail(errno, true);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) fail(errno, true);
}

}  // namespace compress
