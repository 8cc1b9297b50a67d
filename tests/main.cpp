// The test binary's main: prints the CPU features INT8 results depend on (they differ
// between machines, and a failing INT8 test log must say which kernels ran), then runs
// GoogleTest. BLAS threads are pinned as a run pins them (ConfigureThreads), LibTorch's
// thread count left as it is.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>

#include "compress/runtime/cpu_info.h"
#include "compress/runtime/runtime_config.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  std::printf("%s\n", compress::CpuInt8Summary().c_str());
  const int threads = compress::ConfigureThreads(torch::get_num_threads());
  std::printf("threads: LibTorch %d; %s; %s\n", threads, compress::BlasThreading().c_str(),
              compress::MallocSetting().c_str());
  return RUN_ALL_TESTS();
}
