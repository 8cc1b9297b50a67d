// Thread and device configuration, version string.
#include "compress/runtime/runtime_config.h"

#include <torch/torch.h>

#include <thread>

#include "compress/base/error.h"

#ifndef MCOMPRESS_VERSION
#define MCOMPRESS_VERSION "0.0.0"
#endif

namespace compress {

int ConfigureThreads(int threads) {
  if (threads <= 0) {
    threads = static_cast<int>(std::thread::hardware_concurrency());
    if (threads <= 0) threads = 1;
  }
  torch::set_num_threads(threads);
  return threads;
}

bool IsDeviceSpec(const std::string& spec) {
  return spec == "auto" || spec == "cpu" || spec == "cuda" ||
         (spec.rfind("cuda:", 0) == 0 && spec.size() > 5 &&
          spec.find_first_not_of("0123456789", 5) == std::string::npos);
}

c10::Device ResolveDevice(const std::string& spec) {
  if (!IsDeviceSpec(spec)) {
    throw Error(ErrorKind::kUsage, "device '" + spec + "': expected auto, cpu, cuda or cuda:N");
  }
  if (spec == "auto") {
    return torch::cuda::is_available() ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
  }
  if (spec == "cpu") return c10::Device(c10::kCPU);
  const c10::Device device(spec);  // "cuda" or "cuda:N": the grammar is checked above
  if (!torch::cuda::is_available()) {
    throw Error(ErrorKind::kUsage, "device '" + spec + "' requested but this LibTorch "
                                   "build or machine has no CUDA device");
  }
  if (device.has_index() && device.index() >= static_cast<int>(torch::cuda::device_count())) {
    throw Error(ErrorKind::kUsage, "device '" + spec + "': only " +
                                       std::to_string(torch::cuda::device_count()) +
                                       " CUDA devices present");
  }
  return device;
}

std::string VersionString() {
  return std::string("mcompress ") + MCOMPRESS_VERSION + " (LibTorch " + TORCH_VERSION +
         ", ONNX export opset 13)";
}

}  // namespace compress
