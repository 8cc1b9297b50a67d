// Each executor kernel against a hand-written LibTorch computation of the same ONNX
// semantics: forward values, and gradients w.r.t. every float input, within 1e-5.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <limits>

#include "compress/zoo/builder.h"
#include "compress/runtime/executor.h"
#include "compress/runtime/ops.h"

namespace compress {
namespace {

constexpr double kTol = 1e-5;

struct Case {
  std::string op;
  std::vector<Tensor> inputs;  // undefined = omitted optional input
  std::map<std::string, AttrValue> attrs;
  int num_outputs = 1;
  int64_t opset = 13;
};

// Builds a one-node graph: float inputs are runtime inputs (so gradients reach them),
// others (shapes, axes, integer data) are initializers, as in real models.
Graph SingleNodeGraph(const Case& c) {
  GraphBuilder b("single_" + c.op, 0, c.opset);
  std::vector<std::string> names;
  for (size_t i = 0; i < c.inputs.size(); ++i) {
    const Tensor& t = c.inputs[i];
    const std::string name = "in" + std::to_string(i);
    if (!t.defined()) {
      names.push_back("");
    } else if (t.is_floating_point()) {
      names.push_back(b.Input(name, t.sizes().vec(), t.scalar_type()));
    } else {
      names.push_back(b.Constant(name, t));
    }
  }
  auto outs = b.Op(c.op, names, c.attrs, c.num_outputs, "node");
  for (const auto& o : outs) b.Output(o);
  return b.Build();
}

// Fresh leaf copies of all inputs (floats require grad); `runtime` gets the float ones.
std::vector<Tensor> Leaves(const std::vector<Tensor>& inputs, std::vector<Tensor>* runtime) {
  std::vector<Tensor> leaves;
  for (const auto& t : inputs) {
    if (!t.defined()) {
      leaves.push_back(t);
      continue;
    }
    Tensor l = t.detach().clone();
    if (l.is_floating_point()) {
      l.requires_grad_(true);
      if (runtime) runtime->push_back(l);
    }
    leaves.push_back(l);
  }
  return leaves;
}

// Runs the case through the executor and through `reference`, compares forward
// outputs and (when `check_grad`) gradients of sum(out * fixed random weights) with
// respect to every input the reference differentiates.
void Check(const Case& c,
           const std::function<std::vector<Tensor>(const std::vector<Tensor>&)>& reference,
           bool check_grad = true, bool training = false) {
  SCOPED_TRACE(c.op);
  Graph g = SingleNodeGraph(c);
  Executor exec(g);
  exec.SetTraining(training);
  std::vector<Tensor> runtime;
  auto ours_in = Leaves(c.inputs, &runtime);
  auto ref_in = Leaves(c.inputs, nullptr);
  auto ours = exec.Run(runtime);
  auto ref = reference(ref_in);
  ASSERT_EQ(ours.size(), ref.size());
  torch::manual_seed(7);
  Tensor loss_ours = torch::zeros({}), loss_ref = torch::zeros({});
  for (size_t k = 0; k < ours.size(); ++k) {
    ASSERT_EQ(ours[k].sizes(), ref[k].sizes()) << "output " << k;
    ASSERT_EQ(ours[k].scalar_type(), ref[k].scalar_type()) << "output " << k;
    if (ours[k].is_floating_point()) {
      EXPECT_TRUE(torch::allclose(ours[k], ref[k], kTol, kTol))
          << "output " << k << " max |diff| "
          << (ours[k] - ref[k]).abs().max().item<double>();
      if (ours[k].requires_grad() && ref[k].requires_grad()) {
        Tensor w = torch::randn(ours[k].sizes());
        loss_ours = loss_ours + (ours[k] * w).sum();
        loss_ref = loss_ref + (ref[k] * w).sum();
      }
    } else {
      EXPECT_TRUE(torch::equal(ours[k], ref[k])) << "output " << k;
    }
  }
  if (!check_grad || !loss_ref.requires_grad()) return;
  ASSERT_TRUE(loss_ours.requires_grad()) << "executor output is not differentiable";
  loss_ours.backward();
  loss_ref.backward();
  int compared = 0;
  for (size_t i = 0; i < ours_in.size(); ++i) {
    if (!ref_in[i].defined() || !ref_in[i].requires_grad() || !ref_in[i].grad().defined()) {
      continue;
    }
    ASSERT_TRUE(ours_in[i].grad().defined()) << "no gradient for input " << i;
    EXPECT_TRUE(torch::allclose(ours_in[i].grad(), ref_in[i].grad(), kTol, kTol))
        << "gradient of input " << i << " max |diff| "
        << (ours_in[i].grad() - ref_in[i].grad()).abs().max().item<double>();
    ++compared;
  }
  EXPECT_GT(compared, 0) << "no gradient was compared";
}

using V = std::vector<Tensor>;
using Ints = std::vector<int64_t>;

// The op traits passes read instead of their own op lists: the exact sets, and each
// trait consistent with the op's arity.
TEST(Ops, TraitsNameExactlyTheOpsPassesRelyOn) {
  auto with = [](OpTrait t) {
    std::vector<std::string> ops;
    for (const auto& spec : OpRegistry()) {
      if (spec.traits & t) ops.push_back(spec.op_type);
    }
    return ops;
  };
  EXPECT_EQ(with(kElementwiseBinary), (std::vector<std::string>{"Add", "Div", "Mul", "Sub"}));
  EXPECT_EQ(with(kChannelPool),
            (std::vector<std::string>{"AveragePool", "GlobalAveragePool", "MaxPool"}));
  EXPECT_EQ(with(kSharesInputGrid), (std::vector<std::string>{"Flatten", "MaxPool", "Reshape",
                                                               "Squeeze", "Transpose", "Unsqueeze"}));
  EXPECT_EQ(with(kChannelwise),
            (std::vector<std::string>{"Clip", "Dropout", "Erf", "Gelu", "HardSigmoid", "HardSwish",
                                      "Identity", "LeakyRelu", "Relu", "Sigmoid", "Tanh"}));
  for (const auto& spec : OpRegistry()) {
    if (spec.traits & kElementwiseBinary) EXPECT_EQ(spec.min_inputs, 2) << spec.op_type;
    if (spec.traits & (kChannelwise | kChannelPool)) EXPECT_EQ(spec.min_inputs, 1) << spec.op_type;
  }
  EXPECT_TRUE(HasTrait("Relu", kChannelwise));
  EXPECT_FALSE(HasTrait("Softmax", kChannelwise));  // mixes channels along its axis
  EXPECT_FALSE(HasTrait("Sqrt", kChannelwise));     // not in the table at all
}

TEST(Ops, ConvGroupsDilationStridesBias) {
  torch::manual_seed(0);
  Case c{"Conv", {torch::randn({2, 4, 9, 9}), torch::randn({6, 2, 3, 3}), torch::randn({6})},
         {{"group", int64_t{2}}, {"dilations", Ints{2, 1}}, {"strides", Ints{1, 2}},
          {"pads", Ints{1, 1, 1, 1}}}};
  Check(c, [](const V& in) {
    return V{at::conv2d(in[0], in[1], in[2], {1, 2}, {1, 1}, {2, 1}, 2)};
  });
}

TEST(Ops, ConvAsymmetricPadsNoBias) {
  torch::manual_seed(1);
  Case c{"Conv", {torch::randn({1, 3, 7, 6}), torch::randn({5, 3, 3, 2})},
         {{"pads", Ints{0, 1, 2, 0}}}};
  Check(c, [](const V& in) {
    Tensor x = at::constant_pad_nd(in[0], {1, 0, 0, 2}, 0);  // W: (1,0), H: (0,2)
    return V{at::conv2d(x, in[1])};
  });
}

TEST(Ops, ConvAutoPadSameUpperAndLower) {
  torch::manual_seed(2);
  for (std::string mode : {"SAME_UPPER", "SAME_LOWER"}) {
    Case c{"Conv", {torch::randn({1, 2, 5, 5}), torch::randn({3, 2, 4, 4})},
           {{"auto_pad", mode}, {"strides", Ints{2, 2}}}};
    // out = ceil(5/2) = 3; total pad = (3-1)*2 + 4 - 5 = 3: UPPER (1,2), LOWER (2,1).
    Check(c, [&](const V& in) {
      Tensor x = mode == "SAME_UPPER" ? at::constant_pad_nd(in[0], {1, 2, 1, 2}, 0)
                                      : at::constant_pad_nd(in[0], {2, 1, 2, 1}, 0);
      return V{at::conv2d(x, in[1], {}, {2, 2})};
    });
  }
}

TEST(Ops, Conv1d) {
  torch::manual_seed(3);
  Case c{"Conv", {torch::randn({2, 3, 10}), torch::randn({4, 3, 3}), torch::randn({4})},
         {{"pads", Ints{1, 1}}}};
  Check(c, [](const V& in) { return V{at::conv1d(in[0], in[1], in[2], {1}, {1})}; });
}

TEST(Ops, GemmTransposesAlphaBeta) {
  torch::manual_seed(4);
  Case c{"Gemm", {torch::randn({5, 3}), torch::randn({4, 5}), torch::randn({1, 4})},
         {{"transA", int64_t{1}}, {"transB", int64_t{1}}, {"alpha", 0.5}, {"beta", 2.0}}};
  Check(c, [](const V& in) { return V{0.5 * in[0].t().mm(in[1].t()) + 2.0 * in[2]}; });
  Case fc{"Gemm", {torch::randn({5, 3}), torch::randn({4, 3}), torch::randn({4})},
          {{"transB", int64_t{1}}}};
  Check(fc, [](const V& in) { return V{in[0].mm(in[1].t()) + in[2]}; });
  Case plain{"Gemm", {torch::randn({2, 3}), torch::randn({3, 4})}, {}};
  Check(plain, [](const V& in) { return V{in[0].mm(in[1])}; });
}

TEST(Ops, MatMulBatched) {
  torch::manual_seed(5);
  Case c{"MatMul", {torch::randn({2, 3, 4, 5}), torch::randn({5, 6})}, {}};
  Check(c, [](const V& in) { return V{torch::matmul(in[0], in[1])}; });
}

TEST(Ops, BroadcastingArithmetic) {
  torch::manual_seed(6);
  V in = {torch::randn({2, 3, 4}), torch::rand({3, 1}) + 0.5};
  Check({"Add", in, {}}, [](const V& x) { return V{x[0] + x[1]}; });
  Check({"Sub", in, {}}, [](const V& x) { return V{x[0] - x[1]}; });
  Check({"Mul", in, {}}, [](const V& x) { return V{x[0] * x[1]}; });
  Check({"Div", in, {}}, [](const V& x) { return V{x[0] / x[1]}; });
  // Integer division truncates toward zero in ONNX.
  Case idiv{"Div", {torch::tensor({7, -7, 9}, torch::kInt), torch::tensor({2, 2, -4}, torch::kInt)}, {}};
  Check(idiv, [](const V&) { return V{torch::tensor({3, -3, -2}, torch::kInt)}; });
}

TEST(Ops, Activations) {
  torch::manual_seed(8);
  // Keep inputs away from the kinks so finite differences of the two sides agree.
  Tensor x = torch::randn({3, 7}) * 3;
  Check({"Relu", {x}, {}}, [](const V& in) { return V{torch::relu(in[0])}; });
  Check({"LeakyRelu", {x}, {{"alpha", 0.1}}},
        [](const V& in) { return V{torch::where(in[0] > 0, in[0], in[0] * 0.1)}; });
  Check({"Sigmoid", {x}, {}}, [](const V& in) { return V{1 / (1 + torch::exp(-in[0]))}; });
  Check({"Tanh", {x}, {}}, [](const V& in) { return V{torch::tanh(in[0])}; });
  Check({"HardSigmoid", {x}, {{"alpha", 0.3}, {"beta", 0.4}}},
        [](const V& in) { return V{torch::clamp(in[0] * 0.3 + 0.4, 0, 1)}; });
  Check({"HardSwish", {x}, {}},
        [](const V& in) { return V{in[0] * torch::clamp(in[0] / 6 + 0.5, 0, 1)}; });
  Check({"Erf", {x}, {}}, [](const V& in) {
    // Reference by the series erf(z) = 2/sqrt(pi) * sum (-1)^k z^(2k+1) / (k! (2k+1))
    // where it converges in float (|z| < 2), torch::erf elsewhere.
    Tensor z = in[0].clamp(-2, 2).to(torch::kDouble), term = z, sum = z;
    for (int k = 1; k < 40; ++k) {
      term = term * (-z * z) / k;
      sum = sum + term / (2 * k + 1);
    }
    Tensor series = (sum * (2 / std::sqrt(M_PI))).to(in[0].scalar_type());
    return V{torch::where(in[0].abs() < 2, series, torch::erf(in[0]))};
  });
  Check({"Gelu", {x}, {}}, [](const V& in) {
    return V{0.5 * in[0] * (1 + torch::erf(in[0] / std::sqrt(2.0)))};
  });
  Check({"Gelu", {x}, {{"approximate", std::string("tanh")}}}, [](const V& in) {
    const double k = std::sqrt(2.0 / M_PI);
    return V{0.5 * in[0] * (1 + torch::tanh(k * (in[0] + 0.044715 * in[0].pow(3))))};
  });
}

TEST(Ops, ClipInputsAndAttributes) {
  torch::manual_seed(9);
  Tensor x = torch::randn({4, 5}) * 3;
  Check({"Clip", {x, torch::tensor(-1.0f), torch::tensor(2.0f)}, {}},
        [](const V& in) { return V{torch::clamp(in[0], -1.0, 2.0)}; });
  Check({"Clip", {x, Tensor(), torch::tensor(0.5f)}, {}},
        [](const V& in) { return V{torch::clamp_max(in[0], 0.5)}; });
  Check({"Clip", {x}, {{"min", 0.0}, {"max", 6.0}}, 1, 6},
        [](const V& in) { return V{torch::clamp(in[0], 0.0, 6.0)}; });
}

TEST(Ops, BatchNormalizationEvalAndTrain) {
  torch::manual_seed(10);
  Tensor x = torch::randn({4, 3, 5, 5}) * 2 + 1;
  Tensor scale = torch::rand({3}) + 0.5, bias = torch::randn({3});
  Tensor mean = torch::randn({3}), var = torch::rand({3}) + 0.5;
  Case eval{"BatchNormalization", {x, scale, bias, mean, var}, {{"epsilon", 1e-3}}};
  // Running statistics are not differentiated (as in PyTorch): detach them.
  Check(eval, [](const V& in) {
    auto r = [](const Tensor& t) { return t.reshape({1, -1, 1, 1}); };
    return V{(in[0] - r(in[3].detach())) / torch::sqrt(r(in[4].detach()) + 1e-3) * r(in[1]) +
             r(in[2])};
  });

  // Executor training mode: batch statistics, running stats updated in place with
  // PyTorch momentum 1 - 0.9 = 0.1 (unbiased variance, as PyTorch does).
  GraphBuilder b("bn_train");
  std::string in = b.Input("x", {4, 3, 5, 5});
  b.Output(b.BatchNorm(in, 3, "bn"));
  Graph g = b.Build();
  Executor exec(g);
  exec.SetTraining(true);
  Tensor y = exec.Run({x})[0];
  Tensor batch_mean = x.mean({0, 2, 3});
  Tensor batch_var = x.var({0, 2, 3}, /*unbiased=*/false);
  Tensor expect = (x - batch_mean.reshape({1, 3, 1, 1})) /
                  torch::sqrt(batch_var.reshape({1, 3, 1, 1}) + 1e-5);
  EXPECT_TRUE(torch::allclose(y, expect, kTol, kTol));
  EXPECT_TRUE(torch::allclose(g.Weight("bn.running_mean"), 0.1 * batch_mean, kTol, kTol));
  EXPECT_TRUE(torch::allclose(g.Weight("bn.running_var"),
                              0.9 + 0.1 * x.var({0, 2, 3}, /*unbiased=*/true), kTol, kTol));
}

TEST(Ops, BatchNormalizationOnnxTrainingMode) {
  torch::manual_seed(11);
  Tensor x = torch::randn({2, 3, 4}), scale = torch::rand({3}), bias = torch::randn({3});
  Tensor mean = torch::randn({3}), var = torch::rand({3}) + 0.5;
  Case c{"BatchNormalization", {x, scale, bias, mean, var},
         {{"training_mode", int64_t{1}}, {"momentum", 0.8}}, 3, 15};
  Check(c, [](const V& in) {
    Tensor m = in[0].mean(Ints{0, 2}), v = in[0].var(Ints{0, 2}, false);
    auto r = [](const Tensor& t) { return t.reshape({1, -1, 1}); };
    Tensor y = (in[0] - r(m)) / torch::sqrt(r(v) + 1e-5) * r(in[1]) + r(in[2]);
    return V{y, in[3] * 0.8 + m * 0.2, in[4] * 0.8 + v * 0.2};
  });
}

TEST(Ops, MaxPoolPadsCeilAndIndices) {
  torch::manual_seed(12);
  Tensor x = torch::randn({2, 3, 7, 7});
  Case c{"MaxPool", {x}, {{"kernel_shape", Ints{3, 3}}, {"strides", Ints{2, 2}},
                          {"pads", Ints{1, 1, 1, 1}}, {"ceil_mode", int64_t{1}}}};
  Check(c, [](const V& in) {
    return V{at::max_pool2d(in[0], {3, 3}, {2, 2}, {1, 1}, {1, 1}, true)};
  });
  Case asym{"MaxPool", {x}, {{"kernel_shape", Ints{2, 2}}, {"pads", Ints{0, 0, 1, 1}}}};
  Check(asym, [](const V& in) {
    Tensor p = at::constant_pad_nd(in[0], {0, 1, 0, 1}, -INFINITY);
    return V{at::max_pool2d(p, {2, 2}, {1, 1})};
  });
  // Indices flatten the whole tensor (row-major): slow reference by search.
  Tensor small = torch::randn({2, 2, 4, 4});
  Case idx{"MaxPool", {small}, {{"kernel_shape", Ints{2, 2}}, {"strides", Ints{2, 2}}}, 2};
  Check(idx, [](const V& in) {
    Tensor y = at::max_pool2d(in[0], {2, 2}, {2, 2});
    Tensor flat = in[0].detach().reshape(-1);
    Tensor ind = torch::zeros(y.sizes(), torch::kLong);
    auto acc = ind.accessor<int64_t, 4>();
    Tensor xd = in[0].detach();
    auto xs = xd.accessor<float, 4>();
    for (int n = 0; n < 2; ++n)
      for (int c = 0; c < 2; ++c)
        for (int i = 0; i < 2; ++i)
          for (int j = 0; j < 2; ++j) {
            int64_t best = -1;
            float bv = -INFINITY;
            for (int di = 0; di < 2; ++di)
              for (int dj = 0; dj < 2; ++dj) {
                int h = 2 * i + di, w = 2 * j + dj;
                if (xs[n][c][h][w] > bv) {
                  bv = xs[n][c][h][w];
                  best = ((n * 2 + c) * 4 + h) * 4 + w;
                }
              }
            acc[n][c][i][j] = best;
          }
    return V{y, ind};
  });
}

// Inference over non-overlapping windows takes the strided-maximum path: bit-identical
// to LibTorch's pooling kernel (NaN and -inf included); with autograd the kernel runs,
// so a tie's gradient goes to the first maximum as in PyTorch.
TEST(Ops, MaxPoolNonOverlappingInferenceIsExact) {
  torch::manual_seed(14);
  for (int64_t k : {1, 2, 3}) {
    Tensor x = torch::randn({3, 4, 6 * k, 3 * k});
    x[0][0][0][0] = std::numeric_limits<float>::quiet_NaN();
    x[1][1][1][1] = -std::numeric_limits<float>::infinity();
    Case c{"MaxPool", {x}, {{"kernel_shape", Ints{k, k}}, {"strides", Ints{k, k}}}};
    Graph g = SingleNodeGraph(c);
    Executor exec(g);
    torch::NoGradGuard no_grad;
    const Tensor ours = exec.Run({x}).at(0);
    const Tensor ref = std::get<0>(at::max_pool2d_with_indices(x, {k, k}, {k, k}));
    ASSERT_EQ(ours.sizes(), ref.sizes()) << "k " << k;
    EXPECT_TRUE(torch::equal(ours.isnan(), ref.isnan())) << "k " << k;
    EXPECT_TRUE(torch::equal(ours.nan_to_num(0), ref.nan_to_num(0))) << "k " << k;
    EXPECT_TRUE(ours.isnan().any().item<bool>());
  }
  // Ties (a ReLU's zeros): the whole gradient to the first position of each window.
  Tensor zeros = torch::zeros({1, 1, 2, 2}, torch::requires_grad());
  Case tie{"MaxPool", {zeros}, {{"kernel_shape", Ints{2, 2}}, {"strides", Ints{2, 2}}}};
  Graph g = SingleNodeGraph(tie);
  Executor exec(g);
  exec.Run({zeros}).at(0).sum().backward();
  EXPECT_TRUE(torch::equal(zeros.grad().reshape(-1), torch::tensor({1.f, 0.f, 0.f, 0.f})));
}

TEST(Ops, AveragePoolCountIncludePad) {
  torch::manual_seed(13);
  Tensor x = torch::randn({1, 2, 6, 6});
  for (int64_t include : {0, 1}) {
    Case c{"AveragePool", {x}, {{"kernel_shape", Ints{3, 3}}, {"pads", Ints{1, 1, 1, 1}},
                                {"count_include_pad", include}}};
    Check(c, [&](const V& in) {
      return V{at::avg_pool2d(in[0], {3, 3}, {1, 1}, {1, 1}, false, include == 1)};
    });
  }
  // Asymmetric pads, excluded from the count: sum over real cells / their number.
  Case asym{"AveragePool", {x}, {{"kernel_shape", Ints{2, 2}}, {"pads", Ints{1, 0, 0, 1}}}};
  Check(asym, [](const V& in) {
    Tensor p = at::constant_pad_nd(in[0], {0, 1, 1, 0}, 0);
    Tensor ones = at::constant_pad_nd(torch::ones({1, 1, 6, 6}), {0, 1, 1, 0}, 0);
    return V{at::avg_pool2d(p, {2, 2}, {1, 1}) / at::avg_pool2d(ones, {2, 2}, {1, 1})};
  });
}

TEST(Ops, ShapeOps) {
  torch::manual_seed(14);
  Tensor x = torch::randn({2, 3, 4, 5});
  Check({"GlobalAveragePool", {x}, {}},
        [](const V& in) { return V{in[0].mean({2, 3}, true)}; });
  Check({"Flatten", {x}, {{"axis", int64_t{2}}}},
        [](const V& in) { return V{in[0].reshape({6, 20})}; });
  Check({"Reshape", {x, torch::tensor({0, -1, 10}, torch::kLong)}, {}},
        [](const V& in) { return V{in[0].reshape({2, 6, 10})}; });
  Check({"Transpose", {x}, {{"perm", Ints{0, 2, 3, 1}}}},
        [](const V& in) { return V{in[0].permute({0, 2, 3, 1})}; });
  Check({"Transpose", {x}, {}}, [](const V& in) { return V{in[0].permute({3, 2, 1, 0})}; });
  Tensor y = torch::randn({2, 1, 4, 1});
  Check({"Squeeze", {y, torch::tensor({-1}, torch::kLong)}, {}},
        [](const V& in) { return V{in[0].squeeze(3)}; });
  Check({"Squeeze", {y}, {}}, [](const V& in) { return V{in[0].reshape({2, 4})}; });
  Check({"Squeeze", {y}, {{"axes", Ints{1}}}, 1, 11},
        [](const V& in) { return V{in[0].squeeze(1)}; });
  Check({"Unsqueeze", {x, torch::tensor({0, -1}, torch::kLong)}, {}},
        [](const V& in) { return V{in[0].unsqueeze(0).unsqueeze(-1)}; });
  Check({"Concat", {x, torch::randn({2, 2, 4, 5})}, {{"axis", int64_t{1}}}},
        [](const V& in) { return V{torch::cat({in[0], in[1]}, 1)}; });
  Check({"Split", {x, torch::tensor({1, 3}, torch::kLong)}, {{"axis", int64_t{2}}}, 2},
        [](const V& in) { return in[0].split_with_sizes({1, 3}, 2); });
  Check({"Split", {x}, {{"axis", int64_t{-1}}}, 2, 18},  // 5 -> 3 + 2 (opset 18)
        [](const V& in) { return in[0].split_with_sizes({3, 2}, -1); });
  Check({"Identity", {x}, {}}, [](const V& in) { return V{in[0] * 1}; });
}

TEST(Ops, SliceStepsAndClamping) {
  torch::manual_seed(15);
  Tensor x = torch::randn({4, 10});
  Check({"Slice", {x, torch::tensor({1, -8}, torch::kLong), torch::tensor({1000, 9}, torch::kLong),
                   torch::tensor({0, 1}, torch::kLong), torch::tensor({2, 3}, torch::kLong)}, {}},
        [](const V& in) { return V{in[0].slice(0, 1, 4, 2).slice(1, 2, 9, 3)}; });
  // Negative step walks backwards from start (clamped to dim-1) to end (exclusive).
  Check({"Slice", {x, torch::tensor({20}, torch::kLong), torch::tensor({2}, torch::kLong),
                   torch::tensor({1}, torch::kLong), torch::tensor({-3}, torch::kLong)}, {}},
        [](const V& in) {
          return V{in[0].index_select(1, torch::tensor({9, 6, 3}, torch::kLong))};
        });
}

TEST(Ops, SoftmaxOpsetSemantics) {
  torch::manual_seed(16);
  Tensor x = torch::randn({2, 3, 4});
  Check({"Softmax", {x}, {}}, [](const V& in) { return V{torch::softmax(in[0], -1)}; });
  Check({"Softmax", {x}, {{"axis", int64_t{1}}}},
        [](const V& in) { return V{torch::softmax(in[0], 1)}; });
  // Opset 11: coerced to [2, 12] at axis 1, normalised over all of dims 1..2.
  Check({"Softmax", {x}, {}, 1, 11},
        [](const V& in) { return V{torch::softmax(in[0].reshape({2, 12}), 1).reshape({2, 3, 4})}; });
}

TEST(Ops, LayerNormalization) {
  torch::manual_seed(17);
  Tensor x = torch::randn({2, 3, 8}), scale = torch::randn({8}), bias = torch::randn({8});
  Check({"LayerNormalization", {x, scale, bias}, {{"epsilon", 1e-4}}, 1, 17},
        [](const V& in) {
          Tensor m = in[0].mean(-1, true), v = in[0].var(-1, false, true);
          return V{(in[0] - m) / torch::sqrt(v + 1e-4) * in[1] + in[2]};
        });
  Tensor s2 = torch::randn({3, 8});
  Check({"LayerNormalization", {x, s2}, {{"axis", int64_t{1}}}, 3, 17}, [](const V& in) {
    Tensor m = in[0].mean({1, 2}, true), v = in[0].var({1, 2}, false, true);
    Tensor inv = 1 / torch::sqrt(v + 1e-5);
    return V{(in[0] - m) * inv * in[1], m, inv};
  });
}

TEST(Ops, DropoutEvalIsIdentityTrainDropsAndScales) {
  torch::manual_seed(18);
  Tensor x = torch::rand({200, 100}) + 1;
  Check({"Dropout", {x, torch::tensor(0.3f)}, {}, 2}, [](const V& in) {
    return V{in[0] * 1, torch::ones(in[0].sizes(), torch::kBool)};
  });
  GraphBuilder b("dropout");
  std::string in = b.Input("x", {200, 100});
  b.Constant("ratio", torch::tensor(0.3f));
  b.Output(b.Op1("Dropout", {in, "ratio"}));
  Graph g = b.Build();
  Executor exec(g);
  exec.SetTraining(true);
  Tensor y = exec.Run({x})[0];
  Tensor kept = y != 0;
  double drop_fraction = 1 - kept.to(torch::kDouble).mean().item<double>();
  EXPECT_NEAR(drop_fraction, 0.3, 0.02);  // 20000 Bernoulli draws: sd ~ 0.003
  EXPECT_TRUE(torch::allclose(y.masked_select(kept), (x / 0.7).masked_select(kept)));
}

TEST(Ops, Constant) {
  Tensor v = torch::arange(6, torch::kFloat).reshape({2, 3});
  Check({"Constant", {}, {{"value", v}}}, [&](const V&) { return V{v}; });
  Check({"Constant", {}, {{"value_ints", Ints{1, 2}}}},
        [](const V&) { return V{torch::tensor({1, 2}, torch::kLong)}; });
}

// Slow scalar reference of QuantizeLinear: round half to even, add zero point, saturate.
int64_t QuantRef(float x, float scale, int64_t zp, int64_t lo, int64_t hi) {
  // The division is float32 as in the spec (and ONNX Runtime); nearbyint under the
  // default FE_TONEAREST rounds ties to even.
  double q = static_cast<double>(std::nearbyint(x / scale)) + zp;
  return static_cast<int64_t>(std::min<double>(std::max<double>(q, lo), hi));
}

TEST(Ops, QuantizeDequantizePerTensorAndPerAxis) {
  torch::manual_seed(19);
  Tensor x = torch::randn({3, 4, 2}) * 4;
  x[0][0][0] = 2.5f * 0.5f;  // exactly half-way: rounds to even (2)
  x[0][0][1] = 3.5f * 0.5f;  // rounds to 4
  Tensor scale = torch::tensor(0.5f);
  Tensor zp = torch::tensor(3, torch::kByte);
  Check({"QuantizeLinear", {x, scale, zp}, {}}, [&](const V&) {
    Tensor ref = torch::empty(x.sizes(), torch::kByte);
    auto xs = x.reshape(-1);
    auto rs = ref.view(-1);
    for (int64_t i = 0; i < x.numel(); ++i) {
      rs[i] = QuantRef(xs[i].item<float>(), 0.5f, 3, 0, 255);
    }
    return V{ref};
  }, false);
  // Per-axis int8 along axis 1 (per output channel of a weight).
  Tensor scales = torch::tensor({0.1f, 0.2f, 0.05f, 1.0f});
  Tensor zps = torch::tensor({0, 1, -2, 5}, torch::kChar);
  Check({"QuantizeLinear", {x, scales, zps}, {{"axis", int64_t{1}}}}, [&](const V&) {
    Tensor ref = torch::empty(x.sizes(), torch::kChar);
    for (int a = 0; a < 3; ++a)
      for (int c = 0; c < 4; ++c)
        for (int k = 0; k < 2; ++k)
          ref[a][c][k] = QuantRef(x[a][c][k].item<float>(), scales[c].item<float>(),
                                  zps[c].item<int64_t>(), -128, 127);
    return V{ref};
  }, false);
  Tensor q = torch::randint(-128, 128, {3, 4, 2}, torch::kChar);
  Check({"DequantizeLinear", {q, scales, zps}, {{"axis", int64_t{1}}}}, [&](const V&) {
    return V{(q.to(torch::kFloat) - zps.to(torch::kFloat).reshape({1, 4, 1})) *
             scales.reshape({1, 4, 1})};
  }, false);
  Tensor acc = torch::randint(-1000, 1000, {5}, torch::kInt);
  Check({"DequantizeLinear", {acc, torch::tensor(0.01f)}, {}},
        [&](const V&) { return V{acc.to(torch::kFloat) * 0.01f}; }, false);
}

TEST(Ops, RegistryIsSortedAndCoversTheCoreOpList) {
  const auto& ops = OpRegistry();
  for (size_t i = 1; i < ops.size(); ++i) {
    EXPECT_LT(std::string(ops[i - 1].op_type), std::string(ops[i].op_type));
  }
  for (const char* op :
       {"Conv", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Relu", "LeakyRelu", "Clip",
        "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Gelu", "BatchNormalization",
        "MaxPool", "AveragePool", "GlobalAveragePool", "Flatten", "Reshape", "Transpose",
        "Squeeze", "Unsqueeze", "Concat", "Split", "Slice", "Softmax", "LayerNormalization",
        "Dropout", "Identity", "Constant", "QuantizeLinear", "DequantizeLinear"}) {
    EXPECT_NE(FindOp(op), nullptr) << op;
  }
  EXPECT_EQ(FindOp("NoSuchOp"), nullptr);
}

}  // namespace
}  // namespace compress
