// `mcompress cpu`: the CPU features INT8 results depend on, and what they mean for the
// INT8 targets (printed by `make test` and `make bench` before their figures).
#include <cstdio>

#include "cli/commands.h"
#include "compress/runtime/cpu_info.h"
#include "compress/runtime/runtime_config.h"

namespace cli {

void AddCpuCommand(CLI::App& app, const GlobalOptions&) {
  auto* cmd = app.add_subcommand(
      "cpu", "Print the CPU flags INT8 kernels depend on and the ISA oneDNN dispatches to");
  cmd->callback([] {
    const compress::CpuInt8Info& cpu = compress::CpuInt8();
    std::printf("%s\n", compress::CpuInt8Summary().c_str());
    auto verdict = [](bool saturates) {
      return saturates ? "portable only (full_range weights saturate int16 pairs here)"
                       : "portable and full_range";
    };
    std::printf("INT8 targets right on this machine: ONNX Runtime %s; LibTorch oneDNN %s\n",
                verdict(compress::OrtInt8PairsSaturate(cpu)),
                verdict(compress::OnednnInt8PairsSaturate(cpu)));
    // The thread pools a run uses (what ConfigureThreads(0) sets): speed figures need it.
    const int threads = compress::ConfigureThreads(0);
    std::printf("threads: LibTorch %d; %s; %s\n", threads, compress::BlasThreading().c_str(),
                compress::MallocSetting().c_str());
  });
}

}  // namespace cli
