// libFuzzer target: the IDX reader (gzip or plain, header, payload, labels). The input
// is split in two at its first byte's share: images file, then labels file.
#include <cstdint>
#include <string>

#include "compress/data/data.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const size_t rest = size - 1;
  const size_t split = rest * data[0] / 255;
  const std::string images = compress::fuzz::ScratchFile("images.idx", data + 1, split);
  const std::string labels = compress::fuzz::ScratchFile("labels.idx", data + 1 + split, rest - split);
  return compress::fuzz::Expect([&] { compress::ReadIdxPair(images, labels, true, 256); });
}
