// The recipe engine: measures the baseline, runs each stage's pass on a working copy,
// evaluates after each stage, exports and verifies, checks acceptance criteria and
// writes the output directory (exports, report.json/md/html, recipe.json, manifest.json)
// atomically: everything is written to a temporary folder renamed at the end, so a
// failed run leaves no partial outputs.
#pragma once

#include <functional>
#include <string>

#include "compress/engine/recipe.h"
#include "compress/report/report.h"

namespace compress {

struct RunOptions {
  std::string out_dir = "out";
  // When set, the graph after the recipe's leading `train` stages is cached here,
  // keyed by a hash of everything that determines it, and reused by later runs.
  std::string cache_dir;
  std::function<void(const std::string&)> log = [](const std::string&) {};
  std::string progress = "auto";  // trainer progress display
};

struct RunOutcome {
  Report report;
  std::string out_dir;
  int exit_code = 0;  // 0, or 3 when acceptance criteria are not met
};

// Throws compress::Error naming the failing stage ("stages[2] (train): ...").
RunOutcome RunRecipe(Recipe& recipe, const RunOptions& options);

// A short text table of a report for the terminal.
std::string SummaryTable(const Report& report);

}  // namespace compress
