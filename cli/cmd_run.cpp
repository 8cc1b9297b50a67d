// Recipe commands: `run`, `validate`, `passes`, `compare`.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <thread>

#include "cli/commands.h"
#include "compress/base/file_util.h"
#include "compress/dist/dist.h"
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
    int nproc = 0;
    int64_t rank = -1, world_size = 0;
    std::string dist_init;
  };
  auto args = std::make_shared<Args>();

  auto* run = app.add_subcommand("run", "Run a recipe: stages, exports, report");
  run->add_option("recipe", args->recipe, "recipe.json")->required();
  run->add_option("--out,-o", args->out, "output folder")->capture_default_str();
  run->add_option("--set", args->sets, "override a recipe value: PATH=VALUE (repeatable)");
  run->add_option("--cache-dir", args->cache_dir,
                  "reuse/cache the baseline produced by leading train stages");
  run->add_option("--progress", args->progress, "auto, on, off, quiet")->capture_default_str();
  run->add_option("--nproc", args->nproc,
                  "data-parallel: start N worker processes on this machine (c10d, Gloo)")
      ->check(CLI::Range(1, 256));
  run->add_option("--rank", args->rank, "data-parallel: this process's rank (else RANK)")
      ->check(CLI::NonNegativeNumber);
  run->add_option("--world-size", args->world_size,
                  "data-parallel: processes in the job (else WORLD_SIZE)")
      ->check(CLI::Range(1, 65536));
  run->add_option("--dist-init", args->dist_init,
                  "data-parallel rendezvous: tcp://HOST:PORT or file://PATH (else "
                  "MASTER_ADDR/MASTER_PORT or MCOMPRESS_DIST_INIT)");
  run->callback([args, &global] {
    compress::Recipe recipe = compress::LoadRecipe(args->recipe, args->sets);
    if (args->nproc > 1 && std::getenv("MCOMPRESS_LAUNCHED") == nullptr) {
      // The launcher: the recipe is valid; the workers run this same command line,
      // without --nproc and, unless --threads says, with the cores shared out.
      std::vector<std::string> worker;
      for (size_t i = 0; i < global.argv.size(); ++i) {
        const std::string& a = global.argv[i];
        if (a == "--nproc") { ++i; continue; }
        if (a.rfind("--nproc=", 0) == 0) continue;
        worker.push_back(a);
        if (i == 0 && global.threads == 0) {
          const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
          worker.push_back("--threads");
          worker.push_back(std::to_string(std::max(1u, cores / static_cast<unsigned>(args->nproc))));
        }
      }
      // The others see a lost peer within seconds; 30 s is for one that hangs.
      *global.exit_code =
          LaunchWorkers(args->nproc, worker, std::min(30.0, recipe.distributed.options.timeout_s));
      return;
    }
    if (global.threads > 0) recipe.threads = global.threads;
    compress::DistOptions dist = compress::DistOptionsFromEnv(recipe.distributed.options);
    if (args->world_size > 0) dist.world_size = args->world_size;
    if (args->rank >= 0) dist.rank = args->rank;
    if (!args->dist_init.empty()) dist.init_method = args->dist_init;
    compress::RunOptions options;
    options.comm = compress::Communicator::Connect(dist);
    const bool main_rank = options.comm->is_main();
    options.out_dir = args->out;
    options.cache_dir = args->cache_dir;
    options.progress = main_rank ? args->progress : "quiet";
    if (main_rank) {
      options.log = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
    }
    if (main_rank && options.comm->distributed()) {
      std::fprintf(stderr, "distributed: %lld processes (%s), rendezvous %s\n",
                   static_cast<long long>(dist.world_size), dist.backend.c_str(),
                   dist.init_method.c_str());
    }
    compress::RunOutcome outcome = compress::RunRecipe(recipe, options);
    if (!outcome.wrote_outputs) return;  // rank > 0: rank 0 reports
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
