// The TorchScript fixtures (torchvision classifiers with random weights, a traced
// transformer, files that must be rejected) that tests/fixtures/make_torchscript.py
// writes into the build tree with Debian's python3-torch / python3-torchvision, which
// tools/deps.sh installs. Shared by the importer's tests and the data tests' end-to-end
// run of a torchvision classifier on an RGB image folder.
#pragma once

#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>

namespace compress {
namespace testing_util {

namespace fs = std::filesystem;

inline std::string FixtureFileText(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Generates the fixtures once; skipped when the folder already holds the output of
// the same script (its hash is stored in a stamp file). ctest runs test cases as
// parallel processes, so each generates into its own temporary folder and renames it
// into place; a process that loses the race uses the winner's folder.
inline const fs::path& TorchScriptFixtures() {
  static const fs::path dir = [] {
    const fs::path script = fs::path(MCOMPRESS_SOURCE_DIR) / "tests/fixtures/make_torchscript.py";
    const fs::path out = fs::path(MCOMPRESS_BINARY_DIR) / "fixtures/torchscript";
    const std::string stamp = std::to_string(std::hash<std::string>{}(FixtureFileText(script)));
    auto current = [&] { return fs::exists(out / "stamp") && FixtureFileText(out / "stamp") == stamp; };
    if (current()) return out;
    const fs::path tmp = out.string() + ".tmp-" + std::to_string(getpid());
    fs::remove_all(tmp);
    fs::create_directories(tmp);
    const std::string cmd = "/usr/bin/python3 '" + script.string() + "' '" + tmp.string() +
                            "' > '" + (tmp / "log.txt").string() + "' 2>&1";
    if (std::system(cmd.c_str()) != 0) {
      ADD_FAILURE() << "fixture generation failed: " << cmd << "\n" << FixtureFileText(tmp / "log.txt");
      return tmp;
    }
    std::ofstream(tmp / "stamp") << stamp;
    std::error_code ec;
    fs::rename(tmp, out, ec);
    if (ec) {  // `out` exists: another process won, or it is stale
      if (current()) {
        fs::remove_all(tmp);
        return out;
      }
      fs::remove_all(out);
      fs::rename(tmp, out, ec);
      if (ec) return tmp;
    }
    return out;
  }();
  return dir;
}

}  // namespace testing_util
}  // namespace compress
