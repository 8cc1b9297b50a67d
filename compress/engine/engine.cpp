// The recipe engine (see engine.h). Steps of RunRecipe are labelled below.
#include "compress/base/text.h"
#include "compress/base/file_util.h"
#include "compress/base/interrupt.h"
#include "compress/engine/engine.h"

#include <onnx/common/version.h>
#include <torch/torch.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <optional>
#include <sstream>

#include "compress/data/data.h"
#include "compress/data/sources.h"
#include "compress/train/eval.h"
#include "compress/runtime/executor.h"
#include "compress/engine/export.h"
#include "compress/engine/model_source.h"
#include "compress/io/onnx_io.h"
#include "compress/runtime/runtime_config.h"
#include "compress/io/torchscript_export.h"
#include "compress/io/verify.h"
#include "quantization/qdq.h"

namespace compress {

namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Whether every test sample has a class label (a split without labels has targets -1).
bool TestLabeled(const DatasetSplits& data) { return HasLabels(data.test); }

// The test split's metrics: accuracy and loss when it has labels, and the outputs
// against the baseline's (`reference`, when defined); `outputs` (when given) receives
// the graph's own. `labels` false measures the comparison only.
Metrics Measure(const Graph& g, const DatasetSplits& data, const c10::Device& device,
                int64_t batch, const Tensor& reference, Tensor* outputs = nullptr,
                bool labels = true) {
  EvalOptions options;
  options.labels = labels && TestLabeled(data);
  options.reference = reference.defined() ? &reference : nullptr;
  options.outputs = outputs;
  const EvalResult e = Evaluate(g, data.test, std::max<int64_t>(batch, 256), device, options);
  Metrics m{e.top1, e.top5, e.loss, e.samples};
  m.agreement = e.agreement;
  m.sqnr_db = e.sqnr_db;
  m.max_rel_error = e.max_rel_error;
  return m;
}

// Criteria that need labels, refused before anything runs when the test split has none.
void CheckCriteriaFitData(const Recipe& recipe, const DatasetSplits& data) {
  if (!std::isnan(recipe.max_accuracy_drop) && !TestLabeled(data)) {
    throw Error(ErrorKind::kRecipe,
                "acceptance.max_accuracy_drop: the test split has no labels, so there is no "
                "accuracy to compare; use acceptance.min_agreement or acceptance.min_sqnr_db");
  }
}

LatencyStats Latency(const Graph& g, const c10::Device& device) {
  LatencyStats l;
  const auto& shape = g.inputs.at(0).shape;
  if (!shape || shape->empty()) return l;
  std::vector<int64_t> sample(shape->begin() + 1, shape->end());
  l.batch1_ms = MeasureLatency(g, sample, 1, 5, 30, device).median_ms;
  l.batch32_ms = MeasureLatency(g, sample, 32, 3, 15, device).median_ms;
  return l;
}

// Test samples an export is verified on in ONNX Runtime: the first two batches of the
// test split (at least 64, at most 512 samples), in one run.
Tensor VerifySamples(const DatasetSplits& data, int64_t batch) {
  const int64_t n = std::min<int64_t>(data.test.size(), std::clamp<int64_t>(2 * batch, 64, 512));
  return data.test.Slice(0, n).Materialized().inputs.cpu();
}

std::string Percent(double v) {
  if (std::isnan(v)) return "—";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f%%", 100 * v);
  return buf;
}

// Without labels (top-1 NaN) Evaluate itself refuses non-finite outputs.
void CheckFinite(const Metrics& m, const std::string& where) {
  if (m.samples > 0 && !std::isnan(m.top1) && !std::isfinite(m.loss)) {
    throw Error(ErrorKind::kNumeric, where + ": loss is not finite (" + std::to_string(m.loss) +
                                         "); the model produces NaN/Inf");
  }
}

// The recipe's data source, as LoadRecipeData loads it and the manifest records it.
DataSourceSpec RecipeDataSource(const Recipe& recipe) {
  DataSourceSpec spec = recipe.data.source;
  spec.split_seed = recipe.seed;
  return spec;
}

// Step 1's data: the recipe's data source (docs/data.md), in three splits.
DatasetSplits LoadRecipeData(const Recipe& recipe) {
  return LoadDataSource(RecipeDataSource(recipe));
}

// Step 2: the run writes into `<out>.tmp-<pid>`, removed unless Commit() moves it over
// `out`, so an interrupted or failed run leaves no half-written folder.
// Whether process `pid` still exists (EPERM: it does, someone else's).
bool ProcessAlive(long pid) { return kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM; }

// Leftovers beside `out` of earlier runs whose process is gone (killed, or the machine
// went down): `out.tmp-<pid>` (an unfinished output) is removed; `out.old-<pid>` (an
// earlier complete output set aside by Commit) is put back when `out` is missing — the
// run died between Commit's two renames — and removed otherwise. Each is logged. Those
// of live processes (a concurrent run) are left alone.
void CleanDeadRunLeftovers(const fs::path& out, const std::function<void(const std::string&)>& log) {
  const fs::path parent = out.has_parent_path() ? out.parent_path() : fs::path(".");
  std::error_code ec;
  if (!fs::is_directory(parent, ec)) return;
  const std::string stem = out.filename().string();
  std::vector<std::pair<fs::path, bool>> found;  // path, is an old output
  for (const auto& entry : fs::directory_iterator(parent, ec)) {
    const std::string name = entry.path().filename().string();
    for (const char* tag : {".tmp-", ".old-"}) {
      const std::string prefix = stem + tag;
      if (name.rfind(prefix, 0) != 0) continue;
      const std::string digits = name.substr(prefix.size());
      if (digits.empty() || digits.size() > 9 ||
          digits.find_first_not_of("0123456789") != std::string::npos ||
          ProcessAlive(std::stol(digits))) {
        continue;
      }
      found.emplace_back(entry.path(), std::string(tag) == ".old-");
    }
  }
  for (const auto& [path, old] : found) {
    if (old && !fs::exists(out)) {
      fs::rename(path, out, ec);
      if (!ec) {
        log("restored " + out.string() + " from " + path.string() + " (a run died while replacing it)");
        continue;
      }
    }
    fs::remove_all(path, ec);
    log("removed " + path.string() + " (left by a run that died)");
  }
}

class OutputFolder {
 public:
  OutputFolder(const fs::path& out, const std::function<void(const std::string&)>& log) : out_(out) {
    CleanDeadRunLeftovers(out, log);
    if (fs::exists(out) && !fs::is_empty(out) && !fs::exists(out / "manifest.json")) {
      throw Error(ErrorKind::kUsage, out.string() + ": exists and is not an mcompress output "
                                                    "folder (no manifest.json); refusing to replace it");
    }
    tmp_ = out.string() + ".tmp-" + std::to_string(getpid());
    std::error_code ec;
    fs::remove_all(tmp_, ec);
    fs::create_directories(tmp_, ec);
    // Named by the folder the user asked for: the temporary beside it is ours.
    if (ec) throw Error(ErrorKind::kIo, out.string() + ": cannot create output folder: " + ec.message());
  }
  ~OutputFolder() {
    std::error_code ignored;
    if (!committed_) fs::remove_all(tmp_, ignored);
  }
  OutputFolder(const OutputFolder&) = delete;
  OutputFolder& operator=(const OutputFolder&) = delete;

  const fs::path& tmp() const { return tmp_; }
  const fs::path& out() const { return out_; }
  // An earlier output is first renamed aside, then the new one into place, then the old
  // one removed: at every moment one complete output folder exists under a known name
  // (OUT, or OUT.old-<pid> if the process dies between the renames).
  void Commit() {
    std::error_code ec;
    const fs::path old = out_.string() + ".old-" + std::to_string(getpid());
    const bool had_old = fs::exists(out_);
    if (had_old) {
      fs::remove_all(old, ec);
      fs::rename(out_, old, ec);
      if (ec) {
        throw Error(ErrorKind::kIo, out_.string() + ": cannot move the earlier output aside: " +
                                        ec.message());
      }
    }
    fs::rename(tmp_, out_, ec);
    if (ec) {
      std::error_code ignored;
      if (had_old) fs::rename(old, out_, ignored);  // the earlier output back
      throw Error(ErrorKind::kIo, out_.string() + ": cannot move outputs into place: " + ec.message());
    }
    committed_ = true;
    if (had_old) fs::remove_all(old, ec);
  }

 private:
  fs::path out_, tmp_;
  bool committed_ = false;
};

PassContext MakeContext(const Recipe& recipe, const RunOptions& options, const DatasetSplits& data,
                        const c10::Device& device, std::vector<TeacherRef> teachers) {
  PassContext ctx;
  ctx.teachers = std::move(teachers);
  ctx.data = &data;
  ctx.device = device;
  ctx.seed = recipe.seed;
  ctx.batch_size = recipe.data.batch_size;
  ctx.calibration_samples = recipe.data.calibration_samples;
  ctx.progress = options.progress;
  ctx.log = options.log;
  ctx.comm = options.comm;
  ctx.sync_batchnorm = recipe.distributed.sync_batchnorm;
  // (Masks from pruning stages hold through every later optimizer step: the trainer
  // re-applies them itself.)
  return ctx;
}

// A model to compress must have finite weights: NaN or Inf in an initializer makes every
// statistic the passes take (ranges, saliencies, accuracies) meaningless. Throws
// Error(kNumeric) naming the model, the first such initializer (by name) and its counts.
void CheckFiniteWeights(const Graph& graph, const std::string& where) {
  for (const auto& [name, init] : graph.initializers) {
    const Tensor& v = init.value;
    if (!v.defined() || !v.is_floating_point()) continue;
    if (v.isfinite().all().item<bool>()) continue;  // one host sync for the common case
    const int64_t nan = v.isnan().sum().item<int64_t>();
    const int64_t inf = v.isinf().sum().item<int64_t>();
    throw Error(ErrorKind::kNumeric,
                where + ": initializer '" + name + "' holds " + std::to_string(nan) + " NaN and " +
                    std::to_string(inf) + " infinite values of " + std::to_string(v.numel()) +
                    "; a model to compress must have finite weights");
  }
}

// Step 2's teachers: each recipe teacher loaded into `models` (which must not change
// after: the references point into it), a load error naming its recipe path.
std::vector<TeacherRef> LoadTeachers(const Recipe& recipe, std::vector<Graph>& models) {
  models.clear();
  models.reserve(recipe.teachers.size());
  for (const TeacherSpec& spec : recipe.teachers) {
    try {
      models.push_back(LoadModel(spec.model, ModelLoadOptions{recipe.seed, recipe.input_shapes}));
      CheckFiniteWeights(models.back(), spec.model);
    } catch (const Error& e) {
      throw Error(e.kind(), spec.path + ": " + e.what());
    }
  }
  std::vector<TeacherRef> refs;
  for (size_t k = 0; k < models.size(); ++k) {
    refs.push_back(TeacherRef{&models[k], recipe.teachers[k].weight, recipe.teachers[k].path});
  }
  return refs;
}

// Step 3's cache: where the baseline of the recipe's `lead` leading train stages is
// kept (keyed by everything that determines it), or empty without a cache folder.
fs::path BaselineCacheFile(const Recipe& recipe, const RunOptions& options, size_t lead,
                           int threads, int64_t world_size) {
  if (options.cache_dir.empty() || lead == 0) return {};
  nlohmann::json key = {{"model", recipe.model}, {"seed", recipe.seed},
                        {"data", recipe.json.value("data", nlohmann::json::object())},
                        {"threads", threads}, {"blas", BlasThreading()},
                        {"version", MCOMPRESS_VERSION}};
  // A baseline trained data-parallel is another baseline (other BatchNorm statistics).
  if (world_size > 1) key["world_size"] = world_size;
  // The data's content too: new images under the same root must not reuse a baseline.
  for (const auto& [name, crc] : DataSourceFingerprint(RecipeDataSource(recipe))) {
    key["data_files"][name] = crc;
  }
  for (size_t i = 0; i < lead; ++i) key["stages"].push_back(recipe.stages[i].options);
  return fs::path(options.cache_dir) / ("baseline-" + RecipeHash(key) + ".onnx");
}

// Step 4, one stage: its pass on the working graph, errors prefixed with the stage.
void RunStage(StageSpec& stage, Graph& work, PassContext& ctx, StageReport& sr) {
  ctx.log(stage.path + ": " + stage.pass);
  try {
    PassResult r = stage.instance->Run(work, ctx);
    sr.changed = r.changed;
    sr.stats = r.stats;
    sr.skipped = r.skipped;
    sr.sensitivity = r.sensitivity;
    sr.quant_metric = r.quant_metric;
    sr.quant_sensitivity = r.quant_sensitivity;
    sr.fallback_trials = r.fallback_trials;
    sr.latency_trials = r.latency_trials;
    sr.metrics = r.metrics;
  } catch (const Interrupted&) {
    throw;  // not the stage's failure
  } catch (const Error& e) {
    throw Error(e.kind(), stage.path + " (" + stage.pass + "): " + e.what());
  } catch (const std::exception& e) {
    std::string what = e.what();
    throw Error(ErrorKind::kInternal, stage.path + " (" + stage.pass + "): " +
                                          what.substr(0, what.find('\n')));
  }
}

// The report's row of one verified export (`bytes` long).
ExportReport ExportRow(const ExportSpec& ex, const ExportFormat& format, const ExportOutcome& o,
                       int64_t bytes) {
  const VerifyReport& v = o.verify;
  ExportReport er;
  er.format = ex.format;
  er.path = ex.path;
  er.sparse = ex.sparse && !format.torchscript;
  er.int8_target = o.int8_target;
  er.bytes = bytes;
  er.verified = true;
  er.verified_with = v.runtime;
  er.verify_samples = v.samples;
  er.max_abs_diff = v.max_abs_diff;
  er.max_rel_diff = v.max_rel_diff;
  er.top1_agreement = v.top1_agreement < 0 ? kNaN : v.top1_agreement;
  er.int8_rule = v.int8_rule;
  er.int8_quantized_layers = o.int8.quantized;
  er.int8_integer_layers = o.int8.integer;
  for (const auto& [layer, why] : o.int8.fallback) er.int8_fallback_layers.push_back({layer, why});
  return er;
}

// "exported q.onnx (430098 bytes; verified in ...; INT8 target portable; 4/4 layers on
// integer kernels)".
std::string ExportLogLine(const ExportReport& er) {
  std::string line = "exported " + er.path + " (" + std::to_string(er.bytes) +
                     " bytes; verified in " + er.verified_with + " on " +
                     std::to_string(er.verify_samples) + " test samples, max |diff| " +
                     std::to_string(er.max_abs_diff);
  if (!er.int8_target.empty()) line += "; INT8 target " + er.int8_target;
  if (er.int8_rule.rfind("value by value", 0) == 0) {
    line += "; INT8 rule held value by value, not end to end (one-step roundings accumulate "
            "with depth; report.json: int8_rule)";
  }
  if (er.int8_quantized_layers > 0) {
    line += "; " + std::to_string(er.int8_integer_layers.size()) + "/" +
            std::to_string(er.int8_quantized_layers) + " layers on integer kernels";
  }
  return line + ")";
}

// Step 5: every export of the recipe, each run in its runtime (ONNX Runtime, LibTorch)
// and compared with the in-memory graph on test samples.
void RunExports(const Recipe& recipe, const Graph& final_cpu, const DatasetSplits& data,
                const OutputFolder& folder, const std::string& recipe_hash,
                const std::function<void(const std::string&)>& log, Report& report) {
  ExportSettings settings;
  settings.onnx.producer_version = MCOMPRESS_VERSION;
  settings.onnx.recipe_hash = recipe_hash;
  const Tensor verify_inputs =
      recipe.exports.empty() ? Tensor() : VerifySamples(data, recipe.data.batch_size);
  for (const auto& ex : recipe.exports) {
    const fs::path file = folder.tmp() / ex.path;
    std::error_code ec;
    fs::create_directories(file.parent_path(), ec);
    settings.onnx.sparse = ex.sparse;
    const ExportFormat* format = FindExportFormat(ex.format);
    if (format == nullptr) throw Error(ErrorKind::kInternal, "export " + ex.path + ": no format " + ex.format);
    ExportOutcome o;
    try {
      o = ExportModel(final_cpu, file.string(), *format, settings, {verify_inputs});
    } catch (const Error& e) {
      // Name the file where the user will look for it, not the temporary folder.
      throw Error(e.kind(), "export " + ex.path + ": " +
                                ReplaceAll(e.what(), folder.tmp().string(), folder.out().string()));
    }
    for (const auto& w : o.warnings) log("warning: " + ex.path + ": " + w);
    report.exports.push_back(ExportRow(ex, *format, o, static_cast<int64_t>(fs::file_size(file))));
    log(ExportLogLine(report.exports.back()));
  }
}

// Step 6's verdict: the recipe's acceptance criteria against the report's figures.
void CheckAcceptance(const Recipe& recipe, Report& report) {
  const StageReport& last = report.stages.empty() ? report.baseline : report.stages.back();
  if (!std::isnan(recipe.max_accuracy_drop)) {
    AcceptanceCheck c{"max_accuracy_drop", recipe.max_accuracy_drop,
                      report.baseline.metrics.top1 - last.metrics.top1, false};
    c.passed = c.value <= c.threshold + 1e-12;
    report.acceptance.push_back(c);
  }
  if (!std::isnan(recipe.min_compression)) {
    AcceptanceCheck c{"min_compression", recipe.min_compression, report.compression_ratio, false};
    c.passed = c.value + 1e-12 >= c.threshold;
    report.acceptance.push_back(c);
  }
  // The final stage's outputs against the baseline's (NaN, so failing, when no stage
  // after the baseline was measured or the output is not [N, classes] for agreement).
  if (!std::isnan(recipe.min_agreement)) {
    AcceptanceCheck c{"min_agreement", recipe.min_agreement, last.metrics.agreement, false};
    c.passed = c.value + 1e-12 >= c.threshold;
    report.acceptance.push_back(c);
  }
  if (!std::isnan(recipe.min_sqnr_db)) {
    AcceptanceCheck c{"min_sqnr_db", recipe.min_sqnr_db, last.metrics.sqnr_db, false};
    c.passed = c.value + 1e-12 >= c.threshold;
    report.acceptance.push_back(c);
  }
  report.accepted = true;
  for (const auto& c : report.acceptance) report.accepted &= c.passed;
}

// Step 7: the reports, the recipe as run and the manifest, into the temporary folder.
void WriteRunFiles(const Recipe& recipe, const Report& report, const DatasetSplits* caller_data,
                   const fs::path& dir) {
  WriteFileAtomic((dir / "report.json").string(), ReportJsonText(report));
  for (const auto& f : recipe.report_formats) {
    if (f == "md") WriteFileAtomic((dir / "report.md").string(), RenderMarkdown(report));
    if (f == "html") WriteFileAtomic((dir / "report.html").string(), RenderHtml(report));
  }
  WriteFileAtomic((dir / "recipe.json").string(), recipe.json.dump(2) + "\n");
  nlohmann::json manifest = {
      {"recipe_hash", report.recipe_hash}, {"seed", recipe.seed}, {"threads", report.threads},
      {"blas_threads", BlasThreading()}, {"malloc", MallocSetting()},
      {"device", report.device},
      {"versions", {{"mcompress", MCOMPRESS_VERSION}, {"libtorch", TORCH_VERSION},
                    {"onnx", onnx::LAST_RELEASE_VERSION}}},
      {"model", recipe.model}};
  // Fashion-MNIST: its four file names, as always; other sources: what they read; data
  // a C++ caller passed: the split sizes.
  if (caller_data != nullptr) {
    manifest["dataset"]["caller"] = {{"train", caller_data->train.size()},
                                     {"validation", caller_data->validation.size()},
                                     {"test", caller_data->test.size()}};
  } else {
    for (const auto& [name, crc] : DataSourceFingerprint(RecipeDataSource(recipe))) {
      manifest["dataset"][name] = crc;
    }
  }
  WriteFileAtomic((dir / "manifest.json").string(), manifest.dump(2) + "\n");
}

}  // namespace

namespace {

// Data parallelism, after every stage: each rank ran the same pass on the same graph,
// so the graphs must agree. Their structure (nodes, initializer names, shapes, masks
// present) must be identical, or the ranks made different decisions and the job stops.
// Their values should be bitwise equal (summed gradients are the same bits on every
// rank); where they are not (e.g. kernels that differ between hosts' CPUs) every rank
// takes rank 0's. Returns the largest |difference| from rank 0's values over the ranks
// (0 when they agreed).
// The structure as text: nodes (op, inputs, outputs, attribute names) and initializers
// (name, dtype, shape, masked, quantized) — nothing that depends on float values.
std::string StructureText(const Graph& graph) {
  std::ostringstream os;
  for (const Node& n : graph.nodes) {
    os << n.name << '=' << n.op_type;
    for (const auto& i : n.inputs) os << ' ' << i;
    os << " ->";
    for (const auto& o : n.outputs) os << ' ' << o;
    // Whole-number, string and list attributes are decisions and must match exactly;
    // float ones may carry rounding (a hosts' difference), so only their presence.
    for (const auto& [key, value] : n.attrs) {
      os << ' ' << key << ':' << value.index();
      if (const auto* i = std::get_if<int64_t>(&value)) os << '=' << *i;
      if (const auto* t = std::get_if<std::string>(&value)) os << '=' << *t;
      if (const auto* v = std::get_if<std::vector<int64_t>>(&value)) {
        for (int64_t x : *v) os << ',' << x;
      }
    }
    os << '\n';
  }
  for (const auto& [name, init] : graph.initializers) {
    os << name << ' ' << static_cast<int>(init.value.scalar_type()) << ' ' << init.value.sizes()
       << (init.mask.defined() ? " masked" : "")
       << (init.quant ? " int" + std::to_string(init.quant->bits) : std::string()) << '\n';
  }
  return os.str();
}

double SyncGraphAcrossRanks(Graph& graph, Communicator& comm, const std::string& where) {
  if (!comm.distributed()) return 0;
  std::string structure = StructureText(graph);
  std::vector<Tensor> values;
  for (auto& [name, init] : graph.initializers) {
    values.push_back(init.value);
    if (init.mask.defined()) values.push_back(init.mask);
  }
  const auto half = [](uint64_t h) { return static_cast<int64_t>(h >> 1); };
  const int64_t sh = half(TensorsFingerprint({torch::from_blob(
      structure.data(), {static_cast<int64_t>(structure.size())}, torch::kUInt8)}));
  const int64_t vh = half(TensorsFingerprint(values));
  // max(h) == -max(-h) exactly when every rank has the same h.
  Tensor h = torch::tensor({sh, -sh, vh, -vh}, torch::kLong);
  comm.AllReduce(h, Communicator::Op::kMax, "graph fingerprints after " + where);
  if (h[0].item<int64_t>() != -h[1].item<int64_t>()) {
    throw Error(ErrorKind::kDistributed,
                "distributed: after " + where + " the ranks' graphs differ in structure (rank " +
                    std::to_string(comm.rank()) +
                    "'s included; a pass decided differently on different ranks); expected "
                    "identical graphs on every rank");
  }
  if (h[2].item<int64_t>() == -h[3].item<int64_t>()) return 0;
  std::vector<Tensor> mine;
  for (const Tensor& v : values) mine.push_back(v.detach().clone());
  comm.Broadcast(values, 0, "rank 0's weights after " + where);
  double diff = 0;
  for (size_t i = 0; i < values.size(); ++i) {
    if (values[i].numel() == 0) continue;
    diff = std::max(diff, (mine[i].to(torch::kDouble) - values[i].to(torch::kDouble))
                              .abs().max().item<double>());
  }
  Tensor d = torch::tensor({diff}, torch::kDouble);
  comm.AllReduce(d, Communicator::Op::kMax, "weight differences after " + where);
  return d.item<double>();
}

// Rank 0 of a data-parallel job, before committing the output folder: every other rank
// must have finished its stages and said so ("ok"); a failure it reported stops the run.
void AwaitOtherRanks(Communicator& comm, double timeout_s) {
  for (int64_t r = 1; r < comm.world_size(); ++r) {
    const std::string status = comm.GetKey("mcompress/done/" + std::to_string(r), timeout_s);
    if (status != "ok") {
      throw Error(ErrorKind::kDistributed, "distributed: rank " + std::to_string(r) + " of " +
                                               std::to_string(comm.world_size()) + " " + status +
                                               "; outputs not written");
    }
  }
}

// Step 1's runtime: threads, device and the global seed, before anything is loaded.
struct Runtime {
  int threads = 0;
  c10::Device device = c10::Device(c10::kCPU);
};

Runtime SetUpRuntime(const Recipe& recipe) {
  Runtime rt;
  rt.threads = ConfigureThreads(static_cast<int>(recipe.threads));
  rt.device = ResolveDevice(recipe.device);
  torch::manual_seed(recipe.seed);
  return rt;
}

// Steps 2-7 on the loaded model and data. `caller_data` (RunRecipeOn) is the data a C++
// caller passed: no baseline cache (its key would not know the data), and the manifest
// records the split sizes instead of files.
RunOutcome RunLoaded(Recipe& recipe, Graph work, const DatasetSplits& data, const Runtime& rt,
                     const DatasetSplits* caller_data, const RunOptions& options,
                     Clock::time_point run_start) {
  auto& log = options.log;
  const int threads = rt.threads;
  const c10::Device device = rt.device;
  CheckFiniteWeights(work, recipe.model);
  CheckCriteriaFitData(recipe, data);
  if (ShapesMissing(work)) {
    try {
      InferShapes(work);  // runs every node once: an attribute wrong for the data fails here
    } catch (const Error& e) {
      throw Error(e.kind(), recipe.model + ": " + e.what());
    }
  }
  const std::string recipe_hash = RecipeHash(recipe.json);

  // Step 2: a temporary output folder, removed unless the run completes (rank 0 only).
  Communicator& comm = *options.comm;
  const bool main_rank = comm.is_main();
  std::optional<OutputFolder> folder;
  if (main_rank) folder.emplace(options.out_dir, options.log);
  std::vector<Graph> teacher_models;
  PassContext ctx =
      MakeContext(recipe, options, data, device, LoadTeachers(recipe, teacher_models));
  Report report;
  report.mcompress_version = MCOMPRESS_VERSION;
  report.torch_version = TORCH_VERSION;
  report.recipe_hash = recipe_hash;
  report.model = recipe.model;
  report.device = device.str();
  report.seed = recipe.seed;
  report.threads = threads;
  report.world_size = comm.world_size();

  // Step 3: leading `train` stages produce the baseline the compression is judged
  // against; with a cache folder they are reused across runs.
  size_t lead = 0;
  while (lead < recipe.stages.size() && recipe.stages[lead].pass == "train") ++lead;
  const fs::path cache_file =
      caller_data != nullptr ? fs::path()
                             : BaselineCacheFile(recipe, options, lead, threads, comm.world_size());
  bool cached = !cache_file.empty() && fs::exists(cache_file);
  if (comm.distributed()) {
    // Rank 0 decides (it alone writes the cache), so every rank runs the same stages.
    Tensor flag = torch::tensor({cached ? int64_t{1} : int64_t{0}}, torch::kLong);
    std::vector<Tensor> one{flag};
    comm.Broadcast(one, 0, "the baseline cache decision");
    cached = flag.item<int64_t>() != 0;
  }
  if (cached) {
    log("reusing cached baseline " + cache_file.string());
    work = LoadOnnx(cache_file.string());
  }
  // `known`: metrics the last baseline-training stage already measured on this very
  // graph (no need to evaluate the test set twice); NaN ones are measured here.
  std::map<std::string, std::vector<int64_t>> baseline_shapes;  // layer -> weight shape
  Graph baseline_model;  // distillation's default teacher (ctx.baseline)
  Tensor baseline_outputs;  // its outputs on the test split (CPU), for Metrics' comparison
  auto measure_baseline = [&](const Metrics& known) {
    baseline_model = work.Clone();
    ctx.baseline = &baseline_model;
    report.baseline.pass = "baseline";
    report.baseline.size = ComputeSize(work);
    // Every rank measures (the same graph, the same numbers), so the ranks stay in step:
    // a long test split never looks like a hung peer to ranks waiting at the next
    // collective. Rank 0 alone reports, and alone times latency.
    // The baseline's test outputs stay in memory: every later measurement compares with
    // them (agreement, SQNR), labels or not.
    if (known.samples > 0 && baseline_outputs.defined()) {
      report.baseline.metrics = known;  // the stage's measurement kept the outputs
    } else if (known.samples > 0) {
      Measure(work, data, device, recipe.data.batch_size, Tensor(), &baseline_outputs,
              /*labels=*/false);
      report.baseline.metrics = known;
    } else {
      report.baseline.metrics =
          Measure(work, data, device, recipe.data.batch_size, Tensor(), &baseline_outputs);
    }
    CheckFinite(report.baseline.metrics, "baseline");
    if (!main_rank) return;
    for (const LayerRow& row : LayerTable(work)) baseline_shapes[row.name] = row.weight_shape;
    if (recipe.measure_latency) report.latency_baseline = Latency(work, device);
    log("baseline: top-1 " + Percent(report.baseline.metrics.top1));
  };
  if (lead == 0) measure_baseline(Metrics{});

  // Step 4: the stages, in order, on the working copy.
  for (size_t i = 0; i < recipe.stages.size(); ++i) {
    StageSpec& stage = recipe.stages[i];
    StageReport sr;
    sr.index = static_cast<int>(i);
    sr.pass = stage.pass;
    const auto t0 = Clock::now();
    if (cached && i < lead) {
      sr.stats["cached"] = 1;
    } else {
      RunStage(stage, work, ctx, sr);
    }
    if (comm.distributed()) {
      sr.stats["ranks_max_weight_difference"] =
          SyncGraphAcrossRanks(work, comm, stage.path + " (" + stage.pass + ")");
    }
    sr.seconds = SecondsSince(t0);
    const bool measured_stage = recipe.evaluate_each_stage || i + 1 == recipe.stages.size();
    if (measured_stage && sr.metrics.samples == 0) {
      // The last baseline-training stage's outputs are the baseline's.
      sr.metrics = Measure(work, data, device, recipe.data.batch_size, baseline_outputs,
                           i + 1 == lead ? &baseline_outputs : nullptr);
    } else if (measured_stage && baseline_outputs.defined() && std::isnan(sr.metrics.sqnr_db)) {
      // The pass measured accuracy itself (evaluate): add the comparison with the baseline.
      const Metrics c = Measure(work, data, device, recipe.data.batch_size, baseline_outputs,
                                nullptr, /*labels=*/false);
      sr.metrics.agreement = c.agreement;
      sr.metrics.sqnr_db = c.sqnr_db;
      sr.metrics.max_rel_error = c.max_rel_error;
    }
    CheckFinite(sr.metrics, stage.path + " (" + stage.pass + ")");
    sr.size = ComputeSize(work);
    report.stages.push_back(sr);
    if (i + 1 == lead) {
      if (main_rank && !cache_file.empty() && !cached) {
        std::error_code ec;
        fs::create_directories(options.cache_dir, ec);
        Graph cpu = work.Clone();
        cpu.To(c10::Device(c10::kCPU));
        SaveOnnx(cpu, cache_file.string());
      }
      measure_baseline(report.stages.back().metrics);
    }
  }

  // Other ranks of a data-parallel job stop here: rank 0 measures, exports and writes
  // once they have all said they finished.
  if (!main_rank) {
    comm.SetKey("mcompress/done/" + std::to_string(comm.rank()), "ok");
    RunOutcome outcome;
    outcome.report = std::move(report);
    outcome.wrote_outputs = false;
    return outcome;
  }

  // Step 5: exports.
  Graph final_cpu = work.Clone();
  final_cpu.To(c10::Device(c10::kCPU));
  RunExports(recipe, final_cpu, data, *folder, recipe_hash, log, report);

  // Step 6: final measurements and acceptance.
  if (recipe.measure_latency) report.latency_final = Latency(work, device);
  report.layers = LayerTable(final_cpu);
  for (LayerRow& row : report.layers) {
    auto it = baseline_shapes.find(row.name);
    if (it != baseline_shapes.end() && it->second != row.weight_shape) row.baseline_shape = it->second;
  }
  report.compression_ratio = static_cast<double>(report.baseline.size.bytes_fp32) /
                             static_cast<double>(std::max<int64_t>(1, StoredBytes(report)));
  CheckAcceptance(recipe, report);
  report.total_seconds = SecondsSince(run_start);

  // Step 7: reports, the recipe as run, the manifest; then the atomic rename.
  WriteRunFiles(recipe, report, caller_data, folder->tmp());
  if (comm.distributed()) AwaitOtherRanks(comm, recipe.distributed.options.timeout_s);
  folder->Commit();

  RunOutcome outcome;
  outcome.report = std::move(report);
  outcome.out_dir = folder->out().string();
  outcome.exit_code = outcome.report.accepted ? 0 : 3;
  return outcome;
}

}  // namespace

namespace {

// Runs `body` with options.comm set (a local communicator when unset); on a rank other
// than 0 a failure is also posted for rank 0, which then writes nothing (AwaitOtherRanks).
template <typename F>
RunOutcome WithCommunicator(const RunOptions& given, F&& body) {
  RunOptions options = given;
  if (!options.comm) options.comm = Communicator::Local();
  Communicator& comm = *options.comm;
  try {
    return body(options);
  } catch (const std::exception& e) {
    if (comm.distributed() && !comm.is_main()) {
      try {
        comm.SetKey("mcompress/done/" + std::to_string(comm.rank()),
                    std::string("failed: ") + e.what());
      } catch (const std::exception&) {
        // Rank 0 is gone too: its own error (or the launcher) tells the story.
      }
    }
    throw;
  }
}

}  // namespace

RunOutcome RunRecipe(Recipe& recipe, const RunOptions& given) {
  return WithCommunicator(given, [&](const RunOptions& options) {
    const auto run_start = Clock::now();
    // Step 1: runtime, data, model.
    const Runtime rt = SetUpRuntime(recipe);
    const DatasetSplits data = LoadRecipeData(recipe);
    Graph work = LoadModel(recipe.model, ModelLoadOptions{recipe.seed, recipe.input_shapes});
    return RunLoaded(recipe, std::move(work), data, rt, nullptr, options, run_start);
  });
}

RunOutcome RunRecipeOn(Recipe& recipe, Graph model, const DatasetSplits& data,
                       const RunOptions& given) {
  return WithCommunicator(given, [&](const RunOptions& options) {
    const auto run_start = Clock::now();
    const Runtime rt = SetUpRuntime(recipe);
    if (data.test.size() == 0) {
      throw Error(ErrorKind::kUsage, "RunRecipeOn: the caller's data has no test samples; the "
                                     "report measures every stage on the test split");
    }
    return RunLoaded(recipe, std::move(model), data, rt, &data, options, run_start);
  });
}

std::string SummaryTable(const Report& r) {
  std::ostringstream os;
  char line[256];
  std::snprintf(line, sizeof(line), "%-4s %-16s %8s %8s %8s %8s %12s %12s %8s\n", "#", "stage",
                "top-1", "top-5", "agree", "SQNR dB", "params", "stored KB", "sec");
  os << line;
  auto row = [&](const std::string& idx, const StageReport& s) {
    char sqnr[32] = "—";
    if (!std::isnan(s.metrics.sqnr_db)) std::snprintf(sqnr, sizeof(sqnr), "%.1f", s.metrics.sqnr_db);
    std::snprintf(line, sizeof(line), "%-4s %-16s %8s %8s %8s %8s %12lld %12.1f %8.1f\n", idx.c_str(),
                  s.pass.c_str(), Percent(s.metrics.top1).c_str(), Percent(s.metrics.top5).c_str(),
                  Percent(s.metrics.agreement).c_str(), sqnr,
                  static_cast<long long>(s.size.parameters), s.size.bytes_sparse / 1024.0, s.seconds);
    os << line;
  };
  row("-", r.baseline);
  for (const auto& s : r.stages) row(std::to_string(s.index), s);
  std::snprintf(line, sizeof(line), "compression %.2fx; latency b1 %.3f -> %.3f ms, b32 %.3f -> %.3f ms\n",
                r.compression_ratio, r.latency_baseline.batch1_ms, r.latency_final.batch1_ms,
                r.latency_baseline.batch32_ms, r.latency_final.batch32_ms);
  os << line;
  for (const auto& c : r.acceptance) {
    std::snprintf(line, sizeof(line), "acceptance %s: %.4f (limit %.4f) %s\n", c.criterion.c_str(),
                  c.value, c.threshold, c.passed ? "PASS" : "FAIL");
    os << line;
  }
  return os.str();
}

}  // namespace compress
