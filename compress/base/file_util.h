// Writing files so that readers never see a partial one; private temporary folders.
#pragma once

#include <filesystem>
#include <string>

namespace compress {

// Writes `content` to `<path>.tmp-<pid>`, flushes it to disk and renames it over
// `path`; the temporary is removed on any failure. Throws compress::Error(kIo)
// "<path>: cannot write: <reason>".
void WriteFileAtomic(const std::string& path, const std::string& content);

// A private folder `<prefix>-XXXXXX` under $TMPDIR (mode 0700), removed with everything
// in it on destruction. Throws compress::Error(kIo) when it cannot be created.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix);
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace compress
