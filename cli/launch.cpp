// `mcompress run --nproc N`: starts N worker processes of this binary on this machine,
// each a rank of one c10d job (RANK, WORLD_SIZE and MCOMPRESS_DIST_INIT in its
// environment), and supervises them: the first rank that fails stops the others, and a
// signal to the launcher reaches every worker. The engine is c10d; this only starts
// processes.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "cli/commands.h"
#include "compress/base/error.h"

namespace cli {
namespace {

// The workers by rank (-1 once reaped), shared with the signal handler
// (async-signal-safe: a fixed array and kill()).
constexpr int kMaxWorkers = 256;
pid_t g_workers[kMaxWorkers];
volatile sig_atomic_t g_num_workers = 0;
volatile sig_atomic_t g_signal = 0;

void ForwardSignal(int sig) {
  g_signal = sig;
  for (int i = 0; i < g_num_workers; ++i) {
    if (g_workers[i] > 0) kill(g_workers[i], SIGTERM);
  }
}

// A TCP port free on 127.0.0.1 now (the kernel's pick); rank 0's TCPStore binds it a
// moment later.
int FreeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) {
    throw compress::Error(compress::ErrorKind::kIo,
                          std::string("--nproc: cannot open a socket: ") + std::strerror(errno));
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const std::string why = std::strerror(errno);
    close(fd);
    throw compress::Error(compress::ErrorKind::kIo, "--nproc: no free port on 127.0.0.1: " + why);
  }
  close(fd);
  return ntohs(addr.sin_port);
}

std::string DescribeStatus(int status) {
  if (WIFEXITED(status)) return "exited with code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    return "was killed by signal " + std::to_string(sig) + " (" + strsignal(sig) + ")";
  }
  return "stopped";
}

bool Failed(int status) { return !WIFEXITED(status) || WEXITSTATUS(status) != 0; }

}  // namespace

std::string ErrorPrefix() {
  const char* rank = std::getenv("RANK");
  const char* world = std::getenv("WORLD_SIZE");
  if (rank == nullptr || world == nullptr || std::string(world) == "1") return "mcompress";
  return std::string("mcompress [rank ") + rank + "]";
}

int LaunchWorkers(int nproc, const std::vector<std::string>& worker_args, double grace_s) {
  if (nproc < 1 || nproc > kMaxWorkers) {
    throw compress::Error(compress::ErrorKind::kUsage, "--nproc must be in [1, " +
                                                           std::to_string(kMaxWorkers) +
                                                           "]; got " + std::to_string(nproc));
  }
  const std::string init = "tcp://127.0.0.1:" + std::to_string(FreeLoopbackPort());
  std::vector<char*> argv;
  std::vector<std::string> args = worker_args;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  struct sigaction sa {};
  sa.sa_handler = ForwardSignal;
  sigemptyset(&sa.sa_mask);
  struct sigaction old_int {}, old_term {};
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);

  for (int r = 0; r < nproc; ++r) {
    const pid_t pid = fork();
    if (pid < 0) {
      ForwardSignal(SIGTERM);
      throw compress::Error(compress::ErrorKind::kIo,
                            std::string("--nproc: cannot start a worker: ") + std::strerror(errno));
    }
    if (pid == 0) {
      setenv("RANK", std::to_string(r).c_str(), 1);
      setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
      setenv("WORLD_SIZE", std::to_string(nproc).c_str(), 1);
      setenv("MCOMPRESS_DIST_INIT", init.c_str(), 1);
      setenv("MCOMPRESS_LAUNCHED", "1", 1);
      execv("/proc/self/exe", argv.data());
      std::fprintf(stderr, "mcompress: --nproc: cannot run worker %d: %s\n", r, std::strerror(errno));
      _exit(127);
    }
    g_workers[r] = pid;
    g_num_workers = r + 1;
  }

  // Supervise: the first failure (or a signal) stops the rest, after `grace_s` for them
  // to notice on their own and say why. Rank 0's code 3 (acceptance not met) is an
  // outcome, not a failure.
  int rank0_code = -1, failure_code = 0, running = nproc;
  std::string first_failure;
  auto deadline = std::chrono::steady_clock::time_point::max();
  bool terminated = false, killed = false;
  const auto grace = std::chrono::milliseconds(static_cast<int64_t>(grace_s * 1000));
  while (running > 0) {
    int status = 0;
    const pid_t pid = waitpid(-1, &status, WNOHANG);
    if (pid > 0) {
      int rank = -1;
      for (int r = 0; r < nproc; ++r) {
        if (g_workers[r] == pid) rank = r;
      }
      if (rank < 0) continue;
      g_workers[rank] = -1;
      --running;
      const bool outcome = WIFEXITED(status) && (WEXITSTATUS(status) == 0 ||
                                                 (rank == 0 && WEXITSTATUS(status) == 3));
      if (rank == 0 && WIFEXITED(status)) rank0_code = WEXITSTATUS(status);
      if (!outcome && first_failure.empty()) {
        first_failure = "rank " + std::to_string(rank) + " of " + std::to_string(nproc) + " " +
                        DescribeStatus(status);
        failure_code = WIFEXITED(status) ? WEXITSTATUS(status) : 1;
        if (running > 0) deadline = std::chrono::steady_clock::now() + grace;
      }
      continue;
    }
    if (pid < 0 && errno != EINTR) break;
    const auto now = std::chrono::steady_clock::now();
    if (g_signal != 0 && !terminated) {
      terminated = true;  // the handler already sent SIGTERM
      deadline = std::min(deadline, now + grace);
    }
    if (now >= deadline) {
      const int sig = killed ? SIGKILL : SIGTERM;
      for (int r = 0; r < nproc; ++r) {
        if (g_workers[r] > 0) kill(g_workers[r], sig);
      }
      if (killed) break;
      killed = true;
      deadline = now + std::chrono::seconds(5);  // then SIGKILL
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  // Reap any left after SIGKILL.
  for (int r = 0; r < nproc; ++r) {
    if (g_workers[r] > 0) waitpid(g_workers[r], nullptr, 0);
  }
  g_num_workers = 0;
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);

  if (g_signal != 0) {
    std::fprintf(stderr, "mcompress: --nproc: stopped by signal %d (%s); workers stopped\n",
                 static_cast<int>(g_signal), strsignal(g_signal));
    return 128 + g_signal;
  }
  if (!first_failure.empty()) {
    std::fprintf(stderr, "mcompress: --nproc: %s; the other ranks were stopped%s\n",
                 first_failure.c_str(),
                 rank0_code == 0 || rank0_code == 3 ? "" : " and no outputs were written");
    return failure_code != 0 ? failure_code : 1;
  }
  return rank0_code < 0 ? 1 : rank0_code;
}

}  // namespace cli
