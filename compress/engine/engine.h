// The recipe engine: measures the baseline, runs each stage's pass on a working copy,
// evaluates after each stage, exports and verifies, checks acceptance criteria and
// writes the output directory (exports, report.json/md/html, recipe.json, manifest.json)
// atomically: everything is written to a temporary folder renamed at the end, so a
// failed run leaves no partial outputs.
#pragma once

#include <functional>
#include <string>

#include "compress/dist/dist.h"
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
  // Data parallelism (docs/distributed.md): every rank of the job calls RunRecipe with
  // the same recipe and its communicator. All ranks run and measure every stage
  // (training on their slices of each batch; measuring in step, on the same numbers) and
  // check after each stage that their graphs agree; only rank 0 times latency, exports
  // and writes the output folder, and only once every other rank has reported success.
  // Null or a world of one: one process.
  std::shared_ptr<Communicator> comm;
};

struct RunOutcome {
  Report report;
  std::string out_dir;
  int exit_code = 0;  // 0, or 3 when acceptance criteria are not met
  // False on ranks other than 0 of a data-parallel job: they trained, measured and
  // checked, but exported and wrote nothing (report holds only the stages they ran).
  bool wrote_outputs = true;
};

// Throws compress::Error naming the failing stage ("stages[2] (train): ...").
RunOutcome RunRecipe(Recipe& recipe, const RunOptions& options);

// The same run on a model and data a C++ pipeline already has: `model` (a Graph, e.g.
// from ImportModule on the caller's torch::nn::Module) replaces recipe.model, and
// `data` replaces what data.dataset would load (data.batch_size and
// calibration_samples still apply). Write such recipes with "model": "caller" and
// "data": {"dataset": "caller"} (validation then checks no files). No baseline cache is
// used; the manifest records the caller's split sizes. Pruning masks hold through every
// training the run does (the trainer re-applies them). Throws as RunRecipe, and
// Error(kUsage) when `data` has no test split.
RunOutcome RunRecipeOn(Recipe& recipe, Graph model, const DatasetSplits& data,
                       const RunOptions& options);

// A short text table of a report for the terminal.
std::string SummaryTable(const Report& report);

}  // namespace compress
