// Shared by the libFuzzer targets (docs/security.md, `make fuzz`): a compress::Error is
// the expected outcome of bad input; any other exception escaping the code under test is
// a finding, reported and turned into a crash so that libFuzzer keeps the input.
#pragma once

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <string>

#include "compress/base/error.h"

namespace compress::fuzz {

template <typename Fn>
int Expect(Fn&& fn) {
  try {
    fn();
  } catch (const compress::Error&) {
    // the one clear error line the CLI would print: fine
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz finding: an exception other than compress::Error: %s\n", e.what());
    std::abort();
  }
  return 0;
}

// A file holding `data`, for the readers that take a path: in /dev/shm when there is one
// (memory, not disk), named per process so that parallel fuzzing jobs do not collide.
inline std::string ScratchFile(const char* name, const uint8_t* data, size_t size) {
  const std::string dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  const std::string path = dir + "/mcompress-fuzz-" + std::to_string(getpid()) + "-" + name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  return path;
}

}  // namespace compress::fuzz
