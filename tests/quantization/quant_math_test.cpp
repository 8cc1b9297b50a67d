// Entropy (KL divergence) calibration: the divergence of a candidate threshold against
// hand computations, the chosen threshold on crafted histograms, and the ranges the
// calibrator picks for signed, ReLU-like and one-sided data.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <string>
#include <vector>

#include "quantization/quant_math.h"
#include "tests/test_util.h"

namespace compress {
namespace {

using testing_util::ExpectError;

// The smoothing constant of EntropyDivergence: zeros of P and Q become this.
constexpr double kEps = 1e-4;
// The divergences below are sums of a few logarithms; they agree to rounding.
constexpr double kKlTol = 1e-9;

Tensor Hist(const std::vector<double>& counts) { return torch::tensor(counts, torch::kDouble); }

// Share of the values of `x` inside [lo, hi].
double ShareInside(const Tensor& x, double lo, double hi) {
  return ((x >= lo) & (x <= hi)).to(torch::kDouble).mean().item<double>();
}

// A calibrator that has seen `x` in both passes, in four batches.
RangeCalibrator Calibrated(const Tensor& x) {
  RangeCalibrator c;
  for (const auto& part : x.chunk(4)) c.ObserveRange(part, "v");
  for (const auto& part : x.chunk(4)) c.ObserveHistogram(part);
  return c;
}

TEST(EntropyCalibration, DivergenceMatchesHandComputation) {
  // h = [1, 8, 1, 1] (total 11), levels = 2. Candidate i: P = h[0, i) with the mass of
  // h[i, 4) added to bin i - 1, normalised by 11; Q = h[0, i) merged into 2 groups (bin j
  // in group floor(2j / i)), each group's mass spread over its bins, normalised by
  // sum(h[0, i)). No bin of P or Q is 0, so no smoothing.
  //   i = 2: groups {0} {1}.      P = [1, 10] / 11,   Q = [1, 8] / 9
  //          KL = 1/11 ln(9/11) + 10/11 ln(90/88)                          = 0.002187
  //   i = 3: groups {0,1} {2}.    P = [1, 8, 2] / 11, Q = [4.5, 4.5, 1] / 10
  //          KL = 1/11 ln(10/49.5) + 8/11 ln(80/49.5) + 2/11 ln(20/11)     = 0.312429
  //   i = 4: groups {0,1} {2,3}.  P = [1, 8, 1, 1] / 11, Q = [4.5, 4.5, 1, 1] / 11
  //          KL = 1/11 ln(1/4.5) + 8/11 ln(8/4.5)                          = 0.281713
  // Clipping after bin 2 keeps the peak in a level of its own and wins.
  const Tensor h = Hist({1, 8, 1, 1});
  const double kl2 = 1.0 / 11 * std::log(9.0 / 11) + 10.0 / 11 * std::log(90.0 / 88);
  const double kl3 = 1.0 / 11 * std::log(10 / 49.5) + 8.0 / 11 * std::log(80 / 49.5) +
                     2.0 / 11 * std::log(20.0 / 11);
  const double kl4 = 1.0 / 11 * std::log(1 / 4.5) + 8.0 / 11 * std::log(8 / 4.5);
  EXPECT_NEAR(EntropyDivergence(h, 2, 2), kl2, kKlTol);
  EXPECT_NEAR(EntropyDivergence(h, 3, 2), kl3, kKlTol);
  EXPECT_NEAR(EntropyDivergence(h, 4, 2), kl4, kKlTol);
  EXPECT_NEAR(kl2, 0.002187, 1e-6);  // the decimals of the comment
  EXPECT_NEAR(kl3, 0.312429, 1e-6);
  EXPECT_NEAR(kl4, 0.281713, 1e-6);
  EXPECT_EQ(EntropyThresholdBin(h, 2), 2);

  // With a zero bin the smoothing shows: h = [1, 8, 0, 1] (total 10), levels = 2.
  //   i = 4: P = [1, 8, 0, 1] / 10, Q = [4.5, 4.5, 0, 1] / 10 (group {2,3} has mass 1, all
  //          on bin 3, the only one non-zero in P). Both zeros -> eps, both sums 1 + eps:
  //          KL = (0.1 ln(0.1/0.45) + 0.8 ln(0.8/0.45) + eps ln(eps/eps) + 0) / (1 + eps)
  //   i = 3: P = [1, 8, 1] / 10, Q = [4.5, 4.5, 0] / 9: the clipped value has no mass in Q,
  //          whose zero -> eps; P sums to 1, Q to 1 + eps:
  //          KL = 0.1 ln(0.1/0.5) + 0.8 ln(0.8/0.5) + 0.1 ln(0.1/eps) + ln(1 + eps)
  //   i = 2: P = [1, 9] / 10, Q = [1, 8] / 9:  KL = 0.1 ln(0.9) + 0.9 ln(81/80) = 0.000644
  const Tensor z = Hist({1, 8, 0, 1});
  EXPECT_NEAR(EntropyDivergence(z, 4, 2),
              (0.1 * std::log(0.1 / 0.45) + 0.8 * std::log(0.8 / 0.45)) / (1 + kEps), kKlTol);
  EXPECT_NEAR(EntropyDivergence(z, 3, 2),
              0.1 * std::log(0.1 / 0.5) + 0.8 * std::log(0.8 / 0.5) + 0.1 * std::log(0.1 / kEps) +
                  std::log(1 + kEps),
              kKlTol);
  EXPECT_NEAR(EntropyDivergence(z, 2, 2), 0.1 * std::log(0.9) + 0.9 * std::log(81.0 / 80), kKlTol);
  EXPECT_EQ(EntropyThresholdBin(z, 2), 2);

  // Nothing inside the candidate (Q undefined) or everything in its last bin (P and Q
  // the same point mass, KL 0 for clipping all values to one): not a candidate.
  const Tensor far = Hist({0, 0, 0, 5, 1});
  EXPECT_TRUE(std::isinf(EntropyDivergence(far, 2, 2)));
  EXPECT_TRUE(std::isinf(EntropyDivergence(far, 3, 2)));
  EXPECT_TRUE(std::isinf(EntropyDivergence(far, 4, 2)));
  EXPECT_EQ(EntropyThresholdBin(far, 2), 5);
  // No more bins than levels, or no mass: nothing to clip.
  EXPECT_EQ(EntropyThresholdBin(Hist({3, 1, 0, 7}), 4), 4);
  EXPECT_EQ(EntropyThresholdBin(Hist({0, 0, 0, 0, 0}), 2), 5);
  ExpectError([&] { EntropyDivergence(h, 1, 2); }, ErrorKind::kInternal, "outside [2, 4]");
  ExpectError([&] { EntropyDivergence(h, 5, 2); }, ErrorKind::kInternal, "outside [2, 4]");
  ExpectError([&] { EntropyThresholdBin(h, 0); }, ErrorKind::kInternal, "levels 0");
}

TEST(EntropyCalibration, ClipsFarOutliersOfAGaussianKeepingItsMass) {
  torch::manual_seed(3);
  Tensor x = torch::randn({200000});
  x[0] = 40;
  x[1] = 40;
  x[2] = -40;
  x[3] = -40;
  const RangeCalibrator c = Calibrated(x);
  const auto [lo, hi] = c.Range(CalibrationMethod::kEntropy, 0, at::kByte);
  EXPECT_LT(hi - lo, 80.0 / 4);  // minmax: 80
  EXPECT_GT(ShareInside(x, lo, hi), 0.999);
  EXPECT_LT(lo, -2.5);
  EXPECT_GT(hi, 2.5);
  // Activations are asymmetric for both types: the same 256 levels, the same range.
  const auto [lo8, hi8] = c.Range(CalibrationMethod::kEntropy, 0, at::kChar);
  EXPECT_EQ(lo8, lo);
  EXPECT_EQ(hi8, hi);
}

TEST(EntropyCalibration, ReluOutputStartsAtZeroWithAllLevelsOnItsSide) {
  torch::manual_seed(4);
  Tensor x = torch::randn({200000}).clamp_min(0);
  x[0] = 30;
  const RangeCalibrator c = Calibrated(x);
  const auto [lo, hi] = c.Range(CalibrationMethod::kEntropy, 0, at::kByte);
  EXPECT_EQ(lo, 0.0);
  EXPECT_LT(hi, 30.0 / 4);
  EXPECT_GT(ShareInside(x, lo, hi), 0.999);
  // One-sided data give the side all 256 levels: no candidate below 256 bins of 30/2048.
  EXPECT_GE(hi, 256 * 30.0 / 2048 - 1e-9);

  // Without outliers the half of the values at exactly 0 must not drag the clip down
  // (spread over Q's first group they would dominate the divergence: 98.8% kept).
  const Tensor clean = torch::randn({400000}).clamp_min(0);
  const auto [clean_lo, clean_hi] =
      Calibrated(clean).Range(CalibrationMethod::kEntropy, 0, at::kByte);
  EXPECT_EQ(clean_lo, 0.0);
  EXPECT_GT(ShareInside(clean, 0, clean_hi), 0.999);
}

TEST(EntropyCalibration, SidesAreClippedSeparately) {
  // A narrow negative side (|N(0, 1)|) and a wide positive one (4 |N(0, 1)|), each with
  // an outlier at 40: one threshold on |x| would clip both sides alike.
  torch::manual_seed(5);
  Tensor neg = -torch::randn({100000}).abs();
  Tensor pos = torch::randn({100000}).abs() * 4;
  neg[0] = -40;
  pos[0] = 40;
  const Tensor x = torch::cat({neg, pos});
  const RangeCalibrator c = Calibrated(x);
  const auto [lo, hi] = c.Range(CalibrationMethod::kEntropy, 0, at::kByte);
  EXPECT_GT(ShareInside(neg, lo, 0), 0.999);
  EXPECT_GT(ShareInside(pos, 0, hi), 0.999);
  EXPECT_GT(lo, -10.0);  // the negative outlier is clipped...
  EXPECT_LT(hi, 30.0);   // ...and the positive one
  EXPECT_GT(hi, -2 * lo);  // the wide side keeps its width
}

TEST(EntropyCalibration, RangeContainsZeroAndStaysInsideTheObservedRange) {
  torch::manual_seed(6);
  Tensor spiky = torch::randn({50000});
  spiky[0] = 25;
  Tensor negative = -torch::randn({50000}).clamp_min(0);
  negative[0] = -20;
  Tensor lopsided = torch::randn({50000}) * 3 + 1;  // [-12, 15]-ish
  const std::vector<std::pair<std::string, Tensor>> cases = {
      {"signed", spiky},
      {"negative", negative},
      {"lopsided", lopsided},
      {"uniform [2, 3]", torch::rand({50000}) + 2},           // side padded to 0, bins merged
      {"uniform [1000, 1001]", torch::rand({50000}) + 1000},  // far from 0
      {"constant", torch::full({100}, 2.0f)}};                // no histogram
  for (const auto& [name, x] : cases) {
    const RangeCalibrator c = Calibrated(x);
    const auto [lo, hi] = c.Range(CalibrationMethod::kEntropy, 0, at::kByte);
    EXPECT_LE(lo, 0.0) << name;
    EXPECT_GE(hi, 0.0) << name;
    EXPECT_GE(lo, std::min(c.min(), 0.0)) << name;
    EXPECT_LE(hi, std::max(c.max(), 0.0)) << name;
    EXPECT_GT(ShareInside(x, lo, hi), 0.99) << name;  // at most one outlier per case
    if (c.min() >= 0) {
      EXPECT_EQ(lo, 0.0) << name;
      EXPECT_GE(hi, c.min()) << name;  // never clipped below all the data
    }
    if (c.max() <= 0) {
      EXPECT_EQ(hi, 0.0) << name;
      EXPECT_LT(lo, -0.5) << name;
    }
  }
}

TEST(EntropyCalibration, ListedAsARecipeName) {
  std::vector<std::string> names;
  for (const auto& [name, method] : CalibrationMethods()) names.push_back(name);
  EXPECT_EQ(names, (std::vector<std::string>{"minmax", "percentile", "mse", "entropy"}));
  EXPECT_EQ(CalibrationMethodName(CalibrationMethod::kEntropy), "entropy");
  EXPECT_TRUE(RangeCalibrator().NeedsHistogram(CalibrationMethod::kEntropy));
}

}  // namespace
}  // namespace compress
