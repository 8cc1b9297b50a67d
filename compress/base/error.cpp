// Names and exit codes of error kinds.
#include "compress/base/error.h"

namespace compress {

const char* ErrorKindName(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kUsage: return "usage error";
    case ErrorKind::kRecipe: return "recipe error";
    case ErrorKind::kIo: return "i/o error";
    case ErrorKind::kUnsupported: return "not supported";
    case ErrorKind::kNumeric: return "numeric error";
    case ErrorKind::kDistributed: return "distributed error";
    case ErrorKind::kInternal: return "internal error";
  }
  return "error";
}

int ExitCodeFor(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::kUsage:
    case ErrorKind::kRecipe:
      return 2;
    default:
      return 1;
  }
}

}  // namespace compress
