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

#include <cctype>
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

// A private folder under $TMPDIR, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "mcompress-ort-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      throw Error(ErrorKind::kIo, "cannot create a temporary folder " + pattern + ": " +
                                      std::strerror(errno));
    }
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

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

OrtRun RunOrt(const std::string& model_path, const std::vector<Tensor>& inputs,
              const OrtOptions& options) {
  // Step 1: find node, the script and onnxruntime-node.
  const std::string dir = OrtScriptDir();
  const fs::path script = fs::path(dir) / "run_model.js";
  if (!fs::exists(script)) throw Error(ErrorKind::kUnsupported, MissingRuntime(dir, script.string() + " is missing"));
  if (!fs::exists(fs::path(dir) / "node_modules" / "onnxruntime-node" / "package.json")) {
    throw Error(ErrorKind::kUnsupported, MissingRuntime(dir, "onnxruntime-node is not installed"));
  }
  if (!fs::exists(model_path)) {
    throw Error(ErrorKind::kIo, "cannot read " + model_path + ": No such file or directory");
  }
  const char* node_env = std::getenv("MCOMPRESS_NODE");
  const bool search_path = !(node_env && *node_env);
  const std::string node = search_path ? "node" : node_env;

  // Step 2: inputs to a private folder; run.
  TempDir tmp;
  const fs::path manifest = WriteInputs(tmp.path(), inputs);
  const fs::path out_dir = tmp.path() / "out";
  std::vector<std::string> argv = {node, script.string(), fs::absolute(model_path).string(),
                                   manifest.string(), out_dir.string(),
                                   "--threads", std::to_string(options.threads),
                                   "--opt", options.graph_optimization_level};
  if (options.bench_runs > 0) {
    argv.insert(argv.end(), {"--bench", std::to_string(options.bench_runs), "--warmup",
                             std::to_string(options.bench_warmup)});
  }
  if (!options.optimized_model_path.empty()) {
    argv.insert(argv.end(),
                {"--optimized", fs::absolute(options.optimized_model_path).string()});
  }
  const int status = Spawn(argv, search_path, tmp.path() / "stdout.txt",
                           tmp.path() / "stderr.txt", dir);

  // Step 3: failures carry ONNX Runtime's own message, on one line.
  const std::string err = OneLine(ReadAll(tmp.path() / "stderr.txt"));
  if (!WIFEXITED(status)) {
    throw Error(ErrorKind::kUnsupported,
                "ONNX Runtime crashed (signal " + std::to_string(WTERMSIG(status)) + ") running " +
                    model_path + (err.empty() ? "" : ": " + err));
  }
  switch (WEXITSTATUS(status)) {
    case 0: break;
    case 3: throw Error(ErrorKind::kUnsupported, MissingRuntime(dir, err));
    case 127: throw Error(ErrorKind::kUnsupported, MissingRuntime(dir, node + " exited 127: " + err));
    default:
      throw Error(ErrorKind::kUnsupported,
                  err.empty() ? "ONNX Runtime failed on " + model_path + " (exit " +
                                    std::to_string(WEXITSTATUS(status)) + ")"
                              : err);
  }

  // Step 4: outputs.
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

}  // namespace compress
