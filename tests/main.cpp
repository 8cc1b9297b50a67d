// The test binary's main: prints the CPU features INT8 results depend on (they differ
// between machines, and a failing INT8 test log must say which kernels ran), then runs
// GoogleTest.
#include <gtest/gtest.h>

#include <cstdio>

#include "compress/runtime/cpu_info.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  std::printf("%s\n", compress::CpuInt8Summary().c_str());
  return RUN_ALL_TESTS();
}
