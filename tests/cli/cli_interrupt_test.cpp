// Interrupted runs: SIGINT or SIGTERM during a stage stops the run within seconds with
// exit code 128 + signal and one line, leaves no temporary folder behind and an earlier
// complete output in place; SIGTERM to the --nproc launcher stops every worker.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "tests/cli_util.h"

namespace compress::cli_test {
namespace {

fs::path WriteTrainRecipe(const fs::path& dir, const std::string& name, int epochs, int64_t train_limit) {
  const nlohmann::json recipe = {
      {"model", "zoo:lenet5"},
      {"data", {{"dataset", "fashion-mnist"}, {"batch_size", 64}, {"train_limit", train_limit},
                {"validation_size", 128}, {"test_limit", 256}}},
      {"device", "cpu"},
      {"stages", {{{"pass", "train"}, {"epochs", epochs}}}},
      {"exports", {{{"format", "onnx"}, {"path", "model.onnx"}}}},
      {"report", {{"formats", {"json"}}, {"latency", false}}}};
  const fs::path path = dir / name;
  std::ofstream(path) << recipe.dump(2);
  return path;
}

// The earlier output (a complete run) must survive an interrupted run into the same
// folder, byte for byte.
void ExpectSignalStopsTheRunCleanly(int sig, const std::string& signal_name) {
  const fs::path dir = TempDir("mcompress_interrupt", signal_name);
  const fs::path out = dir / "out";
  const Result first = RunCli("--threads 2 run " + WriteTrainRecipe(dir, "quick.json", 1, 512).string() +
                              " --progress off --out " + out.string());
  ASSERT_EQ(first.code, 0) << first.output;
  const std::string report_before = ReadText(out / "report.json");
  ASSERT_FALSE(report_before.empty());

  const fs::path log = dir / "log.txt";
  const pid_t pid = StartCli({"--threads", "2", "run", WriteTrainRecipe(dir, "long.json", 50, 8192).string(),
                              "--progress", "off", "--out", out.string()},
                             log);
  ASSERT_TRUE(WaitForLog(log, "stages[0]: train", 120)) << ReadText(log);
  std::this_thread::sleep_for(std::chrono::seconds(1));
  ASSERT_EQ(kill(pid, sig), 0);
  const auto [status, seconds] = WaitExit(pid, 60);
  ASSERT_NE(status, -1) << "still running 60 s after the signal; log:\n" << ReadText(log);
  EXPECT_LT(seconds, 10) << "stopping took " << seconds << " s";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 128 + sig) << "status " << status;
  const std::string text = ReadText(log);
  EXPECT_NE(text.find("mcompress: interrupted by signal " + std::to_string(sig) + " (" + signal_name +
                      "); stopped, no outputs written"),
            std::string::npos)
      << text;
  EXPECT_EQ(ReadText(out / "report.json"), report_before);
  EXPECT_FALSE(LeftoverTemp(dir, "out"));
  fs::remove_all(dir);
}

TEST(CliInterrupt, SigintStopsATrainingRunAndKeepsTheEarlierOutput) {
  ExpectSignalStopsTheRunCleanly(SIGINT, "Interrupt");
}

TEST(CliInterrupt, SigtermStopsATrainingRunAndKeepsTheEarlierOutput) {
  ExpectSignalStopsTheRunCleanly(SIGTERM, "Terminated");
}

TEST(CliInterrupt, SigtermToTheLauncherStopsEveryWorker) {
  const fs::path dir = TempDir("mcompress_interrupt", "launcher");
  const fs::path log = dir / "log.txt";
  const pid_t launcher = StartCli({"run", WriteTrainRecipe(dir, "long.json", 50, 8192).string(), "--nproc",
                                   "2", "--progress", "off", "--out", (dir / "out").string()},
                                  log);
  ASSERT_TRUE(WaitForLog(log, "stages[0]: train", 120)) << ReadText(log);
  std::this_thread::sleep_for(std::chrono::seconds(1));
  const std::vector<pid_t> workers = Children(launcher);
  ASSERT_EQ(workers.size(), 2u);
  ASSERT_EQ(kill(launcher, SIGTERM), 0);
  const auto [status, seconds] = WaitExit(launcher, 60);
  ASSERT_NE(status, -1) << ReadText(log);
  EXPECT_LT(seconds, 30);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 128 + SIGTERM) << "status " << status;
  const std::string text = ReadText(log);
  EXPECT_NE(text.find("mcompress: --nproc: stopped by signal 15 (Terminated); workers stopped"),
            std::string::npos)
      << text;
  // Each worker stopped on its own (the signal reached it) and said so.
  EXPECT_NE(text.find("mcompress [rank 0]: interrupted by signal 15"), std::string::npos) << text;
  for (pid_t w : workers) EXPECT_NE(kill(w, 0), 0) << "worker " << w << " still exists";
  EXPECT_FALSE(fs::exists(dir / "out"));
  EXPECT_FALSE(LeftoverTemp(dir, "out"));
  fs::remove_all(dir);
}

// A pid that no process has now: a child that has exited and been reaped.
pid_t DeadPid() {
  const pid_t pid = fork();
  if (pid == 0) _exit(0);
  waitpid(pid, nullptr, 0);
  return pid;
}

// Leftovers of a run that died: its temporary folder is removed, and the earlier output
// it had set aside (it died between the two renames of the replacement) is put back.
TEST(CliInterrupt, LeftoversOfADeadRunAreCleanedAndTheSetAsideOutputRestored) {
  const fs::path dir = TempDir("mcompress_interrupt", "leftovers");
  const fs::path out = dir / "out";
  const std::string dead = std::to_string(DeadPid());
  fs::create_directories(dir / ("out.old-" + dead));
  std::ofstream(dir / ("out.old-" + dead) / "manifest.json") << "{}\n";
  std::ofstream(dir / ("out.old-" + dead) / "report.json") << "the earlier output\n";
  fs::create_directories(dir / ("out.tmp-" + dead));
  std::ofstream(dir / ("out.tmp-" + dead) / "model.onnx") << "half written";
  const fs::path log = dir / "log.txt";
  const pid_t pid = StartCli({"--threads", "2", "run", WriteTrainRecipe(dir, "long.json", 50, 8192).string(),
                              "--progress", "off", "--out", out.string()},
                             log);
  ASSERT_TRUE(WaitForLog(log, "stages[0]: train", 120)) << ReadText(log);
  // Before the run does anything else it has tidied up.
  EXPECT_EQ(ReadText(out / "report.json"), "the earlier output\n");
  EXPECT_FALSE(fs::exists(dir / ("out.old-" + dead)));
  EXPECT_FALSE(fs::exists(dir / ("out.tmp-" + dead)));
  const std::string text = ReadText(log);
  EXPECT_NE(text.find("restored " + out.string() + " from " + (dir / ("out.old-" + dead)).string() +
                      " (a run died while replacing it)"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("removed " + (dir / ("out.tmp-" + dead)).string() + " (left by a run that died)"),
            std::string::npos)
      << text;
  ASSERT_EQ(kill(pid, SIGINT), 0);
  const int status = WaitExit(pid, 60).first;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 128 + SIGINT) << "status " << status;
  EXPECT_EQ(ReadText(out / "report.json"), "the earlier output\n");
  EXPECT_FALSE(LeftoverTemp(dir, "out"));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace compress::cli_test
