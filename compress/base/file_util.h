// Writing files so that readers never see a partial one.
#pragma once

#include <string>

namespace compress {

// Writes `content` to `<path>.tmp-<pid>`, flushes it to disk and renames it over
// `path`; the temporary is removed on any failure. Throws compress::Error(kIo)
// "<path>: cannot write: <reason>".
void WriteFileAtomic(const std::string& path, const std::string& content);

}  // namespace compress
