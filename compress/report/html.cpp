// The self-contained HTML pages (no network: inline CSS and SVG): the report of one run
// and the comparison of several, from the shared tables (tables.h) and charts (svg.h).
#include "compress/report/report.h"

#include <sstream>
#include <string>
#include <vector>

#include "compress/report/svg.h"
#include "compress/report/tables.h"

namespace compress {

using report_detail::AcceptanceTable;
using report_detail::AccuracyChart;
using report_detail::CompareTable;
using report_detail::ExportTable;
using report_detail::HasStatsOrSkips;
using report_detail::Int8FallbackTable;
using report_detail::Html;
using report_detail::HtmlTable;
using report_detail::LatencyTable;
using report_detail::LayerChart;
using report_detail::LayersTable;
using report_detail::RunTable;
using report_detail::ScatterChart;
using report_detail::FallbackTable;
using report_detail::LatencyTrialTable;
using report_detail::QuantSensitivityTable;
using report_detail::QuantSensitivityChart;
using report_detail::SensitivityTable;
using report_detail::SizeChart;
using report_detail::SkippedTable;
using report_detail::StageTable;
using report_detail::StageTitle;
using report_detail::StatsTable;
using report_detail::Verdict;

namespace {

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

}  // namespace

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
  if (const auto fallback = Int8FallbackTable(r); !fallback.rows.empty()) {
    os << HtmlTable(fallback);
  }
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
    if (!s.quant_sensitivity.empty()) {
      os << QuantSensitivityChart(s) << HtmlTable(QuantSensitivityTable(s));
    }
    if (!s.fallback_trials.empty()) os << HtmlTable(FallbackTable(s));
    if (!s.latency_trials.empty()) os << HtmlTable(LatencyTrialTable(s));
  }
  if (!any) os << "<p class=\"muted\">No pass statistics.</p>\n";
  os << "<h2>Acceptance</h2>\n";
  if (r.acceptance.empty()) os << "<p class=\"muted\">No acceptance criteria.</p>\n";
  else os << HtmlTable(AcceptanceTable(r));
  os << "<div class=\"verdict " << (r.accepted ? "ok" : "bad") << "\">" << Html(Verdict(r))
     << "</div>\n</body>\n</html>\n";
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

}  // namespace compress
