// Signal flag and the Interrupted error.
#include "compress/base/interrupt.h"

#include <signal.h>
#include <string.h>

#include <atomic>

namespace compress {
namespace {

std::atomic<int> g_signal{0};

void Record(int sig) {
  if (g_signal.exchange(sig) != 0) {
    // The second signal: the user insists. Default action, now.
    signal(sig, SIG_DFL);
    raise(sig);
  }
}

}  // namespace

Interrupted::Interrupted(int signal)
    : Error(ErrorKind::kIo, std::string("interrupted by signal ") + std::to_string(signal) + " (" +
                                strsignal(signal) + "); stopped, no outputs written"),
      signal_(signal) {}

void InstallInterruptHandlers() {
  struct sigaction sa {};
  sa.sa_handler = Record;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaction(sig, &sa, nullptr);
}

int PendingInterrupt() { return g_signal.load(); }

void ThrowIfInterrupted() {
  const int sig = g_signal.load();
  if (sig != 0) throw Interrupted(sig);
}

}  // namespace compress
