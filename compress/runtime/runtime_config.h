// Process-wide runtime settings: LibTorch thread count and device selection.
#pragma once

#include <c10/core/Device.h>

#include <string>

namespace compress {

// Sets LibTorch's intra-op threads; threads <= 0 means all hardware threads
// (LibTorch picks 1 on some machines otherwise). Returns the number set. Also pins
// OpenBLAS, when LibTorch uses it, to the calling thread so that only LibTorch's pool
// runs (unless OPENBLAS_NUM_THREADS is set): two pools on the same cores cost 1.5-3.5x
// per training epoch here. This changes float summation order in GEMMs against an
// unpinned process (results equal to rounding, not bit for bit). The first call also
// has glibc malloc keep freed memory for reuse (unless MALLOC_* or GLIBC_TUNABLES
// malloc settings are set): without it every training step page-faults its activations
// in again (a convnet epoch 2.1x slower). Numbers do not change.
int ConfigureThreads(int threads);

// "malloc: freed memory kept for reuse (...)" or why not: for logs and `cpu`.
std::string MallocSetting();

// "BLAS threads: OpenBLAS 1 (pinned: one thread pool)" or why not: for logs and `cpu`.
std::string BlasThreading();

// Whether LibTorch's BLAS is OpenBLAS running each call on the calling thread (pinned by
// ConfigureThreads or OPENBLAS_NUM_THREADS=1), so that splitting a GEMM over LibTorch's
// threads uses idle cores rather than competing with BLAS's own pool. False for any
// other BLAS (MKL threads itself on LibTorch's OpenMP pool).
bool BlasOnCallingThread();

// The device grammar: "auto", "cpu", "cuda" or "cuda:N" (N digits). Checks spelling
// only, not availability.
bool IsDeviceSpec(const std::string& spec);

// Whether the LibTorch this library was built against has CUDA (what its CMake config
// said at configure time; MCOMPRESS_CUDA=ON requires it). Says nothing about a GPU
// being present: torch::cuda::is_available() does.
bool TorchBuildHasCuda();

// Why `spec` cannot be used with this LibTorch build on this machine, as one line that
// says what was requested, what was found and what is expected (no "device: " prefix;
// the caller says where); empty when ResolveDevice(spec) succeeds. Recipe validation
// and ResolveDevice (hence every --device flag) report the same words.
std::string DeviceProblem(const std::string& spec);

// "auto" (CUDA device 0 when available, else CPU), "cpu", "cuda", "cuda:N".
// Throws compress::Error (kUsage) with DeviceProblem's line, prefixed "device: ", for
// anything else or an unavailable CUDA device.
c10::Device ResolveDevice(const std::string& spec);

// "mcompress 0.1.0 (LibTorch 1.13.1, ONNX opset 13)"-style version line.
std::string VersionString();

}  // namespace compress
