// Bytes of test input files, shared by the bad-input catalog (tests/bad_inputs) and the
// fuzzers' seed writer (fuzz/fuzz_seeds.cpp). No gtest here: fuzz_seeds is not a test.
#pragma once

// zlib declares a global function `compress`, which clashes with our namespace: hide it.
#define compress zlib_compress_unused
#include <zlib.h>
#undef compress

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace compress::testing_util {

// `raw` as one gzip member (deflate level 6). Throws std::runtime_error when zlib fails.
inline std::string GzipBytes(const std::string& raw) {
  z_stream z{};
  if (deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
    throw std::runtime_error("zlib: deflateInit2 failed");
  }
  std::string out(deflateBound(&z, raw.size()) + 32, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(raw.data()));
  z.avail_in = static_cast<uInt>(raw.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  if (rc != Z_STREAM_END) throw std::runtime_error("zlib: deflate did not finish");
  return out;
}

// An IDX file: big-endian `magic` (2051 images, 2049 labels) and `dims`, then one byte
// per element, element i being i % modulo.
inline std::string IdxBytes(uint32_t magic, const std::vector<uint32_t>& dims, int modulo = 256) {
  std::string out;
  auto be32 = [&](uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<char>((v >> s) & 0xff));
  };
  be32(magic);
  size_t count = 1;
  for (uint32_t d : dims) {
    be32(d);
    count *= d;
  }
  for (size_t i = 0; i < count; ++i) out.push_back(static_cast<char>(i % modulo));
  return out;
}

}  // namespace compress::testing_util
