// Evaluation of a Graph classifier (accuracy, loss, per-class accuracy) and latency
// measurement. Counts are accumulated on the device and read once at the end, so a
// GPU run is not synchronized per batch.
#include "compress/train/eval.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <sstream>

#include "compress/runtime/executor.h"

namespace compress {
namespace {

bool SameDevice(const c10::Device& have, const c10::Device& want) {
  if (have.type() != want.type()) return false;
  return !want.has_index() || !have.has_index() || have.index() == want.index();
}

// `graph` itself when every initializer is on `device`, else a copy moved there.
const Graph& OnDevice(const Graph& graph, const c10::Device& device, Graph& storage) {
  for (const auto& [name, init] : graph.initializers) {
    if (init.value.defined() && !SameDevice(init.value.device(), device)) {
      storage = graph.Clone();
      storage.To(device);
      return storage;
    }
  }
  return graph;
}

void CheckSingleInputOutput(const Graph& graph, const char* what) {
  if (graph.inputs.size() != 1 || graph.outputs.size() != 1) {
    std::ostringstream msg;
    msg << what << ": graph '" << graph.name << "' has " << graph.inputs.size()
        << " input(s) and " << graph.outputs.size()
        << " output(s); expected a classifier with one input and one output (logits)";
    throw Error(ErrorKind::kUnsupported, msg.str());
  }
}

Tensor Logits(const std::vector<Tensor>& outputs, const Graph& graph, int64_t batch,
              const char* what) {
  const Tensor& logits = outputs.at(0);
  if (logits.dim() != 2 || logits.size(0) != batch || logits.size(1) < 1) {
    std::ostringstream msg;
    msg << what << ": output '" << graph.outputs[0].name << "' has shape " << logits.sizes()
        << "; expected logits [" << batch << ", classes]";
    throw Error(ErrorKind::kUnsupported, msg.str());
  }
  return logits.to(torch::kFloat);
}

void Synchronize(const c10::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.has_index() ? device.index() : -1);
}

}  // namespace

EvalResult Evaluate(const Graph& graph, const TensorDataset& dataset, int64_t batch_size,
                    const c10::Device& device) {
  // Step 1: check inputs before any work.
  CheckSingleInputOutput(graph, "Evaluate");
  CheckDataset(dataset, "evaluation data");
  if (dataset.size() == 0) {
    throw Error(ErrorKind::kRecipe, "evaluation data: dataset is empty; expected samples");
  }
  if (batch_size < 1) {
    throw Error(ErrorKind::kRecipe,
                "Evaluate: batch_size must be >= 1; got " + std::to_string(batch_size));
  }
  Graph storage;
  const Graph& g = OnDevice(graph, device, storage);
  Executor executor(g);
  executor.SetTraining(false);
  torch::NoGradGuard no_grad;

  // Step 2: accumulate sums on the device.
  const int64_t max_label = dataset.targets.max().item<int64_t>();
  int64_t classes = 0;
  const auto dopts = torch::TensorOptions().dtype(torch::kDouble).device(device);
  Tensor loss_sum = torch::zeros({}, dopts);
  Tensor top1 = torch::zeros({}, dopts.dtype(torch::kLong));
  Tensor top5 = torch::zeros({}, dopts.dtype(torch::kLong));
  Tensor class_total, class_correct;
  DataLoader loader(dataset, batch_size, /*shuffle=*/false, /*seed=*/0);
  Tensor x, y;
  while (loader.Next(x, y)) {
    x = x.to(device);
    y = y.to(device);
    const Tensor logits = Logits(executor.Run({x}), g, x.size(0), "Evaluate");
    if (classes == 0) {
      classes = logits.size(1);
      if (max_label >= classes) {
        throw Error(ErrorKind::kRecipe,
                    "evaluation data: label " + std::to_string(max_label) +
                        " is out of range for a model with " + std::to_string(classes) +
                        " outputs; expected labels in 0.." + std::to_string(classes - 1));
      }
      class_total = torch::zeros({classes}, dopts.dtype(torch::kLong));
      class_correct = torch::zeros({classes}, dopts.dtype(torch::kLong));
    }
    loss_sum += torch::nn::functional::cross_entropy(
                    logits, y,
                    torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                    .to(torch::kDouble);
    const Tensor hit1 = logits.argmax(1).eq(y);
    const int64_t k = std::min<int64_t>(5, classes);
    const Tensor hit5 = std::get<1>(logits.topk(k, 1)).eq(y.unsqueeze(1)).any(1);
    top1 += hit1.sum();
    top5 += hit5.sum();
    class_total += torch::bincount(y, {}, classes);
    class_correct += torch::bincount(y.masked_select(hit1), {}, classes);
  }

  // Step 3: read back once.
  EvalResult result;
  result.samples = dataset.size();
  const double n = static_cast<double>(result.samples);
  result.top1 = static_cast<double>(top1.item<int64_t>()) / n;
  result.top5 = static_cast<double>(top5.item<int64_t>()) / n;
  result.loss = loss_sum.item<double>() / n;
  const Tensor total = class_total.cpu();
  const Tensor correct = class_correct.cpu();
  result.per_class_accuracy.resize(static_cast<size_t>(classes));
  for (int64_t c = 0; c < classes; ++c) {
    const int64_t t = total[c].item<int64_t>();
    result.per_class_accuracy[c] =
        t == 0 ? std::numeric_limits<double>::quiet_NaN()
               : static_cast<double>(correct[c].item<int64_t>()) / static_cast<double>(t);
  }
  return result;
}

LatencyResult MeasureLatency(const Graph& graph, const std::vector<int64_t>& sample_shape,
                             int64_t batch, int warmup, int runs, const c10::Device& device) {
  if (graph.inputs.size() != 1) {
    throw Error(ErrorKind::kUnsupported,
                "MeasureLatency: graph '" + graph.name + "' has " +
                    std::to_string(graph.inputs.size()) + " inputs; expected one");
  }
  if (batch < 1 || runs < 1 || warmup < 0) {
    throw Error(ErrorKind::kRecipe,
                "MeasureLatency: expected batch >= 1, runs >= 1, warmup >= 0; got batch " +
                    std::to_string(batch) + ", runs " + std::to_string(runs) + ", warmup " +
                    std::to_string(warmup));
  }
  std::vector<int64_t> shape{batch};
  for (int64_t d : sample_shape) {
    if (d < 1) {
      throw Error(ErrorKind::kRecipe,
                  "MeasureLatency: sample_shape dims must be >= 1; got " + std::to_string(d));
    }
    shape.push_back(d);
  }
  Graph storage;
  const Graph& g = OnDevice(graph, device, storage);
  Executor executor(g);
  executor.SetTraining(false);
  const Tensor input =
      torch::randn(shape, at::detail::createCPUGenerator(0), torch::kFloat).to(device);

  c10::InferenceMode inference;
  for (int i = 0; i < warmup; ++i) executor.Run({input});
  std::vector<double> ms;
  ms.reserve(static_cast<size_t>(runs));
  for (int i = 0; i < runs; ++i) {
    Synchronize(device);
    const auto start = std::chrono::steady_clock::now();
    executor.Run({input});
    Synchronize(device);
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() -
                                                           start)
                     .count());
  }
  std::sort(ms.begin(), ms.end());
  LatencyResult result;
  result.batch = batch;
  result.runs = runs;
  const size_t n = ms.size();
  result.median_ms = n % 2 == 1 ? ms[n / 2] : 0.5 * (ms[n / 2 - 1] + ms[n / 2]);
  result.p90_ms = ms[static_cast<size_t>(std::ceil(0.9 * static_cast<double>(n))) - 1];
  result.min_ms = ms.front();
  return result;
}

}  // namespace compress
