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
// Builds zoo model `name` with weights drawn from `seed`. Throws compress::Error
// (kUsage) naming the valid models when `name` is unknown.
Graph BuildZoo(const std::string& name, uint64_t seed = 0);

}  // namespace compress
