// ctest's gpu_device_tests: runs the command it is given (the test binary filtered to
// the Device.* tests) with MCOMPRESS_TEST_DEVICE=cuda when LibTorch sees a CUDA device;
// otherwise prints why and exits with kSkip, which ctest's SKIP_RETURN_CODE reports as
// a skipped test, never as a pass. A GPU is not something `make test` can install.
#include <torch/cuda.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {
constexpr int kSkip = 77;  // SKIP_RETURN_CODE in tests/CMakeLists.txt
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: gpu_device_tests COMMAND [ARGS...]\n");
    return 2;
  }
  if (!torch::cuda::is_available()) {
    std::printf("no CUDA device: gpu_device_tests skipped (torch::cuda::is_available() is "
                "false; build against a CUDA LibTorch on a machine with a GPU, docs/gpu.md)\n");
    return kSkip;
  }
  std::printf("%zu CUDA device(s): running the device tests with MCOMPRESS_TEST_DEVICE=cuda\n",
              torch::cuda::device_count());
  std::fflush(stdout);
  ::setenv("MCOMPRESS_TEST_DEVICE", "cuda", 1);
  ::execv(argv[1], argv + 1);
  std::fprintf(stderr, "gpu_device_tests: cannot run %s: %s\n", argv[1], std::strerror(errno));
  return 1;
}
