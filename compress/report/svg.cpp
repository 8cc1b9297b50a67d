// The inline SVG charts of the HTML pages (accuracy and size per stage, per-layer sparsity,
// accuracy against size across runs), drawn with a small SVG writer and round axes.
#include "compress/report/svg.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdio>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "compress/report/report.h"
#include "compress/report/tables.h"

namespace compress::report_detail {

// ---- SVG helpers ----------------------------------------------------------------------------

namespace {

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

}  // namespace

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

namespace {

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

}  // namespace

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

// quantize-sensitivity: grouped bars per layer (top-1 % or SQNR dB).
std::string QuantSensitivityChart(const StageReport& s) {
  const bool top1 = s.quant_metric == "val_top1";
  std::vector<std::string> layers;
  std::vector<std::vector<double>> values;
  for (const auto& row : s.quant_sensitivity) {
    layers.push_back(row.layer);
    values.push_back({top1 ? row.only_this * 100 : row.only_this,
                      top1 ? row.all_but_this * 100 : row.all_but_this});
  }
  return GroupedBars("Quantization sensitivity per layer", layers,
                     {"only this layer INT8", "all but this layer INT8"}, values,
                     top1 ? "validation top-1 %" : "output SQNR dB", "layer");
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

}  // namespace compress::report_detail
