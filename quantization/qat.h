// `quantize-qat`: quantization-aware training. The model is prepared exactly as
// `quantize` prepares it (BatchNorm folded, the same QDQ plan, activation ranges
// calibrated with the chosen method), then trained with FakeQuantize nodes
// (compress/runtime/fake_quant.h) wherever the QDQ form will quantize, and finally
// rewritten into that QDQ form with the trained weights and scales. What the model
// computed in its last training epoch is, up to the int32 rounding of biases, what its
// exported INT8 file computes.
//
// Choices (docs/quantization.md, "Quantization-aware training"):
//   - BatchNorm is folded with its running statistics before training starts (BN frozen
//     from epoch 0): the fake-quantized weights seen in training are the exported ones,
//     with no train/deploy mismatch and no BN-correction bookkeeping. With
//     "fold_batchnorm": false BN stays a float op in training and in the exported graph.
//   - Weights: symmetric, per channel by default, range of the INT8 target. Without
//     learned scales the scale is max|w| / qmax recomputed every step (as the export
//     computes it); with learn_scales it is an LSQ parameter initialised from it.
//   - Activations: the calibrated scale and zero point; fixed, or tracked by a
//     moving-average min/max observer for the first `observer_epochs` epochs and frozen
//     after, or learned (LSQ, the zero point stays the calibrated one).
//   - Pruning masks and N:M patterns survive: the engine re-applies them after every
//     step, and a zero weight fake-quantizes to exactly zero (weight zero point 0).
//   - With `latency_fallback` (quantize's option) the layers whose INT8 form is slower in
//     ONNX Runtime are chosen once, on the calibrated model before training, and stay
//     FP32 throughout: not fake-quantized in training, not INT8 in the result.
//   - With `distill` the loss is the distillation objective's (distill/objective.h):
//     the fake-quantized model is the student of the recipe's teachers, else of the
//     baseline, exactly as the distill pass picks them.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "compress/pass/pass.h"
#include "compress/train/train.h"
#include "distill/objective.h"
#include "quantization/qdq.h"
#include "quantization/quantize.h"

namespace compress {

struct QatOptions {
  QuantizeOptions quantize;  // initial calibration, layers, target, final QDQ form
  TrainOptions train;        // epochs, optimizer, lr_schedule; batch_size 0 = the recipe's
  bool learn_scales = false;   // LSQ step sizes for weights and activations
  bool clipped_ste = true;     // zero gradient where a value saturates, or plain pass-through
  int64_t observer_epochs = 0; // epochs of moving-average range tracking (fixed scales only)
  double observer_momentum = 0.01;
  // Train against the teachers with this loss (temperature, alpha, features, attention)
  // instead of cross-entropy; train's epochs and optimizer stay QAT's. Unset: plain QAT.
  std::optional<DistillLossOptions> distill;
};

// The FakeQuantize nodes of a prepared model, and the initializers they read.
struct FakeQuantLayout {
  struct Activation {
    std::string value;       // the quantized value (the FakeQuantize node's input)
    std::string scale;       // float scalar initializer
    std::string zero_point;  // float scalar initializer (holds an integer)
    float scale_max = 0;     // ClipScaleBound of the value (0: none), applied in training
  };
  struct Weight {
    std::string weight;
    std::string scale;  // per-channel (or scalar) initializer; empty: max|w| / qmax per step
    int64_t axis = -1;
  };
  std::vector<Activation> activations;
  std::vector<Weight> weights;
  std::set<std::string> nodes;  // names of the inserted FakeQuantize nodes
};

// Inserts a FakeQuantize node after every planned activation without `share` (shared
// values keep their root's grid, so fake-quantizing them again is the identity) and
// before every planned layer's weight, with `params` as the activations' initial
// parameters.
FakeQuantLayout InsertFakeQuant(Graph& graph, const QdqPlan& plan,
                                const std::map<std::string, AffineParams>& params,
                                const QatOptions& options);

// The trained parameters: each activation's scale and zero point, and the learned
// weight scales (none when scales were not learned). Throws Error(kNumeric) naming the
// value when a scale is not finite and positive.
struct TrainedQuantParams {
  std::map<std::string, AffineParams> activations;
  std::map<std::string, Tensor> weight_scales;
};
TrainedQuantParams ReadTrainedParams(const Graph& graph, const FakeQuantLayout& layout);

// Removes the FakeQuantize nodes and their initializers, leaving the float model
// (with trained weights) that PlanQdq/ApplyQdq turn into the QDQ form.
void RemoveFakeQuant(Graph& graph, const FakeQuantLayout& layout);

class QuantizeQatPass : public Pass {
 public:
  explicit QuantizeQatPass(QatOptions options) : options_(std::move(options)) {}
  static std::unique_ptr<Pass> Create(OptionReader& options);
  PassResult Run(Graph& graph, PassContext& ctx) override;

 private:
  QatOptions options_;
};

}  // namespace compress
