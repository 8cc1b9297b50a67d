// Zip central directory reader (PKWARE APPNOTE.TXT 6.3). All fields are little-endian.
#include "compress/io/zip_directory.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "compress/base/error.h"

namespace compress {
namespace {

constexpr uint32_t kEndSignature = 0x06054b50;        // 4.3.16
constexpr uint32_t kZip64EndSignature = 0x06064b50;   // 4.3.14
constexpr uint32_t kZip64LocatorSignature = 0x07064b50;  // 4.3.15
constexpr uint32_t kCentralSignature = 0x02014b50;    // 4.3.12
constexpr size_t kEndSize = 22, kZip64EndSize = 56, kZip64LocatorSize = 20, kCentralSize = 46;
constexpr size_t kMaxComment = 0xffff;

uint64_t Le(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

class File {
 public:
  explicit File(const std::string& path) : path_(path), in_(path, std::ios::binary) {
    std::error_code ec;
    size_ = std::filesystem::file_size(path, ec);
    if (!in_ || ec) throw Error(ErrorKind::kIo, "cannot read " + path + (ec ? ": " + ec.message() : ""));
  }
  uint64_t size() const { return size_; }
  // `count` bytes at `offset`, which the caller has checked lie inside the file.
  std::string Read(uint64_t offset, uint64_t count) {
    std::string out(count, '\0');
    in_.seekg(static_cast<std::streamoff>(offset));
    in_.read(out.data(), static_cast<std::streamsize>(count));
    if (!in_) throw Error(ErrorKind::kIo, "cannot read " + path_ + " at byte " + std::to_string(offset));
    return out;
  }

 private:
  std::string path_;
  std::ifstream in_;
  uint64_t size_ = 0;
};

}  // namespace

ZipDirectory ReadZipDirectory(const std::string& path) {
  File file(path);
  const uint64_t size = file.size();
  ZipDirectory dir;
  auto fail = [&](const std::string& why) {
    dir.problem = why;
    dir.names.clear();
    return dir;
  };
  if (size < kEndSize) return fail("shorter than a zip archive's end record (a truncated file?)");

  // The end record is the last 22 bytes plus a comment of at most 64 KiB: the last
  // signature whose comment ends exactly at the end of the file.
  const uint64_t tail_size = std::min<uint64_t>(size, kEndSize + kMaxComment);
  const std::string tail = file.Read(size - tail_size, tail_size);
  int64_t at = -1;
  for (int64_t i = static_cast<int64_t>(tail_size - kEndSize); i >= 0; --i) {
    const char* p = tail.data() + i;
    if (Le(p, 4) == kEndSignature && static_cast<uint64_t>(i) + kEndSize + Le(p + 20, 2) == tail_size) {
      at = i;
      break;
    }
  }
  if (at < 0) return fail("no end of central directory record (a truncated file?)");
  const char* end = tail.data() + at;
  const uint64_t end_offset = size - tail_size + static_cast<uint64_t>(at);
  if (Le(end + 4, 2) != 0 || Le(end + 6, 2) != 0) return fail("a multi-part zip archive");
  uint64_t entries = Le(end + 10, 2), cd_size = Le(end + 12, 4), cd_offset = Le(end + 16, 4);

  // zip64: a locator just before the end record points at the zip64 end record, whose
  // 64-bit counts replace the saturated 16/32-bit ones.
  if (end_offset >= kZip64LocatorSize) {
    const std::string locator = file.Read(end_offset - kZip64LocatorSize, kZip64LocatorSize);
    if (Le(locator.data(), 4) == kZip64LocatorSignature) {
      const uint64_t z64 = Le(locator.data() + 8, 8);
      if (z64 > end_offset - kZip64LocatorSize || end_offset - kZip64LocatorSize - z64 < kZip64EndSize) {
        return fail("the zip64 end record lies outside the file");
      }
      const std::string record = file.Read(z64, kZip64EndSize);
      if (Le(record.data(), 4) != kZip64EndSignature) return fail("a broken zip64 end record");
      entries = Le(record.data() + 32, 8);
      cd_size = Le(record.data() + 40, 8);
      cd_offset = Le(record.data() + 48, 8);
    }
  }
  if (cd_offset > end_offset || cd_size > end_offset - cd_offset) {
    return fail("the central directory lies outside the file");
  }
  if (entries > cd_size / kCentralSize) {
    return fail("the central directory declares " + std::to_string(entries) + " records in " +
                std::to_string(cd_size) + " bytes");
  }

  const std::string cd = file.Read(cd_offset, cd_size);
  dir.names.reserve(entries);
  uint64_t pos = 0;
  for (uint64_t k = 0; k < entries; ++k) {
    if (cd_size - pos < kCentralSize || Le(cd.data() + pos, 4) != kCentralSignature) {
      return fail("central directory record " + std::to_string(k) + " is broken");
    }
    const char* h = cd.data() + pos;
    const uint64_t name = Le(h + 28, 2), extra = Le(h + 30, 2), comment = Le(h + 32, 2);
    if (cd_size - pos - kCentralSize < name + extra + comment) {
      return fail("central directory record " + std::to_string(k) + " runs past the directory");
    }
    dir.names.emplace_back(h + kCentralSize, name);
    pos += kCentralSize + name + extra + comment;
  }
  return dir;
}

}  // namespace compress
