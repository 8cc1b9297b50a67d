// Recipes: the JSON that says what to run (model, data, device, seed, ordered stages,
// exports, report, acceptance). The whole recipe is validated before anything runs;
// every problem is reported with its JSON path. Schema: docs/recipe.md.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "compress/data/sources.h"
#include "compress/pass/options.h"
#include "compress/pass/pass.h"
#include "compress/report/report.h"

namespace compress {

struct DataSpec {
  std::string dataset = "fashion-mnist";  // the recipe's spelling of source.kind
  int64_t batch_size = 128;
  int64_t calibration_samples = 512;
  // What to load (docs/data.md): the kind parsed once from `dataset`, paths resolved
  // against the recipe's folder (idx files not named default to root's MNIST names),
  // transforms and split sizes. The split seed is the recipe's seed (set at load).
  DataSourceSpec source;
};

struct StageSpec {
  std::string pass;
  std::string path;             // "stages[2]"
  nlohmann::json options;       // the stage object as written
  std::unique_ptr<Pass> instance;
};

struct ExportSpec {
  std::string format;  // "onnx"
  std::string path;    // relative to the output directory
  bool sparse = true;  // mostly-zero initializers as ONNX sparse_initializer
};

// A teacher of distillation as the recipe names it: "teacher": "zoo:convnet" (one, of
// weight 1) or "teacher": [{"model": ..., "weight": 2}, ...].
struct TeacherSpec {
  std::string model;         // zoo:<name> or a path (resolved against the recipe's folder)
  double weight = 1;         // > 0; the objective normalises the weights to sum 1
  std::string path = "teacher";  // "teacher" or "teacher[1]", for messages
};

// "distributed": how the recipe's training stages run data-parallel (docs/distributed.md).
// The job itself (world size, rank, rendezvous) usually comes from `mcompress run
// --nproc N` or the environment, which override what a recipe says.
struct DistributedSpec {
  DistOptions options;          // world_size 1, rank 0, no init_method unless written
  bool sync_batchnorm = false;  // TrainOptions::sync_batchnorm
};

struct Recipe {
  nlohmann::json json;      // as run (after --set overrides)
  std::string source;       // file it came from ("" for in-memory)
  std::string model;        // zoo:<name> or a path (resolved against the recipe's folder)
  // Optional, in recipe order; loaded into PassContext::teachers.
  std::vector<TeacherSpec> teachers;
  // "input_shape": the shape of each forward input of a TorchScript model/teacher
  // (required for .pt/.pth/.ts; batch first, the batch stays dynamic).
  std::vector<std::vector<int64_t>> input_shapes;
  DataSpec data;
  std::string device = "auto";
  uint64_t seed = 0;
  int64_t threads = 0;      // 0 = all cores
  DistributedSpec distributed;
  std::vector<StageSpec> stages;
  std::vector<ExportSpec> exports;
  std::vector<std::string> report_formats = {"json", "md", "html"};
  bool evaluate_each_stage = true;
  bool measure_latency = true;
  double max_accuracy_drop = kNaN;  // fraction (0.01 = 1 point); NaN = not checked
  double min_compression = kNaN;    // baseline FP32 bytes / final stored bytes
  // The final model's outputs against the baseline's on the test split (no labels
  // needed): smallest top-1 agreement (fraction) and output SQNR (dB).
  double min_agreement = kNaN;
  double min_sqnr_db = kNaN;
};

// Validates `json` completely and returns the recipe with its passes built. Relative
// paths resolve against `base_dir`. Throws compress::Error(kRecipe) whose message
// lists every problem on one line: "<source>: <path>: <message>", or "<source>: N
// problems: <path>: <message>; <path>: <message>; ...".
Recipe ParseRecipe(const nlohmann::json& json, const std::string& source,
                   const std::string& base_dir);
// The problems ParseRecipe would report (empty when valid).
std::vector<Problem> ValidateRecipe(const nlohmann::json& json, const std::string& base_dir);

// Reads a recipe file (JSON, comments allowed), applies `overrides` ("stages[1].epochs=3":
// the value is JSON, or a plain string when it is not valid JSON), then ParseRecipe.
Recipe LoadRecipe(const std::string& path, const std::vector<std::string>& overrides = {});
// Applies one override to `json`; throws compress::Error(kUsage) naming the bad part.
void ApplyOverride(nlohmann::json& json, const std::string& assignment);

// Stable hex hash (FNV-1a 64) of the recipe's canonical JSON (sorted keys).
std::string RecipeHash(const nlohmann::json& json);

}  // namespace compress
