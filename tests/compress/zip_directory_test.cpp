// The zip central directory reader of the TorchScript front door, against LibTorch's own
// writer and reader and against archives built byte by byte (PKWARE APPNOTE.TXT 6.3).
#include "compress/io/zip_directory.h"

#include <caffe2/serialize/inline_container.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "compress/io/torchscript_import.h"
#include "tests/cli_util.h"
#include "tests/file_bytes.h"  // zlib, for the records' CRC-32
#include "tests/test_util.h"

namespace compress {
namespace {

namespace fs = std::filesystem;

void Put(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t Le32(const std::string& s, size_t at) {
  uint64_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(s[at + i]);
  return v;
}

uint32_t Crc32(const std::string& data) {
  return static_cast<uint32_t>(
      crc32(crc32(0, nullptr, 0), reinterpret_cast<const Bytef*>(data.data()), static_cast<uInt>(data.size())));
}

// A zip archive of stored (uncompressed) records, written by hand; with `zip64`, the end
// of the directory is a zip64 end record and locator, and the classic end record's
// counts are saturated (0xffff, 0xffffffff) as a zip64 writer leaves them.
std::string HandZip(const std::vector<std::pair<std::string, std::string>>& records, bool zip64,
                    const std::string& comment = "") {
  std::string out, cd;
  for (const auto& [name, data] : records) {
    const uint64_t offset = out.size();
    Put(out, 0x04034b50, 4);
    Put(out, 20, 2);  // version needed
    Put(out, 0, 2);   // flags
    Put(out, 0, 2);   // stored
    Put(out, 0, 4);   // time, date
    Put(out, Crc32(data), 4);
    Put(out, data.size(), 4);
    Put(out, data.size(), 4);
    Put(out, name.size(), 2);
    Put(out, 0, 2);
    out += name + data;

    Put(cd, 0x02014b50, 4);
    Put(cd, 20, 2);
    Put(cd, 20, 2);
    Put(cd, 0, 2);
    Put(cd, 0, 2);
    Put(cd, 0, 4);  // time, date
    Put(cd, Crc32(data), 4);
    Put(cd, data.size(), 4);
    Put(cd, data.size(), 4);
    Put(cd, name.size(), 2);
    Put(cd, 0, 2);  // extra
    Put(cd, 0, 2);  // comment
    Put(cd, 0, 2);  // disk
    Put(cd, 0, 2);  // internal attributes
    Put(cd, 0, 4);  // external attributes
    Put(cd, offset, 4);
    cd += name;
  }
  const uint64_t cd_offset = out.size();
  out += cd;
  if (zip64) {
    const uint64_t z64 = out.size();
    Put(out, 0x06064b50, 4);
    Put(out, 44, 8);  // size of the rest of the record
    Put(out, 45, 2);
    Put(out, 45, 2);
    Put(out, 0, 4);
    Put(out, 0, 4);
    Put(out, records.size(), 8);
    Put(out, records.size(), 8);
    Put(out, cd.size(), 8);
    Put(out, cd_offset, 8);
    Put(out, 0x07064b50, 4);
    Put(out, 0, 4);
    Put(out, z64, 8);
    Put(out, 1, 4);
  }
  Put(out, 0x06054b50, 4);
  Put(out, 0, 2);
  Put(out, 0, 2);
  Put(out, zip64 ? 0xffff : records.size(), 2);
  Put(out, zip64 ? 0xffff : records.size(), 2);
  Put(out, zip64 ? 0xffffffff : cd.size(), 4);
  Put(out, zip64 ? 0xffffffff : cd_offset, 4);
  Put(out, comment.size(), 2);
  return out + comment;
}

fs::path WriteFile(const fs::path& dir, const std::string& name, const std::string& bytes) {
  const fs::path p = dir / name;
  std::ofstream(p, std::ios::binary) << bytes;
  return p;
}

std::string ReadBytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

const std::vector<std::pair<std::string, std::string>> kRecords = {
    {"m/data.pkl", "pickle"}, {"m/code/__torch__.py", "def forward(self): pass"}, {"m/version", "3\n"}};
const std::vector<std::string> kNames = {"m/data.pkl", "m/code/__torch__.py", "m/version"};

TEST(ZipDirectory, ReadsWhatLibTorchWrites) {
  const fs::path dir = cli_test::TempDir("zipdir", "libtorch");
  const fs::path p = dir / "m.pt";
  {
    caffe2::serialize::PyTorchStreamWriter writer(p.string());
    writer.writeRecord("data.pkl", "abc", 3);
    writer.writeRecord("code/__torch__/m.py", "x", 1);
    writer.writeEndOfFile();
  }
  const ZipDirectory d = ReadZipDirectory(p.string());
  ASSERT_EQ(d.problem, "");
  // LibTorch's reader strips the folder; the names are the same records.
  caffe2::serialize::PyTorchStreamReader reader(p.string());
  std::vector<std::string> stripped;
  for (const auto& n : d.names) {
    ASSERT_EQ(n.rfind("m/", 0), 0u) << n;
    stripped.push_back(n.substr(2));
  }
  auto theirs = reader.getAllRecords();
  std::sort(theirs.begin(), theirs.end());
  std::sort(stripped.begin(), stripped.end());
  EXPECT_EQ(stripped, theirs);
  EXPECT_NE(std::find(stripped.begin(), stripped.end(), "version"), stripped.end());
  fs::remove_all(dir);
}

TEST(ZipDirectory, ClassicZip64AndCommentedArchives) {
  const fs::path dir = cli_test::TempDir("zipdir", "forms");
  for (const bool zip64 : {false, true}) {
    for (const std::string comment : {"", "a comment with PK\x05\x06 inside"}) {
      const std::string bytes = HandZip(kRecords, zip64, comment);
      const ZipDirectory d = ReadZipDirectory(WriteFile(dir, "a.zip", bytes).string());
      EXPECT_EQ(d.problem, "") << "zip64 " << zip64 << " comment '" << comment << "'";
      EXPECT_EQ(d.names, kNames) << "zip64 " << zip64 << " comment '" << comment << "'";
      // LibTorch's reader (miniz) agrees on the archive as written by hand.
      caffe2::serialize::PyTorchStreamReader reader(WriteFile(dir, "a.zip", bytes).string());
      EXPECT_TRUE(reader.hasRecord("data.pkl"));
    }
  }
  fs::remove_all(dir);
}

TEST(ZipDirectory, BrokenArchivesNameTheirProblem) {
  const fs::path dir = cli_test::TempDir("zipdir", "broken");
  const std::string good = HandZip(kRecords, false);
  const std::string good64 = HandZip(kRecords, true);
  auto problem = [&](const std::string& bytes) {
    return ReadZipDirectory(WriteFile(dir, "b.zip", bytes).string()).problem;
  };
  EXPECT_EQ(problem(""), "shorter than a zip archive's end record (a truncated file?)");
  EXPECT_EQ(problem(good.substr(0, good.size() / 2)),
            "no end of central directory record (a truncated file?)");
  // One byte of a declared comment missing: the end record does not end the file.
  const std::string commented = HandZip(kRecords, false, "c");
  EXPECT_EQ(problem(commented.substr(0, commented.size() - 1)),
            "no end of central directory record (a truncated file?)");

  const size_t end = good.size() - 22;
  auto patched = [&](std::string bytes, size_t at, uint64_t v, int n) {
    for (int i = 0; i < n; ++i) bytes[at + i] = static_cast<char>((v >> (8 * i)) & 0xff);
    return bytes;
  };
  EXPECT_EQ(problem(patched(good, end + 4, 1, 2)), "a multi-part zip archive");
  EXPECT_EQ(problem(patched(good, end + 16, 0xfffffff0, 4)), "the central directory lies outside the file");
  EXPECT_EQ(problem(patched(good, end + 12, 0xfffffff0, 4)), "the central directory lies outside the file");
  EXPECT_EQ(problem(patched(good, end + 10, 60000, 2)),
            "the central directory declares 60000 records in " +
                std::to_string(Le32(good, end + 12)) + " bytes");
  // The first central record's signature broken; its name length past the directory.
  const size_t cd = Le32(good, end + 16);
  EXPECT_EQ(problem(patched(good, cd, 0, 1)), "central directory record 0 is broken");
  EXPECT_EQ(problem(patched(good, cd + 28, 0xffff, 2)), "central directory record 0 runs past the directory");

  // zip64: the locator pointing past the file; the zip64 record's signature broken.
  const size_t locator = good64.size() - 22 - 20;
  EXPECT_EQ(problem(patched(good64, locator + 8, 1ull << 40, 8)), "the zip64 end record lies outside the file");
  EXPECT_EQ(problem(patched(good64, locator - 56, 0, 1)), "a broken zip64 end record");
  fs::remove_all(dir);
}

// The TorchScript front door on archives whose directory is sound but whose records are
// not what torch.jit.save writes: each refused by name before LibTorch's reader sees it.
TEST(ZipDirectory, TorchScriptFrontDoorChecksTheRecords) {
  const fs::path dir = cli_test::TempDir("zipdir", "door");
  auto check = [&](const std::vector<std::pair<std::string, std::string>>& records) {
    const std::string path = WriteFile(dir, "m.pt", HandZip(records, true)).string();
    return [path] { CheckTorchScriptFile(path); };
  };
  CheckTorchScriptFile(WriteFile(dir, "ok.pt", HandZip(kRecords, true)).string());  // passes
  const std::string empty = WriteFile(dir, "empty.pt", HandZip({}, false)).string();
  testing_util::ExpectError([&] { CheckTorchScriptFile(empty); }, ErrorKind::kIo,
                            "empty.pt: not a TorchScript file (an empty zip archive)");
  testing_util::ExpectError(check({{"data.pkl", "p"}, {"m/code/x.py", "c"}, {"m/version", "3"}}),
                            ErrorKind::kIo, "(a zip archive whose records are not in a folder");
  // Records outside the first record's folder do not count.
  testing_util::ExpectError(check({{"m/code/x.py", "c"}, {"n/data.pkl", "p"}, {"m/version", "3"}}),
                            ErrorKind::kIo, "(a zip archive without data.pkl)");
  testing_util::ExpectError(check({{"m/data.pkl", "p"}, {"m/version", "3"}}), ErrorKind::kIo,
                            "(written by torch.save: it has no code/)");
  testing_util::ExpectError(check({{"m/data.pkl", "p"}, {"m/code/x.py", "c"}}), ErrorKind::kIo,
                            "(a zip archive without the version record torch.jit.save writes)");
  // Newer torch.jit.save writes the version as .data/version: accepted.
  check({{"m/data.pkl", "p"}, {"m/code/x.py", "c"}, {"m/.data/version", "3"}})();
  fs::remove_all(dir);
}

}  // namespace
}  // namespace compress
