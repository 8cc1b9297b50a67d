// The trainer: options validation, the optimizer factory, learning-rate schedules as a
// pure function of the step, and the epoch loop with progress output on stderr.
#include "compress/train/train.h"

#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <sstream>

#include "compress/train/eval.h"
#include "compress/runtime/executor.h"

namespace compress {
namespace {

constexpr double kPi = 3.14159265358979323846;
const char* const kOptimizers = "sgd, adam, adamw, rmsprop, adagrad";
const char* const kSchedules = "none, step, cosine, one-cycle";
const char* const kProgressModes = "auto, on, off, quiet";

bool OneOf(const std::string& value, std::initializer_list<const char*> names) {
  for (const char* n : names) {
    if (value == n) return true;
  }
  return false;
}

void Require(bool ok, const std::string& field, const std::string& expected, double got) {
  if (ok) return;
  std::ostringstream msg;
  msg << "train options: " << field << " must be " << expected << "; got " << got;
  throw Error(ErrorKind::kRecipe, msg.str());
}

// Cosine interpolation from `start` (pct 0) to `end` (pct 1), as in PyTorch's OneCycleLR.
double CosineAnneal(double start, double end, double pct) {
  return end + (start - end) / 2.0 * (1.0 + std::cos(kPi * pct));
}

std::unique_ptr<torch::optim::Optimizer> MakeOptimizer(const OptimizerOptions& o,
                                                       const std::vector<Tensor>& params) {
  namespace optim = torch::optim;
  if (o.name == "sgd") {
    return std::make_unique<optim::SGD>(params, optim::SGDOptions(o.lr)
                                                    .momentum(o.momentum)
                                                    .weight_decay(o.weight_decay)
                                                    .nesterov(o.nesterov));
  }
  if (o.name == "adam") {
    return std::make_unique<optim::Adam>(params, optim::AdamOptions(o.lr)
                                                     .betas(std::make_tuple(o.beta1, o.beta2))
                                                     .eps(o.eps)
                                                     .weight_decay(o.weight_decay));
  }
  if (o.name == "adamw") {
    return std::make_unique<optim::AdamW>(params, optim::AdamWOptions(o.lr)
                                                      .betas(std::make_tuple(o.beta1, o.beta2))
                                                      .eps(o.eps)
                                                      .weight_decay(o.weight_decay));
  }
  if (o.name == "rmsprop") {
    return std::make_unique<optim::RMSprop>(params, optim::RMSpropOptions(o.lr)
                                                        .alpha(o.alpha)
                                                        .eps(o.eps)
                                                        .weight_decay(o.weight_decay)
                                                        .momentum(o.momentum));
  }
  if (o.name == "adagrad") {
    return std::make_unique<optim::Adagrad>(
        params, optim::AdagradOptions(o.lr).eps(o.eps).weight_decay(o.weight_decay));
  }
  throw Error(ErrorKind::kInternal, "MakeOptimizer: unvalidated optimizer '" + o.name + "'");
}

// Gives trainable initializers requires_grad for the run and restores the previous
// flags on scope exit, exceptions included.
class RequiresGradScope {
 public:
  explicit RequiresGradScope(const std::vector<Tensor>& params) : params_(params) {
    for (const Tensor& p : params_) {
      previous_.push_back(p.requires_grad());
      p.requires_grad_(true);
    }
  }
  ~RequiresGradScope() {
    for (size_t i = 0; i < params_.size(); ++i) {
      params_[i].mutable_grad() = Tensor();
      params_[i].requires_grad_(previous_[i]);
    }
  }
  RequiresGradScope(const RequiresGradScope&) = delete;
  RequiresGradScope& operator=(const RequiresGradScope&) = delete;

 private:
  std::vector<Tensor> params_;
  std::vector<bool> previous_;
};

std::string Clock(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) seconds = 0;
  const auto s = static_cast<int64_t>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof(buf), "%lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                  static_cast<long long>(s / 60 % 60), static_cast<long long>(s % 60));
  } else {
    std::snprintf(buf, sizeof(buf), "%lld:%02lld", static_cast<long long>(s / 60),
                  static_cast<long long>(s % 60));
  }
  return buf;
}

// Progress on stderr: a bar redrawn in place (at most ~10 times a second) on a
// terminal, one line per epoch otherwise.
class Progress {
 public:
  Progress(const std::string& mode, int64_t epochs, int64_t steps_per_epoch)
      : epochs_(epochs), steps_(steps_per_epoch) {
    quiet_ = mode == "quiet";
    bar_ = mode == "on" || (mode == "auto" && isatty(fileno(stderr)) != 0);
  }

  void Step(int64_t epoch, int64_t step, int64_t samples, double loss, double elapsed) {
    if (!bar_ || quiet_) return;
    const auto now = std::chrono::steady_clock::now();
    if (step != steps_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    constexpr int kWidth = 24;
    const auto filled = static_cast<int>(kWidth * step / std::max<int64_t>(steps_, 1));
    const std::string bar = std::string(filled, '#') + std::string(kWidth - filled, '.');
    const double eta = elapsed / static_cast<double>(step) * static_cast<double>(steps_ - step);
    std::fprintf(stderr, "\repoch %lld/%lld [%s] %lld/%lld  %.0f samples/s  loss %.4f  ETA %s ",
                 static_cast<long long>(epoch), static_cast<long long>(epochs_), bar.c_str(),
                 static_cast<long long>(step), static_cast<long long>(steps_),
                 static_cast<double>(samples) / std::max(elapsed, 1e-9), loss,
                 Clock(eta).c_str());
    std::fflush(stderr);
  }

  void Epoch(const EpochStats& s) {
    if (quiet_) return;
    if (bar_) std::fprintf(stderr, "\r\033[K");
    std::fprintf(stderr, "epoch %lld/%lld  train loss %.4f acc %.4f", static_cast<long long>(s.epoch),
                 static_cast<long long>(epochs_), s.train_loss, s.train_accuracy);
    if (!std::isnan(s.val_loss)) {
      std::fprintf(stderr, "  val loss %.4f acc %.4f", s.val_loss, s.val_accuracy);
    }
    std::fprintf(stderr, "  %.0f samples/s  %.1f s\n", s.samples_per_second, s.seconds);
    std::fflush(stderr);
  }

 private:
  int64_t epochs_, steps_;
  bool bar_ = false, quiet_ = false;
  std::chrono::steady_clock::time_point last_draw_{};
};

}  // namespace

double LearningRateAt(const LrSchedule& schedule, double base_lr, int64_t step,
                      int64_t total_steps, int64_t steps_per_epoch) {
  if (total_steps < 1) total_steps = 1;
  step = std::clamp<int64_t>(step, 0, total_steps - 1);
  const std::string& name = schedule.name;
  if (name == "none") return base_lr;
  if (name == "step") {
    const int64_t epoch = step / std::max<int64_t>(steps_per_epoch, 1);
    return base_lr * std::pow(schedule.gamma,
                              static_cast<double>(epoch / std::max<int64_t>(schedule.step_size, 1)));
  }
  if (name == "cosine") {
    return base_lr * 0.5 *
           (1.0 + std::cos(kPi * static_cast<double>(step) / static_cast<double>(total_steps)));
  }
  if (name == "one-cycle") {
    // PyTorch's OneCycleLR (anneal_strategy="cos", three_phase=False): the peak is at
    // step pct_start*total - 1 and the minimum at the last step.
    const double initial = base_lr / schedule.div_factor;
    const double minimum = initial / schedule.final_div_factor;
    const double peak_step = schedule.pct_start * static_cast<double>(total_steps) - 1.0;
    const double last_step = static_cast<double>(total_steps) - 1.0;
    const auto s = static_cast<double>(step);
    if (s <= peak_step) {
      return CosineAnneal(initial, base_lr, peak_step > 0 ? s / peak_step : 1.0);
    }
    const double span = last_step - std::max(peak_step, 0.0);
    const double pct = span > 0 ? (s - std::max(peak_step, 0.0)) / span : 1.0;
    return CosineAnneal(base_lr, minimum, pct);
  }
  throw Error(ErrorKind::kRecipe, "lr_schedule: unknown name '" + name + "'; expected one of " +
                                      kSchedules);
}

void ValidateTrainOptions(const TrainOptions& options) {
  const OptimizerOptions& o = options.optimizer;
  const LrSchedule& s = options.lr_schedule;
  if (!OneOf(o.name, {"sgd", "adam", "adamw", "rmsprop", "adagrad"})) {
    throw Error(ErrorKind::kRecipe, "train options: optimizer.name '" + o.name +
                                        "' is unknown; expected one of " + kOptimizers);
  }
  if (!OneOf(s.name, {"none", "step", "cosine", "one-cycle"})) {
    throw Error(ErrorKind::kRecipe, "train options: lr_schedule.name '" + s.name +
                                        "' is unknown; expected one of " + kSchedules);
  }
  if (!OneOf(options.progress, {"auto", "on", "off", "quiet"})) {
    throw Error(ErrorKind::kRecipe, "train options: progress '" + options.progress +
                                        "' is unknown; expected one of " + kProgressModes);
  }
  Require(options.epochs >= 0, "epochs", ">= 0", static_cast<double>(options.epochs));
  Require(options.batch_size >= 1, "batch_size", ">= 1", static_cast<double>(options.batch_size));
  Require(options.warmup_steps >= 0, "warmup_steps", ">= 0",
          static_cast<double>(options.warmup_steps));
  Require(options.max_grad_norm >= 0, "max_grad_norm", ">= 0", options.max_grad_norm);
  Require(options.label_smoothing >= 0 && options.label_smoothing < 1, "label_smoothing",
          "in [0, 1)", options.label_smoothing);
  Require(o.lr >= 0, "optimizer.lr", ">= 0", o.lr);
  Require(o.momentum >= 0, "optimizer.momentum", ">= 0", o.momentum);
  Require(o.weight_decay >= 0, "optimizer.weight_decay", ">= 0", o.weight_decay);
  Require(o.eps > 0, "optimizer.eps", "> 0", o.eps);
  Require(o.beta1 >= 0 && o.beta1 < 1, "optimizer.beta1", "in [0, 1)", o.beta1);
  Require(o.beta2 >= 0 && o.beta2 < 1, "optimizer.beta2", "in [0, 1)", o.beta2);
  Require(o.alpha >= 0, "optimizer.alpha", ">= 0", o.alpha);
  if (o.nesterov && (o.name != "sgd" || o.momentum <= 0)) {
    throw Error(ErrorKind::kRecipe,
                "train options: optimizer.nesterov needs optimizer.name 'sgd' and momentum > 0");
  }
  Require(s.step_size >= 1, "lr_schedule.step_size", ">= 1", static_cast<double>(s.step_size));
  Require(s.gamma > 0, "lr_schedule.gamma", "> 0", s.gamma);
  Require(s.pct_start > 0 && s.pct_start < 1, "lr_schedule.pct_start", "in (0, 1)", s.pct_start);
  Require(s.div_factor > 0, "lr_schedule.div_factor", "> 0", s.div_factor);
  Require(s.final_div_factor > 0, "lr_schedule.final_div_factor", "> 0", s.final_div_factor);
}

namespace {

// Step 1 of Train: everything checked before the graph is touched. Returns the largest
// label of the training and validation data (checked against the logits' width once
// the first batch has run).
int64_t CheckTrainingRun(const Graph& graph, const TensorDataset& train,
                         const TensorDataset* validation, const TrainOptions& options) {
  ValidateTrainOptions(options);
  if (graph.inputs.size() != 1 || graph.outputs.size() != 1) {
    std::ostringstream msg;
    msg << "Train: graph '" << graph.name << "' has " << graph.inputs.size() << " input(s) and "
        << graph.outputs.size()
        << " output(s); expected a classifier with one input and one output (logits)";
    throw Error(ErrorKind::kUnsupported, msg.str());
  }
  CheckDataset(train, "training data");
  if (train.size() == 0) {
    throw Error(ErrorKind::kRecipe, "training data: dataset is empty; expected samples");
  }
  int64_t max_label = train.targets.max().item<int64_t>();
  if (validation != nullptr && validation->size() > 0) {
    CheckDataset(*validation, "validation data");
    max_label = std::max(max_label, validation->targets.max().item<int64_t>());
  }
  return max_label;
}

// The graph's trainable initializers as autograd leaves (sharing storage with the graph).
std::vector<Tensor> TrainableLeaves(Graph& graph) {
  std::vector<Tensor> params;
  for (const std::string& name : graph.TrainableNames()) {
    Tensor& value = graph.initializers.at(name).value;
    // The optimizer needs leaves; an initializer computed under autograd is not one.
    if (!value.is_leaf()) value = value.detach();
    params.push_back(value);
  }
  if (params.empty()) {
    throw Error(ErrorKind::kRecipe,
                "Train: graph '" + graph.name + "' has no trainable initializers");
  }
  return params;
}

// The logits of the first batch must be [N, classes] with every label below classes.
void CheckLogits(const Graph& graph, const Tensor& logits, int64_t batch, int64_t max_label) {
  if (logits.dim() != 2 || logits.size(0) != batch) {
    std::ostringstream msg;
    msg << "Train: output '" << graph.outputs[0].name << "' has shape " << logits.sizes()
        << "; expected logits [" << batch << ", classes]";
    throw Error(ErrorKind::kUnsupported, msg.str());
  }
  if (max_label >= logits.size(1)) {
    throw Error(ErrorKind::kRecipe, "training data: label " + std::to_string(max_label) +
                                        " is out of range for a model with " +
                                        std::to_string(logits.size(1)) + " outputs");
  }
}

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

// One epoch's running sums.
struct EpochTotals {
  double loss_sum = 0;
  int64_t samples = 0;
  Tensor correct;  // on the device: no sync per step
};

}  // namespace

TrainResult Train(Graph& graph, const TensorDataset& train, const TensorDataset* validation,
                  const TrainOptions& options, const c10::Device& device) {
  // Step 1: check everything before touching the graph.
  const int64_t max_label = CheckTrainingRun(graph, train, validation, options);
  const bool validate = validation != nullptr && validation->size() > 0;

  // Step 2: graph on the device, parameters, executor, optimizer, loader.
  graph.To(device);
  std::vector<Tensor> params = TrainableLeaves(graph);
  for (const Tensor& p : options.extra_parameters) params.push_back(p);
  RequiresGradScope requires_grad(params);
  Executor executor(graph);
  if (options.observer) executor.SetObserver(options.observe, options.observer);
  auto optimizer = MakeOptimizer(options.optimizer, params);
  torch::manual_seed(options.seed);  // Dropout and other in-graph randomness
  DataLoader loader(train.To(device), options.batch_size, /*shuffle=*/true, options.seed);
  const int64_t steps_per_epoch = loader.num_batches();
  const int64_t total_steps = steps_per_epoch * options.epochs;
  const auto ce_options =
      torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(options.label_smoothing);
  Progress progress(options.progress, options.epochs, steps_per_epoch);

  // One optimizer step on (x, y); returns the logits for the accuracy count.
  int64_t global_step = 0;
  auto step = [&](const Tensor& x, const Tensor& y, int64_t epoch, int64_t step_in_epoch) {
    double lr = LearningRateAt(options.lr_schedule, options.optimizer.lr, global_step,
                               total_steps, steps_per_epoch);
    if (global_step < options.warmup_steps) {
      lr *= static_cast<double>(global_step + 1) / static_cast<double>(options.warmup_steps);
    }
    for (auto& group : optimizer->param_groups()) group.options().set_lr(lr);
    optimizer->zero_grad();
    const Tensor logits = executor.Run({x}).at(0);
    if (global_step == 0) CheckLogits(graph, logits, x.size(0), max_label);
    const Tensor loss =
        options.loss ? options.loss(logits, y, loader.last_indices())
                     : torch::nn::functional::cross_entropy(logits.to(torch::kFloat), y, ce_options);
    const double loss_value = loss.item<double>();
    if (!std::isfinite(loss_value)) {
      throw Error(ErrorKind::kNumeric,
                  "Train: loss is " + std::to_string(loss_value) + " at epoch " +
                      std::to_string(epoch + 1) + ", step " + std::to_string(step_in_epoch + 1) +
                      " of " + std::to_string(steps_per_epoch) +
                      "; expected a finite loss (lower the learning rate?)");
    }
    loss.backward();
    if (options.max_grad_norm > 0) torch::nn::utils::clip_grad_norm_(params, options.max_grad_norm);
    optimizer->step();
    // Pruned weights stay zero whoever drives the training (a library caller included).
    graph.ApplyMasks();
    ++global_step;
    torch::NoGradGuard no_grad;
    if (options.after_step) options.after_step(global_step);
    return std::make_pair(logits.detach(), loss_value);
  };

  // Step 3: the epochs.
  TrainResult result;
  for (int64_t epoch = 0; epoch < options.epochs; ++epoch) {
    const auto epoch_start = std::chrono::steady_clock::now();
    if (options.before_epoch) options.before_epoch(epoch);
    executor.SetTraining(true);
    loader.StartEpoch(epoch);
    EpochTotals totals;
    totals.correct = torch::zeros({}, torch::TensorOptions().dtype(torch::kLong).device(device));
    Tensor x, y;
    int64_t step_in_epoch = 0;
    while (loader.Next(x, y)) {
      const auto [logits, loss_value] = step(x, y, epoch, step_in_epoch++);
      totals.correct += logits.argmax(1).eq(y).sum();
      totals.loss_sum += loss_value * static_cast<double>(x.size(0));
      totals.samples += x.size(0);
      progress.Step(epoch + 1, step_in_epoch, totals.samples,
                    totals.loss_sum / static_cast<double>(totals.samples), Seconds(epoch_start));
    }
    const double train_seconds = Seconds(epoch_start);

    EpochStats stats;
    stats.epoch = epoch + 1;
    stats.train_loss = totals.loss_sum / static_cast<double>(totals.samples);
    stats.train_accuracy = static_cast<double>(totals.correct.item<int64_t>()) /
                           static_cast<double>(totals.samples);
    stats.samples_per_second =
        static_cast<double>(totals.samples) / std::max(train_seconds, 1e-9);
    executor.SetTraining(false);
    if (validate) {
      const EvalResult val = Evaluate(graph, *validation, options.batch_size, device);
      stats.val_loss = val.loss;
      stats.val_accuracy = val.top1;
    }
    stats.seconds = Seconds(epoch_start);
    progress.Epoch(stats);
    result.epochs.push_back(stats);
  }
  return result;
}

}  // namespace compress
