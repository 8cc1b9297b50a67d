// The record names of a zip archive, read from its central directory alone: no record is
// read or inflated. The TorchScript front door (CheckTorchScriptFile) uses it so that a
// file reaches LibTorch's loader only when its directory is well-formed and holds what
// torch.jit.save writes (docs/security.md).
#pragma once

#include <string>
#include <vector>

namespace compress {

struct ZipDirectory {
  // Empty when the directory was read; else why not ("no end of central directory
  // record (a truncated file?)", "the central directory lies outside the file", ...).
  std::string problem;
  std::vector<std::string> names;  // in central directory order
};

// Reads the directory of the zip archive at `path` (PKWARE APPNOTE.TXT 6.3: end of
// central directory record 4.3.16, its zip64 form 4.3.14-4.3.15, central directory file
// headers 4.3.12). Every offset and count is checked against the file's size before it
// is used. Throws Error(kIo) only when the file cannot be read at all.
ZipDirectory ReadZipDirectory(const std::string& path);

}  // namespace compress
