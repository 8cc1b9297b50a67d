// Internal to compress/io: not part of the public API, include it only from files in
// this folder (it is installed only because every header under compress/ is). The
// TorchScript helper methods (`_mc_*`) that exported modules call.
#pragma once

#include <vector>

namespace compress::torchscript_detail {

// One TorchScript method mirroring a part of ops.cpp that depends on input sizes, so it
// is evaluated at run time. `deps` are the helpers its source calls; the exporter emits
// a helper only when used, with its dependencies.
struct HelperSource {
  const char* name;
  std::vector<const char*> deps;
  const char* source;
};

// Every helper, in the order their sources are emitted. Names start with `_mc_`.
const std::vector<HelperSource>& Helpers();

}  // namespace compress::torchscript_detail
