// Internal to compress/report: not part of the public API, include it only from files in
// this folder (it is installed only because every header under compress/ is). The inline
// SVG charts of the HTML pages; each returns one complete <svg> element.
#pragma once

#include <string>
#include <vector>

#include "compress/report/report.h"

namespace compress::report_detail {

// Top-1 accuracy after each stage, baseline first.
std::string AccuracyChart(const Report& r);
// Storage per stage as FP32 / INT8 / sparse KB.
std::string SizeChart(const Report& r);
// Sparsity of each weighted layer, coloured by bit width.
std::string LayerChart(const Report& r);
// quantize-sensitivity's scan of one stage: per layer, the metric with only that layer
// INT8 and with all but that layer INT8.
std::string QuantSensitivityChart(const StageReport& s);
// Final accuracy against final stored size, one point per run; `names` label the points
// ("run N" past its end).
std::string ScatterChart(const std::vector<Report>& runs, const std::vector<std::string>& names);

}  // namespace compress::report_detail
