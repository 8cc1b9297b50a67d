// Training inside a pass: the trainer's recipe options and a run on the pass context's
// data, shared by the train pass, pruning schedules' fine-tuning and any pass that
// trains (QAT, distillation).
#pragma once

#include <string>

#include "compress/pass/options.h"
#include "compress/pass/pass.h"
#include "compress/train/train.h"

namespace compress {

// Declares the trainer's options on `r` (the epoch count under `epochs_key`, so other
// passes can embed fine-tuning as e.g. "finetune_epochs"). batch_size 0 means the
// recipe's data.batch_size.
void ReadTrainOptions(OptionReader& r, TrainOptions& options, const std::string& epochs_key);

// Trains `graph` on ctx.data's training split (validation each epoch) with ctx's seed,
// progress display and after_step hook; batch_size 0 takes ctx.batch_size. An
// options.after_step of the caller runs after the context's.
TrainResult TrainInContext(Graph& graph, PassContext& ctx, TrainOptions options);

// The last epoch's loss/accuracy (and validation accuracy when measured), the epoch
// count and the mean training throughput, as a pass's stats.
void AddTrainStats(const TrainResult& r, PassResult& result);

}  // namespace compress
