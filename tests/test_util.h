// Helpers shared by the test files.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "compress/error.h"
#include "compress/registry.h"

namespace compress::testing_util {

// Expects `fn()` to throw compress::Error of `kind` whose message contains `substring`.
template <typename Fn>
void ExpectError(Fn fn, ErrorKind kind, const std::string& substring) {
  try {
    fn();
    ADD_FAILURE() << "expected an error containing: " << substring;
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    EXPECT_NE(std::string(e.what()).find(substring), std::string::npos)
        << "message: " << e.what() << "\nexpected to contain: " << substring;
  }
}

// Builds pass `name` from `options` through the registry (as a recipe stage at
// "stages[0]") and runs it on `graph`. Option problems throw Error(kRecipe) with the
// first problem's path and message.
inline PassResult RunPassFromJson(const std::string& name, Graph& graph,
                                  const nlohmann::json& options, PassContext ctx = {}) {
  const PassEntry* entry = FindPass(name);
  if (entry == nullptr) throw Error(ErrorKind::kInternal, "no pass " + name);
  std::vector<Problem> problems;
  OptionReader reader(options, "stages[0]", &problems);
  auto pass = entry->create(reader);
  reader.Finish();
  if (!problems.empty()) {
    throw Error(ErrorKind::kRecipe, problems[0].path + ": " + problems[0].message);
  }
  return pass->Run(graph, ctx);
}

}  // namespace compress::testing_util
