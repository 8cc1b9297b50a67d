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

namespace {

namespace fs = std::filesystem;

struct Result {
  int code;
  std::string output;  // stdout + stderr
};

Result RunCli(const std::string& args) {
  const std::string cmd = std::string(MCOMPRESS_CLI) + " " + args + " 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf;
  while (size_t n = fread(buf.data(), 1, buf.size(), pipe)) out.append(buf.data(), n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

fs::path TempDir(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("mcompress_dist_cli_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::string ReadText(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Train, prune, fine-tune with QAT on 2048 real images; the INT8 QDQ export is verified
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
        {{"pass", "quantize-qat"}, {"epochs", 1}}}},
      {"exports", {{{"format", "onnx-qdq"}, {"path", "model_int8.onnx"}}}},
      {"report", {{"formats", {"json"}}, {"latency", false}}}};
  const fs::path path = dir / "recipe.json";
  std::ofstream(path) << recipe.dump(2);
  return path;
}

bool LeftoverTemp(const fs::path& dir, const std::string& stem) {
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().filename().string().rfind(stem + ".tmp-", 0) == 0) return true;
  }
  return false;
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
  ASSERT_EQ(report.at("stages").size(), 3u);
  for (const auto& stage : report.at("stages")) {
    ASSERT_TRUE(stage.at("stats").contains("ranks_max_weight_difference")) << stage.dump();
    EXPECT_LE(stage.at("stats").at("ranks_max_weight_difference").get<double>(), 1e-6) << stage.dump();
  }
  // A real model came out: trained, pruned, INT8, verified.
  EXPECT_GT(report.at("stages").back().at("metrics").at("top1").get<double>(), 0.6);
  EXPECT_TRUE(fs::exists(dir / "out" / "model_int8.onnx"));
  EXPECT_FALSE(LeftoverTemp(dir, "out"));
  fs::remove_all(dir);
}

// The children of `pid` (Linux /proc), and the RANK in a process's environment.
std::vector<pid_t> Children(pid_t pid) {
  std::vector<pid_t> out;
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
  pid_t c;
  while (in >> c) out.push_back(c);
  return out;
}

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
  const pid_t launcher = fork();
  if (launcher == 0) {
    std::freopen(log.c_str(), "w", stdout);
    dup2(fileno(stdout), fileno(stderr));
    execl(MCOMPRESS_CLI, MCOMPRESS_CLI, "run", recipe.c_str(), "--nproc", "2", "--progress", "off",
          "--out", (dir / "out").c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
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
  const auto killed_at = std::chrono::steady_clock::now();
  int status = 0;
  bool done = false;
  while (!done && std::chrono::steady_clock::now() - killed_at < std::chrono::seconds(90)) {
    done = waitpid(launcher, &status, WNOHANG) == launcher;
    if (!done) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (!done) kill(launcher, SIGKILL);
  ASSERT_TRUE(done) << "the launcher still runs 90 s after rank 1 was killed";
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - killed_at).count();
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
