// Subcommand registration: each cli/cmd_*.cpp adds one subcommand whose callback
// calls the library. No logic lives here beyond argument plumbing and printing.
#pragma once

#include <CLI/CLI.hpp>

namespace cli {

struct GlobalOptions {
  int threads = 0;            // 0 = all cores
  int* exit_code = nullptr;   // a command may set a non-zero success code (3)
};

void AddTrainCommand(CLI::App& app, const GlobalOptions& global);
void AddEvalCommand(CLI::App& app, const GlobalOptions& global);
void AddInspectCommand(CLI::App& app, const GlobalOptions& global);
void AddInferCommand(CLI::App& app, const GlobalOptions& global);
void AddImportCommand(CLI::App& app, const GlobalOptions& global);
void AddVerifyCommand(CLI::App& app, const GlobalOptions& global);
void AddExportCommand(CLI::App& app, const GlobalOptions& global);
// run, validate, passes, compare
void AddRecipeCommands(CLI::App& app, const GlobalOptions& global);

}  // namespace cli
