// The 2x2 max-pool kernel (compress/runtime/max_pool.h) against LibTorch's
// max_pool2d_with_indices and its backward, bit for bit: ties, NaN (one or several per
// window), infinities and signed zeros, strided input, one and two threads.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <limits>

#include "compress/runtime/max_pool.h"

namespace compress {
namespace {

// Random values on a coarse grid (many ties), with NaN, +-inf and -0.0 sprinkled in.
torch::Tensor Awkward(std::vector<int64_t> shape) {
  torch::Tensor x = torch::randint(-3, 4, shape).to(torch::kFloat);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  auto flat = x.view(-1);
  const int64_t n = flat.numel();
  for (int64_t i = 0; i < n; i += 11) flat[i] = nan;
  for (int64_t i = 5; i < n; i += 13) flat[i] = -inf;
  for (int64_t i = 7; i < n; i += 17) flat[i] = inf;
  for (int64_t i = 2; i < n; i += 9) flat[i] = -0.0f;
  for (int64_t i = 1; i < n; i += 37) flat[i] = -nan;  // another NaN bit pattern
  return x;
}

bool SameBits(const torch::Tensor& a, const torch::Tensor& b) {
  return a.sizes() == b.sizes() &&
         a.contiguous().view(torch::kInt).equal(b.contiguous().view(torch::kInt));
}

TEST(MaxPool2x2, ValuesAndGradientsAreLibTorchsBitForBit) {
  const int saved = torch::get_num_threads();
  torch::manual_seed(0);
  for (int threads : {1, 2}) {
    torch::set_num_threads(threads);
    // lenet5's pools (rows of 14 and 5 outputs), a wide row, a one-window plane, and a
    // strided (channel-sliced) input.
    const torch::Tensor big = Awkward({4, 6, 8, 64});
    for (const torch::Tensor& x0 : {Awkward({16, 6, 28, 28}), Awkward({16, 16, 10, 10}),
                                    big, Awkward({3, 2, 2, 2}),
                                    big.slice(1, 1, 5)}) {
      ASSERT_TRUE(MaxPool2x2Applies(x0));
      const torch::Tensor x = x0.detach().requires_grad_(true);
      const torch::Tensor ref_x = x0.detach().requires_grad_(true);
      const torch::Tensor y = MaxPool2x2(x);
      const torch::Tensor ref_y = std::get<0>(at::max_pool2d_with_indices(ref_x, {2, 2}, {2, 2}));
      EXPECT_TRUE(SameBits(y, ref_y)) << x0.sizes() << " threads " << threads;
      const torch::Tensor g = torch::randn(y.sizes());
      y.backward(g);
      ref_y.backward(g);
      EXPECT_TRUE(SameBits(x.grad(), ref_x.grad())) << x0.sizes() << " threads " << threads;
      torch::NoGradGuard no_grad;  // the inference path (no winners kept): same values
      EXPECT_TRUE(SameBits(MaxPool2x2(x0), ref_y)) << x0.sizes();
    }
  }
  torch::set_num_threads(saved);
}

TEST(MaxPool2x2, AppliesOnlyToEvenCpuFloatPlanes) {
  EXPECT_FALSE(MaxPool2x2Applies(torch::zeros({1, 1, 3, 4})));
  EXPECT_FALSE(MaxPool2x2Applies(torch::zeros({1, 1, 4, 0})));
  EXPECT_FALSE(MaxPool2x2Applies(torch::zeros({1, 1, 4, 4}, torch::kDouble)));
  EXPECT_FALSE(MaxPool2x2Applies(torch::zeros({1, 4, 4})));
  EXPECT_TRUE(MaxPool2x2Applies(torch::zeros({1, 1, 4, 6})));
}

}  // namespace
}  // namespace compress
