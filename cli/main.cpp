// mcompress command line: parses arguments, runs one subcommand, maps errors to a
// single line and an exit code (0 ok, 1 failure, 2 bad usage or recipe, 3 acceptance
// criteria not met).
#include <unistd.h>

#include <cctype>
#include <iostream>
#include <string>

#include "cli/commands.h"
#include "compress/base/error.h"
#include "compress/base/interrupt.h"
#include "compress/base/limits.h"
#include "compress/runtime/runtime_config.h"

namespace {

// One error line on stderr in a single write(2): the ranks of a data-parallel job share
// one stderr, and a line written piecewise would interleave with another rank's.
void ErrorLine(const std::string& message) {
  const std::string line = cli::ErrorPrefix() + ": " + message + "\n";
  size_t done = 0;
  while (done < line.size()) {
    const ssize_t n = ::write(STDERR_FILENO, line.data() + done, line.size() - done);
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
}

// CLI11's parse error as one line: which command, what is wrong, where help is. With no
// command parsed, the problem is the command itself: missing or unknown.
std::string UsageProblem(CLI::App& app, const CLI::ParseError& e, int argc, char** argv) {
  std::string names;
  for (const CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; })) {
    names += (names.empty() ? "" : ", ") + sub->get_name();
  }
  std::vector<std::string> chain;
  for (const CLI::App* at = &app; !at->get_subcommands().empty();) {
    at = at->get_subcommands().front();
    chain.push_back(at->get_name());
  }
  if (chain.empty()) {
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      if (!arg.empty() && arg[0] == '-') {
        // A top-level option; one that takes a value (`--threads 4`) also skips that.
        const CLI::Option* opt = app.get_option_no_throw(arg);
        if (opt != nullptr && arg.find('=') == std::string::npos && opt->get_items_expected_min() > 0) ++i;
        continue;
      }
      if (arg.empty()) continue;
      bool known = true;
      try {
        app.get_subcommand(arg);
      } catch (const CLI::OptionNotFound&) {
        known = false;
      }
      if (known) break;  // a command: not the problem
      return "unknown command '" + arg + "'; expected one of " + names + " (mcompress --help)";
    }
    return std::string(e.what()) == "A subcommand is required"
               ? "no command given; expected one of " + names + " (mcompress --help)"
               : std::string(e.what()) + " (mcompress --help)";
  }
  std::string command;
  for (const auto& c : chain) command += (command.empty() ? "" : " ") + c;
  std::string what = e.what();
  if (!what.empty()) what[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(what[0])));
  return command + ": " + what + " (mcompress " + command + " --help)";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mcompress: compress LibTorch/ONNX models (pruning, INT8 quantization, "
               "distillation) and export verified ONNX"};
  app.require_subcommand(1);
  app.set_version_flag("--version", compress::VersionString());
  cli::GlobalOptions global;
  global.argv.assign(argv, argv + argc);
  app.add_option("--threads", global.threads, "LibTorch threads (default: all cores)")
      ->check(CLI::NonNegativeNumber);
  cli::AddTrainCommand(app, global);
  cli::AddEvalCommand(app, global);
  cli::AddInspectCommand(app, global);
  cli::AddInferCommand(app, global);
  cli::AddImportCommand(app, global);
  cli::AddVerifyCommand(app, global);
  cli::AddExportCommand(app, global);
  cli::AddCpuCommand(app, global);
  cli::AddRecipeCommands(app, global);
  int exit_code = 0;
  global.exit_code = &exit_code;
  compress::InstallInterruptHandlers();
  try {
    compress::SetLimits(compress::LimitsFromEnvironment());  // docs/security.md
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // Help and version are "errors" with exit code 0 in CLI11; they print as CLI11 says.
    if (e.get_exit_code() == 0) return app.exit(e);
    ErrorLine("usage error: " + UsageProblem(app, e, argc, argv));
    return 2;
  } catch (const compress::Error& e) {
    // A signal stopped the run (whatever error the unwinding produced): say so, 128+sig.
    if (const int sig = compress::PendingInterrupt()) {
      ErrorLine(compress::Interrupted(sig).what());
      return 128 + sig;
    }
    ErrorLine(std::string(compress::ErrorKindName(e.kind())) + ": " + e.what());
    return compress::ExitCodeFor(e.kind());
  } catch (const std::exception& e) {
    if (const int sig = compress::PendingInterrupt()) {
      ErrorLine(compress::Interrupted(sig).what());
      return 128 + sig;
    }
    const std::string what = e.what();
    ErrorLine("error: " + what.substr(0, what.find('\n')));  // LibTorch appends a backtrace
    return 1;
  }
  return exit_code;
}
