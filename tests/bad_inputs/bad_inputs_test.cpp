// The bad-input catalog (tests/bad_inputs/cases.json, docs in tests/bad_inputs/README.md):
// every case builds its input files in a fresh folder, runs the mcompress binary on them
// and asserts the exit code, that stderr ends with the one expected error line (the only
// line starting "mcompress"; a run may log its stages before it), and that
// the folder holds afterwards exactly what it held before (no output, no temporary, no
// touched file). Each case is its own gtest (BadInputs/Catalog.Case/<name>), so ctest
// lists and runs them one by one.
#include <caffe2/serialize/inline_container.h>
#include <google/protobuf/text_format.h>
#include <onnx/onnx_pb.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>
#include <sstream>

#include "compress/data/sources.h"
#include "compress/io/onnx_io.h"
#include "compress/zoo/zoo.h"
#include "tests/cli_util.h"
#include "tests/file_bytes.h"
#include "tests/test_util.h"

namespace compress {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const fs::path kCatalogDir = fs::path(MCOMPRESS_SOURCE_DIR) / "tests" / "bad_inputs";

struct Case {
  std::string name;
  json spec;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

// The catalog, read once when the tests are registered. A catalog that does not parse
// becomes one case that fails with the parser's message.
std::vector<Case> LoadCatalog() {
  std::vector<Case> cases;
  try {
    std::ifstream in(kCatalogDir / "cases.json");
    const json all = json::parse(in, nullptr, /*allow_exceptions=*/true, /*ignore_comments=*/true);
    for (const auto& c : all.at("cases")) cases.push_back({c.at("name").get<std::string>(), c});
  } catch (const std::exception& e) {
    cases.push_back({"catalog_unreadable", json{{"catalog_error", e.what()}}});
  }
  return cases;
}

std::string Substitute(std::string s, const fs::path& dir) {
  const std::map<std::string, std::string> vars = {
      {"{dir}", dir.string()},
      {"{src}", MCOMPRESS_SOURCE_DIR},
      {"{fmnist}", "/usr/share/datasets/fashion-mnist"},
  };
  for (const auto& [key, value] : vars) {
    for (size_t at = s.find(key); at != std::string::npos; at = s.find(key, at + value.size())) {
      s.replace(at, key.size(), value);
    }
  }
  return s;
}

void WriteBytes(const fs::path& path, const std::string& bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << "cannot write " << path;
}

// An IDX file from its spec: {"magic": 2051 images / 2049 labels, "dims": [...],
// "modulo": element i is i % modulo (default 256)}.
std::string Idx(const json& spec) {
  return testing_util::IdxBytes(spec.at("magic").get<uint32_t>(),
                                spec.at("dims").get<std::vector<uint32_t>>(), spec.value("modulo", 256));
}

std::string ReadAll(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The bytes a file spec describes (see README.md: text, json, onnx, zoo_onnx, idx,
// random, zeros, copy, zip; then truncate and gzip).
std::string FileBytes(const json& spec, const fs::path& dir) {
  std::string bytes;
  if (spec.is_string()) return Substitute(spec.get<std::string>(), dir);
  if (spec.contains("text")) {
    bytes = Substitute(spec.at("text").get<std::string>(), dir);
  } else if (spec.contains("json")) {
    bytes = Substitute(spec.at("json").dump(2), dir);
  } else if (spec.contains("onnx")) {
    const std::string text = ReadAll(kCatalogDir / "onnx" / spec.at("onnx").get<std::string>());
    onnx::ModelProto m;
    EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &m))
        << "tests/bad_inputs/onnx/" << spec.at("onnx").get<std::string>() << " does not parse";
    bytes = m.SerializeAsString();
  } else if (spec.contains("zoo_onnx")) {
    const fs::path tmp = dir / ".zoo.onnx";
    SaveOnnx(BuildZoo(spec.at("zoo_onnx").get<std::string>()), tmp.string());
    bytes = ReadAll(tmp);
    fs::remove(tmp);
  } else if (spec.contains("idx")) {
    bytes = Idx(spec.at("idx"));
  } else if (spec.contains("tensors")) {
    // A tensor file (SaveTensorFile): inputs [shape] of values in [0, 1), one NaN at flat
    // index `nan_at` when given; targets i % classes.
    const json& t = spec.at("tensors");
    const std::vector<int64_t> shape = t.at("shape").get<std::vector<int64_t>>();
    Tensor inputs = at::rand(shape, at::TensorOptions().dtype(at::kFloat));
    if (t.contains("nan_at")) inputs.view({-1})[t.at("nan_at").get<int64_t>()] = NAN;
    const Tensor targets = at::arange(shape[0], at::kLong).remainder(t.at("classes").get<int64_t>());
    const fs::path tmp = dir / ".tensors.pt";
    SaveTensorFile(tmp.string(), inputs, targets);
    bytes = ReadAll(tmp);
    fs::remove(tmp);
  } else if (spec.contains("random")) {
    std::mt19937 rng(spec.value("seed", 1u));
    for (int64_t i = 0; i < spec.at("random").get<int64_t>(); ++i) bytes.push_back(char(rng()));
  } else if (spec.contains("zeros")) {
    bytes.assign(spec.at("zeros").get<size_t>(), '\0');
  } else if (spec.contains("copy")) {
    bytes = ReadAll(Substitute(spec.at("copy").get<std::string>(), dir));
  } else if (spec.contains("zip")) {
    // A well-formed zip archive (LibTorch's own writer) holding the named text records.
    const fs::path tmp = dir / ".archive.zip";
    {
      caffe2::serialize::PyTorchStreamWriter writer(tmp.string());
      for (const auto& [name, content] : spec.at("zip").items()) {
        const std::string c = content.get<std::string>();
        writer.writeRecord(name, c.data(), c.size());
      }
      writer.writeEndOfFile();
    }
    bytes = ReadAll(tmp);
    fs::remove(tmp);
  } else {
    ADD_FAILURE() << "unknown file spec " << spec.dump();
  }
  if (spec.contains("truncate")) {
    const int64_t keep = spec.at("truncate").get<int64_t>();  // < 0: drop that many bytes
    bytes.resize(keep >= 0 ? std::min<size_t>(keep, bytes.size())
                           : bytes.size() - std::min<size_t>(-keep, bytes.size()));
  }
  if (spec.contains("append")) bytes.append(spec.at("append").get<size_t>(), '\0');
  if (spec.value("gzip", false)) bytes = testing_util::GzipBytes(bytes);
  return bytes;
}

// Every path under `dir` with its size and content hash, for the before/after check.
std::map<std::string, std::string> Snapshot(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::none);
       it != fs::recursive_directory_iterator(); ++it) {
    const std::string rel = fs::relative(it->path(), dir).string();
    if (rel == "stdout" || rel == "stderr") continue;
    if (it->is_symlink()) {
      out[rel] = "-> " + fs::read_symlink(it->path()).string();
      it.disable_recursion_pending();
    } else if (it->is_directory()) {
      out[rel] = "dir";
    } else {
      out[rel] = std::to_string(std::hash<std::string>{}(ReadAll(it->path())));
    }
  }
  return out;
}

std::string Quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

class Catalog : public ::testing::TestWithParam<Case> {};

TEST_P(Catalog, Case) {
  const Case& c = GetParam();
  ASSERT_FALSE(c.spec.contains("catalog_error")) << "cases.json: " << c.spec["catalog_error"];
  const fs::path dir = cli_test::TempDir("mcbad", c.name);
  // (Each json kept in a local: items() of a temporary would dangle in the loop.)
  const json files = c.spec.value("files", json::object());
  for (const auto& [name, spec] : files.items()) {
    ASSERT_NO_FATAL_FAILURE(WriteBytes(dir / name, FileBytes(spec, dir)));
  }
  const json dirs = c.spec.value("dirs", json::array());
  for (const auto& d : dirs) {
    fs::create_directories(dir / d.get<std::string>());
  }
  const json mounts = c.spec.value("mounts", json::array());
  for (const auto& m : mounts) fs::create_directories(dir / m.at("path").get<std::string>());
  const json symlinks = c.spec.value("symlinks", json::object());
  for (const auto& [name, target] : symlinks.items()) {
    fs::create_symlink(Substitute(target.get<std::string>(), dir), dir / name);
  }
  const auto before = Snapshot(dir);

  // The command, from inside the case's folder; `mounts` runs it in a private user and
  // mount namespace (unshare -rm) with small tmpfs folders, read-only or full, as root
  // would see them too. The listing of each mount is taken before the namespace ends.
  std::string cmd = "cd " + Quote(dir.string()) + " && ";
  const json env = c.spec.value("env", json::object());
  for (const auto& [k, v] : env.items()) {
    cmd += k + "=" + Quote(Substitute(v.get<std::string>(), dir)) + " ";
  }
  cmd += std::string(MCOMPRESS_CLI) + " " + Substitute(c.spec.at("args").get<std::string>(), dir);
  if (!mounts.empty()) {
    std::string inner;
    for (const auto& m : mounts) {
      const std::string path = (dir / m.at("path").get<std::string>()).string();
      inner += "mount -t tmpfs -o size=" + std::to_string(m.value("size_kb", 64)) + "k" +
               (m.value("readonly", false) ? ",ro" : "") + " tmpfs " + Quote(path) + " && ";
      if (m.contains("holds")) {  // an earlier output, say, on the disk before the run
        inner += "cp -a " + Quote((dir / m.at("holds").get<std::string>()).string() + "/.") + " " +
                 Quote(path) + " && ";
      }
    }
    inner += "{ " + cmd + " ; }; rc=$?; ";
    for (const auto& m : mounts) {
      const std::string path = (dir / m.at("path").get<std::string>()).string();
      inner += m.contains("holds") ? "cp -a " + Quote(path) + " " + Quote(path + ".after") + "; "
                                   : "ls -A " + Quote(path) + " > " + Quote(path + ".listing") + "; ";
    }
    inner += "exit $rc";
    cmd = "unshare -rm sh -c " + Quote(inner);
  }
  const std::string full = cmd + " >" + Quote((dir / "stdout").string()) + " 2>" +
                           Quote((dir / "stderr").string());
  const int status = std::system(full.c_str());
  ASSERT_TRUE(WIFEXITED(status)) << "killed by a signal: " << full;
  const int code = WEXITSTATUS(status);
  const std::string err = ReadAll(dir / "stderr");

  EXPECT_EQ(code, c.spec.at("exit").get<int>()) << "stderr: " << err;
  // The error is the last line of stderr and the only one that starts with "mcompress"
  // (before it, a run may have logged its stages).
  const std::string expected = Substitute(c.spec.at("error").get<std::string>(), dir);
  std::vector<std::string> lines;
  std::istringstream split(err);
  for (std::string line; std::getline(split, line);) lines.push_back(line);
  int error_lines = 0;
  for (const auto& line : lines) error_lines += line.rfind("mcompress", 0) == 0;
  EXPECT_EQ(error_lines, 1) << "stderr: " << err;
  EXPECT_EQ(lines.empty() ? "" : lines.back(), expected) << "stdout: " << ReadAll(dir / "stdout");
  EXPECT_TRUE(!err.empty() && err.back() == '\n') << "stderr does not end its line: " << err;

  auto after = Snapshot(dir);
  // A mount holds after the run exactly what it held before: nothing (or what `listing`
  // says), or its `holds` folder's files, byte for byte.
  for (const auto& m : mounts) {
    const std::string path = m.at("path").get<std::string>();
    if (m.contains("holds")) {
      EXPECT_EQ(Snapshot(dir / (path + ".after")), Snapshot(dir / m.at("holds").get<std::string>()))
          << "the run changed what " << path << " held";
      for (auto it = after.begin(); it != after.end();) {
        const bool copy = it->first == path + ".after" || it->first.rfind(path + ".after/", 0) == 0;
        it = copy ? after.erase(it) : std::next(it);
      }
    } else {
      EXPECT_EQ(ReadAll(dir / (path + ".listing")), m.value("listing", "")) << "left in " << path;
      after.erase(path + ".listing");
    }
  }
  EXPECT_EQ(after, before) << "the run changed files in " << dir;
  if (!HasFailure()) fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(BadInputs, Catalog, ::testing::ValuesIn(LoadCatalog()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.name;
                         });

}  // namespace
}  // namespace compress
