// INT8 targets: the reference u8 x s8 kernel with and without int16 pair saturation,
// the static pair proof, re-quantization into the portable range, and a quantized
// layer computed as a non-VNNI x86 kernel computes it (diverging with full-range
// weights, exact with portable ones), reproducible on any machine.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "compress/zoo/builder.h"
#include "compress/runtime/cpu_info.h"
#include "compress/runtime/executor.h"
#include "quantization/int8_target.h"
#include "quantization/qdq.h"
#include "quantization/quantize.h"
#include "tests/test_util.h"

namespace compress {
namespace {

using testing_util::ExpectError;

TEST(Int8Target, NamesAndRanges) {
  EXPECT_EQ(ParseInt8Target("portable"), Int8Target::kPortable);
  EXPECT_EQ(ParseInt8Target("full_range"), Int8Target::kFullRange);
  EXPECT_EQ(WeightQmax(Int8Target::kPortable), 64);
  EXPECT_EQ(WeightQmax(Int8Target::kFullRange), 127);
  // The bound the portable range is built on: two products of the largest u8 code.
  EXPECT_LE(kU8CodeMax * 2 * kPortableWeightMax, kInt16Max);
  EXPECT_GT(kU8CodeMax * (2 * kPortableWeightMax + 1), kInt16Max);
  ExpectError([] { ParseInt8Target("fullrange"); }, ErrorKind::kUsage,
              "expected portable or full_range");
}

TEST(Int8Target, ReferenceKernelSaturatesOnlyPairsBeyondInt16) {
  // One pair exactly at the portable bound, one just past it.
  const Tensor a = torch::full({1, 4}, 255, torch::kInt);
  const Tensor w = torch::tensor({{64, 64, 0, 0}, {65, 64, 0, 0}, {-127, -127, 127, 127}},
                                 torch::kInt).to(torch::kChar);
  const Tensor exact = U8S8GemmReference(a, w, false);
  const Tensor sat = U8S8GemmReference(a, w, true);
  EXPECT_EQ(exact[0][0].item<int>(), 32640);
  EXPECT_EQ(sat[0][0].item<int>(), 32640);
  EXPECT_EQ(exact[0][1].item<int>(), 32895);
  EXPECT_EQ(sat[0][1].item<int>(), 32767);               // clipped to int16
  EXPECT_EQ(exact[0][2].item<int>(), 0);
  EXPECT_EQ(sat[0][2].item<int>(), -32768 + 32767);       // both pairs clipped
  // Odd K is padded; random codes with portable weights are always exact.
  torch::manual_seed(3);
  const Tensor codes = torch::randint(0, 256, {32, 75}, torch::kInt);
  const Tensor portable = torch::randint(-64, 65, {16, 75}, torch::kInt).to(torch::kChar);
  EXPECT_TRUE(torch::equal(U8S8GemmReference(codes, portable, true),
                           U8S8GemmReference(codes, portable, false)));
  EXPECT_TRUE(torch::equal(U8S8GemmReference(codes, portable, false),
                           torch::matmul(codes.to(torch::kLong), portable.to(torch::kLong).t()).to(torch::kInt)));
}

// x [N, 96] in [0, 1] -> Gemm 96 -> 16 (channels 0-3 all-positive weights, the case
// that fills a pair), quantized with uint8 activations for `target`.
Graph QuantizedGemm(Int8Target target, const Tensor& calibration) {
  GraphBuilder b("gemm", 11);
  const std::string x = b.Input("input", {kDynamicDim, 96});
  b.Output("out", b.Linear(x, 96, 16, true, "fc"));
  Graph g = b.Build();
  {
    torch::NoGradGuard ng;
    g.Weight("fc.weight").slice(0, 0, 4).uniform_(0.5, 1.0);
  }
  const QdqPlan plan = PlanQdq(g, LayerFilter{});
  const auto params = Calibrate(g, plan, {calibration}, CalibrationMethod::kMinMax, 99.99, at::kByte);
  QdqOptions o;
  o.target = target;
  ApplyQdq(g, plan, params, o);
  return g;
}

// The Gemm computed as an integer kernel does it: u8 input codes times int8 weights,
// int32 accumulation (pairs saturating in int16 when `saturate_pairs`), zero-point
// correction, int32 bias, one float rescale.
Tensor IntegerKernelGemm(const Graph& g, const Tensor& x, bool saturate_pairs) {
  const Int8Layer layer = FindInt8Layers(g).at(0);
  const Node& xdq = g.nodes[layer.input_dq];
  const std::string codes_name = xdq.inputs[0];
  Tensor codes;
  Executor exec(g);
  exec.SetObserver({codes_name}, [&](const std::string&, const Tensor& t) { codes = t.clone(); });
  torch::NoGradGuard ng;
  exec.Run({x});
  const int64_t zp = g.Weight(xdq.inputs[2]).item<int64_t>();
  const Tensor w = g.Weight(layer.weight);
  const Node& fc = g.nodes[layer.node];
  const Node& bdq = g.nodes[g.ProducerIndex(fc.inputs[2])];
  Tensor acc = U8S8GemmReference(codes, w, saturate_pairs).to(torch::kLong);
  acc = acc - zp * w.to(torch::kLong).sum(1) + g.Weight(bdq.inputs[0]).to(torch::kLong);
  return acc.to(torch::kDouble) * g.Weight(bdq.inputs[1]).to(torch::kDouble);
}

double RelError(const Tensor& a, const Tensor& b) {
  return (a.to(torch::kDouble) - b.to(torch::kDouble)).abs().max().item<double>() /
         b.abs().max().item<double>();
}

TEST(Int8Target, NonVnniKernelDivergesWithFullRangeWeightsAndMatchesWithPortable) {
  torch::manual_seed(5);
  const Tensor calib = torch::rand({256, 96});
  const Tensor x = torch::rand({64, 96});
  for (Int8Target target : {Int8Target::kFullRange, Int8Target::kPortable}) {
    SCOPED_TRACE(Int8TargetName(target));
    const Graph g = QuantizedGemm(target, calib);
    torch::NoGradGuard ng;
    const Tensor reference = Executor(g).Run({x})[0];  // fake quant: what the file says
    const double exact = RelError(IntegerKernelGemm(g, x, false), reference);
    const double non_vnni = RelError(IntegerKernelGemm(g, x, true), reference);
    std::printf("%-10s integer kernel vs fake-quant: exact (VNNI/AMX/ARM) %.2e, "
                "saturating pairs (AVX2/AVX512 without VNNI) %.2e\n",
                Int8TargetName(target), exact, non_vnni);
    EXPECT_LT(exact, 1e-5);  // float rounding of the rescale only
    if (target == Int8Target::kPortable) {
      EXPECT_LT(non_vnni, 1e-5);
    } else {
      EXPECT_GT(non_vnni, 0.05);  // the AVX2 failure, reproduced on any CPU
    }
    // The static proof agrees with the emulation.
    const Int8TargetCheck check = CheckInt8Target(g, "gemm");
    EXPECT_EQ(check.declared, true);
    EXPECT_EQ(check.target, target);
    EXPECT_EQ(check.layers, 1);
    EXPECT_EQ(check.saturating.empty(), target == Int8Target::kPortable);
  }
}

TEST(Int8Target, StaticProofNamesTheLayerAndChannelAtTheExactBound) {
  torch::manual_seed(6);
  Graph g = QuantizedGemm(Int8Target::kPortable, torch::rand({64, 96}));
  const std::string w = FindInt8Layers(g).at(0).weight;
  EXPECT_TRUE(CheckInt8Target(g, "m.onnx").saturating.empty());
  {
    torch::NoGradGuard ng;
    g.Weight(w)[9].zero_();
    g.Weight(w)[9][10] = 64;
    g.Weight(w)[9][50] = -64;  // |q1| + |q2| = 128: 255 x 128 = 32,640, still fits
  }
  std::vector<PairBound> bounds = Int8PairBounds(g);
  ASSERT_EQ(bounds.size(), 1u);
  EXPECT_FALSE(bounds[0].saturates()) << bounds[0].Describe();
  {
    torch::NoGradGuard ng;
    g.Weight(w)[9][50] = -65;  // 255 x 129 = 32,895 > 32,767, whatever the pairing
  }
  bounds = Int8PairBounds(g);
  EXPECT_TRUE(bounds[0].saturates());
  EXPECT_EQ(bounds[0].channel, 9);
  EXPECT_EQ(bounds[0].Describe(), "fc channel 9: 255 x 129 = 32,895 > 32,767");
  // Declared portable: a verification error naming the layer. Full range: a warning.
  ExpectError([&] { CheckInt8Target(g, "m.onnx"); }, ErrorKind::kNumeric,
              "m.onnx: declared INT8 target portable, but fc channel 9: 255 x 129");
  g.metadata[kInt8TargetKey] = "full_range";
  const Int8TargetCheck check = CheckInt8Target(g, "m.onnx");
  ASSERT_EQ(check.saturating.size(), 1u);
  EXPECT_NE(check.Warning().find("1 of 1 integer layers can exceed int16"), std::string::npos)
      << check.Warning();
  // No declaration (a file from another tool): inferred from the weights.
  g.metadata.erase(kInt8TargetKey);
  EXPECT_EQ(CheckInt8Target(g, "m.onnx").target, Int8Target::kFullRange);
  g.metadata[kInt8TargetKey] = "fast";
  ExpectError([&] { CheckInt8Target(g, "m.onnx"); }, ErrorKind::kIo,
              "m.onnx: metadata mcompress.int8_target");
  // The saturation hint appears only where the kernels saturate.
  g.metadata[kInt8TargetKey] = "full_range";
  EXPECT_EQ(SaturationHint(CheckInt8Target(g, "m"), false), "");
  EXPECT_NE(SaturationHint(CheckInt8Target(g, "m"), true).find("--target portable"), std::string::npos);
}

TEST(Int8Target, RetargetRequantizesFullRangeWeightsAndBiases) {
  torch::manual_seed(8);
  const Tensor calib = torch::rand({256, 96});
  const Tensor x = torch::rand({64, 96});
  Graph g = QuantizedGemm(Int8Target::kFullRange, calib);
  torch::NoGradGuard ng;
  const Tensor before = Executor(g).Run({x})[0];
  EXPECT_EQ(RetargetInt8(g, Int8Target::kPortable), 1);
  EXPECT_EQ(g.metadata.at(kInt8TargetKey), "portable");
  const Int8Layer layer = FindInt8Layers(g).at(0);
  EXPECT_LE(g.Weight(layer.weight).abs().max().item<int>(), 64);
  EXPECT_TRUE(CheckInt8Target(g, "gemm").saturating.empty());
  // The bias follows: int32 at input scale x the new weight scale.
  const Node& fc = g.nodes[layer.node];
  const Node& wdq = g.nodes[layer.weight_dq];
  const Node& bdq = g.nodes[g.ProducerIndex(fc.inputs[2])];
  const Tensor want = g.Weight(wdq.inputs[1]) * g.Weight(g.nodes[layer.input_dq].inputs[1]);
  EXPECT_TRUE(torch::allclose(g.Weight(bdq.inputs[1]), want, 1e-6, 0));
  // One bit less on the weights: close to the full-range result, and now exact on a
  // saturating kernel.
  const Tensor after = Executor(g).Run({x})[0];
  const double moved = RelError(after, before);
  std::printf("retarget full_range -> portable moves outputs by %.2e of their range\n", moved);
  EXPECT_LT(moved, 0.02);
  EXPECT_LT(RelError(IntegerKernelGemm(g, x, true), after), 1e-5);
  // Already in range: nothing to do.
  EXPECT_EQ(RetargetInt8(g, Int8Target::kPortable), 0);
  EXPECT_EQ(RetargetInt8(g, Int8Target::kFullRange), 0);
  EXPECT_EQ(g.metadata.at(kInt8TargetKey), "full_range");
}

TEST(CpuInfo, SummaryNamesTheInt8FlagsAndOnednnsIsa) {
  const CpuInt8Info& cpu = CpuInt8();
  const std::string s = CpuInt8Summary();
  std::printf("%s\n", s.c_str());
  EXPECT_NE(s.find("int8 flags: "), std::string::npos);
#if defined(__x86_64__)
  EXPECT_TRUE(cpu.x86);
  // Debian's LibTorch shares libdnnl.so.2, which exports the ISA query.
  EXPECT_FALSE(cpu.onednn_isa.empty()) << s;
  EXPECT_EQ(OrtInt8PairsSaturate(cpu), !(cpu.avx512_vnni || cpu.avx_vnni || cpu.amx_int8));
  if (cpu.max_isa_env == "ONEDNN_MAX_CPU_ISA=AVX2") {
    EXPECT_EQ(cpu.onednn_isa, "avx2");
    EXPECT_TRUE(OnednnInt8PairsSaturate(cpu));
  }
#endif
}

}  // namespace
}  // namespace compress
