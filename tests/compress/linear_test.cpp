// The sliced Linear (compress/runtime/linear.h) against at::linear: forward and every
// gradient within float rounding, the sliced path really taken for large GEMMs on two
// threads, at::linear kept for small ones, and the same bits on every run.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>

#include "compress/runtime/linear.h"
#include "compress/runtime/runtime_config.h"

namespace compress {
namespace {

// OpenBLAS blocks a GEMM's sums by its shape, so a slice of rows sums in another order
// than the whole: relative to the values' scale, differences stay at float rounding
// (~1e-6 of a 784-term sum); 1e-5 leaves a margin and catches any wrong slice.
constexpr double kRelTol = 1e-5;

// Sets LibTorch to `n` threads for one test and restores the count.
class ThreadCount {
 public:
  explicit ThreadCount(int n) : saved_(torch::get_num_threads()) { torch::set_num_threads(n); }
  ~ThreadCount() { torch::set_num_threads(saved_); }

 private:
  int saved_;
};

void ExpectClose(const torch::Tensor& got, const torch::Tensor& want, const std::string& what) {
  ASSERT_TRUE(got.defined()) << what;
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  const double scale = want.abs().max().item<double>();
  const double diff = (got - want).abs().max().item<double>();
  EXPECT_LE(diff, kRelTol * scale) << what << ": max |diff| " << diff << " at scale " << scale;
}

struct Grads {
  torch::Tensor y, gx, gw, gb;
};

// y and the gradients of sum(y * probe) w.r.t. x, w and b (when they require grad).
template <typename Fn>
Grads RunLinear(const Fn& linear, torch::Tensor x, torch::Tensor w, torch::Tensor b,
          const torch::Tensor& probe, bool x_grad, std::string* grad_fn = nullptr) {
  x = x.detach().requires_grad_(x_grad);
  w = w.detach().requires_grad_(true);
  if (b.defined()) b = b.detach().requires_grad_(true);
  Grads g;
  g.y = linear(x, w, b);
  if (grad_fn != nullptr) *grad_fn = g.y.grad_fn() ? g.y.grad_fn()->name() : "";
  (g.y * probe).sum().backward();
  if (x_grad) g.gx = x.grad();
  g.gw = w.grad();
  if (b.defined()) g.gb = b.grad();
  return g;
}

TEST(Linear, SlicedOnTwoThreadsMatchesAtLinearAndItsGradients) {
  if (!BlasOnCallingThread()) {
    GTEST_FAIL() << "the test binary pins OpenBLAS to the calling thread (tests/main.cpp); "
                 << BlasThreading();
  }
  ThreadCount two(2);
  torch::manual_seed(0);
  struct Shape {
    int64_t m, k, n;
    bool bias, x_grad;
    int64_t bias_size;  // 0: n; 1: a broadcast [1] bias, as ONNX Gemm allows
  };
  // mlp-300-100's layers at batch 128 and an odd batch (slices of unequal rows).
  for (const Shape& s : {Shape{128, 784, 300, true, false, 0}, Shape{77, 300, 100, true, true, 0},
                         Shape{256, 300, 100, false, true, 0}, Shape{64, 400, 120, true, true, 1}}) {
    const std::string what = std::to_string(s.m) + "x" + std::to_string(s.k) + "->" +
                             std::to_string(s.n) + (s.bias ? " bias" : "");
    const torch::Tensor x = torch::randn({s.m, s.k});
    const torch::Tensor w = torch::randn({s.n, s.k}) * 0.05;
    const torch::Tensor b = s.bias ? torch::randn({s.bias_size == 1 ? 1 : s.n}) : torch::Tensor();
    const torch::Tensor probe = torch::randn({s.m, s.n});
    std::string grad_fn;
    const Grads got = RunLinear(Linear, x, w, b, probe, s.x_grad, &grad_fn);
    const Grads want = RunLinear(
        [](const torch::Tensor& a, const torch::Tensor& c, const torch::Tensor& d) {
          return at::linear(a, c, d);
        },
        x, w, b, probe, s.x_grad);
    EXPECT_NE(grad_fn.find(s.bias ? "SlicedLinearFunction" : "SlicedMatMulFunction"), std::string::npos) << what << ": " << grad_fn;
    ExpectClose(got.y, want.y, what + " y");
    ExpectClose(got.gw, want.gw, what + " dw");
    if (s.x_grad) {
      ExpectClose(got.gx, want.gx, what + " dx");
    } else {
      EXPECT_FALSE(got.gx.defined()) << what;
    }
    if (s.bias) ExpectClose(got.gb, want.gb, what + " db");
    // The same slices every run: bit-identical.
    const Grads again = RunLinear(Linear, x, w, b, probe, s.x_grad);
    EXPECT_TRUE(again.y.equal(got.y) && again.gw.equal(got.gw)) << what;
    // Without autograd (evaluation) the same forward values.
    torch::InferenceMode inference;
    EXPECT_TRUE(Linear(x, w, b).equal(got.y.detach())) << what;
  }
}

TEST(Linear, SmallGemmsAndOneThreadStayAtLinear) {
  torch::manual_seed(1);
  const torch::Tensor x = torch::randn({128, 100}).requires_grad_(true);
  const torch::Tensor w = torch::randn({10, 100}).requires_grad_(true);
  const torch::Tensor b = torch::randn({10}).requires_grad_(true);
  {
    ThreadCount two(2);
    const torch::Tensor y = Linear(x, w, b);  // 128k multiply-adds: below the threshold
    EXPECT_TRUE(y.equal(at::linear(x, w, b)));
    EXPECT_EQ(y.grad_fn()->name().find("SlicedLinear"), std::string::npos) << y.grad_fn()->name();
  }
  ThreadCount one(1);
  const torch::Tensor big_x = torch::randn({128, 784});
  const torch::Tensor big_w = torch::randn({300, 784}).requires_grad_(true);
  const torch::Tensor y = Linear(big_x, big_w, torch::Tensor());
  EXPECT_TRUE(y.equal(at::linear(big_x, big_w, torch::Tensor())));
  EXPECT_EQ(y.grad_fn()->name().find("SlicedLinear"), std::string::npos) << y.grad_fn()->name();
}

}  // namespace
}  // namespace compress
