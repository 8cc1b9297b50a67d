// Internal to compress/report: not part of the public API, include it only from files in
// this folder (it is installed only because every header under compress/ is). The number
// formatting and the report tables that markdown.cpp, html.cpp and svg.cpp share.
#pragma once

#include <string>
#include <vector>

#include "compress/report/report.h"

namespace compress::report_detail {

// ---- number formatting ------------------------------------------------------------------
// NaN is shown as an em dash (not measured), infinities as the signed infinity sign.

// Fixed point with `decimals` digits after the point.
std::string Fixed(double v, int decimals);
// A fraction as a percentage without the sign: 0.5 -> "50.00".
std::string Percent(double fraction, int decimals = 2);
// printf's %g with `digits` significant digits.
std::string General(double v, int digits = 4);

// ---- derived values shared by the renderers ----------------------------------------------

// The last stage, or the baseline when the recipe ran none.
const StageReport& FinalStage(const Report& r);

// ---- tables, rendered as Markdown or HTML --------------------------------------------------

struct Table {
  std::vector<std::string> headers;
  std::string align;  // one char per column: 'l' or 'r'
  std::vector<std::vector<std::string>> rows;
};

// A Markdown table cell: '|' escaped, line breaks as spaces.
std::string MdCell(const std::string& s);
std::string MdTable(const Table& t);
// HTML text or attribute value with &, <, >, " and ' escaped.
std::string Html(const std::string& s);
std::string HtmlTable(const Table& t, const std::string& css_class = "");

// The sections of one report.
Table RunTable(const Report& r);
Table StageTable(const Report& r);
Table LatencyTable(const Report& r);
Table ExportTable(const Report& r);
// The quantized layers of every export that run in float (or fake-quant), with why;
// no rows when every one is on integer kernels.
Table Int8FallbackTable(const Report& r);
Table LayersTable(const Report& r);
Table AcceptanceTable(const Report& r);
// "ACCEPTED (...)" or "REJECTED (...)" with how many criteria failed.
std::string Verdict(const Report& r);

// The pass statistics of one stage.
std::string StageTitle(const StageReport& s);
bool HasStatsOrSkips(const StageReport& s);
// Requires a non-empty s.sensitivity.
Table SensitivityTable(const StageReport& s);
// quantize-sensitivity's scan and accuracy-aware quantization's trials.
Table QuantSensitivityTable(const StageReport& s);
Table FallbackTable(const StageReport& s);
// quantize's latency_fallback scan.
Table LatencyTrialTable(const StageReport& s);
Table StatsTable(const StageReport& s);
Table SkippedTable(const StageReport& s);

// One row per run; `names` label them ("run N" past its end).
Table CompareTable(const std::vector<Report>& runs, const std::vector<std::string>& names);

}  // namespace compress::report_detail
