// Executor overhead benchmark: each zoo model is also written directly with LibTorch
// modules (torch::nn::Conv2d/BatchNorm2d/Linear and functional pooling/ReLU), its
// weights copied from the zoo graph so both compute the same function (checked), and
// the two are timed interleaved: inference forward at several batch sizes and one
// training step (forward + cross-entropy + backward + SGD step). Prints Markdown rows
// with medians and the executor/native ratio (target <= 1.10).
#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "compress/base/error.h"
#include "compress/runtime/executor.h"
#include "compress/ir/graph.h"
#include "compress/runtime/runtime_config.h"
#include "compress/zoo/zoo.h"

namespace {

namespace nn = torch::nn;
using Clock = std::chrono::steady_clock;

constexpr double kOverheadTarget = 1.10;
constexpr double kEqualTolerance = 1e-5;

// ---- the native networks (module and parameter names match the zoo's initializers) ----

nn::Conv2dOptions ConvOpts(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t pad,
                           bool bias) {
  return nn::Conv2dOptions(in, out, k).stride(stride).padding(pad).bias(bias);
}
// The zoo's BatchNormalization: epsilon 1e-5, ONNX momentum 0.9 = PyTorch momentum 0.1.
nn::BatchNorm2dOptions BnOpts(int64_t c) { return nn::BatchNorm2dOptions(c).eps(1e-5).momentum(0.1); }

torch::Tensor Pool2(const torch::Tensor& x) { return torch::max_pool2d(x, {2, 2}, {2, 2}); }

struct MlpImpl : nn::Module {
  nn::Linear fc1{nullptr}, fc2{nullptr}, fc3{nullptr};
  MlpImpl() {
    fc1 = register_module("fc1", nn::Linear(784, 300));
    fc2 = register_module("fc2", nn::Linear(300, 100));
    fc3 = register_module("fc3", nn::Linear(100, 10));
  }
  torch::Tensor forward(torch::Tensor x) {
    x = torch::relu(fc1(x.flatten(1)));
    x = torch::relu(fc2(x));
    return fc3(x);
  }
};
TORCH_MODULE(Mlp);

struct Lenet5Impl : nn::Module {
  nn::Conv2d conv1{nullptr}, conv2{nullptr};
  nn::Linear fc1{nullptr}, fc2{nullptr}, fc3{nullptr};
  Lenet5Impl() {
    conv1 = register_module("conv1", nn::Conv2d(ConvOpts(1, 6, 5, 1, 2, true)));
    conv2 = register_module("conv2", nn::Conv2d(ConvOpts(6, 16, 5, 1, 0, true)));
    fc1 = register_module("fc1", nn::Linear(400, 120));
    fc2 = register_module("fc2", nn::Linear(120, 84));
    fc3 = register_module("fc3", nn::Linear(84, 10));
  }
  torch::Tensor forward(torch::Tensor x) {
    x = Pool2(torch::relu(conv1(x)));
    x = Pool2(torch::relu(conv2(x)));
    x = torch::relu(fc1(x.flatten(1)));
    x = torch::relu(fc2(x));
    return fc3(x);
  }
};
TORCH_MODULE(Lenet5);

struct ConvnetImpl : nn::Module {
  nn::Conv2d conv1{nullptr}, conv2{nullptr};
  nn::BatchNorm2d bn1{nullptr}, bn2{nullptr};
  nn::Linear fc1{nullptr}, fc2{nullptr};
  ConvnetImpl() {
    conv1 = register_module("conv1", nn::Conv2d(ConvOpts(1, 32, 3, 1, 1, false)));
    bn1 = register_module("bn1", nn::BatchNorm2d(BnOpts(32)));
    conv2 = register_module("conv2", nn::Conv2d(ConvOpts(32, 64, 3, 1, 1, false)));
    bn2 = register_module("bn2", nn::BatchNorm2d(BnOpts(64)));
    fc1 = register_module("fc1", nn::Linear(64 * 7 * 7, 128));
    fc2 = register_module("fc2", nn::Linear(128, 10));
  }
  torch::Tensor forward(torch::Tensor x) {
    x = Pool2(torch::relu(bn1(conv1(x))));
    x = Pool2(torch::relu(bn2(conv2(x))));
    x = torch::relu(fc1(x.flatten(1)));
    return fc2(x);
  }
};
TORCH_MODULE(Convnet);

struct ConvBnImpl : nn::Module {
  nn::Conv2d conv{nullptr};
  nn::BatchNorm2d bn{nullptr};
  ConvBnImpl(int64_t in, int64_t out, int64_t k, int64_t stride, int64_t pad) {
    conv = register_module("conv", nn::Conv2d(ConvOpts(in, out, k, stride, pad, false)));
    bn = register_module("bn", nn::BatchNorm2d(BnOpts(out)));
  }
  torch::Tensor forward(const torch::Tensor& x) { return bn(conv(x)); }
};
TORCH_MODULE(ConvBn);

struct BasicBlockImpl : nn::Module {
  nn::Conv2d conv1{nullptr}, conv2{nullptr};
  nn::BatchNorm2d bn1{nullptr}, bn2{nullptr};
  ConvBn down{nullptr};
  BasicBlockImpl(int64_t in, int64_t out, int64_t stride) {
    conv1 = register_module("conv1", nn::Conv2d(ConvOpts(in, out, 3, stride, 1, false)));
    bn1 = register_module("bn1", nn::BatchNorm2d(BnOpts(out)));
    conv2 = register_module("conv2", nn::Conv2d(ConvOpts(out, out, 3, 1, 1, false)));
    bn2 = register_module("bn2", nn::BatchNorm2d(BnOpts(out)));
    if (stride != 1 || in != out) down = register_module("down", ConvBn(in, out, 1, stride, 0));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor y = torch::relu(bn1(conv1(x)));
    y = bn2(conv2(y));
    return torch::relu(y + (down ? down(x) : x));
  }
};
TORCH_MODULE(BasicBlock);

struct Resnet8Impl : nn::Module {
  ConvBn stem{nullptr};
  BasicBlock layer1{nullptr}, layer2{nullptr}, layer3{nullptr};
  nn::Linear fc{nullptr};
  Resnet8Impl() {
    stem = register_module("stem", ConvBn(1, 16, 3, 1, 1));
    layer1 = register_module("layer1", BasicBlock(16, 16, 1));
    layer2 = register_module("layer2", BasicBlock(16, 32, 2));
    layer3 = register_module("layer3", BasicBlock(32, 64, 2));
    fc = register_module("fc", nn::Linear(64, 10));
  }
  torch::Tensor forward(torch::Tensor x) {
    x = torch::relu(stem(x));
    x = layer3(layer2(layer1(x)));
    return fc(x.mean({2, 3}));
  }
};
TORCH_MODULE(Resnet8);

// A native network behind one interface: forward, mode switch, parameters.
struct Native {
  std::shared_ptr<nn::Module> module;
  std::function<torch::Tensor(const torch::Tensor&)> forward;
};

template <typename Holder>
Native Wrap(Holder holder) {
  return {holder.ptr(), [holder](const torch::Tensor& x) mutable { return holder->forward(x); }};
}

Native MakeNative(const std::string& model) {
  if (model == "mlp-300-100") return Wrap(Mlp());
  if (model == "lenet5") return Wrap(Lenet5());
  if (model == "convnet") return Wrap(Convnet());
  if (model == "resnet8") return Wrap(Resnet8());
  throw compress::Error(compress::ErrorKind::kUsage,
                        "no native twin for '" + model +
                            "'; expected mlp-300-100, lenet5, convnet or resnet8");
}

// Copies every parameter and buffer of `module` from the graph initializer of the same
// name (BatchNorm's num_batches_tracked has no counterpart and is skipped), and checks
// that every initializer was used.
void CopyWeights(const compress::Graph& graph, nn::Module& module) {
  torch::NoGradGuard no_grad;
  size_t used = 0;
  auto copy = [&](const std::string& name, torch::Tensor& t) {
    auto it = graph.initializers.find(name);
    if (it == graph.initializers.end()) {
      throw compress::Error(compress::ErrorKind::kInternal,
                            "native tensor '" + name + "' has no initializer in the graph");
    }
    if (!it->second.value.sizes().equals(t.sizes())) {
      throw compress::Error(compress::ErrorKind::kInternal, "shape mismatch for '" + name + "'");
    }
    t.copy_(it->second.value);
    ++used;
  };
  for (auto& p : module.named_parameters()) copy(p.key(), p.value());
  for (auto& b : module.named_buffers()) {
    if (b.key().size() >= 19 &&
        b.key().compare(b.key().size() - 19, 19, "num_batches_tracked") == 0) {
      continue;
    }
    copy(b.key(), b.value());
  }
  if (used != graph.initializers.size()) {
    throw compress::Error(compress::ErrorKind::kInternal,
                          "copied " + std::to_string(used) + " of " +
                              std::to_string(graph.initializers.size()) + " initializers");
  }
}

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Times `a` and `b` interleaved (alternating which goes first) after `warmup` untimed
// rounds; returns the median milliseconds of each.
std::pair<double, double> Interleaved(const std::function<void()>& a,
                                      const std::function<void()>& b, int warmup, int runs) {
  for (int i = 0; i < warmup; ++i) {
    a();
    b();
  }
  std::vector<double> ta, tb;
  auto time = [](const std::function<void()>& f) {
    const auto t0 = Clock::now();
    f();
    return Ms(Clock::now() - t0);
  };
  for (int i = 0; i < runs; ++i) {
    if (i % 2 == 0) {
      ta.push_back(time(a));
      tb.push_back(time(b));
    } else {
      tb.push_back(time(b));
      ta.push_back(time(a));
    }
  }
  return {Median(ta), Median(tb)};
}

std::string Fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), format, v);
  return buf;
}

struct Row {
  std::string model, what;
  double executor_ms, native_ms;
};

// ---- breakdown: where the executor's fixed per-run cost goes (small-batch evidence) ----

// Times `f` `runs` times after warm-up and returns the median microseconds.
double MedianUs(const std::function<void()>& f, int runs) {
  for (int i = 0; i < 20; ++i) f();
  std::vector<double> t;
  for (int i = 0; i < runs; ++i) {
    const auto t0 = Clock::now();
    f();
    t.push_back(Ms(Clock::now() - t0) * 1000.0);
  }
  return Median(t);
}

void Breakdown(const std::string& model, int runs) {
  compress::Graph graph = compress::BuildZoo(model, 0);
  compress::Executor exec(graph);
  c10::InferenceMode guard;
  const torch::Tensor x = torch::randn({1, 1, 28, 28});
  std::printf("\n### Breakdown, %s, batch 1 (median us of %d runs)\n\n", model.c_str(), runs);
  std::printf("| measurement | us |\n|---|---|\n");
  std::printf("| Executor::Run, whole graph (%zu nodes) | %.1f |\n", graph.nodes.size(),
              MedianUs([&] { exec.Run({x}); }, runs));

  // Attribute lookups as the kernels do them (Conv: kernel_shape, strides, pads,
  // dilations, group, auto_pad; MaxPool adds ceil_mode/storage_order; Gemm 4 lookups).
  double attr_us = 0;
  int conv = 0, pool = 0, gemm = 0;
  for (const auto& node : graph.nodes) {
    if (node.op_type == "Conv") ++conv;
    if (node.op_type == "MaxPool") ++pool;
    if (node.op_type == "Gemm") ++gemm;
  }
  attr_us = MedianUs(
      [&] {
        for (const auto& node : graph.nodes) {
          if (node.op_type == "Conv" || node.op_type == "MaxPool") {
            auto k = node.GetInts("kernel_shape", {});
            auto s = node.GetInts("strides", {});
            auto p = node.GetInts("pads", {});
            auto d = node.GetInts("dilations", {});
            volatile auto g = node.GetInt("group", 1);
            volatile auto c = node.GetInt("ceil_mode", 0);
            auto a = node.GetString("auto_pad", "NOTSET");
            (void)g;
            (void)c;
          } else if (node.op_type == "Gemm") {
            volatile double al = node.GetFloat("alpha", 1.0);
            volatile double be = node.GetFloat("beta", 1.0);
            volatile auto ta = node.GetInt("transA", 0);
            volatile auto tb = node.GetInt("transB", 0);
            (void)al;
            (void)be;
            (void)ta;
            (void)tb;
          }
        }
      },
      runs);
  std::printf("| attribute lookups like the kernels' (%d Conv, %d MaxPool, %d Gemm) | %.1f |\n",
              conv, pool, gemm, attr_us);

  // Same-op alternatives the kernels could use.
  if (pool > 0) {
    const torch::Tensor t = model == "convnet" ? torch::randn({1, 32, 28, 28})
                                               : torch::randn({1, 6, 28, 28});
    std::printf("| at::max_pool2d_with_indices %s (executor's MaxPool) | %.1f |\n",
                model == "convnet" ? "[1,32,28,28]" : "[1,6,28,28]",
                MedianUs([&] { at::max_pool2d_with_indices(t, {2, 2}, {2, 2}); }, runs));
    std::printf("| at::max_pool2d, same input (native) | %.1f |\n",
                MedianUs([&] { at::max_pool2d(t, {2, 2}, {2, 2}); }, runs));
  }
  // A graph-sized loop of empty std::vector<Tensor> allocations and copies (per-step
  // args/outs vectors) to bound the container overhead.
  std::printf("| %zu x (vector<Tensor> args + outs alloc, refcount copies) | %.1f |\n",
              graph.nodes.size(), MedianUs(
                                      [&] {
                                        for (size_t i = 0; i < graph.nodes.size(); ++i) {
                                          std::vector<torch::Tensor> args{x, x, x};
                                          std::vector<torch::Tensor> outs{x};
                                        }
                                      },
                                      runs));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Executor vs hand-written LibTorch modules: inference and training-step latency"};
  std::vector<std::string> models = {"lenet5", "convnet", "mlp-300-100", "resnet8"};
  std::vector<int64_t> batches = {1, 32, 256};
  int runs = 100, train_runs = 30, warmup = 10, threads = 0;
  int64_t train_batch = 128;
  bool breakdown = true;
  app.add_option("--model", models, "models (repeatable)")->capture_default_str();
  app.add_option("--batch", batches, "inference batch sizes (repeatable)")->capture_default_str();
  app.add_option("--runs", runs, "timed inference runs per side (median)")->capture_default_str();
  app.add_option("--train-runs", train_runs, "timed training steps per side (median)")
      ->capture_default_str();
  app.add_option("--train-batch", train_batch, "training-step batch size")->capture_default_str();
  app.add_option("--warmup", warmup, "untimed runs per side first")->capture_default_str();
  app.add_option("--threads", threads, "LibTorch threads (0 = all cores)")->capture_default_str();
  app.add_flag("!--no-breakdown", breakdown, "skip the batch-1 cost breakdown");
  CLI11_PARSE(app, argc, argv);

  try {
    const int used_threads = compress::ConfigureThreads(threads);
    std::fprintf(stderr, "%d threads; inference: warm-up %d, median of %d; training step: median of %d\n",
                 used_threads, warmup, runs, train_runs);
    std::vector<Row> rows;
    bool equal_ok = true;
    for (const std::string& model : models) {
      compress::Graph graph = compress::BuildZoo(model, 0);
      Native native = MakeNative(model);
      CopyWeights(graph, *native.module);
      compress::Executor exec(graph);

      // Same function? Eval mode, a fixed batch of random inputs.
      {
        c10::InferenceMode guard;
        exec.SetTraining(false);
        native.module->eval();
        torch::manual_seed(1);
        const torch::Tensor x = torch::randn({32, 1, 28, 28});
        const double diff =
            (exec.Run({x}).at(0) - native.forward(x)).abs().max().item<double>();
        const bool ok = diff <= kEqualTolerance;
        equal_ok = equal_ok && ok;
        std::printf("%s: eval outputs max |executor - native| = %.3g (%s, tolerance %g)\n",
                    model.c_str(), diff, ok ? "ok" : "MISMATCH", kEqualTolerance);
      }

      // Inference forward.
      for (int64_t batch : batches) {
        c10::InferenceMode guard;
        torch::manual_seed(2);
        const torch::Tensor x = torch::randn({batch, 1, 28, 28});
        auto [e, n] = Interleaved([&] { exec.Run({x}); }, [&] { native.forward(x); }, warmup,
                                  runs);
        rows.push_back({model, "inference b" + std::to_string(batch), e, n});
        std::fprintf(stderr, "  %s inference b%lld: executor %.3f ms, native %.3f ms\n",
                     model.c_str(), static_cast<long long>(batch), e, n);
      }

      // Training step: both sides start from the same weights, each with its own copy
      // and its own SGD (momentum 0.9, as bench_train), in training mode.
      {
        std::vector<torch::Tensor> params;
        for (const auto& name : graph.TrainableNames()) {
          torch::Tensor& v = graph.initializers.at(name).value;
          v.requires_grad_(true);
          params.push_back(v);
        }
        compress::Executor train_exec(graph);
        train_exec.SetTraining(true);
        native.module->train();
        torch::optim::SGD exec_opt(params, torch::optim::SGDOptions(0.01).momentum(0.9));
        torch::optim::SGD native_opt(native.module->parameters(),
                                     torch::optim::SGDOptions(0.01).momentum(0.9));
        torch::manual_seed(3);
        const torch::Tensor x = torch::randn({train_batch, 1, 28, 28});
        const torch::Tensor y = torch::randint(0, 10, {train_batch}, torch::kLong);
        auto exec_step = [&] {
          exec_opt.zero_grad();
          torch::Tensor loss = torch::nn::functional::cross_entropy(train_exec.Run({x}).at(0), y);
          loss.backward();
          exec_opt.step();
        };
        auto native_step = [&] {
          native_opt.zero_grad();
          torch::Tensor loss = torch::nn::functional::cross_entropy(native.forward(x), y);
          loss.backward();
          native_opt.step();
        };
        auto [e, n] = Interleaved(exec_step, native_step, std::max(3, warmup / 2), train_runs);
        rows.push_back({model, "train step b" + std::to_string(train_batch), e, n});
        std::fprintf(stderr, "  %s train step b%lld: executor %.3f ms, native %.3f ms\n",
                     model.c_str(), static_cast<long long>(train_batch), e, n);
      }
    }

    std::printf("\n| model | measurement | executor ms | native ms | executor/native | <= %.2f |\n",
                kOverheadTarget);
    std::printf("|---|---|---|---|---|---|\n");
    for (const Row& r : rows) {
      const double ratio = r.executor_ms / r.native_ms;
      std::printf("| %s | %s | %.3f | %.3f | %.3f | %s |\n", r.model.c_str(), r.what.c_str(),
                  r.executor_ms, r.native_ms, ratio, ratio <= kOverheadTarget ? "yes" : "NO");
    }
    if (breakdown) {
      for (const std::string& model : models) {
        if (model == "lenet5" || model == "convnet") Breakdown(model, runs * 5);
      }
    }
    std::fflush(stdout);
    return equal_ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_overhead: %s\n", e.what());
    return 2;
  }
}
