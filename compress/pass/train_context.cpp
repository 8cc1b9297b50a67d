// The trainer's options from a recipe object, and training on a pass context's data.
#include "compress/pass/train_context.h"

#include <cmath>

namespace compress {

namespace {

// The `augment` object: torchvision's RandomCrop(size, padding, fill) and
// RandomHorizontalFlip(p), applied to each training batch (docs/data.md).
void ReadAugmentation(OptionReader& r, Augmentation& a) {
  OptionReader aug = r.Object("augment", "training augmentation, drawn per sample from (seed, "
                                         "epoch, sample): random crop with padding, then flip");
  std::vector<double> crop;
  aug.Read("random_crop", crop, 1.0, 65536.0, "crop size [n] or [h, w] (RandomCrop)");
  aug.Read("padding", a.padding, 0, 4096, "padding on every side before the crop");
  aug.Read("fill", a.fill, -1e6, 1e6,
           "padding value, one or one per channel (normalised data: -mean/std pads black)");
  aug.Read("horizontal_flip", a.horizontal_flip, 0.0, 1.0, "flip probability (torchvision: 0.5)");
  if (crop.size() > 2) aug.AddProblem("random_crop", "expected [n] or [h, w]");
  for (double v : crop) {
    if (v != static_cast<double>(static_cast<int64_t>(v))) {
      aug.AddProblem("random_crop", "sizes must be whole numbers");
      break;
    }
    a.random_crop.push_back(static_cast<int64_t>(v));
  }
  if (a.random_crop.empty() && (a.padding > 0 || !a.fill.empty())) {
    aug.AddProblem("padding", "padding and fill need random_crop");
  }
  aug.Finish();
}

}  // namespace

void ReadTrainOptions(OptionReader& r, TrainOptions& o, const std::string& epochs_key) {
  r.Read(epochs_key, o.epochs, 1, 100000, "training epochs");
  r.Read("batch_size", o.batch_size, 0, 1 << 20, "batch size; 0 = the recipe's data.batch_size");
  r.Read("label_smoothing", o.label_smoothing, 0.0, 0.999, "cross-entropy label smoothing");
  r.Read("amp", o.amp,
         "mixed precision: LibTorch autocast (bfloat16 on CPU, float16 with a gradient scaler on CUDA)");
  OptionReader opt = r.Object("optimizer", "optimizer settings");
  opt.Read("name", o.optimizer.name, {"sgd", "adam", "adamw", "rmsprop", "adagrad"}, "optimizer");
  opt.Read("lr", o.optimizer.lr, 0.0, 100.0, "learning rate");
  opt.Read("momentum", o.optimizer.momentum, 0.0, 1.0, "momentum (sgd, rmsprop)");
  opt.Read("nesterov", o.optimizer.nesterov, "Nesterov momentum (sgd)");
  opt.Read("weight_decay", o.optimizer.weight_decay, 0.0, 1.0, "weight decay");
  opt.Read("beta1", o.optimizer.beta1, 0.0, 0.999999, "Adam beta1");
  opt.Read("beta2", o.optimizer.beta2, 0.0, 0.999999, "Adam beta2");
  opt.Read("eps", o.optimizer.eps, 0.0, 1.0, "Adam/RMSprop/Adagrad epsilon");
  opt.Read("alpha", o.optimizer.alpha, 0.0, 1.0, "RMSprop smoothing constant");
  opt.Finish();
  if (o.optimizer.nesterov && o.optimizer.name == "sgd" && o.optimizer.momentum == 0) {
    opt.AddProblem("nesterov", "Nesterov momentum needs momentum > 0");
  }
  r.Read("lr_schedule", o.lr_schedule.name, {"none", "step", "cosine", "one-cycle"},
         "learning-rate schedule");
  OptionReader sched = r.Object("schedule", "schedule parameters");
  sched.Read("step_size", o.lr_schedule.step_size, 1, 100000, "epochs between decays (step)");
  sched.Read("gamma", o.lr_schedule.gamma, 0.0, 1.0, "decay factor (step)");
  sched.Read("pct_start", o.lr_schedule.pct_start, 0.0, 1.0, "warm-up fraction (one-cycle)");
  sched.Read("div_factor", o.lr_schedule.div_factor, 1.0, 1e6, "initial lr = lr/div_factor (one-cycle)");
  sched.Read("final_div_factor", o.lr_schedule.final_div_factor, 1.0, 1e9,
             "final lr = initial/final_div_factor (one-cycle)");
  sched.Finish();
  ReadAugmentation(r, o.augmentation);
}

TrainResult TrainInContext(Graph& graph, PassContext& ctx, TrainOptions o) {
  if (ctx.data == nullptr) throw Error(ErrorKind::kInternal, "train: no dataset in the context");
  if (o.batch_size == 0) o.batch_size = ctx.batch_size;
  o.seed = ctx.seed;
  o.progress = ctx.progress;
  o.comm = ctx.comm;
  o.sync_batchnorm = ctx.sync_batchnorm;
  // The context's hook (pruning masks) first, then the caller's own (QAT's scale care).
  const std::function<void(int64_t)> own = o.after_step;
  if (ctx.after_step || own) {
    o.after_step = [&graph, &ctx, own](int64_t step) {
      if (ctx.after_step) ctx.after_step(graph);
      if (own) own(step);
    };
  }
  return Train(graph, ctx.data->train, &ctx.data->validation, o, ctx.device);
}


void AddTrainStats(const TrainResult& r, PassResult& result) {
  if (r.epochs.empty()) return;
  const EpochStats& last = r.epochs.back();
  result.stats["epochs"] = static_cast<double>(r.epochs.size());
  result.stats["train_loss"] = last.train_loss;
  if (!std::isnan(last.train_accuracy)) result.stats["train_accuracy"] = last.train_accuracy;
  if (!std::isnan(last.val_accuracy)) result.stats["val_accuracy"] = last.val_accuracy;
  double sps = 0;
  for (const auto& e : r.epochs) sps += e.samples_per_second;
  result.stats["samples_per_second"] = sps / static_cast<double>(r.epochs.size());
  if (last.world_size > 1) result.stats["world_size"] = static_cast<double>(last.world_size);
  if (last.skipped_steps > 0) result.stats["amp_skipped_steps"] = static_cast<double>(last.skipped_steps);
  if (last.clipped_steps > 0) result.stats["clipped_steps"] = static_cast<double>(last.clipped_steps);
}

}  // namespace compress
