// The Markdown renderings: the report of one run and the comparison table of several,
// both built from the shared tables (tables.h).
#include "compress/report/report.h"

#include <sstream>
#include <string>
#include <vector>

#include "compress/report/tables.h"

namespace compress {

using report_detail::AcceptanceTable;
using report_detail::CompareTable;
using report_detail::ExportTable;
using report_detail::HasStatsOrSkips;
using report_detail::Int8FallbackTable;
using report_detail::LatencyTable;
using report_detail::LayersTable;
using report_detail::MdCell;
using report_detail::MdTable;
using report_detail::RunTable;
using report_detail::FallbackTable;
using report_detail::LatencyTrialTable;
using report_detail::QuantSensitivityTable;
using report_detail::SensitivityTable;
using report_detail::SkippedTable;
using report_detail::StageTable;
using report_detail::StageTitle;
using report_detail::StatsTable;
using report_detail::Verdict;

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
  if (const auto fallback = Int8FallbackTable(r); !fallback.rows.empty()) {
    os << MdTable(fallback) << "\n";
  }
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
    if (!s.quant_sensitivity.empty()) os << MdTable(QuantSensitivityTable(s)) << "\n";
    if (!s.fallback_trials.empty()) os << MdTable(FallbackTable(s)) << "\n";
    if (!s.latency_trials.empty()) os << MdTable(LatencyTrialTable(s)) << "\n";
  }
  if (!any) os << "No pass statistics.\n\n";
  os << "## Acceptance\n\n";
  if (r.acceptance.empty()) os << "No acceptance criteria.\n\n";
  else os << MdTable(AcceptanceTable(r)) << "\n";
  os << "**Verdict: " << Verdict(r) << "**\n";
  return os.str();
}

std::string RenderCompareMarkdown(const std::vector<Report>& runs,
                                  const std::vector<std::string>& names) {
  std::ostringstream os;
  os << "# mcompress comparison\n\n"
     << "Final graph of each run; drop in percentage points against the run's own baseline; "
        "bytes in the smallest storage its weights allow; latency in median ms.\n\n"
     << MdTable(CompareTable(runs, names));
  return os.str();
}

}  // namespace compress
