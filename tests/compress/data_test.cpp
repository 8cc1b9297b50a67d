// Tests for compress/data: the IDX reader on tiny files written here (gzip'd with
// zlib), its errors on corrupt files, seeded splits, calibration subsets, the loader,
// and a small real Fashion-MNIST load.
// zlib declares a global function `compress` that clashes with our namespace.
#define compress zlib_compress_unused
#include <zlib.h>
#undef compress

#include "tests/test_util.h"
#include "compress/data/data.h"

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <set>
#include <string>
#include <vector>

namespace compress {
namespace {

using Bytes = std::vector<uint8_t>;

void PutBE32(Bytes& out, uint32_t v) {
  out.push_back(static_cast<uint8_t>(v >> 24));
  out.push_back(static_cast<uint8_t>(v >> 16));
  out.push_back(static_cast<uint8_t>(v >> 8));
  out.push_back(static_cast<uint8_t>(v));
}

Bytes IdxImages(uint32_t count, uint32_t rows, uint32_t cols, const Bytes& pixels,
                uint32_t magic = 0x00000803) {
  Bytes out;
  PutBE32(out, magic);
  PutBE32(out, count);
  PutBE32(out, rows);
  PutBE32(out, cols);
  out.insert(out.end(), pixels.begin(), pixels.end());
  return out;
}

Bytes IdxLabels(const Bytes& labels, uint32_t count_in_header) {
  Bytes out;
  PutBE32(out, 0x00000801);
  PutBE32(out, count_in_header);
  out.insert(out.end(), labels.begin(), labels.end());
  return out;
}

// A per-test temporary directory, removed at the end.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/mcompress_data_test_XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() {
    for (const auto& f : files_) std::remove(f.c_str());
    rmdir(path_.c_str());
  }
  std::string WriteGz(const std::string& name, const Bytes& bytes) {
    const std::string path = path_ + "/" + name;
    gzFile f = gzopen(path.c_str(), "wb");
    EXPECT_NE(f, nullptr);
    if (!bytes.empty()) {
      EXPECT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())),
                static_cast<int>(bytes.size()));
    }
    gzclose(f);
    files_.push_back(path);
    return path;
  }
  std::string WritePlain(const std::string& name, const Bytes& bytes) {
    const std::string path = path_ + "/" + name;
    std::ofstream(path, std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    files_.push_back(path);
    return path;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::vector<std::string> files_;
};

// Expects `fn` to throw compress::Error of `kind` whose message contains `substring`.
using testing_util::ExpectError;

const Bytes kPixels = {0, 255, 51, 102,  //
                       10, 20, 30, 40,   //
                       255, 0, 0, 255};

TEST(DataIdx, RoundTripGzip) {
  TempDir dir;
  const auto images = dir.WriteGz("img.gz", IdxImages(3, 2, 2, kPixels));
  const auto labels = dir.WriteGz("lbl.gz", IdxLabels({0, 9, 3}, 3));

  const TensorDataset raw = ReadIdxPair(images, labels, /*normalize=*/false);
  ASSERT_EQ(raw.inputs.sizes(), (std::vector<int64_t>{3, 1, 2, 2}));
  EXPECT_EQ(raw.inputs.scalar_type(), torch::kFloat);
  const auto flat = raw.inputs.reshape({-1});
  for (size_t i = 0; i < kPixels.size(); ++i) {
    EXPECT_FLOAT_EQ(flat[i].item<float>(), kPixels[i] / 255.0f) << "pixel " << i;
  }
  EXPECT_EQ(raw.targets.scalar_type(), torch::kLong);
  EXPECT_TRUE(torch::equal(raw.targets, torch::tensor({0, 9, 3}, torch::kLong)));

  const TensorDataset norm = ReadIdxPair(images, labels);
  const auto nflat = norm.inputs.reshape({-1});
  for (size_t i = 0; i < kPixels.size(); ++i) {
    EXPECT_NEAR(nflat[i].item<float>(), (kPixels[i] / 255.0 - 0.2860) / 0.3530, 1e-5);
  }
  // Row-major: image 0 row 0 is {0, 255}, row 1 is {51, 102}.
  EXPECT_FLOAT_EQ(raw.inputs[0][0][1][0].item<float>(), 51 / 255.0f);
}

TEST(DataIdx, ReadsUncompressedFilesToo) {
  TempDir dir;
  const auto images = dir.WritePlain("img", IdxImages(3, 2, 2, kPixels));
  const auto labels = dir.WritePlain("lbl", IdxLabels({1, 2, 3}, 3));
  const TensorDataset ds = ReadIdxPair(images, labels, false);
  EXPECT_EQ(ds.size(), 3);
  EXPECT_FLOAT_EQ(ds.inputs[2][0][1][1].item<float>(), 1.0f);
}

TEST(DataIdx, TruncatedImages) {
  TempDir dir;
  const Bytes short_pixels(kPixels.begin(), kPixels.begin() + 10);
  const auto images = dir.WriteGz("img.gz", IdxImages(3, 2, 2, short_pixels));
  const auto labels = dir.WriteGz("lbl.gz", IdxLabels({0, 1, 2}, 3));
  ExpectError([&] { ReadIdxPair(images, labels); }, ErrorKind::kIo,
              images + ": truncated IDX data: expected 12 bytes of images, got 10");
}

TEST(DataIdx, TruncatedHeaderAndLabels) {
  TempDir dir;
  const auto images = dir.WriteGz("img.gz", IdxImages(3, 2, 2, kPixels));
  Bytes header = IdxImages(3, 2, 2, {});
  header.resize(9);
  const auto short_header = dir.WriteGz("short.gz", header);
  ExpectError([&] { ReadIdxPair(short_header, images); }, ErrorKind::kIo,
              "truncated IDX header: expected 4 bytes of row count, got 1");
  const auto labels = dir.WriteGz("lbl.gz", IdxLabels({0, 1}, 3));
  ExpectError([&] { ReadIdxPair(images, labels); }, ErrorKind::kIo,
              labels + ": truncated IDX data: expected 3 bytes of labels, got 2");
}

TEST(DataIdx, WrongMagic) {
  TempDir dir;
  const auto images = dir.WriteGz("img.gz", IdxImages(3, 2, 2, kPixels, 0x00000802));
  const auto labels = dir.WriteGz("lbl.gz", IdxLabels({0, 1, 2}, 3));
  ExpectError([&] { ReadIdxPair(images, labels); }, ErrorKind::kIo,
              images + ": not an IDX ubyte image (idx3) file: magic number 0x00000802, "
                       "expected 0x00000803");
  // Image and label files swapped.
  const auto good_images = dir.WriteGz("img2.gz", IdxImages(3, 2, 2, kPixels));
  ExpectError([&] { ReadIdxPair(labels, good_images); }, ErrorKind::kIo,
              "magic number 0x00000801, expected 0x00000803");
}

TEST(DataIdx, LabelOutOfRange) {
  TempDir dir;
  const auto images = dir.WriteGz("img.gz", IdxImages(3, 2, 2, kPixels));
  const auto labels = dir.WriteGz("lbl.gz", IdxLabels({0, 10, 2}, 3));
  ExpectError([&] { ReadIdxPair(images, labels); }, ErrorKind::kIo,
              labels + ": label 10 at index 1 is out of range; expected 0..9");
}

TEST(DataIdx, CountMismatchTrailingDataAndMissingFile) {
  TempDir dir;
  const auto images = dir.WriteGz("img.gz", IdxImages(3, 2, 2, kPixels));
  const auto labels2 = dir.WriteGz("lbl2.gz", IdxLabels({0, 1}, 2));
  ExpectError([&] { ReadIdxPair(images, labels2); }, ErrorKind::kIo,
              labels2 + ": has 2 labels, expected 3 to match " + images);
  Bytes extra = kPixels;
  extra.push_back(7);
  const auto long_images = dir.WriteGz("long.gz", IdxImages(3, 2, 2, extra));
  const auto labels = dir.WriteGz("lbl.gz", IdxLabels({0, 1, 2}, 3));
  ExpectError([&] { ReadIdxPair(long_images, labels); }, ErrorKind::kIo,
              "unexpected trailing data after 12 bytes of images");
  ExpectError([&] { ReadIdxPair(dir.path() + "/missing.gz", labels); }, ErrorKind::kIo,
              dir.path() + "/missing.gz: cannot open");
  const auto zero = dir.WriteGz("zero.gz", IdxImages(0, 2, 2, {}));
  ExpectError([&] { ReadIdxPair(zero, labels); }, ErrorKind::kIo, "zero dimension");
}

// inputs[i] = i (as [N,1] float), targets[i] = i % 10: every sample identifies itself.
TensorDataset Indexed(int64_t n) {
  return {torch::arange(n, torch::kFloat).reshape({n, 1}), torch::arange(n, torch::kLong) % 10};
}

std::vector<int64_t> Ids(const TensorDataset& ds) {
  const Tensor ids = ds.inputs.reshape({-1}).to(torch::kLong).contiguous();
  return std::vector<int64_t>(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel());
}

TEST(DataDataset, SelectSliceTo) {
  const TensorDataset ds = Indexed(8);
  EXPECT_EQ(ds.size(), 8);
  EXPECT_EQ(Ids(ds.Select(torch::tensor({5, 1, 5}))), (std::vector<int64_t>{5, 1, 5}));
  EXPECT_EQ(Ids(ds.Slice(6, 10)), (std::vector<int64_t>{6, 7}));
  EXPECT_EQ(ds.Slice(3, 2).targets[1].item<int64_t>(), 4);
  EXPECT_EQ(ds.Slice(9, 2).size(), 0);
  EXPECT_EQ(ds.To(torch::kCPU).size(), 8);
  EXPECT_EQ(TensorDataset{}.size(), 0);
}

TEST(DataDataset, SeededPermutationIsAStablePermutation) {
  const Tensor a = SeededPermutation(1000, 7);
  EXPECT_TRUE(torch::equal(std::get<0>(a.sort()), torch::arange(1000, torch::kLong)));
  EXPECT_TRUE(torch::equal(a, SeededPermutation(1000, 7)));
  EXPECT_FALSE(torch::equal(a, SeededPermutation(1000, 8)));
  EXPECT_FALSE(torch::equal(a, torch::arange(1000, torch::kLong)));
  EXPECT_EQ(SeededPermutation(0, 1).numel(), 0);
}

// The split's draws are fixed forever (cached baselines and bench/peers/peer.py, which
// reimplements them to use the very same validation images, depend on it): these values
// are what that independent Python reimplementation of mt19937_64 + the multiply-shift
// index draw gives.
TEST(DataDataset, SeededPermutationDrawsAreFixed) {
  const Tensor full = SeededPermutation(60000, 0);
  EXPECT_TRUE(torch::equal(full.narrow(0, 0, 6),
                           torch::tensor({30167, 24393, 41440, 49699, 43688, 2700}, torch::kLong)));
  EXPECT_TRUE(torch::equal(full.narrow(0, 59997, 3),
                           torch::tensor({2374, 59527, 9587}, torch::kLong)));
  EXPECT_TRUE(torch::equal(SeededPermutation(1000, 7).narrow(0, 0, 6),
                           torch::tensor({232, 591, 346, 681, 237, 35}, torch::kLong)));
}

TEST(DataDataset, ValidationSplitDeterministicAndDisjoint) {
  const TensorDataset full = Indexed(100);
  const auto [train, val] = SplitTrainValidation(full, 20, 3);
  EXPECT_EQ(train.size(), 80);
  EXPECT_EQ(val.size(), 20);
  std::set<int64_t> seen;
  for (int64_t id : Ids(train)) seen.insert(id);
  for (int64_t id : Ids(val)) EXPECT_TRUE(seen.insert(id).second) << "sample " << id << " in both";
  EXPECT_EQ(seen.size(), 100u);  // together: every sample exactly once
  // Targets travel with their inputs.
  EXPECT_TRUE(torch::equal(val.targets, val.inputs.reshape({-1}).to(torch::kLong) % 10));

  const auto again = SplitTrainValidation(full, 20, 3);
  EXPECT_EQ(Ids(again.second), Ids(val));
  EXPECT_EQ(Ids(again.first), Ids(train));
  EXPECT_NE(Ids(SplitTrainValidation(full, 20, 4).second), Ids(val));

  const auto limited = SplitTrainValidation(full, 20, 3, 30);
  EXPECT_EQ(limited.first.size(), 30);
  EXPECT_EQ(Ids(limited.second), Ids(val));  // the limit never changes validation

  ExpectError([&] { SplitTrainValidation(full, 100, 0); }, ErrorKind::kRecipe,
              "validation_size 100 leaves no training data");
  ExpectError([&] { SplitTrainValidation(full, -1, 0); }, ErrorKind::kRecipe, "must be >= 0");
}

// A dataset moved in (its inputs referenced nowhere else) is reordered in place: the
// same splits, sample for sample and target for target, as the copying path above, with
// both splits views of the one buffer; a dataset still referenced is left untouched.
TEST(DataDataset, ValidationSplitOfAMovedDatasetIsInPlaceAndTheSame) {
  const TensorDataset shared = Indexed(1000);
  const auto [train, val] = SplitTrainValidation(shared, 200, 5);  // copies
  TensorDataset moved = shared.Clone();
  const void* buffer = moved.inputs.data_ptr();
  const auto [train2, val2] = SplitTrainValidation(std::move(moved), 200, 5);
  EXPECT_TRUE(torch::equal(train2.inputs, train.inputs));
  EXPECT_TRUE(torch::equal(train2.targets, train.targets));
  EXPECT_TRUE(torch::equal(val2.inputs, val.inputs));
  EXPECT_TRUE(torch::equal(val2.targets, val.targets));
  EXPECT_EQ(val2.inputs.data_ptr(), buffer);  // validation first, then train: one buffer
  EXPECT_EQ(static_cast<const char*>(train2.inputs.data_ptr()),
            static_cast<const char*>(buffer) + 200 * val2.inputs[0].numel() * val2.inputs.element_size());
  EXPECT_TRUE(torch::equal(shared.inputs, Indexed(1000).inputs));  // never reordered
  // A train_limit keeps the copies (a view would keep all 1000 samples alive).
  TensorDataset limited = shared.Clone();
  const auto cut = SplitTrainValidation(std::move(limited), 200, 5, 100);
  EXPECT_TRUE(torch::equal(cut.first.inputs, train.inputs.narrow(0, 0, 100)));
  EXPECT_TRUE(torch::equal(cut.second.inputs, val.inputs));
}

TEST(DataDataset, CalibrationSubset) {
  const TensorDataset full = Indexed(50);
  const TensorDataset a = CalibrationSubset(full, 10, 5);
  EXPECT_EQ(a.size(), 10);
  const auto ids = Ids(a);
  EXPECT_EQ(std::set<int64_t>(ids.begin(), ids.end()).size(), 10u);  // distinct samples
  EXPECT_EQ(Ids(CalibrationSubset(full, 10, 5)), ids);
  EXPECT_NE(Ids(CalibrationSubset(full, 10, 6)), ids);
  EXPECT_EQ(CalibrationSubset(full, 500, 5).size(), 50);  // clamped
  EXPECT_EQ(CalibrationSubset(full, 0, 5).size(), 0);
  ExpectError([&] { CalibrationSubset(full, -1, 0); }, ErrorKind::kRecipe, "got -1");
}

// All sample ids of one epoch, in order; checks x and y belong together.
std::vector<int64_t> Epoch(DataLoader& loader, int64_t epoch, std::vector<int64_t>* sizes = nullptr) {
  loader.StartEpoch(epoch);
  std::vector<int64_t> ids;
  Tensor x, y;
  while (loader.Next(x, y)) {
    EXPECT_TRUE(torch::equal(y, x.reshape({-1}).to(torch::kLong) % 10));
    if (sizes != nullptr) sizes->push_back(x.size(0));
    const Tensor flat = x.reshape({-1}).to(torch::kLong).contiguous();
    ids.insert(ids.end(), flat.data_ptr<int64_t>(), flat.data_ptr<int64_t>() + flat.numel());
  }
  return ids;
}

TEST(DataLoader, EverySampleOncePerEpochShuffledPerEpoch) {
  const TensorDataset ds = Indexed(10);
  DataLoader loader(ds, 3, /*shuffle=*/true, /*seed=*/42);
  EXPECT_EQ(loader.num_batches(), 4);
  std::vector<int64_t> sizes;
  const auto e0 = Epoch(loader, 0, &sizes);
  EXPECT_EQ(sizes, (std::vector<int64_t>{3, 3, 3, 1}));
  const auto e1 = Epoch(loader, 1);
  std::vector<int64_t> all(10);
  for (int64_t i = 0; i < 10; ++i) all[i] = i;
  auto sorted0 = e0, sorted1 = e1;
  std::sort(sorted0.begin(), sorted0.end());
  std::sort(sorted1.begin(), sorted1.end());
  EXPECT_EQ(sorted0, all);
  EXPECT_EQ(sorted1, all);
  EXPECT_NE(e0, e1);
  EXPECT_NE(e0, all);

  // Same seed, same sequence, whatever happened to the global generator; epochs can be
  // revisited; a different seed differs.
  torch::manual_seed(1234);
  DataLoader twin(ds, 3, true, 42);
  EXPECT_EQ(Epoch(twin, 1), e1);
  EXPECT_EQ(Epoch(twin, 0), e0);
  DataLoader other(ds, 3, true, 43);
  EXPECT_NE(Epoch(other, 0), e0);
}

TEST(DataLoader, InOrderAndDropLast) {
  const TensorDataset ds = Indexed(10);
  DataLoader ordered(ds, 4, /*shuffle=*/false, 0);
  EXPECT_EQ(Epoch(ordered, 3), (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  DataLoader dropping(ds, 4, true, 0, /*drop_last=*/true);
  EXPECT_EQ(dropping.num_batches(), 2);
  std::vector<int64_t> sizes;
  const auto ids = Epoch(dropping, 0, &sizes);
  EXPECT_EQ(sizes, (std::vector<int64_t>{4, 4}));
  EXPECT_EQ(std::set<int64_t>(ids.begin(), ids.end()).size(), 8u);
  // Next before any StartEpoch serves epoch 0.
  DataLoader fresh(ds, 10, false, 0);
  Tensor x, y;
  EXPECT_TRUE(fresh.Next(x, y));
  EXPECT_EQ(x.size(0), 10);
  EXPECT_FALSE(fresh.Next(x, y));
  ExpectError([&] { DataLoader(ds, 0, false, 0); }, ErrorKind::kRecipe, "batch_size must be >= 1");
}

TEST(DataCheck, NonFiniteInputsAreNumericErrors) {
  TensorDataset ds = Indexed(4);
  CheckFinite(ds, "unit");  // fine
  ds.inputs[2][0] = std::nanf("");
  ExpectError([&] { CheckFinite(ds, "unit data"); }, ErrorKind::kNumeric,
              "unit data: input data contains 1 non-finite value(s) (NaN/Inf), first in sample 2");
  ds.inputs[1][0] = INFINITY;
  ExpectError([&] { CheckDataset(ds, "unit data"); }, ErrorKind::kNumeric,
              "2 non-finite value(s) (NaN/Inf), first in sample 1");
}

TEST(DataCheck, StructuralChecks) {
  TensorDataset ds = Indexed(4);
  CheckDataset(ds, "unit");
  TensorDataset bad_targets{ds.inputs, ds.targets.to(torch::kInt)};
  ExpectError([&] { CheckDataset(bad_targets, "unit"); }, ErrorKind::kRecipe,
              "unit: targets must be int64 of shape [4]");
  TensorDataset short_targets{ds.inputs, ds.targets.narrow(0, 0, 3)};
  ExpectError([&] { CheckDataset(short_targets, "unit"); }, ErrorKind::kRecipe, "shape [4]");
  TensorDataset negative{ds.inputs, ds.targets - 1};
  ExpectError([&] { CheckDataset(negative, "unit"); }, ErrorKind::kRecipe, "found -1");
  TensorDataset int_inputs{ds.inputs.to(torch::kLong), ds.targets};
  ExpectError([&] { CheckDataset(int_inputs, "unit"); }, ErrorKind::kRecipe,
              "inputs must be a floating-point tensor");
}

// The real data set (Debian's dataset-fashion-mnist), cut small so this runs in seconds.
TEST(DataFashionMnist, LoadsSplitsAndNormalizes) {
  FashionMnistOptions options;
  // A dependency make test installs (dataset-fashion-mnist): missing is a failure.
  ASSERT_EQ(access((options.root + "/train-images-idx3-ubyte.gz").c_str(), R_OK), 0)
      << "Fashion-MNIST not installed at " << options.root << " (tools/deps.sh installs it)";
  options.validation_size = 500;
  options.train_limit = 2000;
  options.test_limit = 1000;
  options.split_seed = 11;
  const DatasetSplits s = LoadFashionMnist(options);
  EXPECT_EQ(s.train.inputs.sizes(), (std::vector<int64_t>{2000, 1, 28, 28}));
  EXPECT_EQ(s.validation.inputs.sizes(), (std::vector<int64_t>{500, 1, 28, 28}));
  EXPECT_EQ(s.test.inputs.sizes(), (std::vector<int64_t>{1000, 1, 28, 28}));
  EXPECT_EQ(s.test.targets.size(0), 1000);
  for (const TensorDataset* ds : {&s.train, &s.validation, &s.test}) {
    EXPECT_GE(ds->targets.min().item<int64_t>(), 0);
    EXPECT_LE(ds->targets.max().item<int64_t>(), 9);
    // Every class occurs in a random subset this large.
    EXPECT_EQ(torch::bincount(ds->targets, {}, 10).gt(0).sum().item<int64_t>(), 10);
  }
  // The published mean/std standardize the data: mean ~0, std ~1 on a random subset.
  EXPECT_NEAR(s.train.inputs.mean().item<double>(), 0.0, 0.05);
  EXPECT_NEAR(s.train.inputs.std().item<double>(), 1.0, 0.05);
  // Pixels span exactly the normalized [0, 255] range.
  EXPECT_NEAR(s.test.inputs.min().item<double>(), (0.0 - 0.2860) / 0.3530, 1e-5);
  EXPECT_NEAR(s.test.inputs.max().item<double>(), (1.0 - 0.2860) / 0.3530, 1e-5);
  // The first test label of Fashion-MNIST's t10k set is 9 (ankle boot).
  EXPECT_EQ(s.test.targets[0].item<int64_t>(), 9);

  const DatasetSplits again = LoadFashionMnist(options);
  EXPECT_TRUE(torch::equal(again.validation.targets, s.validation.targets));
  EXPECT_TRUE(torch::equal(again.validation.inputs, s.validation.inputs));
  options.root = "/nonexistent";
  ExpectError([&] { LoadFashionMnist(options); }, ErrorKind::kIo,
              "/nonexistent/train-images-idx3-ubyte.gz: cannot open");
}

}  // namespace
}  // namespace compress
