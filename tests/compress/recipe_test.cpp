// Recipe validation: each malformed recipe reports the exact JSON path and message;
// all problems are reported at once; overrides; the pass registry drives options.
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <filesystem>
#include <fstream>

#include "compress/engine/recipe.h"
#include "compress/registry/registry.h"
#include "compress/runtime/runtime_config.h"

namespace compress {
namespace {

using nlohmann::json;

json Valid() {
  return json::parse(R"({
    "model": "zoo:convnet",
    "data": {"dataset": "fashion-mnist", "batch_size": 128, "calibration_samples": 512},
    "device": "auto",
    "seed": 0,
    "stages": [
      {"pass": "train", "epochs": 2, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}, "lr_schedule": "cosine"},
      {"pass": "evaluate"}
    ],
    "exports": [{"format": "onnx", "path": "model.onnx"}],
    "report": {"formats": ["json", "md", "html"]},
    "acceptance": {"max_accuracy_drop": 0.01}
  })");
}

std::vector<std::string> ProblemsOf(const json& j) {
  std::vector<std::string> out;
  for (const auto& p : ValidateRecipe(j, "")) out.push_back(p.path + ": " + p.message);
  return out;
}

TEST(Recipe, TheIssueExampleIsValid) {
  EXPECT_EQ(ProblemsOf(Valid()), std::vector<std::string>{});
  Recipe r = ParseRecipe(Valid(), "x.json", "");
  ASSERT_EQ(r.stages.size(), 2u);
  EXPECT_EQ(r.stages[0].pass, "train");
  EXPECT_NE(r.stages[0].instance, nullptr);
  EXPECT_DOUBLE_EQ(r.max_accuracy_drop, 0.01);
  EXPECT_EQ(r.exports[0].path, "model.onnx");
}

struct Malformed {
  const char* name;
  std::function<void(json&)> edit;
  std::string expected;  // the single problem, "path: message"
};

// gtest names the case by its name, not its bytes.
void PrintTo(const Malformed& m, std::ostream* os) { *os << m.name; }

class RecipeMalformed : public ::testing::TestWithParam<Malformed> {};

TEST_P(RecipeMalformed, ReportsExactPathAndMessage) {
  json j = Valid();
  GetParam().edit(j);
  EXPECT_EQ(ProblemsOf(j), std::vector<std::string>{GetParam().expected});
}

const Malformed kMalformed[] = {
    {"UnknownTopLevelKey", [](json& j) { j["stagse"] = json::array(); },
     "stagse: unknown option (did you mean \"stages\"?)"},
    {"MissingModel", [](json& j) { j.erase("model"); },
     "model: missing; expected zoo:<name>, or the path of an .onnx or TorchScript file"},
    {"UnknownZooModel", [](json& j) { j["model"] = "zoo:convnett"; },
     "model: unknown zoo model \"convnett\" (did you mean \"zoo:convnet\"?)"},
    {"MissingOnnxFile", [](json& j) { j["model"] = "/nonexistent/m.onnx"; },
     "model: file \"/nonexistent/m.onnx\" does not exist"},
    {"MissingTorchScriptFile",
     [](json& j) {
       j["model"] = "/nonexistent/m.pt";
       j["input_shape"] = {1, 1, 28, 28};
     },
     "model: file \"/nonexistent/m.pt\" does not exist"},
    {"InputShapeNotPositive", [](json& j) { j["input_shape"] = {1, 0, 28}; },
     "input_shape[1]: expected a positive integer, found 0"},
    {"InputShapeOfSecondInputEmpty",
     [](json& j) { j["input_shape"] = json::array({json::array({1, 2}), json::array()}); },
     "input_shape[1]: expected a non-empty array of dims, found an empty array"},
    {"UnknownPass", [](json& j) { j["stages"][1]["pass"] = "evaluat"; },
     "stages[1].pass: unknown pass \"evaluat\" (did you mean \"evaluate\"?)"},
    {"StageWithoutPass", [](json& j) { j["stages"][0].erase("pass"); },
     "stages[0].pass: missing; expected a pass name (see `mcompress passes`)"},
    {"WrongTypeEpochs", [](json& j) { j["stages"][0]["epochs"] = "2"; },
     "stages[0].epochs: expected an integer, found string"},
    {"EpochsOutOfRange", [](json& j) { j["stages"][0]["epochs"] = 0; },
     "stages[0].epochs: value 0 is out of range; expected 1 <= value <= 100000"},
    {"UnknownStageOption", [](json& j) { j["stages"][0]["epoch"] = 3; },
     "stages[0].epoch: unknown option (did you mean \"epochs\"?)"},
    {"UnknownOptimizer", [](json& j) { j["stages"][0]["optimizer"]["name"] = "sgdd"; },
     "stages[0].optimizer.name: unknown value \"sgdd\"; expected one of "
     "sgd|adam|adamw|rmsprop|adagrad (did you mean \"sgd\"?)"},
    {"NegativeLr", [](json& j) { j["stages"][0]["optimizer"]["lr"] = -0.1; },
     "stages[0].optimizer.lr: value -0.1 is out of range; expected 0 <= value <= 100"},
    {"UnknownSchedule", [](json& j) { j["stages"][0]["lr_schedule"] = "cosin"; },
     "stages[0].lr_schedule: unknown value \"cosin\"; expected one of "
     "none|step|cosine|one-cycle (did you mean \"cosine\"?)"},
    {"BatchSizeZero", [](json& j) { j["data"]["batch_size"] = 0; },
     "data.batch_size: value 0 is out of range; expected 1 <= value <= 65536"},
    {"UnknownDataset", [](json& j) { j["data"]["dataset"] = "mnist"; },
     "data.dataset: unknown value \"mnist\"; expected one of "
     "fashion-mnist|idx|image-folder|tensors|caller"},
    {"MissingDataRoot", [](json& j) { j["data"]["root"] = "/nonexistent"; },
     "data.root: folder \"/nonexistent\" does not exist (Debian package dataset-fashion-mnist)"},
    {"BadDevice", [](json& j) { j["device"] = "gpu"; },
     "device: unknown device \"gpu\"; expected auto, cpu, cuda or cuda:N"},
    {"NegativeSeed", [](json& j) { j["seed"] = -1; },
     "seed: expected a non-negative integer, found integer -1"},
    {"StagesNotArray", [](json& j) { j["stages"] = json::object(); },
     "stages: expected an array, found object"},
    {"Int8TorchScriptWithoutQuantize", [](json& j) { j["exports"][0]["format"] = "torchscript-int8"; },
     "exports[0].format: \"torchscript-int8\" needs a quantized model: add a \"quantize\" stage (or start from a QDQ .onnx model)"},
    {"QdqExportWithoutQuantize", [](json& j) { j["exports"][0]["format"] = "onnx-qdq"; },
     "exports[0].format: \"onnx-qdq\" needs a quantized model: add a \"quantize\" stage (or start from a QDQ .onnx model)"},
    {"ExportEscapesOutput", [](json& j) { j["exports"][0]["path"] = "../model.onnx"; },
     "exports[0].path: \"../model.onnx\" must stay inside the output directory (relative, no \"..\")"},
    {"ExportReservedName", [](json& j) { j["exports"][0]["path"] = "report.json"; },
     "exports[0].path: \"report.json\" is reserved for the run's own outputs"},
    {"DuplicateExport", [](json& j) { j["exports"].push_back(j["exports"][0]); },
     "exports[1].path: \"model.onnx\" is written by an earlier export too"},
    {"BadReportFormat", [](json& j) { j["report"]["formats"][1] = "pdf"; },
     "report.formats[1]: expected \"json\", \"md\" or \"html\", found \"pdf\""},
    {"AccuracyDropOutOfRange", [](json& j) { j["acceptance"]["max_accuracy_drop"] = 5; },
     "acceptance.max_accuracy_drop: value 5 is out of range; expected 0 <= value <= 1"},
    {"UnknownAcceptance", [](json& j) { j["acceptance"]["max_acuracy_drop"] = 0.1; },
     "acceptance.max_acuracy_drop: unknown option (did you mean \"max_accuracy_drop\"?)"},
    {"AgreementOutOfRange", [](json& j) { j["acceptance"]["min_agreement"] = 1.5; },
     "acceptance.min_agreement: value 1.5 is out of range; expected 0 <= value <= 1"},
    {"SqnrAboveTheCap", [](json& j) { j["acceptance"]["min_sqnr_db"] = 250; },
     "acceptance.min_sqnr_db: value 250 is out of range; expected -1000 <= value <= 200"},
    {"AugmentCropOfThreeSizes", [](json& j) { j["stages"][0]["augment"]["random_crop"] = {2, 2, 2}; },
     "stages[0].augment.random_crop: expected [n] or [h, w]"},
    {"AugmentCropNotWhole", [](json& j) { j["stages"][0]["augment"]["random_crop"] = {2.5}; },
     "stages[0].augment.random_crop: sizes must be whole numbers"},
    {"AugmentPaddingWithoutCrop", [](json& j) { j["stages"][0]["augment"]["padding"] = 2; },
     "stages[0].augment.padding: padding and fill need random_crop"},
    {"AugmentFlipAboveOne", [](json& j) { j["stages"][0]["augment"]["horizontal_flip"] = 2; },
     "stages[0].augment.horizontal_flip: value 2 is out of range; expected 0 <= value <= 1"},
    {"AugmentUnknownKey", [](json& j) { j["stages"][0]["augment"]["hflip"] = 0.5; },
     "stages[0].augment.hflip: unknown option"},
    {"LatencyFallbackBatchZero",
     [](json& j) { j["stages"][1] = {{"pass", "quantize"}, {"latency_fallback", {{"batch", 0}}}}; },
     "stages[1].latency_fallback.batch: value 0 is out of range; expected 1 <= value <= 4096"},
    {"LatencyFallbackUnknownKey",
     [](json& j) { j["stages"][1] = {{"pass", "quantize"}, {"latency_fallback", {{"run", 3}}}}; },
     "stages[1].latency_fallback.run: unknown option (did you mean \"runs\"?)"},
    {"NesterovWithoutMomentum",
     [](json& j) {
       j["stages"][0]["optimizer"]["momentum"] = 0;
       j["stages"][0]["optimizer"]["nesterov"] = true;
     },
     "stages[0].optimizer.nesterov: Nesterov momentum needs momentum > 0"},
};

INSTANTIATE_TEST_SUITE_P(All, RecipeMalformed, ::testing::ValuesIn(kMalformed),
                         [](const auto& info) { return std::string(info.param.name); });

// A device this build or machine cannot provide is one problem at "device", found
// before anything loads. On a CPU-only LibTorch (make test's): "cuda" and "cuda:N";
// with a GPU present, an index past the last device.
TEST(Recipe, UnavailableDeviceIsOneProblemSayingWhatIsExpected) {
  json j = Valid();
  if (!torch::cuda::is_available() && !TorchBuildHasCuda()) {
    for (const std::string spec : {"cuda", "cuda:1"}) {
      j["device"] = spec;
      EXPECT_EQ(ProblemsOf(j),
                std::vector<std::string>{
                    "device: \"" + spec + "\" requested but this LibTorch build has no CUDA "
                    "support (torch::cuda::is_available() is false); expected \"cpu\" or \"auto\""});
    }
  } else if (!torch::cuda::is_available()) {
    j["device"] = "cuda";
    EXPECT_EQ(ProblemsOf(j),
              std::vector<std::string>{
                  "device: \"cuda\" requested but this LibTorch build has CUDA but sees no CUDA "
                  "device (no GPU or driver, or CUDA_VISIBLE_DEVICES hides them; "
                  "torch::cuda::is_available() is false); expected \"cpu\" or \"auto\""});
  } else {
    const int64_t n = static_cast<int64_t>(torch::cuda::device_count());
    j["device"] = "cuda:" + std::to_string(n);
    EXPECT_EQ(ProblemsOf(j),
              std::vector<std::string>{
                  "device: \"cuda:" + std::to_string(n) + "\" requested but this machine has " +
                  std::to_string(n) + (n == 1 ? " CUDA device" : " CUDA devices") +
                  "; expected \"cpu\", \"auto\", \"cuda\" or \"cuda:N\" with N < " +
                  std::to_string(n)});
  }
  for (const char* spec : {"cpu", "auto"}) {
    j["device"] = spec;
    EXPECT_EQ(ProblemsOf(j), std::vector<std::string>{}) << spec;
  }
  // An index too large for c10::Device's 8-bit field is still out of range, not wrapped.
  j["device"] = "cuda:4294967296";
  EXPECT_EQ(ProblemsOf(j).size(), 1u);
}

TEST(Recipe, AllProblemsAreReportedAtOnce) {
  json j = Valid();
  j["seed"] = "zero";
  j["stages"][0]["epochs"] = -1;
  j["stages"][1]["pass"] = "prune";
  auto problems = ProblemsOf(j);
  EXPECT_EQ(problems.size(), 3u);
  try {
    ParseRecipe(j, "r.json", "");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kRecipe);
    std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;  // one line
    EXPECT_EQ(msg.rfind("r.json: 3 problems: ", 0), 0u) << msg;
    EXPECT_NE(msg.find("seed: expected a non-negative integer, found string"), std::string::npos);
  }
}

TEST(Recipe, OverridesSetNestedValues) {
  json j = Valid();
  ApplyOverride(j, "stages[0].epochs=3");
  ApplyOverride(j, "stages[0].optimizer.name=adam");
  ApplyOverride(j, "data.train_limit=1000");
  EXPECT_EQ(j["stages"][0]["epochs"], 3);
  EXPECT_EQ(j["stages"][0]["optimizer"]["name"], "adam");
  EXPECT_EQ(j["data"]["train_limit"], 1000);
  EXPECT_THROW(ApplyOverride(j, "stages[9].epochs=1"), Error);
  EXPECT_THROW(ApplyOverride(j, "noequals"), Error);
  EXPECT_THROW(ApplyOverride(j, "stages[x].epochs=1"), Error);
}

TEST(Recipe, LoadAcceptsCommentsAndReportsBadJson) {
  auto dir = std::filesystem::temp_directory_path() / ("mc_recipe_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  {
    std::ofstream f(dir / "ok.json");
    f << "// a comment\n" << Valid().dump() << "\n";
    std::ofstream g(dir / "bad.json");
    g << "{\"model\": \"zoo:lenet5\",, }";
  }
  EXPECT_EQ(LoadRecipe((dir / "ok.json").string()).stages.size(), 2u);
  try {
    LoadRecipe((dir / "bad.json").string());
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kRecipe);
    EXPECT_EQ(std::string(e.what()).rfind((dir / "bad.json").string() + ": not valid JSON", 0), 0u)
        << e.what();
  }
  std::filesystem::remove_all(dir);
}

TEST(Recipe, HashIsStableAndSensitive) {
  json a = Valid(), b = Valid();
  EXPECT_EQ(RecipeHash(a), RecipeHash(b));
  b["seed"] = 1;
  EXPECT_NE(RecipeHash(a), RecipeHash(b));
  EXPECT_EQ(RecipeHash(a).size(), 16u);
}

// "teacher": one model, or a list of {"model", "weight"}; each problem names its entry.
TEST(Recipe, TeacherIsAModelOrAWeightedList) {
  json one = Valid();
  one["teacher"] = "zoo:lenet5";
  Recipe r = ParseRecipe(one, "x.json", "");
  ASSERT_EQ(r.teachers.size(), 1u);
  EXPECT_EQ(r.teachers[0].model, "zoo:lenet5");
  EXPECT_EQ(r.teachers[0].weight, 1);
  EXPECT_EQ(r.teachers[0].path, "teacher");

  json two = Valid();
  two["teacher"] = json::parse(R"([{"model": "zoo:convnet", "weight": 2}, {"model": "zoo:lenet5"}])");
  r = ParseRecipe(two, "x.json", "");
  ASSERT_EQ(r.teachers.size(), 2u);
  EXPECT_EQ(r.teachers[0].weight, 2);
  EXPECT_EQ(r.teachers[1].weight, 1);  // the default
  EXPECT_EQ(r.teachers[1].path, "teacher[1]");

  json bad = Valid();
  bad["teacher"] = json::parse(R"([{"model": "zoo:convnet", "weight": 0}, {"weight": 1},
                                   {"model": "zoo:lenet", "wieght": 1}, "zoo:lenet5"])");
  EXPECT_EQ(ProblemsOf(bad), (std::vector<std::string>{
                                 "teacher[0].weight: must be > 0; got 0",
                                 "teacher[1].model: required: zoo:<name> or a path to an .onnx "
                                 "or TorchScript file",
                                 "teacher[2].wieght: unknown option (did you mean \"weight\"?)",
                                 "teacher[2].model: unknown zoo model \"lenet\" (did you mean "
                                 "\"zoo:lenet5\"?)",
                                 "teacher[3]: expected an object, found string"}));
  bad["teacher"] = json::array();
  ASSERT_EQ(ProblemsOf(bad).size(), 1u);
  EXPECT_EQ(ProblemsOf(bad)[0].rfind("teacher: expected a model", 0), 0u) << ProblemsOf(bad)[0];
  bad["teacher"] = json::parse(R"([{"model": "zoo:convnet", "weight": -1}])");
  EXPECT_EQ(ProblemsOf(bad), (std::vector<std::string>{
                                 "teacher[0].weight: value -1 is out of range; expected 0 <= "
                                 "value <= 1e+06"}));
}

// Every recipe shipped in recipes/ is valid as written.
TEST(Recipe, EveryShippedRecipeIsValid) {
  int checked = 0;
  for (const auto& e : std::filesystem::directory_iterator(std::string(MCOMPRESS_SOURCE_DIR) +
                                                           "/recipes")) {
    if (e.path().extension() != ".json") continue;
    EXPECT_NO_THROW(LoadRecipe(e.path().string())) << e.path();
    ++checked;
  }
  EXPECT_GE(checked, 2);
}

TEST(Registry, EveryPassListsItsOptionsWithDefaults) {
  const std::string text = DescribePasses();
  for (const auto& e : PassRegistry()) {
    EXPECT_NE(text.find(std::string(e.name) + "\n    " + e.doc), std::string::npos) << e.name;
  }
  EXPECT_NE(text.find("    epochs (integer, default 1)  training epochs"), std::string::npos) << text;
  EXPECT_NE(text.find("    optimizer.lr (number, default 0.01)  learning rate"), std::string::npos);
  EXPECT_EQ(FindPass("nope"), nullptr);
}

}  // namespace
}  // namespace compress
