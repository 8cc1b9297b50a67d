// Every pass of the registry, driven from the table itself: its default options parse
// and are documented, an unknown option is a recipe error naming the JSON path and
// the nearest key, and a case where the pass has nothing to do leaves the model's
// outputs exactly as they were (the differential helper of tests/test_util.h). A new
// pass fails NoOpCasesCoverTheRegistry until it gets a row here.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>

#include "compress/registry/registry.h"
#include "compress/zoo/zoo.h"
#include "tests/test_util.h"

namespace compress {
namespace {

using testing_util::ExpectError;
using testing_util::PassOutputDiff;
using testing_util::RunPassFromJson;

// Options under which the pass has nothing to change on lenet5 (no BatchNormalization,
// no Dropout), or null with the reason there is no such case.
struct NoOpCase {
  nlohmann::json options;
  const char* why;
};

const std::map<std::string, NoOpCase>& NoOpCases() {
  static const std::map<std::string, NoOpCase> cases = {
      {"distill",
       {nullptr, "needs a teacher, which TinyContext lacks (tests/distill checks that lr 0 "
                 "changes nothing)"}},
      {"evaluate", {nlohmann::json::object(), "measures only"}},
      {"fold-batchnorm", {nlohmann::json::object(), "lenet5 has no BatchNormalization"}},
      {"prune-channels", {{{"ratio", 0.0}}, "ratio 0 removes no channel"}},
      {"prune-magnitude", {{{"sparsity", 0.0}}, "sparsity 0 zeroes no weight"}},
      {"prune-nm", {{{"n", 1}, {"m", 64}}, "no lenet5 input dimension is a multiple of 64"}},
      {"prune-sensitivity", {{{"sparsities", {0.5}}, {"samples", 16}}, "scans without applying"}},
      {"quantize", {nullptr, "always rewrites the selected layers; selecting none is an error"}},
      {"quantize-sensitivity", {{{"eval_samples", 16}}, "scans copies; the model is unchanged"}},
      {"quantize-qat",
       {nullptr, "always rewrites the selected layers; selecting none is an error"}},
      {"train",
       {{{"epochs", 1}, {"optimizer", {{"name", "sgd"}, {"lr", 0.0}}}},
        "learning rate 0 and no weight decay leave every weight as it is"}},
  };
  return cases;
}

// 64 seeded random images with labels, for passes that train, scan or calibrate.
const DatasetSplits& TinySplits() {
  static const DatasetSplits splits = [] {
    torch::manual_seed(11);
    DatasetSplits s;
    for (TensorDataset* d : {&s.train, &s.validation, &s.test}) {
      d->inputs = torch::randn({64, 1, 28, 28});
      d->targets = torch::randint(0, 10, {64}, torch::kLong);
    }
    return s;
  }();
  return splits;
}

PassContext TinyContext() {
  PassContext ctx;
  ctx.data = &TinySplits();
  ctx.batch_size = 32;
  ctx.calibration_samples = 32;
  ctx.progress = "quiet";
  return ctx;
}

TEST(Registry, NoOpCasesCoverTheRegistry) {
  for (const auto& e : PassRegistry()) {
    EXPECT_EQ(NoOpCases().count(e.name), 1u) << e.name << " has no row in NoOpCases";
  }
  EXPECT_EQ(NoOpCases().size(), PassRegistry().size());
}

TEST(Registry, DefaultOptionsParseAndAreDocumented) {
  for (const auto& e : PassRegistry()) {
    SCOPED_TRACE(e.name);
    std::vector<Problem> problems;
    OptionReader reader(nlohmann::json::object(), "stages[0]", &problems);
    EXPECT_NE(e.create(reader), nullptr);
    reader.Finish();
    EXPECT_TRUE(problems.empty()) << problems[0].path << ": " << problems[0].message;
    for (const auto& d : reader.docs()) {
      EXPECT_FALSE(d.doc.empty()) << d.name;
      EXPECT_FALSE(d.type.empty()) << d.name;
    }
  }
}

TEST(Registry, UnknownOptionIsARecipeErrorNamingThePath) {
  for (const auto& e : PassRegistry()) {
    SCOPED_TRACE(e.name);
    Graph g = BuildZoo("lenet5", 1);
    ExpectError([&] { RunPassFromJson(e.name, g, {{"no_such_option", 1}}, TinyContext()); },
                ErrorKind::kRecipe, "stages[0].no_such_option");
  }
}

TEST(Registry, EveryPassLeavesTheModelAloneWhenItHasNothingToDo) {
  const Graph lenet5 = BuildZoo("lenet5", 1);
  for (const auto& e : PassRegistry()) {
    SCOPED_TRACE(e.name);
    const NoOpCase& c = NoOpCases().at(e.name);
    if (c.options.is_null()) {
      std::printf("%-18s no no-op case: %s\n", e.name, c.why);
      continue;
    }
    PassResult r;
    Graph passed;
    const double diff = PassOutputDiff(e.name, lenet5, c.options, TinyContext(), 4, &r, &passed);
    std::printf("%-18s (%s): max |diff| / scale = %.3g\n", e.name, c.why, diff);
    EXPECT_EQ(diff, 0.0);
    for (const auto& [name, init] : lenet5.initializers) {
      ASSERT_TRUE(passed.IsInitializer(name)) << name;
      EXPECT_TRUE(torch::equal(passed.Weight(name), init.value)) << name;
    }
  }
  // The quantizing passes' error case in place of a no-op: a filter that selects nothing.
  for (const char* pass : {"quantize", "quantize-qat"}) {
    Graph g = lenet5.Clone();
    ExpectError([&] { RunPassFromJson(pass, g, {{"exclude", ".*"}}, TinyContext()); },
                ErrorKind::kRecipe, "quantize: no layer selected");
  }
}

}  // namespace
}  // namespace compress
