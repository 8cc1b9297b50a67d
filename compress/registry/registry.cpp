// The pass table. One row per pass; keep it sorted by name.
#include "compress/registry/registry.h"

#include <sstream>

#include "distill/distill.h"
#include "training/evaluate_pass.h"
#include "training/train_pass.h"
#include "pruning/prune_channels.h"
#include "pruning/prune_magnitude.h"
#include "pruning/prune_nm.h"
#include "pruning/prune_sensitivity.h"
#include "quantization/fold_batchnorm.h"
#include "quantization/qat.h"
#include "quantization/quant_sensitivity.h"
#include "quantization/quantize.h"

namespace compress {

namespace {

const std::vector<PassEntry> kPasses = {
    {"evaluate", "Measure top-1/top-5/loss on the test (or validation) split", EvaluatePass::Create},
    {"distill",
     "Knowledge distillation from the recipe's teachers (or the baseline): KD on softened "
     "logits + hard labels, optional feature hints and attention transfer, ramped weights",
     DistillPass::Create},
    {"fold-batchnorm", "Fold BatchNormalization into the preceding Conv/Gemm (inference form)",
     FoldBatchNormPass::Create},
    {"prune-channels",
     "Structured channel pruning over dependency groups, physically shrinking every tensor",
     PruneChannelsPass::Create},
    {"prune-magnitude", "Unstructured L1-magnitude pruning of Conv/Gemm/MatMul weights (masks persist)",
     PruneMagnitudePass::Create},
    {"prune-nm", "N:M semi-structured pruning (2:4 by default) along the input dimension",
     PruneNMPass::Create},
    {"prune-sensitivity",
     "Per-layer pruning sensitivity scan on the validation split; optionally applies derived targets",
     PruneSensitivityPass::Create},
    {"quantize",
     "Post-training INT8 quantization: BN folding, calibration, QDQ with per-channel int8 weights",
     QuantizePass::Create, /*quantizes=*/true},
    {"quantize-qat",
     "Quantization-aware INT8 training: calibrate, train with fake quantization (STE, optional "
     "LSQ scales), then the QDQ form of quantize",
     QuantizeQatPass::Create, /*quantizes=*/true},
    {"quantize-sensitivity",
     "Per-layer INT8 sensitivity on the validation split (only this layer / all but this "
     "layer INT8); a report table, the model unchanged",
     QuantizeSensitivityPass::Create},
    {"train", "Train or fine-tune on the training split with the Core trainer", TrainPass::Create},
};

}  // namespace

const std::vector<PassEntry>& PassRegistry() { return kPasses; }

const PassEntry* FindPass(const std::string& name) {
  for (const auto& e : kPasses) {
    if (name == e.name) return &e;
  }
  return nullptr;
}

bool PassQuantizes(const std::string& name) {
  const PassEntry* e = FindPass(name);
  return e != nullptr && e->quantizes;
}

std::string StageOrderProblem(const std::string& pass, const std::vector<std::string>& earlier) {
  // After `quantize` or `quantize-qat` the weights are int8 initializers and nothing
  // trains them: every pass that changes weights must come before (training that
  // should see the quantization belongs in quantize-qat itself). Measuring and BN
  // folding (a no-op by then) may follow.
  for (const auto& e : earlier) {
    if (PassQuantizes(e) && pass != "evaluate" &&
        pass != "fold-batchnorm") {
      return "\"" + pass + "\" cannot follow \"" + e + "\": the quantized model holds int8 "
             "weights that no later pass may change; move this stage before \"" + e +
             "\" (to train with quantization in the loop, use quantize-qat's epochs)";
    }
  }
  return "";
}

std::vector<std::string> PassNames() {
  std::vector<std::string> names;
  for (const auto& e : kPasses) names.push_back(e.name);
  return names;
}

std::string DescribePasses() {
  std::ostringstream os;
  for (const auto& e : kPasses) {
    std::vector<Problem> problems;
    OptionReader reader(nlohmann::json::object(), "", &problems);
    e.create(reader);
    os << e.name << "\n    " << e.doc << "\n";
    for (const auto& d : reader.docs()) {
      os << "    " << d.name << " (" << d.type << ", default " << d.default_value << ")  "
         << d.doc << "\n";
    }
  }
  return os.str();
}

}  // namespace compress
