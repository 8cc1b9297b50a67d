// libFuzzer target: the ONNX importer (protobuf parse, tensors, attributes, sparse
// initializers, value infos, graph validation and limits) on arbitrary bytes.
#include <cstdint>
#include <string>

#include "compress/base/limits.h"
#include "compress/io/onnx_io.h"
#include "fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Declared sizes up to 2^24 elements, so that a mutated dim allocates at most 64 MB.
  compress::Limits limits;
  limits.max_tensor_elements = int64_t{1} << 24;
  compress::SetLimits(limits);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  return compress::fuzz::Expect([&] { compress::ParseOnnx(bytes, "fuzz.onnx"); });
}
