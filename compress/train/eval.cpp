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

// SQNR in dB from sum reference^2 and sum (y - reference)^2, capped at 200 dB.
double SqnrFromSums(double signal, double noise) {
  if (std::isnan(noise) || std::isnan(signal)) return std::numeric_limits<double>::quiet_NaN();
  if (!(noise > 0)) return 200.0;
  return std::min(200.0, 10.0 * std::log10(std::max(signal, 1e-30) / noise));
}

void Synchronize(const c10::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.has_index() ? device.index() : -1);
}

}  // namespace

EvalResult Evaluate(const Graph& graph, const TensorDataset& dataset, int64_t batch_size,
                    const c10::Device& device, const EvalOptions& options) {
  // Step 1: check inputs before any work.
  CheckSingleInputOutput(graph, "Evaluate");
  if (options.labels) {
    CheckDataset(dataset, "evaluation data");
  } else if (!dataset.streaming() && (!dataset.inputs.defined() ||
                                      !dataset.inputs.is_floating_point() ||
                                      dataset.inputs.dim() < 1)) {
    throw Error(ErrorKind::kRecipe, "evaluation data: inputs must be a floating-point tensor "
                                    "[N, ...]");
  } else {
    CheckFinite(dataset, "evaluation data");
  }
  if (dataset.size() == 0) {
    throw Error(ErrorKind::kRecipe, "evaluation data: dataset is empty; expected samples");
  }
  if (batch_size < 1) {
    throw Error(ErrorKind::kRecipe,
                "Evaluate: batch_size must be >= 1; got " + std::to_string(batch_size));
  }
  const Tensor* reference = options.reference;
  if (reference != nullptr && (!reference->defined() || reference->dim() < 1 ||
                               reference->size(0) != dataset.size())) {
    throw Error(ErrorKind::kInternal, "Evaluate: the reference outputs do not cover the " +
                                          std::to_string(dataset.size()) + " samples");
  }
  Graph storage;
  const Graph& g = OnDevice(graph, device, storage);
  Executor executor(g);
  executor.SetTraining(false);
  torch::NoGradGuard no_grad;

  // Step 2: accumulate sums on the device.
  const int64_t max_label = options.labels ? dataset.targets.max().item<int64_t>() : -1;
  int64_t classes = 0;
  const auto dopts = torch::TensorOptions().dtype(torch::kDouble).device(device);
  Tensor loss_sum = torch::zeros({}, dopts);
  Tensor top1 = torch::zeros({}, dopts.dtype(torch::kLong));
  Tensor top5 = torch::zeros({}, dopts.dtype(torch::kLong));
  Tensor class_total, class_correct;
  // Against the reference: sum ref^2, sum (y - ref)^2, max |y - ref|, max |ref|, agreeing.
  Tensor signal = torch::zeros({}, dopts), noise = torch::zeros({}, dopts);
  Tensor max_diff = torch::zeros({}, dopts), max_ref = torch::zeros({}, dopts);
  Tensor agree = torch::zeros({}, dopts.dtype(torch::kLong));
  bool rank2 = true;
  Tensor nonfinite = torch::zeros({}, dopts.dtype(torch::kLong));  // without labels (no loss)
  std::vector<Tensor> outputs;
  DataLoader loader(dataset, batch_size, /*shuffle=*/false, /*seed=*/0);
  Tensor x, y;
  int64_t at = 0;
  while (loader.Next(x, y)) {
    x = x.to(device);
    const int64_t n = x.size(0);
    Tensor out;
    if (options.labels) {
      y = y.to(device);
      out = Logits(executor.Run({x}), g, n, "Evaluate");
      if (classes == 0) {
        classes = out.size(1);
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
                      out, y,
                      torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                      .to(torch::kDouble);
      const Tensor hit1 = out.argmax(1).eq(y);
      const int64_t k = std::min<int64_t>(5, classes);
      const Tensor hit5 = std::get<1>(out.topk(k, 1)).eq(y.unsqueeze(1)).any(1);
      top1 += hit1.sum();
      top5 += hit5.sum();
      class_total += torch::bincount(y, {}, classes);
      class_correct += torch::bincount(y.masked_select(hit1), {}, classes);
    } else {
      out = executor.Run({x}).at(0);
      if (out.dim() < 1 || out.size(0) != n) {
        std::ostringstream msg;
        msg << "Evaluate: output '" << g.outputs[0].name << "' has shape " << out.sizes()
            << "; expected [" << n << ", ...] (one row per sample)";
        throw Error(ErrorKind::kUnsupported, msg.str());
      }
      out = out.to(torch::kFloat);
      nonfinite += (~torch::isfinite(out)).sum();
    }
    if (reference != nullptr) {
      const Tensor ref = reference->narrow(0, at, n).to(device, torch::kDouble);
      if (ref.sizes() != out.sizes()) {
        std::ostringstream msg;
        msg << "Evaluate: output '" << g.outputs[0].name << "' has shape " << out.sizes()
            << "; the reference model's has " << ref.sizes() << " for the same samples";
        throw Error(ErrorKind::kUnsupported, msg.str());
      }
      const Tensor diff = out.to(torch::kDouble) - ref;
      signal += ref.square().sum();
      noise += diff.square().sum();
      if (diff.numel() > 0) {
        max_diff = torch::maximum(max_diff, diff.abs().max());
        max_ref = torch::maximum(max_ref, ref.abs().max());
      }
      rank2 = rank2 && out.dim() == 2 && out.size(1) > 0;
      if (rank2) agree += out.argmax(1).eq(ref.argmax(1)).sum();
    }
    if (options.outputs != nullptr) outputs.push_back(out.detach().cpu());
    at += n;
  }

  // Step 3: read back once.
  EvalResult result;
  result.samples = dataset.size();
  const double n = static_cast<double>(result.samples);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  if (options.outputs != nullptr) *options.outputs = torch::cat(outputs);
  if (reference != nullptr) {
    const double s = signal.item<double>(), e = noise.item<double>();
    result.sqnr_db = SqnrFromSums(s, e);
    const double md = max_diff.item<double>(), mr = max_ref.item<double>();
    result.max_rel_error = md == 0 ? 0.0 : md / std::max(mr, 1e-30);
    result.agreement = rank2 ? static_cast<double>(agree.item<int64_t>()) / n : nan;
  }
  if (!options.labels) {
    if (const int64_t bad = nonfinite.item<int64_t>(); bad > 0) {
      throw Error(ErrorKind::kNumeric, "Evaluate: the model's outputs contain " +
                                           std::to_string(bad) +
                                           " non-finite value(s) (NaN/Inf); expected finite outputs");
    }
    result.top1 = result.top5 = result.loss = nan;
    return result;
  }
  result.top1 = static_cast<double>(top1.item<int64_t>()) / n;
  result.top5 = static_cast<double>(top5.item<int64_t>()) / n;
  result.loss = loss_sum.item<double>() / n;
  const Tensor total = class_total.cpu();
  const Tensor correct = class_correct.cpu();
  result.per_class_accuracy.resize(static_cast<size_t>(classes));
  for (int64_t c = 0; c < classes; ++c) {
    const int64_t t = total[c].item<int64_t>();
    result.per_class_accuracy[c] =
        t == 0 ? nan
               : static_cast<double>(correct[c].item<int64_t>()) / static_cast<double>(t);
  }
  return result;
}

double SqnrDb(const Tensor& reference, const Tensor& y) {
  const Tensor ref = reference.to(torch::kDouble);
  const double signal = ref.square().sum().item<double>();
  const double noise = (ref - y.to(torch::kDouble)).square().sum().item<double>();
  return SqnrFromSums(signal, noise);
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
