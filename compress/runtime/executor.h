// Runs a compress::Graph with LibTorch ops: autograd flows through it (so the same
// graph is trained, fine-tuned and distilled), train/eval mode switches BatchNorm and
// Dropout, and an observer sees chosen intermediate values without graph rewrites.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "compress/ir/graph.h"
#include "compress/runtime/ops.h"

namespace compress {

// Called with the name and value of each observed value as it is produced.
using Observer = std::function<void(const std::string& value, const Tensor& tensor)>;

class Executor {
 public:
  // Plans execution of `graph`: resolves every node's kernel and value slots, and
  // captures the initializer tensors (sharing storage with the graph). The graph must
  // outlive the executor. Build a new executor after a pass changes the graph's
  // structure or replaces initializer tensors (in-place updates are seen, except of
  // integer initializers read through DequantizeLinear — quantized weights and
  // biases — which are dequantized once, here).
  // Throws compress::Error (kUnsupported) listing every op without a kernel.
  explicit Executor(const Graph& graph);

  // Runs the graph on `inputs` (in graph input order) and returns the graph outputs.
  // Inputs must be on the device of the initializers. Autograd records the run unless
  // the caller holds a NoGradGuard / InferenceMode.
  std::vector<Tensor> Run(const std::vector<Tensor>& inputs) const;

  // Training mode: BatchNormalization uses batch statistics and updates its running
  // statistics in place; Dropout drops. Eval mode (the default) is deterministic.
  void SetTraining(bool training) { training_ = training; }
  bool training() const { return training_; }

  // Calls `observer` for each value in `values` (graph inputs, initializers or node
  // outputs) each time it is available during Run. An empty list clears the observer.
  // Throws compress::Error if a name is not a value of the graph.
  void SetObserver(const std::vector<std::string>& values, Observer observer);

  // Synchronised BatchNorm for data-parallel training: in training mode, BatchNorm's
  // batch mean and variance come from `sum` of the per-replica sums (every rank's slice
  // of the global batch), so every rank normalises and updates its running statistics
  // as one process with the whole batch would. Unset (the default): per-replica
  // statistics.
  void SetReplicaSum(ReplicaSum sum) { replica_sum_ = std::move(sum); }

 private:
  struct Step {
    const Node* node;
    const void* op;                 // const OpSpec*
    std::vector<int> input_slots;   // -1 for an omitted optional input
    std::vector<int> output_slots;  // -1 for an omitted optional output
    std::vector<int> free_after;    // slots whose last use is this step
  };
  const Graph& graph_;
  std::vector<Step> steps_;
  std::vector<int> input_slots_;
  std::vector<int> output_slots_;
  std::vector<std::pair<int, Tensor>> constants_;  // initializer slots
  std::vector<std::string> slot_names_;
  size_t num_slots_ = 0;
  bool training_ = false;
  std::vector<bool> observed_;  // per slot
  Observer observer_;
  ReplicaSum replica_sum_;
};

// Fills graph.value_info and the shapes of graph outputs by running the graph on
// zero inputs: once with every dynamic input dim set to 1 and once set to 2, so a dim
// that follows the batch size is recorded as kDynamicDim. Input shapes must be known.
void InferShapes(Graph& graph);
// Whether InferShapes has work to do and can do it: no intermediate shapes recorded
// yet, and the first input's shape is known.
bool ShapesMissing(const Graph& graph);

}  // namespace compress
