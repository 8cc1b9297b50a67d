// libFuzzer target: the recipe reader (JSON with comments, every key's validation, the
// passes' option readers) on arbitrary bytes, through the file path the CLI uses.
#include <cstdint>
#include <string>

#include "compress/engine/recipe.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = compress::fuzz::ScratchFile("recipe.json", data, size);
  return compress::fuzz::Expect([&] { compress::LoadRecipe(path); });
}
