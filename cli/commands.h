// Subcommand registration: each cli/cmd_*.cpp adds one subcommand whose callback
// calls the library. No logic lives here beyond argument plumbing and printing.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "compress/ir/graph.h"

namespace cli {

struct GlobalOptions {
  int threads = 0;            // 0 = all cores
  int* exit_code = nullptr;   // a command may set a non-zero success code (3)
  std::vector<std::string> argv;  // the command line as given (the --nproc launcher re-runs it)
};

// `mcompress run --nproc N`: runs `worker_args` (a full command line, argv[0] first) as
// N worker processes of this binary, ranks 0..N-1 of one c10d job on 127.0.0.1, and
// waits for them. When one fails, the others get `grace_s` seconds to stop on their own
// (they see the lost peer), then SIGTERM, then SIGKILL. SIGINT/SIGTERM to the launcher
// reach every worker. Returns the exit code: rank 0's when every rank succeeded, else
// the first failing rank's (1 when it was killed by a signal), 128+signal when stopped.
int LaunchWorkers(int nproc, const std::vector<std::string>& worker_args, double grace_s);

// "mcompress" or, in a rank of a data-parallel job, "mcompress [rank 1]": how error
// lines start, so a user reading the workers' interleaved output knows who said what.
std::string ErrorPrefix();

void AddTrainCommand(CLI::App& app, const GlobalOptions& global);
void AddEvalCommand(CLI::App& app, const GlobalOptions& global);
void AddInspectCommand(CLI::App& app, const GlobalOptions& global);
void AddInferCommand(CLI::App& app, const GlobalOptions& global);
void AddImportCommand(CLI::App& app, const GlobalOptions& global);
void AddVerifyCommand(CLI::App& app, const GlobalOptions& global);
void AddExportCommand(CLI::App& app, const GlobalOptions& global);
void AddCpuCommand(CLI::App& app, const GlobalOptions& global);
// run, validate, passes, compare
void AddRecipeCommands(CLI::App& app, const GlobalOptions& global);

// --device for commands that compute (auto, cpu, cuda, cuda:N; default auto), and the
// matching resolution: a device this LibTorch build or machine cannot provide throws
// compress::Error(kUsage) naming --device, the spec and what is expected.
void AddDeviceOption(CLI::App* cmd, std::string& device);
c10::Device ResolveCliDevice(const std::string& device);

// --input-shape for commands that take a model (TorchScript files need it), and the
// matching load: LoadModel with the parsed shapes.
void AddInputShapeOption(CLI::App* cmd, std::vector<std::string>& shapes);
compress::Graph LoadCliModel(const std::string& spec, const std::vector<std::string>& shapes,
                             uint64_t seed = 0);

}  // namespace cli
