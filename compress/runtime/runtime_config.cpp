// Thread and device configuration, version string.
#include "compress/runtime/runtime_config.h"

#include <dlfcn.h>
#include <torch/torch.h>

#include <cstdlib>
#include <thread>

#include "compress/base/error.h"

#ifndef MCOMPRESS_VERSION
#define MCOMPRESS_VERSION "0.0.0"
#endif

namespace compress {

namespace {

// OpenBLAS's thread-count entry points, looked up in the process (LibTorch links the
// system BLAS; OpenBLAS exports these, other BLAS libraries do not), so nothing here
// links against OpenBLAS and a LibTorch on MKL or a GPU build is left alone.
using SetThreadsFn = void (*)(int);
using GetThreadsFn = int (*)();

SetThreadsFn OpenBlasSetThreads() {
  return reinterpret_cast<SetThreadsFn>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
}
GetThreadsFn OpenBlasGetThreads() {
  return reinterpret_cast<GetThreadsFn>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
}

}  // namespace

int ConfigureThreads(int threads) {
  if (threads <= 0) {
    threads = static_cast<int>(std::thread::hardware_concurrency());
    if (threads <= 0) threads = 1;
  }
  torch::set_num_threads(threads);
  // One thread pool. OpenBLAS (pthread build, Debian's default) starts its own workers
  // beside LibTorch's OpenMP threads; every GEMM then has both pools spinning on the
  // same cores. Measured on 2 cores (bench/RESULTS.md "One thread pool"): a lenet5
  // training epoch 2.2x and an mlp-300-100 epoch 3.5x faster with OpenBLAS on the
  // calling thread. LibTorch's intra-op threads still parallelise everything around the
  // GEMMs (convolutions run in oneDNN on the same OpenMP pool). A user's explicit
  // OPENBLAS_NUM_THREADS wins.
  if (std::getenv("OPENBLAS_NUM_THREADS") == nullptr) {
    if (SetThreadsFn set = OpenBlasSetThreads()) set(1);
  }
  return threads;
}

std::string BlasThreading() {
  GetThreadsFn get = OpenBlasGetThreads();
  if (get == nullptr) return "BLAS threads: not OpenBLAS (left as the library sets them)";
  const int n = get();
  return "BLAS threads: OpenBLAS " + std::to_string(n) +
         (std::getenv("OPENBLAS_NUM_THREADS") != nullptr ? " (OPENBLAS_NUM_THREADS)"
                                                         : " (pinned: one thread pool)");
}

bool BlasOnCallingThread() {
  static const GetThreadsFn get = OpenBlasGetThreads();
  return get != nullptr && get() == 1;
}

bool IsDeviceSpec(const std::string& spec) {
  return spec == "auto" || spec == "cpu" || spec == "cuda" ||
         (spec.rfind("cuda:", 0) == 0 && spec.size() > 5 &&
          spec.find_first_not_of("0123456789", 5) == std::string::npos);
}

// CMake sets MCOMPRESS_TORCH_CUDA to whether the LibTorch it found was built with CUDA
// (its TorchConfig fills TORCH_CUDA_LIBRARIES only then); the public API cannot tell a
// CPU-only build from a CUDA build on a machine without a GPU.
#ifndef MCOMPRESS_TORCH_CUDA
#define MCOMPRESS_TORCH_CUDA 0
#endif

bool TorchBuildHasCuda() { return MCOMPRESS_TORCH_CUDA != 0; }

std::string DeviceProblem(const std::string& spec) {
  if (!IsDeviceSpec(spec)) {
    return "unknown device \"" + spec + "\"; expected auto, cpu, cuda or cuda:N";
  }
  if (spec == "auto" || spec == "cpu") return "";
  if (!torch::cuda::is_available()) {
    const std::string why =
        TorchBuildHasCuda()
            ? "this LibTorch build has CUDA but sees no CUDA device (no GPU or driver, or "
              "CUDA_VISIBLE_DEVICES hides them; torch::cuda::is_available() is false)"
            : "this LibTorch build has no CUDA support (torch::cuda::is_available() is false)";
    return "\"" + spec + "\" requested but " + why + "; expected \"cpu\" or \"auto\"";
  }
  // "cuda:N": N read here, not by c10::Device, which narrows it to an 8-bit index.
  const int64_t count = static_cast<int64_t>(torch::cuda::device_count());
  const std::string digits = spec.size() > 5 ? spec.substr(5) : "";
  if (!digits.empty() && (digits.size() > 9 || std::stoll(digits) >= count)) {
    return "\"" + spec + "\" requested but this machine has " + std::to_string(count) +
           (count == 1 ? " CUDA device" : " CUDA devices") + "; expected \"cpu\", \"auto\", " +
           "\"cuda\" or \"cuda:N\" with N < " + std::to_string(count);
  }
  return "";
}

c10::Device ResolveDevice(const std::string& spec) {
  const std::string problem = DeviceProblem(spec);
  if (!problem.empty()) throw Error(ErrorKind::kUsage, "device: " + problem);
  if (spec == "auto") {
    return torch::cuda::is_available() ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
  }
  if (spec == "cpu") return c10::Device(c10::kCPU);
  return c10::Device(spec);
}

std::string VersionString() {
  return std::string("mcompress ") + MCOMPRESS_VERSION + " (LibTorch " + TORCH_VERSION +
         ", ONNX export opset 13)";
}

}  // namespace compress
