// The trainer: options validation, the optimizer factory, learning-rate schedules as a
// pure function of the step, and the epoch loop with progress output on stderr.
#include "compress/train/train.h"

#include <ATen/autocast_mode.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <set>
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
    std::fprintf(stderr, "epoch %lld/%lld  train loss %.4f", static_cast<long long>(s.epoch),
                 static_cast<long long>(epochs_), s.train_loss);
    if (!std::isnan(s.train_accuracy)) std::fprintf(stderr, " acc %.4f", s.train_accuracy);
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
  if (!options.labels && !options.loss) {
    throw Error(ErrorKind::kInternal, "Train: training without labels needs a loss that reads "
                                      "none (TrainOptions::loss)");
  }
  CheckDataset(train, "training data", options.labels);
  if (train.size() == 0) {
    throw Error(ErrorKind::kRecipe, "training data: dataset is empty; expected samples");
  }
  if (!options.labels) return -1;
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

// BatchNorm's running statistics (inputs 3 and 4): trained by the forward pass, not by
// gradients, so data parallelism keeps them identical across ranks separately.
std::vector<Tensor> BatchNormStatistics(Graph& graph) {
  std::vector<Tensor> stats;
  std::set<std::string> seen;
  for (const Node& node : graph.nodes) {
    if (node.op_type != "BatchNormalization") continue;
    for (size_t i = 3; i < node.inputs.size() && i < 5; ++i) {
      auto it = graph.initializers.find(node.inputs[i]);
      if (it != graph.initializers.end() && seen.insert(node.inputs[i]).second) {
        stats.push_back(it->second.value);
      }
    }
  }
  return stats;
}

// A sum over the ranks that autograd differentiates: the gradient of every rank's
// loss with respect to this rank's input is the sum of the ranks' output gradients.
// (Synchronised BatchNorm's statistics; Communicator collectives run in the same order
// on every rank because every rank's graph and autograd graph are the same.)
class ReplicaSumFunction : public torch::autograd::Function<ReplicaSumFunction> {
 public:
  static Tensor forward(torch::autograd::AutogradContext* ctx, const Tensor& x, int64_t comm) {
    ctx->saved_data["comm"] = comm;
    Tensor y = x.detach().clone();
    reinterpret_cast<Communicator*>(comm)->AllReduce(y, Communicator::Op::kSum,
                                                     "synchronised BatchNorm statistics");
    return y;
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto* comm = reinterpret_cast<Communicator*>(ctx->saved_data["comm"].toInt());
    Tensor g = grads[0].contiguous().clone();
    comm->AllReduce(g, Communicator::Op::kSum, "synchronised BatchNorm gradients");
    return {g, Tensor()};
  }
};

// Autocast for the forward pass (mixed precision) on `device`'s kind, restoring the
// previous state on scope exit: bfloat16 on CPU, float16 on CUDA.
class AutocastScope {
 public:
  AutocastScope(bool on, const c10::Device& device) : on_(on), cuda_(device.is_cuda()) {
    if (!on_) return;
    if (cuda_) {
      was_enabled_ = at::autocast::is_enabled();
      was_dtype_ = at::autocast::get_autocast_gpu_dtype();
      at::autocast::set_autocast_gpu_dtype(at::kHalf);
      at::autocast::set_enabled(true);
    } else {
      was_enabled_ = at::autocast::is_cpu_enabled();
      was_dtype_ = at::autocast::get_autocast_cpu_dtype();
      at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
      at::autocast::set_cpu_enabled(true);
    }
    at::autocast::increment_nesting();
  }
  ~AutocastScope() {
    if (!on_) return;
    // The cast-weight cache lives for one forward pass: the weights change every step.
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    if (cuda_) {
      at::autocast::set_enabled(was_enabled_);
      at::autocast::set_autocast_gpu_dtype(was_dtype_);
    } else {
      at::autocast::set_cpu_enabled(was_enabled_);
      at::autocast::set_autocast_cpu_dtype(was_dtype_);
    }
  }
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool on_, cuda_;
  bool was_enabled_ = false;
  at::ScalarType was_dtype_ = at::kFloat;
};

// Dynamic loss scaling for float16 (Micikevicius et al. 2018, "Mixed Precision
// Training"): the loss is multiplied by `scale` so small gradients survive float16;
// gradients are divided by it before the step; a step whose gradients hold Inf/NaN is
// skipped and the scale halved; after `growth_interval` good steps it doubles.
struct GradScaler {
  bool enabled = false;
  double scale = 65536.0;
  int64_t good_steps = 0;
  static constexpr int64_t kGrowthInterval = 2000;

  // Unscales the gradients of `params` in place; returns false (and lowers the scale)
  // when one is not finite. One host sync per step, not one per parameter.
  bool Unscale(const std::vector<Tensor>& params) {
    if (!enabled) return true;
    torch::NoGradGuard no_grad;
    Tensor finite;
    for (const Tensor& p : params) {
      if (!p.grad().defined()) continue;
      p.mutable_grad().div_(scale);
      const Tensor ok = torch::isfinite(p.grad()).all();
      finite = finite.defined() ? finite.logical_and(ok) : ok;
    }
    if (finite.defined() && !finite.item<bool>()) {
      scale = std::max(scale / 2.0, 1.0);
      good_steps = 0;
      return false;
    }
    if (++good_steps >= kGrowthInterval) {
      scale *= 2.0;
      good_steps = 0;
    }
    return true;
  }
};

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
  Communicator* const comm = options.comm && options.comm->distributed() ? options.comm.get() : nullptr;
  const std::vector<Tensor> bn_stats = BatchNormStatistics(graph);
  if (comm != nullptr) {
    // Every rank starts from rank 0's parameters and statistics.
    std::vector<Tensor> state = params;
    state.insert(state.end(), bn_stats.begin(), bn_stats.end());
    comm->Broadcast(state, 0, "initial parameters");
  }
  Executor executor(graph);
  if (options.observer) executor.SetObserver(options.observe, options.observer);
  if (comm != nullptr && options.sync_batchnorm) {
    const auto handle = static_cast<int64_t>(reinterpret_cast<intptr_t>(comm));
    executor.SetReplicaSum([handle](const Tensor& t) { return ReplicaSumFunction::apply(t, handle); });
  }
  auto optimizer = MakeOptimizer(options.optimizer, params);
  // Dropout and other in-graph randomness; each rank draws its own masks.
  torch::manual_seed(options.seed + (comm != nullptr ? static_cast<uint64_t>(comm->rank()) * 7919u : 0u));
  DataLoader loader(train.To(device), options.batch_size, /*shuffle=*/true, options.seed);
  if (comm != nullptr) loader.Shard(comm->rank(), comm->world_size());
  const int64_t steps_per_epoch = loader.num_batches();
  const bool augment = Augmenting(options.augmentation);
  const int64_t total_steps = steps_per_epoch * options.epochs;
  const auto ce_options =
      torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(options.label_smoothing);
  Progress progress(options.progress, options.epochs, steps_per_epoch);

  // One optimizer step on (x, y); returns the logits for the accuracy count.
  int64_t global_step = 0, skipped_steps = 0, clipped_steps = 0;
  GradScaler scaler;
  scaler.enabled = options.amp && device.is_cuda();
  auto step = [&](const Tensor& x, const Tensor& y, int64_t epoch, int64_t step_in_epoch) {
    const int64_t schedule_start = options.schedule_after_warmup ? options.warmup_steps : 0;
    double lr = LearningRateAt(options.lr_schedule, options.optimizer.lr,
                               std::max<int64_t>(global_step - schedule_start, 0),
                               total_steps - schedule_start, steps_per_epoch);
    if (global_step < options.warmup_steps) {
      lr *= static_cast<double>(global_step + 1) / static_cast<double>(options.warmup_steps);
    }
    for (auto& group : optimizer->param_groups()) group.options().set_lr(lr);
    optimizer->zero_grad();
    Tensor logits;
    {
      AutocastScope autocast(options.amp, device);
      logits = executor.Run({x}).at(0);
    }
    logits = logits.to(torch::kFloat);  // losses in float32 (autocast's policy too)
    if (global_step == 0) CheckLogits(graph, logits, x.size(0), max_label);
    const Tensor loss =
        options.loss ? options.loss(logits, y, loader.last_indices())
                     : torch::nn::functional::cross_entropy(logits, y, ce_options);
    double loss_value = loss.item<double>();
    // Float16 needs the scaled loss; bfloat16 has float32's range and does not.
    const double loss_scale = scaler.enabled ? scaler.scale : 1.0;
    if (comm != nullptr) {
      // This rank's share of the global batch's mean loss; the summed gradients are then
      // the one-process gradient of the whole batch, and the summed shares its loss.
      const double share = static_cast<double>(x.size(0)) /
                           static_cast<double>(loader.last_global_count());
      (loss * (share * loss_scale)).backward();
      std::vector<Tensor> grads;
      for (const Tensor& p : params) {
        if (p.grad().defined()) grads.push_back(p.mutable_grad());
      }
      grads.push_back(torch::full({1}, loss_value * share,
                                  torch::TensorOptions().dtype(torch::kFloat).device(device)));
      comm->AllReduce(grads, Communicator::Op::kSum,
                      "gradients of step " + std::to_string(global_step + 1));
      loss_value = grads.back().item<double>();
    }
    if (!std::isfinite(loss_value)) {
      throw Error(ErrorKind::kNumeric,
                  "Train: loss is " + std::to_string(loss_value) + " at epoch " +
                      std::to_string(epoch + 1) + ", step " + std::to_string(step_in_epoch + 1) +
                      " of " + std::to_string(steps_per_epoch) +
                      "; expected a finite loss (lower the learning rate?)");
    }
    if (comm == nullptr) (loss_scale == 1.0 ? loss : loss * loss_scale).backward();
    if (!scaler.Unscale(params)) {
      // Inf/NaN gradients from float16 overflow: skip this step (every rank alike: the
      // gradients were summed first) and go on with a lower scale.
      ++skipped_steps;
      ++global_step;
      return std::make_pair(logits.detach(), loss_value);
    }
    if (options.max_grad_norm > 0 &&
        torch::nn::utils::clip_grad_norm_(params, options.max_grad_norm) > options.max_grad_norm) {
      ++clipped_steps;
    }
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
      const int64_t batch = loader.last_global_count();
      if (augment && x.size(0) > 0) {
        x = Augment(x, loader.last_indices(), options.augmentation, options.seed, epoch);
      }
      if (comm != nullptr && batch < comm->world_size()) continue;  // a slice would be empty
      const auto [logits, loss_value] = step(x, y, epoch, step_in_epoch++);
      totals.correct += logits.argmax(1).eq(y).sum();
      totals.loss_sum += loss_value * static_cast<double>(batch);
      totals.samples += batch;
      progress.Step(epoch + 1, step_in_epoch, totals.samples,
                    totals.loss_sum / static_cast<double>(totals.samples), Seconds(epoch_start));
    }
    const double train_seconds = Seconds(epoch_start);

    if (comm != nullptr) {
      // Accuracy over every rank's samples; BatchNorm's running statistics averaged
      // (per-rank statistics differ; synchronised ones are equal and stay so).
      comm->AllReduce(totals.correct, Communicator::Op::kSum, "epoch accuracy");
      if (!options.sync_batchnorm && !bn_stats.empty()) {
        std::vector<Tensor> stats = bn_stats;
        comm->AllReduce(stats, Communicator::Op::kSum, "BatchNorm running statistics");
        torch::NoGradGuard no_grad;
        for (const Tensor& t : bn_stats) t.div_(static_cast<double>(comm->world_size()));
      }
    }
    EpochStats stats;
    stats.epoch = epoch + 1;
    stats.world_size = comm != nullptr ? comm->world_size() : 1;
    stats.skipped_steps = skipped_steps;
    stats.clipped_steps = clipped_steps;
    stats.train_loss = totals.loss_sum / static_cast<double>(totals.samples);
    stats.train_accuracy = options.labels ? static_cast<double>(totals.correct.item<int64_t>()) /
                                                static_cast<double>(totals.samples)
                                          : std::numeric_limits<double>::quiet_NaN();
    stats.samples_per_second =
        static_cast<double>(totals.samples) / std::max(train_seconds, 1e-9);
    executor.SetTraining(false);
    if (validate && options.labels) {
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
