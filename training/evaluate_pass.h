// `evaluate`: measures top-1/top-5/loss on a split (test by default) and records them
// in the report; changes nothing.
#pragma once

#include "compress/pass/options.h"
#include "compress/pass/pass.h"

namespace compress {

class EvaluatePass : public Pass {
 public:
  explicit EvaluatePass(std::string split) : split_(std::move(split)) {}
  static std::unique_ptr<Pass> Create(OptionReader& options);
  PassResult Run(Graph& graph, PassContext& ctx) override;

 private:
  std::string split_;
};

}  // namespace compress
