// Model zoo: small reference networks for 1x28x28 inputs and 10 classes
// (Fashion-MNIST), built with GraphBuilder. Input "input" [N,1,28,28], output "logits".
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "compress/ir/graph.h"

namespace compress {

struct ZooEntry {
  std::string name;
  std::string description;
};

// Every zoo model, in a stable order.
const std::vector<ZooEntry>& ZooModels();
// A zoo model reference: "lenet5", or with a width multiplier "lenet5?width=0.5"
// (every hidden layer's channel/unit count scaled by `width` and rounded, at least 1;
// the input and the 10 classes stay) — students of other sizes for distillation.
struct ZooSpec {
  std::string name;
  double width = 1.0;
};
// Parses `text` (after "zoo:"). Throws compress::Error(kUsage) for an option other
// than width or a width outside (0, 8]; the name is not checked here.
ZooSpec ParseZooSpec(const std::string& text);

// Builds zoo model `spec` (a name, optionally with "?width=W") with weights drawn from
// `seed`. Throws compress::Error (kUsage) naming the valid models when the name is
// unknown.
Graph BuildZoo(const std::string& spec, uint64_t seed = 0);

}  // namespace compress
