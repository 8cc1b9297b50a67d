// The one exception type of mcompress: a kind (which maps to a CLI exit code) and a
// message that already names what was expected, what was found and where.
#pragma once

#include <stdexcept>
#include <string>

namespace compress {

enum class ErrorKind {
  kUsage,        // bad command line
  kRecipe,       // malformed recipe or options
  kIo,           // unreadable/unwritable/corrupt file
  kUnsupported,  // an op, format or feature we do not implement
  kNumeric,      // NaN/Inf or a numeric check that failed
  kDistributed,  // a peer rank failed, exited or timed out; the rendezvous failed
  kInternal,     // a bug in mcompress
};

const char* ErrorKindName(ErrorKind kind);

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message)
      : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

// CLI exit code for an error kind (DESIGN.md: 1 failure, 2 bad usage or recipe).
int ExitCodeFor(ErrorKind kind);

}  // namespace compress
