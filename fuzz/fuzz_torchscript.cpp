// libFuzzer target: the TorchScript importer's front door (size limit, zip magic, the
// archive's directory read by LibTorch's PyTorchStreamReader, the records a TorchScript
// file must hold). What lies behind it, torch::jit::load, runs the file's code: a
// TorchScript file is a program (docs/security.md), not fuzzed here.
#include <cstdint>
#include <string>

#include "compress/io/torchscript_import.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = compress::fuzz::ScratchFile("model.pt", data, size);
  return compress::fuzz::Expect([&] { compress::CheckTorchScriptFile(path); });
}
