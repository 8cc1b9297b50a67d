// Builds a zoo model through the installed library and runs it: prints the output
// shape so the test can check the library really works from another project.
#include <ATen/ATen.h>

#include <iostream>

#include "compress/runtime/executor.h"
#include "compress/zoo/zoo.h"

int main() {
  compress::Graph g = compress::BuildZoo("lenet5");
  compress::Executor exec(g);
  at::Tensor y = exec.Run({at::zeros({3, 1, 28, 28})})[0];
  std::cout << "consumer output " << y.size(0) << "x" << y.size(1) << "\n";
  return y.size(0) == 3 && y.size(1) == 10 ? 0 : 1;
}
