// Thread and device configuration, version string.
#include "compress/runtime/runtime_config.h"

#include <dlfcn.h>
#include <torch/torch.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <cstdlib>
#include <cstring>
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

// Whether the user set glibc malloc's thresholds themselves (their setting wins).
bool MallocTunedByUser() {
  for (const char* v : {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_"}) {
    if (std::getenv(v) != nullptr) return true;
  }
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  return tunables != nullptr && std::strstr(tunables, "glibc.malloc.") != nullptr;
}

// glibc malloc's thresholds ConfigureThreads sets (bytes): blocks up to kMmapThreshold
// come from the heap, and freed heap memory up to kTrimThreshold stays in the process.
constexpr int kMmapThreshold = 32 << 20;  // glibc's largest (HEAP_MAX_SIZE / 2 on 64-bit)
constexpr int kTrimThreshold = 512 << 20;

// Set once: 1 = set here, 0 = left as it was (user's setting, or not glibc).
int ConfigureMalloc() {
#if defined(__GLIBC__)
  if (MallocTunedByUser()) return 0;
  // Each training step allocates its activations afresh (a convnet's are 1-13 MB each).
  // By default glibc maps blocks above its threshold with mmap and unmaps them on free,
  // and trims freed heap memory, so every step page-faults its activations in again:
  // the elementwise ops (BatchNorm, ReLU and their backward) ran 2-4x slower than their
  // arithmetic. Keeping freed memory for reuse: a convnet epoch 3.87 -> 1.82 s (10k
  // images, bench/RESULTS.md "Every core, no page faults"). Peak RSS is the live peak
  // plus what the heap keeps; a block above 32 MiB (a loaded dataset) is mapped apart.
  const bool ok = mallopt(M_MMAP_THRESHOLD, kMmapThreshold) == 1 &&
                  mallopt(M_TRIM_THRESHOLD, kTrimThreshold) == 1;
  return ok ? 1 : 0;
#else
  return 0;
#endif
}

int MallocConfigured() {
  static const int configured = ConfigureMalloc();
  return configured;
}

}  // namespace

int ConfigureThreads(int threads) {
  MallocConfigured();
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

std::string MallocSetting() {
  if (MallocConfigured() == 1) {
    return "malloc: freed memory kept for reuse (glibc: mmap above " +
           std::to_string(kMmapThreshold >> 20) + " MiB, trim above " +
           std::to_string(kTrimThreshold >> 20) + " MiB)";
  }
#if defined(__GLIBC__)
  if (MallocTunedByUser()) return "malloc: glibc, as MALLOC_*/GLIBC_TUNABLES set it";
#endif
  return "malloc: as the C library sets it";
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
