// Cooperative interruption. SIGINT/SIGTERM/SIGHUP only record the signal; the long
// loops (every executor run: training, evaluation, calibration steps) call
// ThrowIfInterrupted, so a run stops within one batch and unwinds like any error:
// temporary output folders and verification files are removed, an earlier complete
// output stays, and the CLI exits 128 + the signal. A second signal kills at once.
#pragma once

#include <string>

#include "compress/base/error.h"

namespace compress {

// Thrown by ThrowIfInterrupted; the CLI maps it to exit code 128 + signal().
class Interrupted : public Error {
 public:
  explicit Interrupted(int signal);
  int signal() const { return signal_; }

 private:
  int signal_;
};

// Installs the handlers for SIGINT, SIGTERM and SIGHUP (process-wide; the CLI calls it).
void InstallInterruptHandlers();

// The signal received since the handlers were installed, or 0.
int PendingInterrupt();

// Throws Interrupted when a signal was received.
void ThrowIfInterrupted();

}  // namespace compress
