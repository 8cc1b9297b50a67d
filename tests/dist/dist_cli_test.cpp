// `mcompress run --nproc N` end to end: a data-parallel recipe (train, prune, QAT,
// INT8 export verified in ONNX Runtime) whose report records the world size and ranks
// that agreed after every stage; a killed worker stopping the job with a clear line
// and no output folder; the distributed options' errors.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/cli_util.h"

namespace {

namespace fs = std::filesystem;
using compress::cli_test::Children;
using compress::cli_test::LeftoverTemp;
using compress::cli_test::ReadText;
using compress::cli_test::Result;
using compress::cli_test::RunCli;
using compress::cli_test::StartCli;
using compress::cli_test::WaitExit;
using compress::cli_test::WaitForLog;

fs::path TempDir(const std::string& name) { return compress::cli_test::TempDir("mcompress_dist_cli", name); }

// Train, prune, distil from the baseline, fine-tune with QAT on 2048 real images; the INT8 QDQ export is verified
// in ONNX Runtime by the run itself.
fs::path WriteRecipe(const fs::path& dir, int train_epochs, int64_t train_limit) {
  const nlohmann::json recipe = {
      {"model", "zoo:convnet"},
      {"data", {{"dataset", "fashion-mnist"}, {"batch_size", 64}, {"train_limit", train_limit},
                {"validation_size", 256}, {"test_limit", 500}, {"calibration_samples", 256}}},
      {"device", "cpu"},
      {"seed", 1},
      {"distributed", {{"timeout_s", 120}}},
      {"stages",
       {{{"pass", "train"}, {"epochs", train_epochs}, {"optimizer", {{"name", "sgd"}, {"lr", 0.05}, {"momentum", 0.9}}}},
        {{"pass", "prune-magnitude"}, {"sparsity", 0.5}},
        {{"pass", "distill"}, {"epochs", 1}},
        {{"pass", "quantize-qat"}, {"epochs", 1}}}},
      {"exports", {{{"format", "onnx-qdq"}, {"path", "model_int8.onnx"}}}},
      {"report", {{"formats", {"json"}}, {"latency", false}}}};
  const fs::path path = dir / "recipe.json";
  std::ofstream(path) << recipe.dump(2);
  return path;
}

TEST(CliDistributed, TwoProcessesRunARecipeAndAgreeAfterEveryStage) {
  const fs::path dir = TempDir("run");
  const fs::path recipe = WriteRecipe(dir, 1, 2048);
  const Result r = RunCli("run " + recipe.string() + " --nproc 2 --progress quiet --out " +
                          (dir / "out").string());
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("distributed: 2 processes (gloo)"), std::string::npos) << r.output;
  // Only rank 0 printed the summary.
  EXPECT_EQ(r.output.find("outputs: "), r.output.rfind("outputs: ")) << r.output;
  const nlohmann::json report = nlohmann::json::parse(ReadText(dir / "out" / "report.json"));
  EXPECT_EQ(report.at("world_size"), 2);
  ASSERT_EQ(report.at("stages").size(), 4u);
  for (const auto& stage : report.at("stages")) {
    ASSERT_TRUE(stage.at("stats").contains("ranks_max_weight_difference")) << stage.dump();
    EXPECT_LE(stage.at("stats").at("ranks_max_weight_difference").get<double>(), 1e-6) << stage.dump();
  }
  // Same seed and world size, same result: a second run measures the same numbers.
  const Result again = RunCli("run " + recipe.string() + " --nproc 2 --progress quiet --out " +
                              (dir / "again").string());
  ASSERT_EQ(again.code, 0) << again.output;
  const nlohmann::json second = nlohmann::json::parse(ReadText(dir / "again" / "report.json"));
  for (size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(second.at("stages")[i].at("metrics"), report.at("stages")[i].at("metrics")) << "stage " << i;
    const auto& stats = report.at("stages")[i].at("stats");
    if (stats.contains("train_loss")) {
      EXPECT_EQ(second.at("stages")[i].at("stats").at("train_loss"), stats.at("train_loss")) << "stage " << i;
    }
  }
  // A real model came out: trained, pruned, INT8, verified.
  EXPECT_GT(report.at("stages").back().at("metrics").at("top1").get<double>(), 0.6);
  EXPECT_TRUE(fs::exists(dir / "out" / "model_int8.onnx"));
  EXPECT_FALSE(LeftoverTemp(dir, "out"));
  fs::remove_all(dir);
}

// The RANK in a process's environment.
std::string RankOf(pid_t pid) {
  const std::string env = ReadText("/proc/" + std::to_string(pid) + "/environ");
  std::istringstream ss(env);
  std::string var;
  while (std::getline(ss, var, '\0')) {
    if (var.rfind("RANK=", 0) == 0) return var.substr(5);
  }
  return "";
}

TEST(CliDistributed, KilledWorkerStopsTheJobWithinAMinuteAndWritesNothing) {
  const fs::path dir = TempDir("kill");
  const fs::path recipe = WriteRecipe(dir, 20, 8192);  // long enough to be killed in training
  const fs::path log = dir / "log.txt";
  const pid_t launcher = StartCli({"run", recipe.string(), "--nproc", "2", "--progress", "off",
                                   "--out", (dir / "out").string()}, log);
  // Wait until training runs (the log names the stage), then kill rank 1.
  pid_t victim = -1;
  const auto start = std::chrono::steady_clock::now();
  while (victim < 0 && std::chrono::steady_clock::now() - start < std::chrono::seconds(120)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    if (ReadText(log).find("stages[0]: train") == std::string::npos) continue;
    for (pid_t c : Children(launcher)) {
      if (RankOf(c) == "1") victim = c;
    }
  }
  ASSERT_GT(victim, 0) << "no training rank 1 to kill; log:\n" << ReadText(log);
  std::this_thread::sleep_for(std::chrono::seconds(2));
  ASSERT_EQ(kill(victim, SIGKILL), 0);
  const auto [status, seconds] = WaitExit(launcher, 90);
  ASSERT_NE(status, -1) << "the launcher still ran 90 s after rank 1 was killed";
  EXPECT_LT(seconds, 60);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << status;
  const std::string out = ReadText(log);
  EXPECT_NE(out.find("mcompress: --nproc: rank 1 of 2 was killed by signal 9"), std::string::npos) << out;
  EXPECT_NE(out.find("no outputs were written"), std::string::npos) << out;
  // Rank 0 saw the lost peer itself and said so in one line.
  EXPECT_NE(out.find("mcompress [rank 0]: distributed error: stages[0] (train): distributed: "
                     "all-reduce of gradients of step"),
            std::string::npos)
      << out;
  EXPECT_FALSE(fs::exists(dir / "out"));
  EXPECT_FALSE(LeftoverTemp(dir, "out"));
  fs::remove_all(dir);
}

TEST(CliDistributed, BadDistributedOptionsFailInOneLine) {
  const fs::path dir = TempDir("bad");
  const fs::path recipe = WriteRecipe(dir, 1, 256);
  Result r = RunCli("run " + recipe.string() + " --world-size 2 --rank 0 --out " + (dir / "o").string());
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("mcompress: usage error: distributed: world_size 2 needs a rendezvous"),
            std::string::npos)
      << r.output;
  r = RunCli("run " + recipe.string() + " --world-size 2 --rank 2 --dist-init tcp://127.0.0.1:29999");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("distributed rank 2 is outside [0, 2)"), std::string::npos) << r.output;
  r = RunCli("validate " + recipe.string() + " --set distributed.backend=mpi --set distributed.rank=4");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("distributed.backend"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("distributed.rank: rank 4 is outside [0, 1)"), std::string::npos) << r.output;
  r = RunCli("run " + recipe.string() + " --nproc 0");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_FALSE(fs::exists(dir / "o"));
  fs::remove_all(dir);
}

}  // namespace
