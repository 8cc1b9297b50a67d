// Recipe parsing and validation: every top-level section read through OptionReader
// (typed, ranged, unknown keys rejected with a suggestion), passes built from the
// registry, and file/format checks, all problems collected before anything runs.
#include "compress/runtime/runtime_config.h"
#include "compress/base/text.h"
#include "compress/engine/recipe.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "compress/engine/export.h"
#include "compress/engine/model_source.h"
#include "compress/registry/registry.h"
#include "compress/zoo/zoo.h"

namespace compress {

namespace fs = std::filesystem;

namespace {

// Whether the model can hold Q/DQ nodes when the exports run: a stage quantizes it, or
// it is an ONNX file (which may already be in QDQ form; checked again at export).
bool ModelMayBeQuantized(const Recipe& recipe) {
  for (const auto& st : recipe.stages) {
    if (PassQuantizes(st.pass)) return true;
  }
  return !IsTorchScriptPath(recipe.model) && recipe.model.rfind("zoo:", 0) != 0;
}


std::string ResolvePath(const std::string& path, const std::string& base_dir) {
  if (path.empty() || fs::path(path).is_absolute() || base_dir.empty()) return path;
  return (fs::path(base_dir) / path).lexically_normal().string();
}

void CheckModelSpec(const std::string& spec, const std::string& key, OptionReader& r,
                    const std::string& base_dir) {
  if (spec == kCallerModel) return;  // RunRecipeOn: the C++ caller passes the model
  if (spec.rfind("zoo:", 0) == 0) {
    std::vector<std::string> names;
    for (const auto& z : ZooModels()) names.push_back(z.name);
    std::string name;
    try {
      name = ParseZooSpec(spec.substr(4)).name;
    } catch (const Error& e) {
      r.AddProblem(key, e.what());
      return;
    }
    if (std::find(names.begin(), names.end(), name) == names.end()) {
      std::string near = NearestName(name, names);
      r.AddProblem(key, "unknown zoo model \"" + name + "\"" +
                            (near.empty() ? "" : " (did you mean \"zoo:" + near + "\"?)"));
    }
  } else if (EndsWith(spec, ".onnx") || IsTorchScriptPath(spec)) {
    if (!fs::exists(ResolvePath(spec, base_dir))) {
      r.AddProblem(key, "file \"" + ResolvePath(spec, base_dir) + "\" does not exist");
    }
  } else {
    r.AddProblem(key, "expected zoo:<name> or a path ending in .onnx, .pt, .pth or .ts, found \"" +
                          spec + "\"");
  }
}

// "input_shape": [1, 3, 224, 224] or [[1, 3, 224, 224], [1, 10]].
void ReadInputShapes(const nlohmann::json& j, std::vector<std::vector<int64_t>>* shapes,
                     std::vector<Problem>* problems) {
  const bool nested = j.is_array() && !j.empty() && j[0].is_array();
  auto read_one = [&](const nlohmann::json& dims, const std::string& path) {
    if (!dims.is_array() || dims.empty()) {
      problems->push_back({path, std::string("expected a non-empty array of dims, found ") +
                                     (dims.is_array() ? "an empty array" : JsonTypeName(dims))});
      return;
    }
    std::vector<int64_t> shape;
    for (size_t i = 0; i < dims.size(); ++i) {
      const auto& d = dims[i];
      if (!d.is_number_integer() || d.get<int64_t>() <= 0) {
        problems->push_back({path + "[" + std::to_string(i) + "]",
                             "expected a positive integer, found " + d.dump()});
        return;
      }
      shape.push_back(d.get<int64_t>());
    }
    shapes->push_back(shape);
  };
  if (!nested) return read_one(j, "input_shape");
  for (size_t i = 0; i < j.size(); ++i) read_one(j[i], "input_shape[" + std::to_string(i) + "]");
}

// "teacher": one model spec (weight 1; "" = none), or a non-empty array of
// {"model": spec, "weight": w > 0 (default 1)}. Paths resolve against the recipe's folder.
void ParseTeachers(const nlohmann::json& json, const std::string& base_dir, OptionReader& top,
                   Recipe& recipe, std::vector<Problem>* problems) {
  top.Allow("teacher");
  if (!json.contains("teacher")) return;
  auto add = [&](TeacherSpec spec, OptionReader& r, const std::string& key) {
    CheckModelSpec(spec.model, key, r, base_dir);
    if (EndsWith(spec.model, ".onnx") || IsTorchScriptPath(spec.model)) {
      spec.model = ResolvePath(spec.model, base_dir);
    }
    recipe.teachers.push_back(spec);
  };
  const nlohmann::json& t = json["teacher"];
  if (t.is_string()) {
    if (!t.get<std::string>().empty()) add({t.get<std::string>(), 1.0, "teacher"}, top, "teacher");
    return;
  }
  if (!t.is_array() || t.empty()) {
    problems->push_back({"teacher", std::string("expected a model (zoo:<name> or a file) or a "
                                                "non-empty array of {\"model\": ..., "
                                                "\"weight\": ...}, found ") +
                                        (t.is_array() ? "an empty array" : JsonTypeName(t))});
    return;
  }
  for (size_t i = 0; i < t.size(); ++i) {
    TeacherSpec spec;
    spec.path = "teacher[" + std::to_string(i) + "]";
    OptionReader e(t[i], spec.path, problems);
    e.Read("model", spec.model, {}, "the teacher model (same forms as model)");
    e.Read("weight", spec.weight, 0.0, 1e6, "its weight among the teachers (> 0)");
    e.Finish();
    if (!t[i].is_object()) continue;  // the reader said so
    if (spec.weight == 0) e.AddProblem("weight", "must be > 0; got 0");
    if (spec.model.empty()) {
      e.AddProblem("model", "required: zoo:<name> or a path to an .onnx or TorchScript file");
      continue;
    }
    add(spec, e, "model");
  }
}

// The model and teacher specs, and the input shapes TorchScript files need.
void ParseModels(const nlohmann::json& json, const std::string& base_dir, OptionReader& top,
                 Recipe& recipe, std::vector<Problem>* problems) {
  if (!json.contains("model")) {
    problems->push_back({"model", "missing; expected zoo:<name>, or the path of an .onnx or TorchScript file"});
  }
  top.Read("model", recipe.model, {}, "zoo:<name>, model.onnx, model.pt, or \"caller\" (RunRecipeOn)");
  if (!recipe.model.empty()) CheckModelSpec(recipe.model, "model", top, base_dir);
  if (EndsWith(recipe.model, ".onnx") || IsTorchScriptPath(recipe.model)) {
    recipe.model = ResolvePath(recipe.model, base_dir);
  }
  ParseTeachers(json, base_dir, top, recipe, problems);
  // TorchScript models (and teachers) need their input shapes: [1, 3, 224, 224], or one
  // such list per forward input.
  top.Allow("input_shape");
  if (json.contains("input_shape")) {
    ReadInputShapes(json["input_shape"], &recipe.input_shapes, problems);
  } else if (IsTorchScriptPath(recipe.model) ||
             std::any_of(recipe.teachers.begin(), recipe.teachers.end(),
                         [](const TeacherSpec& t) { return IsTorchScriptPath(t.model); })) {
    problems->push_back({"input_shape", "missing; a TorchScript model needs the shape of each "
                                        "input, e.g. [1, 3, 224, 224]"});
  }
}

// data.resize / data.center_crop: an integer n or [n] / [h, w] (torchvision's forms).
void ReadImageSize(OptionReader& data, const nlohmann::json& raw, const std::string& key,
                   std::vector<int64_t>& out, const std::string& doc) {
  const std::string expected = "expected n or [h, w] with positive integers, found ";
  if (raw.contains(key) && !raw.at(key).is_number_integer() && !raw.at(key).is_array()) {
    data.Allow(key);
    data.AddProblem(key, expected + raw.at(key).dump());
    return;
  }
  if (raw.contains(key) && raw.at(key).is_number_integer()) {
    int64_t n = 0;
    data.Read(key, n, 1, 1 << 16, doc);
    if (n > 0) out = {n};
    return;
  }
  std::vector<double> dims;
  data.Read(key, dims, 1, 1 << 16, doc);
  if (dims.empty()) return;
  const bool integral = std::all_of(dims.begin(), dims.end(),
                                    [](double d) { return d == static_cast<int64_t>(d); });
  if (dims.size() > 2 || !integral) {
    data.AddProblem(key, expected + raw.at(key).dump());
    return;
  }
  out.assign(dims.begin(), dims.end());
}

// Keys of `data` that only some sources read: given to another source, they are errors.
void CheckDataKeysForKind(OptionReader& data, const nlohmann::json& raw, DataSourceKind kind) {
  using K = DataSourceKind;
  struct KeyKinds {
    const char* key;
    std::vector<K> kinds;
  };
  static const std::vector<KeyKinds> kTable = {
      {"root", {K::kFashionMnist, K::kIdx, K::kImageFolder}},
      {"train_images", {K::kIdx}}, {"train_labels", {K::kIdx}},
      {"test_images", {K::kIdx}}, {"test_labels", {K::kIdx}},
      {"train", {K::kTensors}}, {"test", {K::kTensors}},
      {"num_classes", {K::kIdx, K::kImageFolder, K::kTensors}},
      {"channels", {K::kIdx, K::kImageFolder, K::kTensors}},
      {"resize", {K::kIdx, K::kImageFolder, K::kTensors}},
      {"center_crop", {K::kIdx, K::kImageFolder, K::kTensors}},
      {"normalize", {K::kIdx, K::kImageFolder, K::kTensors}},
      {"streaming", {K::kImageFolder}}, {"workers", {K::kImageFolder}},
      {"prefetch", {K::kImageFolder}},
  };
  for (const auto& row : kTable) {
    if (!raw.contains(row.key) ||
        std::find(row.kinds.begin(), row.kinds.end(), kind) != row.kinds.end()) {
      continue;
    }
    std::string names;
    for (size_t i = 0; i < row.kinds.size(); ++i) {
      names += std::string(i == 0 ? "" : i + 1 == row.kinds.size() ? " or " : ", ") + "\"" +
               DataSourceKindName(row.kinds[i]) + "\"";
    }
    data.AddProblem(row.key, "applies only to dataset " + names + "; this dataset is \"" +
                                 DataSourceKindName(kind) + "\"");
  }
}

// The files and folders each source reads must exist; paths resolve against the
// recipe's folder (idx files not named default to root's MNIST names).
void CheckDataFiles(OptionReader& data, const nlohmann::json& raw, const std::string& base_dir,
                    DataSpec& d) {
  // `default_name` null: the key is required.
  auto file = [&](const char* key, std::string& path, const char* default_name) {
    const bool given = raw.contains(key);
    if (!given && default_name == nullptr) {
      data.AddProblem(key, "missing; expected the path of a tensor file");
      return;
    }
    path = given ? ResolvePath(path, base_dir) : IdxDefaultPath(d.source.root, default_name);
    if (!fs::is_regular_file(path)) {
      data.AddProblem(key, "file \"" + path + "\" does not exist" +
                               (given ? "" : " (the default under data.root)"));
    }
  };
  switch (d.source.kind) {
    case DataSourceKind::kFashionMnist:
      if (!fs::is_directory(d.source.root)) {
        data.AddProblem("root", "folder \"" + d.source.root + "\" does not exist (Debian package "
                                "dataset-fashion-mnist)");
      }
      break;
    case DataSourceKind::kIdx:
      file("train_images", d.source.train_images, "train-images-idx3-ubyte");
      file("train_labels", d.source.train_labels, "train-labels-idx1-ubyte");
      file("test_images", d.source.test_images, "t10k-images-idx3-ubyte");
      file("test_labels", d.source.test_labels, "t10k-labels-idx1-ubyte");
      break;
    case DataSourceKind::kImageFolder:
      if (!raw.contains("root")) {
        data.AddProblem("root", "missing; expected the folder holding train/ and test/");
      } else if (!fs::is_directory(fs::path(d.source.root) / "train") ||
                 !fs::is_directory(fs::path(d.source.root) / "test")) {
        data.AddProblem("root", "folder \"" + d.source.root + "\" has no train/ and test/ subfolders "
                                "(ImageFolder layout: root/train/<class>/*.png)");
      }
      break;
    case DataSourceKind::kTensors:
      file("train", d.source.train_file, nullptr);
      file("test", d.source.test_file, nullptr);
      break;
    case DataSourceKind::kCaller:
      break;  // RunRecipeOn: the C++ caller passes the data
  }
}

// The dataset settings: the source (parsed once into DataSpec::kind), its files (which
// must exist), the image transforms and the split sizes; Fashion-MNIST keeps its
// ranges. `recipe.json` (set by Parse first) tells which keys were given and whether
// resize/center_crop is n or [h, w].
void ParseData(const std::string& base_dir, OptionReader& top, Recipe& recipe) {
  OptionReader data = top.Object("data", "dataset settings");
  const nlohmann::json& raw = recipe.json.is_object() && recipe.json.contains("data") &&
                                      recipe.json.at("data").is_object()
                                  ? recipe.json.at("data")
                                  : nlohmann::json::object();
  DataSpec& d = recipe.data;
  data.ReadEnum("dataset", d.source.kind, DataSourceKinds(), "dataset");
  d.dataset = DataSourceKindName(d.source.kind);
  const bool fm = d.source.kind == DataSourceKind::kFashionMnist;
  const int64_t kMany = int64_t{1} << 40;
  data.Read("root", d.source.root, {}, "folder with the IDX files, or with train/ and test/ image folders");
  data.Read("batch_size", d.batch_size, 1, 1 << 16, "batch size");
  data.Read("validation_size", d.source.validation_size, 0, fm ? 59999 : kMany,
            "validation samples carved from training");
  data.Read("calibration_samples", d.calibration_samples, 1, 60000, "calibration subset size");
  data.Read("train_limit", d.source.train_limit, 0, fm ? 60000 : kMany, "use N training samples (0 = all)");
  data.Read("test_limit", d.source.test_limit, 0, fm ? 10000 : kMany, "use N test samples (0 = all)");
  data.Read("train_images", d.source.train_images, {}, "idx: training images (IDX3 ubyte, .gz or raw)");
  data.Read("train_labels", d.source.train_labels, {}, "idx: training labels (IDX1 ubyte)");
  data.Read("test_images", d.source.test_images, {}, "idx: test images");
  data.Read("test_labels", d.source.test_labels, {}, "idx: test labels");
  data.Read("train", d.source.train_file, {}, "tensors: training file (torch.save / torch::pickle_save)");
  data.Read("test", d.source.test_file, {}, "tensors: test file");
  data.Read("num_classes", d.source.num_classes, 0, 1 << 20, "labels 0..num_classes-1 (0 = as found)");
  data.Read("streaming", d.source.streaming, "image-folder: decode each batch when it is used "
            "instead of loading every image first (bounded memory)");
  data.Read("workers", d.source.stream.workers, 1, 64, "streaming: decoding threads");
  data.Read("prefetch", d.source.stream.prefetch, 1, 1024, "streaming: batches decoded ahead");
  ImageTransforms& t = d.source.transforms;
  data.Read("channels", t.channels, 0, 3, "1 or 3 (0 = as stored)");
  if (t.channels == 2) data.AddProblem("channels", "expected 1 or 3, found 2");
  ReadImageSize(data, raw, "resize", t.resize, "shorter side n, or [h, w]; bilinear");
  ReadImageSize(data, raw, "center_crop", t.center_crop, "n or [h, w]");
  OptionReader norm = data.Object("normalize", "per-channel {\"mean\": [...], \"std\": [...]}");
  norm.Read("mean", t.mean, -1e9, 1e9, "per-channel mean (one value: all channels)");
  norm.Read("std", t.std, 1e-12, 1e9, "per-channel standard deviation");
  norm.Finish();
  if (raw.contains("normalize") && t.mean.size() != t.std.size()) {
    data.AddProblem("normalize", "needs \"mean\" and \"std\" with the same number of values");
  } else if (t.channels > 0 && t.mean.size() > 1 && static_cast<int64_t>(t.mean.size()) != t.channels) {
    data.AddProblem("normalize", "has " + std::to_string(t.mean.size()) + " values per key; "
                                 "expected 1 or data.channels (" + std::to_string(t.channels) + ")");
  }
  data.Finish();
  CheckDataKeysForKind(data, raw, d.source.kind);
  d.source.root = ResolvePath(d.source.root, base_dir);
  CheckDataFiles(data, raw, base_dir, d);
}

// The ordered stages: each names a registered pass, respects the ordering rules, and
// has its options read (and checked) by the pass itself.
void ParseStages(const nlohmann::json& json, OptionReader& top, Recipe& recipe,
                 std::vector<Problem>* problems) {
  const std::vector<std::string> pass_names = PassNames();
  top.Allow("stages");
  if (!json.contains("stages")) {
    problems->push_back({"stages", "missing; expected an array of {\"pass\": ...} objects"});
  } else if (!json["stages"].is_array()) {
    problems->push_back({"stages", std::string("expected an array, found ") +
                                       JsonTypeName(json["stages"])});
  } else {
    const auto& stages = json["stages"];
    for (size_t i = 0; i < stages.size(); ++i) {
      const std::string path = "stages[" + std::to_string(i) + "]";
      const auto& st = stages[i];
      if (!st.is_object()) {
        problems->push_back({path, std::string("expected an object, found ") + JsonTypeName(st)});
        continue;
      }
      if (!st.contains("pass") || !st["pass"].is_string()) {
        problems->push_back({path + ".pass", "missing; expected a pass name (see `mcompress passes`)"});
        continue;
      }
      const std::string name = st["pass"].get<std::string>();
      const PassEntry* entry = FindPass(name);
      if (entry == nullptr) {
        std::string near = NearestName(name, pass_names);
        problems->push_back({path + ".pass", "unknown pass \"" + name + "\"" +
                                                 (near.empty() ? "" : " (did you mean \"" + near + "\"?)")});
        continue;
      }
      std::vector<std::string> earlier;
      for (const auto& prev : recipe.stages) earlier.push_back(prev.pass);
      const std::string order = StageOrderProblem(name, earlier);
      if (!order.empty()) problems->push_back({path + ".pass", order});
      OptionReader opts(st, path, problems);
      opts.Allow("pass");
      StageSpec spec;
      spec.pass = name;
      spec.path = path;
      spec.options = st;
      spec.instance = entry->create(opts);
      opts.Finish();
      recipe.stages.push_back(std::move(spec));
    }
  }
}

// The exports: a format of the export table, and a path inside the output folder that
// nothing else writes.
void ParseExports(const nlohmann::json& json, OptionReader& top, Recipe& recipe,
                  std::vector<Problem>* problems) {
  top.Allow("exports");
  if (json.contains("exports")) {
    const auto& ex = json["exports"];
    if (!ex.is_array()) {
      problems->push_back({"exports", std::string("expected an array, found ") + JsonTypeName(ex)});
    } else {
      for (size_t i = 0; i < ex.size(); ++i) {
        const std::string path = "exports[" + std::to_string(i) + "]";
        OptionReader e(ex[i], path, problems);
        ExportSpec spec;
        e.Read("format", spec.format, ExportFormatNames(), "export format");
        e.Read("path", spec.path, {}, "file, relative to the output directory");
        e.Read("sparse", spec.sparse,
               "write initializers that are mostly zeros as ONNX sparse_initializer when "
               "that makes the file smaller");
        e.Finish();
        if (!ex[i].is_object()) continue;
        if (!ex[i].contains("format")) e.AddProblem("format", "missing; expected \"onnx\"");
        const ExportFormat* format = FindExportFormat(spec.format);
        if (format != nullptr && format->needs_quantized && !ModelMayBeQuantized(recipe)) {
          e.AddProblem("format", "\"" + spec.format + "\" needs a quantized model: add a "
                                 "\"quantize\" stage (or start from a QDQ .onnx model)");
        }
        if (spec.path.empty()) {
          e.AddProblem("path", "missing; expected a file name such as \"model.onnx\"");
        } else if (fs::path(spec.path).is_absolute() ||
                   spec.path.find("..") != std::string::npos) {
          e.AddProblem("path", "\"" + spec.path + "\" must stay inside the output directory "
                                                  "(relative, no \"..\")");
        } else if (spec.path == "report.json" || spec.path == "report.md" ||
                   spec.path == "report.html" || spec.path == "manifest.json" ||
                   spec.path == "recipe.json") {
          e.AddProblem("path", "\"" + spec.path + "\" is reserved for the run's own outputs");
        }
        for (const auto& other : recipe.exports) {
          if (other.path == spec.path && !spec.path.empty()) {
            e.AddProblem("path", "\"" + spec.path + "\" is written by an earlier export too");
          }
        }
        recipe.exports.push_back(spec);
      }
    }
  }
}

void ParseReport(const nlohmann::json& json, OptionReader& top, Recipe& recipe) {
  OptionReader report = top.Object("report", "report settings");
  report.Allow("formats");
  if (json.contains("report") && json["report"].is_object() && json["report"].contains("formats")) {
    const auto& f = json["report"]["formats"];
    if (!f.is_array()) {
      report.AddProblem("formats", std::string("expected an array, found ") + JsonTypeName(f));
    } else {
      recipe.report_formats.clear();
      for (size_t i = 0; i < f.size(); ++i) {
        const std::string p = "formats[" + std::to_string(i) + "]";
        if (!f[i].is_string() || (f[i] != "json" && f[i] != "md" && f[i] != "html")) {
          report.AddProblem(p, "expected \"json\", \"md\" or \"html\", found " + f[i].dump());
        } else {
          recipe.report_formats.push_back(f[i].get<std::string>());
        }
      }
    }
  }
  report.Read("evaluate_each_stage", recipe.evaluate_each_stage,
              "evaluate on the test split after every stage");
  report.Read("latency", recipe.measure_latency, "measure latency at batch 1 and 32");
  report.Finish();
}

void ParseDistributed(OptionReader& top, Recipe& recipe) {
  OptionReader d = top.Object("distributed", "data-parallel training over c10d (docs/distributed.md)");
  DistOptions& o = recipe.distributed.options;
  d.Read("backend", o.backend, {"gloo", "nccl"}, "c10d process group: gloo (CPU) or nccl (CUDA builds)");
  d.Read("timeout_s", o.timeout_s, 1.0, 86400.0,
         "seconds a collective or the rendezvous waits for the other ranks before failing");
  d.Read("sync_batchnorm", recipe.distributed.sync_batchnorm,
         "BatchNorm batch statistics over the global batch (else per rank, running statistics averaged)");
  d.Read("world_size", o.world_size, 1, 1 << 16, "processes in the job (--nproc and WORLD_SIZE override)");
  d.Read("rank", o.rank, 0, (1 << 16) - 1, "this process's rank (--rank and RANK override)");
  d.Read("init_method", o.init_method, {}, "rendezvous: tcp://HOST:PORT or file://PATH");
  d.Finish();
  if (o.rank >= o.world_size) {
    top.AddProblem("distributed.rank", "rank " + std::to_string(o.rank) + " is outside [0, " +
                                           std::to_string(o.world_size) + ")");
  }
}

void ParseAcceptance(OptionReader& top, Recipe& recipe) {
  OptionReader acc = top.Object("acceptance", "criteria; unmet criteria exit with code 3");
  acc.Read("max_accuracy_drop", recipe.max_accuracy_drop, 0.0, 1.0,
           "largest allowed top-1 drop vs the baseline (fraction: 0.01 = 1 point)");
  acc.Read("min_compression", recipe.min_compression, 1.0, 1e6,
           "smallest allowed baseline-FP32 / final stored-size ratio");
  acc.Read("min_agreement", recipe.min_agreement, 0.0, 1.0,
           "smallest allowed fraction of test samples whose top-1 matches the baseline's");
  acc.Read("min_sqnr_db", recipe.min_sqnr_db, -1000.0, 200.0,
           "smallest allowed output SQNR against the baseline, in dB");
  acc.Finish();
}

Recipe Parse(const nlohmann::json& json, const std::string& base_dir,
             std::vector<Problem>* problems) {
  Recipe recipe;
  recipe.json = json;
  if (!json.is_object()) {
    problems->push_back({"", std::string("a recipe is a JSON object, found ") + JsonTypeName(json)});
    return recipe;
  }
  OptionReader top(json, "", problems);
  std::string run_name, description;  // documentation only
  top.Read("name", run_name, {}, "free-form run name");
  top.Read("description", description, {}, "free-form description");
  ParseModels(json, base_dir, top, recipe, problems);
  ParseData(base_dir, top, recipe);
  top.Read("device", recipe.device, {}, "auto, cpu, cuda or cuda:N");
  // Spelling and availability: a "cuda" recipe on a LibTorch without CUDA (or "cuda:3"
  // on a machine with one GPU) fails here, before the model or data are loaded.
  const std::string device_problem = DeviceProblem(recipe.device);
  if (!device_problem.empty()) top.AddProblem("device", device_problem);
  top.Read("seed", recipe.seed, "seed for initialisation, shuffling and sampling");
  top.Read("threads", recipe.threads, 0, 1024, "LibTorch threads (0 = all cores)");
  ParseDistributed(top, recipe);
  ParseStages(json, top, recipe, problems);
  ParseExports(json, top, recipe, problems);
  ParseReport(json, top, recipe);
  ParseAcceptance(top, recipe);
  top.Finish();
  return recipe;
}

// One line (the CLI prints errors as one line each): "r.json: seed: expected ..." for one
// problem, "r.json: 3 problems: seed: ...; stages[0].pass: ...; ..." for several.
std::string FormatProblems(const std::string& where, const std::vector<Problem>& problems) {
  std::ostringstream os;
  os << (where.empty() ? "recipe" : where) << ": ";
  if (problems.size() > 1) os << problems.size() << " problems: ";
  for (size_t i = 0; i < problems.size(); ++i) {
    const Problem& p = problems[i];
    os << (i ? "; " : "") << (p.path.empty() ? "(top level)" : p.path) << ": " << p.message;
  }
  return os.str();
}

}  // namespace

std::vector<Problem> ValidateRecipe(const nlohmann::json& json, const std::string& base_dir) {
  std::vector<Problem> problems;
  Parse(json, base_dir, &problems);
  return problems;
}

Recipe ParseRecipe(const nlohmann::json& json, const std::string& source,
                   const std::string& base_dir) {
  std::vector<Problem> problems;
  Recipe recipe = Parse(json, base_dir, &problems);
  if (!problems.empty()) throw Error(ErrorKind::kRecipe, FormatProblems(source, problems));
  recipe.source = source;
  return recipe;
}

void ApplyOverride(nlohmann::json& json, const std::string& assignment) {
  const auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) {
    throw Error(ErrorKind::kUsage, "--set '" + assignment + "': expected PATH=VALUE, e.g. "
                                   "stages[1].epochs=3");
  }
  const std::string path = assignment.substr(0, eq);
  const std::string text = assignment.substr(eq + 1);
  nlohmann::json value = nlohmann::json::parse(text, nullptr, false);
  if (value.is_discarded()) value = text;  // a bare word is a string
  nlohmann::json* node = &json;
  size_t i = 0;
  while (i < path.size()) {
    if (path[i] == '[') {
      size_t close = path.find(']', i);
      std::string digits = close == std::string::npos ? "" : path.substr(i + 1, close - i - 1);
      if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) {
        throw Error(ErrorKind::kUsage, "--set '" + assignment + "': bad index in '" + path + "'");
      }
      size_t index = std::stoul(digits);
      if (!node->is_array() || index >= node->size()) {
        throw Error(ErrorKind::kUsage, "--set '" + assignment + "': '" + path.substr(0, close + 1) +
                                           "' does not exist in the recipe");
      }
      node = &(*node)[index];
      i = close + 1;
      if (i < path.size() && path[i] == '.') ++i;
    } else {
      size_t end = path.find_first_of(".[", i);
      std::string key = path.substr(i, end == std::string::npos ? std::string::npos : end - i);
      if (key.empty()) throw Error(ErrorKind::kUsage, "--set '" + assignment + "': empty key");
      if (node->is_null()) *node = nlohmann::json::object();
      if (!node->is_object()) {
        throw Error(ErrorKind::kUsage, "--set '" + assignment + "': '" + path.substr(0, i) +
                                           "' is not an object");
      }
      node = &(*node)[key];
      i = end == std::string::npos ? path.size() : end;
      if (i < path.size() && path[i] == '.') ++i;
    }
  }
  *node = value;
}

Recipe LoadRecipe(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorKind::kIo, path + ": cannot read recipe: " + std::strerror(errno));
  std::stringstream buffer;
  buffer << in.rdbuf();
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(buffer.str(), nullptr, true, /*ignore_comments=*/true);
  } catch (const nlohmann::json::exception& e) {
    // A syntax error, "[json.exception.parse_error.101] parse error at line 3, column 1:
    // syntax error ...", or a number beyond double (fuzz_recipe), "[json.exception.
    // out_of_range.406] number overflow parsing '1e999'": the reason, without the prefix.
    std::string what = e.what();
    const size_t colon = what.find(": "), close = what.find("] ");
    if (colon != std::string::npos) what = what.substr(colon + 2);
    else if (close != std::string::npos) what = what.substr(close + 2);
    throw Error(ErrorKind::kRecipe, path + ": not valid JSON: " + what);
  }
  for (const auto& o : overrides) ApplyOverride(json, o);
  std::string base = fs::path(path).parent_path().string();
  return ParseRecipe(json, path, base);
}

std::string RecipeHash(const nlohmann::json& json) {
  const std::string text = json.dump();  // std::map-backed objects: keys sorted
  uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

}  // namespace compress
