// Recipe commands: `run`, `validate`, `passes`, `compare`.
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "cli/commands.h"
#include "compress/base/file_util.h"
#include "compress/engine/engine.h"
#include "compress/engine/recipe.h"
#include "compress/registry/registry.h"
#include "compress/report/report.h"
#include "compress/runtime/runtime_config.h"

namespace cli {

void AddRecipeCommands(CLI::App& app, const GlobalOptions& global) {
  struct Args {
    std::string recipe, out = "out/run", cache_dir, progress = "auto";
    std::vector<std::string> sets;
    std::vector<std::string> reports;
    std::string compare_out;
  };
  auto args = std::make_shared<Args>();

  auto* run = app.add_subcommand("run", "Run a recipe: stages, exports, report");
  run->add_option("recipe", args->recipe, "recipe.json")->required();
  run->add_option("--out,-o", args->out, "output folder")->capture_default_str();
  run->add_option("--set", args->sets, "override a recipe value: PATH=VALUE (repeatable)");
  run->add_option("--cache-dir", args->cache_dir,
                  "reuse/cache the baseline produced by leading train stages");
  run->add_option("--progress", args->progress, "auto, on, off, quiet")->capture_default_str();
  run->callback([args, &global] {
    compress::Recipe recipe = compress::LoadRecipe(args->recipe, args->sets);
    if (global.threads > 0) recipe.threads = global.threads;
    compress::RunOptions options;
    options.out_dir = args->out;
    options.cache_dir = args->cache_dir;
    options.progress = args->progress;
    options.log = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
    compress::RunOutcome outcome = compress::RunRecipe(recipe, options);
    std::cout << compress::SummaryTable(outcome.report);
    std::cout << "outputs: " << outcome.out_dir << "/ (report.html, report.md, report.json)\n";
    if (outcome.exit_code != 0) {
      for (const auto& c : outcome.report.acceptance) {
        if (!c.passed) {
          std::cerr << "mcompress: acceptance criterion not met: " << c.criterion << " = "
                    << c.value << " (limit " << c.threshold << ")\n";
        }
      }
    }
    *global.exit_code = outcome.exit_code;
  });

  auto* validate = app.add_subcommand("validate", "Check a recipe without running it");
  validate->add_option("recipe", args->recipe, "recipe.json")->required();
  validate->add_option("--set", args->sets, "override a recipe value: PATH=VALUE");
  validate->callback([args] {
    compress::Recipe recipe = compress::LoadRecipe(args->recipe, args->sets);
    std::cout << args->recipe << ": valid (" << recipe.stages.size() << " stages, "
              << recipe.exports.size() << " exports)\n";
  });

  auto* passes = app.add_subcommand("passes", "List every pass with its options and defaults");
  passes->callback([] { std::cout << compress::DescribePasses(); });

  auto* compare = app.add_subcommand("compare", "Compare the reports of several runs");
  compare->add_option("reports", args->reports, "report.json files (or run folders)")
      ->required()->expected(1, -1);
  compare->add_option("--html", args->compare_out, "also write an HTML page here");
  compare->callback([args] {
    std::vector<compress::Report> runs;
    std::vector<std::string> names;
    for (std::string path : args->reports) {
      if (std::filesystem::is_directory(path)) path = (std::filesystem::path(path) / "report.json").string();
      runs.push_back(compress::LoadReport(path));
      names.push_back(std::filesystem::path(path).parent_path().filename().string());
      if (names.back().empty()) names.back() = path;
    }
    std::cout << compress::RenderCompareMarkdown(runs, names);
    if (!args->compare_out.empty()) {
      compress::WriteFileAtomic(args->compare_out, compress::RenderCompareHtml(runs, names));
      std::cout << "wrote " << args->compare_out << "\n";
    }
  });
}

}  // namespace cli
