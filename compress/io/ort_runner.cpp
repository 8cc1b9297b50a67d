// ONNX Runtime through onnxruntime-node (see ort_runner.h). The exchange with
// tools/ort/run_model.js is a JSON manifest naming raw little-endian files with dtype
// and shape, in a private temporary folder removed afterwards.
#include "compress/io/ort_runner.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "compress/base/file_util.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

extern char** environ;

#ifndef MCOMPRESS_ORT_DIR_DEFAULT
#define MCOMPRESS_ORT_DIR_DEFAULT "tools/ort"
#endif

namespace compress {

namespace fs = std::filesystem;

namespace {

// raw files are little endian; tensors are copied byte for byte.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "ort_runner copies tensor bytes; add byte swapping for big-endian hosts");

std::string MissingRuntime(const std::string& dir, const std::string& detail) {
  return "ONNX Runtime verification needs node and onnxruntime-node in " + dir +
         "/node_modules; run `make deps` (" + detail + ")";
}

// One line: whitespace runs (newlines included) collapse to one space.
std::string OneLine(const std::string& s, size_t max_chars = 2000) {
  std::string out;
  bool space = false;
  for (char c : s) {
    if (std::isspace(static_cast<unsigned char>(c))) {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += c;
  }
  if (out.size() > max_chars) out = out.substr(0, max_chars) + " ...";
  return out;
}

std::string ReadAll(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) return "";
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The element types the node runner exchanges; their names are DtypeName's, which
// are also onnxruntime-node's tensor type names.
constexpr at::ScalarType kOrtTypes[] = {at::kFloat, at::kDouble, at::kHalf, at::kChar, at::kByte,
                                        at::kShort, at::kInt,    at::kLong, at::kBool};

// DtypeName(t) for a type ONNX Runtime tensors carry, else empty.
std::string OrtDtype(at::ScalarType t) {
  for (at::ScalarType k : kOrtTypes) {
    if (k == t) return DtypeName(t);
  }
  return "";
}

std::optional<at::ScalarType> DtypeFromOrt(const std::string& s) {
  for (at::ScalarType t : kOrtTypes) {
    if (s == DtypeName(t)) return t;
  }
  return std::nullopt;
}

void WriteBytes(const fs::path& p, const void* data, size_t size) {
  std::ofstream out(p, std::ios::binary);
  if (size) out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
  out.close();
  if (!out) throw Error(ErrorKind::kIo, "cannot write " + p.string() + ": " + std::strerror(errno));
}

// Writes inputs.json and input_<k>.bin; returns the manifest path.
fs::path WriteInputs(const fs::path& dir, const std::vector<Tensor>& inputs) {
  nlohmann::json manifest = {{"inputs", nlohmann::json::array()}};
  for (size_t k = 0; k < inputs.size(); ++k) {
    const std::string dtype = OrtDtype(inputs[k].scalar_type());
    if (dtype.empty()) {
      throw Error(ErrorKind::kUnsupported, "input " + std::to_string(k) + " has dtype " +
                                               DtypeName(inputs[k].scalar_type()) +
                                               ", which onnxruntime-node cannot take");
    }
    Tensor c = inputs[k].detach().to(at::kCPU).contiguous();
    const std::string file = "input_" + std::to_string(k) + ".bin";
    WriteBytes(dir / file, c.data_ptr(), static_cast<size_t>(c.numel()) * c.element_size());
    manifest["inputs"].push_back({{"dtype", dtype}, {"shape", c.sizes().vec()}, {"file", file}});
  }
  const fs::path path = dir / "inputs.json";
  const std::string text = manifest.dump();
  WriteBytes(path, text.data(), text.size());
  return path;
}

// Spawns `argv` with stdout/stderr sent to files; returns the wait status. Throws
// kUnsupported naming the program when it cannot be started.
int Spawn(const std::vector<std::string>& argv, bool search_path, const fs::path& out_file,
          const fs::path& err_file, const std::string& ort_dir) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, out_file.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, err_file.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0600);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  const int rc = search_path
                     ? ::posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ)
                     : ::posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    const std::string which =
        search_path ? "`node` on PATH" : "MCOMPRESS_NODE=" + argv[0];
    throw Error(ErrorKind::kUnsupported,
                MissingRuntime(ort_dir, "cannot start " + which + ": " + std::strerror(rc)));
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) {
      throw Error(ErrorKind::kInternal, std::string("waitpid failed: ") + std::strerror(errno));
    }
  }
  return status;
}

Tensor ReadOutput(const fs::path& dir, const nlohmann::json& spec, const std::string& model) {
  const std::string name = spec.at("name").get<std::string>();
  const std::string dtype = spec.at("dtype").get<std::string>();
  auto st = DtypeFromOrt(dtype);
  if (!st) {
    throw Error(ErrorKind::kUnsupported, model + ": ONNX Runtime output '" + name +
                                             "' has type " + dtype + ", which mcompress cannot compare");
  }
  const std::vector<int64_t> shape = spec.at("shape").get<std::vector<int64_t>>();
  Tensor t = at::empty(shape, at::TensorOptions().dtype(*st));
  const std::string bytes = ReadAll(dir / spec.at("file").get<std::string>());
  const size_t want = static_cast<size_t>(t.numel()) * t.element_size();
  if (bytes.size() != want) {
    throw Error(ErrorKind::kIo, model + ": ONNX Runtime output '" + name + "' has " +
                                    std::to_string(bytes.size()) + " bytes, expected " +
                                    std::to_string(want));
  }
  if (want) std::memcpy(t.data_ptr(), bytes.data(), want);
  return t;
}

}  // namespace

std::string OrtScriptDir() {
  const char* env = std::getenv("MCOMPRESS_ORT_DIR");
  return env && *env ? env : MCOMPRESS_ORT_DIR_DEFAULT;
}

namespace {

// node and a script of the runtime folder (OrtScriptDir), checked to be there.
struct NodeScript {
  std::string dir;     // the script folder
  std::string script;  // path of the script
  std::string node;    // the node binary: MCOMPRESS_NODE, else `node` on PATH
  bool search_path = true;
};

NodeScript FindNodeScript(const std::string& name) {
  NodeScript ns;
  ns.dir = OrtScriptDir();
  ns.script = (fs::path(ns.dir) / name).string();
  if (!fs::exists(ns.script)) {
    throw Error(ErrorKind::kUnsupported, MissingRuntime(ns.dir, ns.script + " is missing"));
  }
  if (!fs::exists(fs::path(ns.dir) / "node_modules" / "onnxruntime-node" / "package.json")) {
    throw Error(ErrorKind::kUnsupported, MissingRuntime(ns.dir, "onnxruntime-node is not installed"));
  }
  const char* node_env = std::getenv("MCOMPRESS_NODE");
  ns.search_path = !(node_env && *node_env);
  ns.node = ns.search_path ? "node" : node_env;
  return ns;
}

// Runs `node script args...` with its output in `tmp`; a failure throws with the
// script's own message on one line (`what` names the model(s) when it has none).
void RunNodeScript(const NodeScript& ns, const std::vector<std::string>& args,
                   const TempDir& tmp, const std::string& what) {
  std::vector<std::string> argv = {ns.node, ns.script};
  argv.insert(argv.end(), args.begin(), args.end());
  const int status = Spawn(argv, ns.search_path, tmp.path() / "stdout.txt",
                           tmp.path() / "stderr.txt", ns.dir);
  const std::string err = OneLine(ReadAll(tmp.path() / "stderr.txt"));
  if (!WIFEXITED(status)) {
    throw Error(ErrorKind::kUnsupported,
                "ONNX Runtime crashed (signal " + std::to_string(WTERMSIG(status)) + ") running " +
                    what + (err.empty() ? "" : ": " + err));
  }
  switch (WEXITSTATUS(status)) {
    case 0: return;
    case 3: throw Error(ErrorKind::kUnsupported, MissingRuntime(ns.dir, err));
    case 127:
      throw Error(ErrorKind::kUnsupported, MissingRuntime(ns.dir, ns.node + " exited 127: " + err));
    default:
      throw Error(ErrorKind::kUnsupported,
                  err.empty() ? "ONNX Runtime failed on " + what + " (exit " +
                                    std::to_string(WEXITSTATUS(status)) + ")"
                              : err);
  }
}

void CheckModelExists(const std::string& model_path) {
  if (!fs::exists(model_path)) {
    throw Error(ErrorKind::kIo, "cannot read " + model_path + ": No such file or directory");
  }
}

// The summary of per-run latencies (milliseconds, in run order).
OrtLatency Summarize(std::vector<double> ms, int warmup) {
  OrtLatency l;
  l.runs = static_cast<int>(ms.size());
  l.warmup = warmup;
  l.latencies_ms = ms;
  if (ms.empty()) return l;
  std::sort(ms.begin(), ms.end());
  const size_t n = ms.size();
  l.median_ms = n % 2 ? ms[n / 2] : 0.5 * (ms[n / 2 - 1] + ms[n / 2]);
  double sum = 0;
  for (double v : ms) sum += v;
  l.mean_ms = sum / static_cast<double>(n);
  l.min_ms = ms.front();
  l.max_ms = ms.back();
  l.p90_ms = ms[std::min(n - 1, static_cast<size_t>(std::ceil(0.9 * static_cast<double>(n))) - 1)];
  return l;
}

}  // namespace

OrtRun RunOrt(const std::string& model_path, const std::vector<Tensor>& inputs,
              const OrtOptions& options) {
  // Step 1: find node, the script and onnxruntime-node.
  const NodeScript ns = FindNodeScript("run_model.js");
  CheckModelExists(model_path);

  // Step 2: inputs to a private folder; run. Failures carry ONNX Runtime's own message.
  TempDir tmp("mcompress-ort");
  const fs::path manifest = WriteInputs(tmp.path(), inputs);
  const fs::path out_dir = tmp.path() / "out";
  std::vector<std::string> args = {fs::absolute(model_path).string(), manifest.string(),
                                   out_dir.string(), "--threads", std::to_string(options.threads),
                                   "--opt", options.graph_optimization_level};
  if (options.bench_runs > 0) {
    args.insert(args.end(), {"--bench", std::to_string(options.bench_runs), "--warmup",
                             std::to_string(options.bench_warmup)});
  }
  if (!options.optimized_model_path.empty()) {
    args.insert(args.end(),
                {"--optimized", fs::absolute(options.optimized_model_path).string()});
  }
  RunNodeScript(ns, args, tmp, model_path);

  // Step 3: outputs.
  OrtRun run;
  nlohmann::json result;
  try {
    result = nlohmann::json::parse(ReadAll(out_dir / "outputs.json"));
    run.ort_version = result.value("ort_version", "");
    for (const auto& spec : result.at("outputs")) {
      run.output_names.push_back(spec.at("name").get<std::string>());
      run.outputs.push_back(ReadOutput(out_dir, spec, model_path));
    }
    if (result.contains("bench")) {
      const auto& b = result["bench"];
      OrtLatency& l = run.latency;
      l.runs = b.at("runs").get<int>();
      l.warmup = b.at("warmup").get<int>();
      l.median_ms = b.at("median_ms").get<double>();
      l.mean_ms = b.at("mean_ms").get<double>();
      l.min_ms = b.at("min_ms").get<double>();
      l.max_ms = b.at("max_ms").get<double>();
      l.p90_ms = b.at("p90_ms").get<double>();
      l.latencies_ms = b.at("latencies_ms").get<std::vector<double>>();
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorKind::kIo, model_path + ": cannot read ONNX Runtime's outputs (" +
                                    (out_dir / "outputs.json").string() + "): " + e.what());
  }
  return run;
}

std::vector<Tensor> RunInOrt(const std::string& model_path, const std::vector<Tensor>& inputs,
                             const OrtOptions& options) {
  return RunOrt(model_path, inputs, options).outputs;
}

OrtLatencyComparison CompareOrtLatency(const std::vector<std::string>& model_paths,
                                       const std::vector<Tensor>& inputs,
                                       const OrtLatencyOptions& options) {
  if (model_paths.empty()) return {};
  if (options.threads < 1 || options.rounds < 1 || options.runs < 1 || options.warmup < 0) {
    throw Error(ErrorKind::kInternal, "CompareOrtLatency: threads, rounds and runs must be >= 1, "
                                      "warmup >= 0");
  }
  const NodeScript ns = FindNodeScript("latency.js");
  for (const auto& p : model_paths) CheckModelExists(p);
  TempDir tmp("mcompress-ort");
  const fs::path manifest = WriteInputs(tmp.path(), inputs);
  const fs::path out = tmp.path() / "latency.json";
  std::vector<std::string> args = {manifest.string(), out.string(),
                                   "--threads", std::to_string(options.threads),
                                   "--rounds", std::to_string(options.rounds),
                                   "--runs", std::to_string(options.runs),
                                   "--warmup", std::to_string(options.warmup)};
  std::string what;
  for (const auto& p : model_paths) {
    args.push_back(fs::absolute(p).string());
    what += (what.empty() ? "" : ", ") + p;
  }
  RunNodeScript(ns, args, tmp, what);
  OrtLatencyComparison result;
  try {
    const nlohmann::json j = nlohmann::json::parse(ReadAll(out));
    result.ort_version = j.value("ort_version", "");
    const auto& models = j.at("models");
    if (models.size() != model_paths.size()) {
      throw Error(ErrorKind::kIo, out.string() + ": " + std::to_string(models.size()) +
                                      " models timed, " + std::to_string(model_paths.size()) +
                                      " given");
    }
    for (const auto& m : models) {
      result.models.push_back(
          Summarize(m.at("latencies_ms").get<std::vector<double>>(), options.warmup));
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(ErrorKind::kIo, "cannot read ONNX Runtime's latencies (" + out.string() +
                                    "): " + e.what());
  }
  return result;
}

}  // namespace compress
