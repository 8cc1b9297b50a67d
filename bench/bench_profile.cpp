// Where the time goes (issue 18): for each zoo model, a training epoch, an evaluation of
// the test split, a post-training quantization (calibration included) and a QAT epoch,
// each timed plainly and then once more under LibTorch's profiler, whose op ranges give
// every ATen op's and autograd node's self time on the calling thread. Prints per phase
// the wall time and the ops taking most of it; "outside ops" is the wall time no op
// range covers (our executor's dispatch, the data loader's bookkeeping, the optimizer's
// loop, Python-free glue). The profiler's own cost inflates the profiled wall (shown).
// Benchmark code: the legacy profiler API (torch/csrc/autograd/profiler_legacy.h) is
// used here only, never in the library.
#include <CLI/CLI.hpp>
#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "compress/base/error.h"
#include "compress/data/data.h"
#include "compress/ir/graph.h"
#include "compress/pass/options.h"
#include "compress/pass/pass.h"
#include "compress/registry/registry.h"
#include "compress/runtime/runtime_config.h"
#include "compress/train/eval.h"
#include "compress/zoo/zoo.h"

namespace {

namespace prof = torch::autograd::profiler;
using Clock = std::chrono::steady_clock;

struct OpTime {
  double self_us = 0;
  int64_t calls = 0;
};

// Self time per op name on the thread that recorded most events (the caller's: CPU
// autograd runs there too). Ranges nest; a range's self time is its duration less its
// children's.
std::map<std::string, OpTime> SelfTimes(const prof::thread_event_lists& lists, double* covered_us) {
  const std::vector<prof::LegacyEvent>* main = nullptr;
  for (const auto& l : lists) {
    if (main == nullptr || l.size() > main->size()) main = &l;
  }
  std::map<std::string, OpTime> out;
  *covered_us = 0;
  if (main == nullptr) return out;
  struct Open {
    const prof::LegacyEvent* push;
    double child_us;
  };
  std::vector<Open> stack;
  for (const prof::LegacyEvent& e : *main) {
    if (e.kind() == prof::EventKind::PushRange) {
      stack.push_back({&e, 0});
    } else if (e.kind() == prof::EventKind::PopRange && !stack.empty()) {
      const Open open = stack.back();
      stack.pop_back();
      const double dur = open.push->cpuElapsedUs(e);
      OpTime& t = out[open.push->name()];
      t.self_us += dur - open.child_us;
      t.calls += 1;
      if (stack.empty()) {
        *covered_us += dur;
      } else {
        stack.back().child_us += dur;
      }
    }
  }
  return out;
}

double Seconds(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

void Phase(const std::string& model, const std::string& phase, int top,
           const std::function<void()>& make_input, const std::function<void()>& run) {
  make_input();
  auto t0 = Clock::now();
  run();
  const double plain_s = Seconds(t0);
  make_input();
  prof::thread_event_lists lists;
  t0 = Clock::now();
  {
    prof::TLSLegacyProfilerGuard guard(
        torch::profiler::impl::ProfilerConfig(torch::profiler::impl::ProfilerState::CPU),
        [&](const prof::thread_event_lists& l) { lists = l; });
    run();
  }
  const double profiled_s = Seconds(t0);
  double covered_us = 0;
  const auto ops = SelfTimes(lists, &covered_us);
  std::vector<std::pair<std::string, OpTime>> sorted(ops.begin(), ops.end());
  std::sort(sorted.begin(), sorted.end(),
            [](const auto& a, const auto& b) { return a.second.self_us > b.second.self_us; });
  const double wall_us = profiled_s * 1e6;
  std::string line;
  double shown = 0;
  for (int i = 0; i < top && i < static_cast<int>(sorted.size()); ++i) {
    const auto& [name, t] = sorted[static_cast<size_t>(i)];
    shown += t.self_us;
    char buf[160];
    std::snprintf(buf, sizeof buf, "%s%s %.0f%% (%lld)", line.empty() ? "" : "; ", name.c_str(),
                  100 * t.self_us / wall_us, static_cast<long long>(t.calls));
    line += buf;
  }
  std::printf("| %s | %s | %.2f | %.2f | %.0f%% | %.0f%% | %s |\n", model.c_str(), phase.c_str(),
              plain_s, profiled_s, 100 * (covered_us - shown) / wall_us,
              100 * (wall_us - covered_us) / wall_us, line.c_str());
  std::fflush(stdout);
}

std::unique_ptr<compress::Pass> MakePass(const std::string& name, const nlohmann::json& options) {
  std::vector<compress::Problem> problems;
  compress::OptionReader reader(options, name, &problems);
  auto pass = compress::FindPass(name)->create(reader);
  reader.Finish();
  if (!problems.empty()) {
    throw compress::Error(compress::ErrorKind::kUsage, problems[0].path + ": " + problems[0].message);
  }
  return pass;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Profile training, evaluation, calibration and QAT of zoo models"};
  std::vector<std::string> models = {"lenet5", "mlp-300-100", "convnet", "resnet8"};
  int64_t train_limit = 10000;
  int top = 6;
  int threads = 0;
  int64_t eval_batch = 256;
  std::string data_root = "/usr/share/datasets/fashion-mnist";
  app.add_option("--model", models, "zoo models")->capture_default_str();
  app.add_option("--train-limit", train_limit, "training images per epoch")->capture_default_str();
  app.add_option("--top", top, "ops listed per phase")->capture_default_str();
  app.add_option("--eval-batch", eval_batch, "evaluation batch (the evaluate pass: max(batch, 256))")
      ->capture_default_str();
  app.add_option("--threads", threads, "LibTorch threads (0 = all cores)")->capture_default_str();
  app.add_option("--data", data_root, "Fashion-MNIST directory")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    const int used = compress::ConfigureThreads(threads);
    std::printf("threads: LibTorch %d; %s; %s; %lld training images per epoch\n\n", used,
                compress::BlasThreading().c_str(), compress::MallocSetting().c_str(),
                static_cast<long long>(train_limit));
    compress::FashionMnistOptions data_options;
    data_options.root = data_root;
    data_options.train_limit = train_limit;
    const compress::DatasetSplits data = compress::LoadFashionMnist(data_options);
    const nlohmann::json sgd = {{"name", "sgd"}, {"lr", 0.05}, {"momentum", 0.9},
                                {"nesterov", true}, {"weight_decay", 0.0005}};
    std::printf("| model | phase | wall s | profiled wall s | other ops | outside ops | "
                "top ops by self time (share of profiled wall, calls) |\n");
    std::printf("|---|---|---:|---:|---:|---:|---|\n");
    for (const std::string& m : models) {
      const compress::Graph trained = [&] {
        compress::Graph g = compress::BuildZoo(m);
        compress::PassContext ctx;
        ctx.data = &data;
        ctx.progress = "off";
        MakePass("train", {{"epochs", 1}, {"optimizer", sgd}, {"lr_schedule", "cosine"}})->Run(g, ctx);
        return g;
      }();
      compress::Graph g;
      compress::PassContext ctx;
      ctx.data = &data;
      ctx.progress = "off";
      auto copy = [&] { g = trained; };
      double train_sps = 0;
      Phase(m, "train epoch", top, copy, [&] {
        const compress::PassResult r =
            MakePass("train", {{"epochs", 1}, {"optimizer", sgd}, {"lr_schedule", "cosine"}})->Run(g, ctx);
        if (train_sps == 0) train_sps = r.stats.at("samples_per_second");  // the unprofiled run
      });
      Phase(m, "evaluate 10k", top, copy,
            [&] { compress::Evaluate(g, data.test, eval_batch, c10::Device(c10::kCPU)); });
      Phase(m, "PTQ (512 calibration)", top, copy,
            [&] { MakePass("quantize", nlohmann::json::object())->Run(g, ctx); });
      Phase(m, "QAT epoch", top, copy, [&] {
        MakePass("quantize-qat", {{"epochs", 1}, {"optimizer", {{"name", "sgd"}, {"lr", 0.01}, {"momentum", 0.9}}}})
            ->Run(g, ctx);
      });
      // Distillation from the trained model itself (the baseline): its logits are cached
      // before the epoch, so the training loop (unprofiled runs' samples/s) compares with
      // the "train epoch" row's (issue 13: a KD epoch <= 1.2x a plain epoch).
      ctx.baseline = &trained;
      double cache_s = 0;
      double kd_sps = 0;
      Phase(m, "KD epoch + teacher cache", top, copy, [&] {
        const compress::PassResult r =
            MakePass("distill", {{"epochs", 1}, {"optimizer", sgd}, {"lr_schedule", "cosine"}})->Run(g, ctx);
        if (kd_sps == 0) {  // the unprofiled run
          cache_s = r.stats.at("teacher_cache_seconds");
          kd_sps = r.stats.at("samples_per_second");
        }
      });
      const double n = static_cast<double>(data.train.size());
      std::printf("| %s | KD epoch, training loop only (teacher cache %.2f s once) | %.2f | | | | "
                  "%.2fx the train epoch's loop (%.2f s) |\n",
                  m.c_str(), cache_s, n / kd_sps, train_sps / kd_sps, n / train_sps);
      ctx.baseline = nullptr;
    }
  } catch (const compress::Error& e) {
    std::fprintf(stderr, "bench_profile: %s\n", e.what());
    return 1;
  }
  return 0;
}
