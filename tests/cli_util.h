// Helpers of the tests that run the mcompress binary (MCOMPRESS_CLI): a command's exit
// code and output, a command in the background with its output in a file, temporary
// folders, and leftovers of a run's temporary outputs.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace compress::cli_test {

namespace fs = std::filesystem;

struct Result {
  int code;            // exit code, -1 when killed by a signal
  std::string output;  // stdout + stderr
};

// Runs `mcompress ARGS` through the shell; `env` ("NAME=value ...") is set for it.
inline Result RunCli(const std::string& args, const std::string& env = "") {
  const std::string cmd =
      (env.empty() ? "" : "env " + env + " ") + std::string(MCOMPRESS_CLI) + " " + args + " 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf;
  while (size_t n = fread(buf.data(), 1, buf.size(), pipe)) out.append(buf.data(), n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

// A fresh folder under the system's temporary one, unique to this process.
inline fs::path TempDir(const std::string& prefix, const std::string& name) {
  fs::path dir = fs::temp_directory_path() / (prefix + "_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

inline std::string ReadText(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Starts `mcompress ARGS...` in the background, stdout and stderr into `log`.
inline pid_t StartCli(const std::vector<std::string>& args, const fs::path& log) {
  const pid_t pid = fork();
  if (pid == 0) {
    std::freopen(log.c_str(), "w", stdout);
    dup2(fileno(stdout), fileno(stderr));
    std::vector<std::string> all{MCOMPRESS_CLI};
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : all) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(MCOMPRESS_CLI, argv.data());
    _exit(127);
  }
  return pid;
}

// Waits until `log` contains `text` (true) or `limit_s` passes (false).
inline bool WaitForLog(const fs::path& log, const std::string& text, double limit_s) {
  const auto start = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - start < std::chrono::duration<double>(limit_s)) {
    if (ReadText(log).find(text) != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

// Waits up to `limit_s` for `pid` to exit; returns its wait status and the seconds it
// took, or status -1 (after killing it) when it did not.
inline std::pair<int, double> WaitExit(pid_t pid, double limit_s) {
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    int status = 0;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (waitpid(pid, &status, WNOHANG) == pid) return {status, s};
    if (s > limit_s) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
      return {-1, s};
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

// Whether `dir` holds `stem`'s temporary or set-aside output folders (stem.tmp-<pid>,
// stem.old-<pid>): a run that stopped must not leave them.
inline bool LeftoverTemp(const fs::path& dir, const std::string& stem) {
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(stem + ".tmp-", 0) == 0 || name.rfind(stem + ".old-", 0) == 0) return true;
  }
  return false;
}

// The children of `pid` (Linux /proc).
inline std::vector<pid_t> Children(pid_t pid) {
  std::vector<pid_t> out;
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
  pid_t c;
  while (in >> c) out.push_back(c);
  return out;
}

}  // namespace compress::cli_test
