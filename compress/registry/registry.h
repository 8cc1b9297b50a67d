// The one table naming every pass: recipe parsing, `mcompress passes` and tests are
// all driven from it. Adding a pass is its own files plus one row in registry.cpp.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "compress/pass/options.h"
#include "compress/pass/pass.h"

namespace compress {

struct PassEntry {
  const char* name;  // kebab-case
  const char* doc;   // one line
  // Reads the stage's options (problems recorded in the reader) and builds the pass.
  // Called with an empty object to list options and defaults.
  std::unique_ptr<Pass> (*create)(OptionReader& options);
  // The pass leaves the model in QDQ form with int8 weights (quantize, quantize-qat):
  // INT8 exports need such a stage, and no weight-changing stage may follow one.
  bool quantizes = false;
};

// Whether pass `name` is a quantizing pass (false for unknown names).
bool PassQuantizes(const std::string& name);

const std::vector<PassEntry>& PassRegistry();
const PassEntry* FindPass(const std::string& name);
std::vector<std::string> PassNames();

// Why `pass` may not run after the passes `earlier` (in recipe order); empty when it may.
// The ordering rules live here, each with its reason.
std::string StageOrderProblem(const std::string& pass, const std::vector<std::string>& earlier);

// `mcompress passes`: every pass with its doc and options (type, default, doc).
std::string DescribePasses();

}  // namespace compress
