// Tests for compress/data's sources and transforms: Fashion-MNIST written here as a PNG
// image folder loads bit-identical to the IDX path; JPEG decoding, channel conversion,
// torchvision Resize/CenterCrop on hand-computed examples, seeded augmentation, tensor
// files (torch::pickle_save round trips), one error naming the file for each bad input,
// the recipe's `data` keys, and streaming (the same batches and results as in memory,
// bounded prefetch, errors when the batch is read).
#include "tests/test_util.h"

#include <gtest/gtest.h>
#include <torch/script.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <string>
#include <thread>
#include <vector>

// jpeglib.h needs <cstdio> first.
#include <jpeglib.h>
#include <png.h>

#include "compress/data/data.h"
#include "compress/data/sources.h"
#include "compress/data/transforms.h"
#include "compress/engine/engine.h"
#include "compress/engine/recipe.h"
#include "tests/torchscript_fixtures.h"

namespace compress {
namespace {

namespace fs = std::filesystem;
using testing_util::ExpectError;

const std::string kFashionRoot = "/usr/share/datasets/fashion-mnist";

// A per-test temporary folder, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/mcompress_sources_test_XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  std::string Path(const std::string& relative) const {
    const fs::path p = fs::path(path_) / relative;
    fs::create_directories(p.parent_path());
    return p.string();
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// ---- writers -------------------------------------------------------------------------

// `pixels`: uint8 [H, W, C] with C 1 or 3.
void WritePng(const std::string& path, const Tensor& pixels) {
  const Tensor hwc = pixels.contiguous();
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  image.height = static_cast<png_uint_32>(hwc.size(0));
  image.width = static_cast<png_uint_32>(hwc.size(1));
  image.format = hwc.size(2) == 1 ? PNG_FORMAT_GRAY : PNG_FORMAT_RGB;
  ASSERT_NE(png_image_write_to_file(&image, path.c_str(), 0, hwc.data_ptr<uint8_t>(), 0, nullptr), 0)
      << path << ": " << image.message;
}

void WriteJpeg(const std::string& path, const Tensor& pixels, int quality) {
  const Tensor hwc = pixels.contiguous();
  std::FILE* file = std::fopen(path.c_str(), "wb");
  ASSERT_NE(file, nullptr);
  jpeg_compress_struct cinfo;
  jpeg_error_mgr errors;
  cinfo.err = jpeg_std_error(&errors);
  jpeg_create_compress(&cinfo);
  jpeg_stdio_dest(&cinfo, file);
  cinfo.image_height = static_cast<JDIMENSION>(hwc.size(0));
  cinfo.image_width = static_cast<JDIMENSION>(hwc.size(1));
  cinfo.input_components = static_cast<int>(hwc.size(2));
  cinfo.in_color_space = hwc.size(2) == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&cinfo);
  jpeg_set_quality(&cinfo, quality, TRUE);
  jpeg_start_compress(&cinfo, TRUE);
  const int64_t row_bytes = hwc.size(1) * hwc.size(2);
  while (cinfo.next_scanline < cinfo.image_height) {
    JSAMPROW row = hwc.data_ptr<uint8_t>() + cinfo.next_scanline * row_bytes;
    jpeg_write_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_compress(&cinfo);
  jpeg_destroy_compress(&cinfo);
  std::fclose(file);
}

void WriteBytes(const std::string& path, const std::vector<char>& bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::vector<char> ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<char>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void PutBE32(std::vector<char>& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((v >> shift) & 0xff));
}

// Raw (not gzip'd) IDX files: images uint8 [N, H, W], labels uint8 [N].
void WriteIdx(const std::string& images_path, const std::string& labels_path,
              const Tensor& images, const Tensor& labels) {
  std::vector<char> img, lbl;
  PutBE32(img, 0x00000803);
  for (int64_t d : images.sizes()) PutBE32(img, static_cast<uint32_t>(d));
  const Tensor bytes = images.contiguous();
  img.insert(img.end(), bytes.data_ptr<uint8_t>(), bytes.data_ptr<uint8_t>() + bytes.numel());
  PutBE32(lbl, 0x00000801);
  PutBE32(lbl, static_cast<uint32_t>(labels.size(0)));
  const Tensor l = labels.to(torch::kByte).contiguous();
  lbl.insert(lbl.end(), l.data_ptr<uint8_t>(), l.data_ptr<uint8_t>() + l.numel());
  WriteBytes(images_path, img);
  WriteBytes(labels_path, lbl);
}

// A smooth RGB gradient [H, W, 3] (JPEG-friendly).
Tensor Gradient(int64_t h, int64_t w) {
  const Tensor y = torch::arange(h).view({h, 1, 1}).expand({h, w, 1});
  const Tensor x = torch::arange(w).view({1, w, 1}).expand({h, w, 1});
  return torch::cat({x * 8, y * 10, (x + y) * 4}, 2).clamp(0, 255).to(torch::kByte);
}

// ---- the Fashion-MNIST image folder ----------------------------------------------------

struct FashionSubset {
  std::string png_root;  // png_root/{train,test}/<label>/<index>.png
  std::string idx_root;  // raw MNIST-named IDX files, the same samples in the same order
  Tensor test_order;     // Fashion-MNIST test indices, in load order
};

// The load order of an image folder: by class, then by file name (the index).
Tensor ClassOrder(const Tensor& labels) {
  std::vector<int64_t> order(static_cast<size_t>(labels.size(0)));
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
  const Tensor l = labels.contiguous();
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return l[a].item<int64_t>() < l[b].item<int64_t>();
  });
  return torch::tensor(order, torch::kLong);
}

// The first n samples of `split` ("train"/"t10k") as PNGs and as IDX files.
Tensor WriteFashionSplit(const std::string& split, const std::string& folder, int64_t n,
                         const FashionSubset& out) {
  const TensorDataset full =
      ReadIdxPair(kFashionRoot + "/" + split + "-images-idx3-ubyte.gz",
                  kFashionRoot + "/" + split + "-labels-idx1-ubyte.gz", /*normalize=*/false);
  const Tensor order = ClassOrder(full.targets.narrow(0, 0, n));
  const Tensor bytes = full.inputs.index_select(0, order).mul(255).round().to(torch::kByte);
  const Tensor labels = full.targets.index_select(0, order);
  for (int64_t i = 0; i < n; ++i) {
    char name[32];
    std::snprintf(name, sizeof(name), "%05ld.png", static_cast<long>(order[i].item<int64_t>()));
    const fs::path path = fs::path(out.png_root) / folder /
                          std::to_string(labels[i].item<int64_t>()) / name;
    fs::create_directories(path.parent_path());
    WritePng(path.string(), bytes[i].permute({1, 2, 0}));
  }
  WriteIdx(out.idx_root + "/" + split + "-images-idx3-ubyte",
           out.idx_root + "/" + split + "-labels-idx1-ubyte", bytes.squeeze(1), labels);
  return order;
}

FashionSubset WriteFashionSubset(const std::string& dir, int64_t n_train, int64_t n_test) {
  FashionSubset out{dir + "/png", dir + "/idx", Tensor()};
  fs::create_directories(out.idx_root);
  WriteFashionSplit("train", "train", n_train, out);
  out.test_order = WriteFashionSplit("t10k", "test", n_test, out);
  return out;
}

DataSourceSpec FolderSpec(const std::string& root) {
  DataSourceSpec spec;
  spec.kind = DataSourceKind::kImageFolder;
  spec.root = root;
  spec.validation_size = 0;
  return spec;
}

void ExpectSameSplits(const DatasetSplits& a, const DatasetSplits& b) {
  for (const auto& [x, y] : {std::make_pair(&a.train, &b.train),
                             std::make_pair(&a.validation, &b.validation),
                             std::make_pair(&a.test, &b.test)}) {
    ASSERT_EQ(x->inputs.sizes(), y->inputs.sizes());
    EXPECT_TRUE(torch::equal(x->inputs, y->inputs));
    EXPECT_TRUE(torch::equal(x->targets, y->targets));
  }
}

TEST(ImageFolder, FashionMnistPngsGiveTheIdxTensorsBitForBit) {
  TempDir tmp;
  const FashionSubset subset = WriteFashionSubset(tmp.path(), 600, 200);
  DataSourceSpec folder = FolderSpec(subset.png_root);
  folder.validation_size = 100;
  folder.split_seed = 3;
  folder.transforms.mean = {kFashionMnistMean};
  folder.transforms.std = {kFashionMnistStd};
  DataSourceSpec idx = folder;
  idx.kind = DataSourceKind::kIdx;
  idx.root = subset.idx_root;  // raw files under their MNIST names: the default paths

  const DatasetSplits a = LoadDataSource(folder);
  const DatasetSplits b = LoadDataSource(idx);
  EXPECT_EQ(a.train.inputs.sizes(), (std::vector<int64_t>{500, 1, 28, 28}));
  EXPECT_EQ(a.validation.size(), 100);
  EXPECT_EQ(a.test.size(), 200);
  EXPECT_TRUE(a.labeled);
  ExpectSameSplits(a, b);
  // And it is Fashion-MNIST exactly as LoadFashionMnist normalises it.
  const TensorDataset original = ReadIdxPair(kFashionRoot + "/t10k-images-idx3-ubyte.gz",
                                             kFashionRoot + "/t10k-labels-idx1-ubyte.gz");
  const TensorDataset expected = original.Select(subset.test_order);
  EXPECT_TRUE(torch::equal(a.test.inputs, expected.inputs));
  EXPECT_TRUE(torch::equal(a.test.targets, expected.targets));
  // Same split seed, same split as the IDX path; another seed, another split.
  folder.split_seed = 4;
  EXPECT_FALSE(torch::equal(LoadDataSource(folder).validation.targets, a.validation.targets));
}

// Fashion-MNIST images as RGB PNGs: each 28x28 gray image tinted by a colour drawn per
// image (seeded), so the three channels differ, under root/{train,test}/<label>/.
void WriteTintedFashionSplit(const std::string& split, const std::string& folder, int64_t n,
                             const std::string& root, uint64_t seed) {
  const TensorDataset full =
      ReadIdxPair(kFashionRoot + "/" + split + "-images-idx3-ubyte.gz",
                  kFashionRoot + "/" + split + "-labels-idx1-ubyte.gz", /*normalize=*/false);
  torch::manual_seed(seed);
  const Tensor tint = torch::rand({n, 3, 1, 1}) * 0.6 + 0.4;
  const Tensor rgb = (full.inputs.narrow(0, 0, n).expand({n, 3, 28, 28}) * tint)
                         .mul(255).round().to(torch::kByte);
  for (int64_t i = 0; i < n; ++i) {
    const fs::path path = fs::path(root) / folder /
                          std::to_string(full.targets[i].item<int64_t>()) /
                          (std::to_string(i) + ".png");
    fs::create_directories(path.parent_path());
    WritePng(path.string(), rgb[i].permute({1, 2, 0}));
  }
}

// The issue's acceptance run: an imported torchvision classifier (squeezenet1_1, traced
// by tests/fixtures/make_torchscript.py, 3-channel input, random weights) calibrated,
// quantized and evaluated on an RGB image folder; the report shows accuracy and the
// INT8 model's agreement with the FP32 one; its QDQ export verifies in ONNX Runtime.
// (ONNX Runtime's INT8 squeezenet1_1 has put only 99.53% of outputs within one step of
// ours, below the end-to-end 99.9%: one-step roundings accumulating through the network;
// the verifier then checks it value by value, docs/quantization.md.)
TEST(ImageFolder, TorchvisionClassifierIsQuantizedOnAnRgbFolder) {
  TempDir tmp;
  const std::string root = tmp.path() + "/rgb";
  WriteTintedFashionSplit("train", "train", 400, root, 1);
  WriteTintedFashionSplit("t10k", "test", 200, root, 2);
  nlohmann::json j = nlohmann::json::parse(R"({
    "input_shape": [1, 3, 64, 64],
    "data": {"dataset": "image-folder", "channels": 3, "resize": [64, 64],
             "normalize": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
             "validation_size": 50, "batch_size": 32},
    "device": "cpu", "seed": 5, "threads": 2,
    "stages": [{"pass": "quantize", "samples": 128}],
    "exports": [{"format": "onnx-qdq", "path": "int8.onnx"}],
    "report": {"formats": ["json", "md"], "latency": false},
    "acceptance": {"min_agreement": 0.8}
  })");
  j["model"] = (testing_util::TorchScriptFixtures() / "squeezenet1_1.pt").string();
  j["data"]["root"] = root;
  Recipe recipe = ParseRecipe(j, tmp.path() + "/r.json", tmp.path());
  RunOptions options;
  options.out_dir = tmp.path() + "/out";
  options.progress = "quiet";
  const RunOutcome o = RunRecipe(recipe, options);
  const Report& r = o.report;
  ASSERT_EQ(r.stages.size(), 1u);
  // The fixture has random weights (no model hub here), so its accuracy on these ten
  // classes is about chance; what is checked is that both accuracies are measured on
  // the 200 RGB test images and that INT8 stays close to FP32 on the same images.
  EXPECT_EQ(r.baseline.metrics.samples, 200);
  const Metrics& q = r.stages[0].metrics;
  EXPECT_TRUE(std::isfinite(r.baseline.metrics.top1) && std::isfinite(q.top1));
  EXPECT_NEAR(q.top1, r.baseline.metrics.top1, 0.05);
  EXPECT_GE(q.agreement, 0.9);
  EXPECT_GT(q.sqnr_db, 20);
  EXPECT_EQ(o.exit_code, 0);
  ASSERT_EQ(r.exports.size(), 1u);
  const ExportReport& e = r.exports[0];
  EXPECT_TRUE(e.verified);
  EXPECT_GE(e.top1_agreement, 0.995);
  // One way or the other, the INT8 rule held and the report says which.
  EXPECT_TRUE(e.int8_rule == "end to end" || e.int8_rule.rfind("value by value: ", 0) == 0)
      << e.int8_rule;
  std::printf("squeezenet1_1 on an RGB folder: FP32 top-1 %.4f, INT8 top-1 %.4f, agreement "
              "%.4f, SQNR %.1f dB; QDQ export verified (INT8 rule %s)\n",
              r.baseline.metrics.top1, q.top1, q.agreement, q.sqnr_db, e.int8_rule.c_str());
}

TEST(ImageFolder, AValFolderIsTheValidationSplit) {
  TempDir tmp;
  const Tensor gray = torch::full({2, 3, 1}, 7, torch::kByte);
  for (const char* f : {"train/a/0.png", "train/b/0.png", "val/b/0.png", "test/a/0.png"}) {
    WritePng(tmp.Path(f), gray);
  }
  DataSourceSpec spec = FolderSpec(tmp.path());
  spec.validation_size = 5000;  // ignored: val/ exists
  const DatasetSplits s = LoadDataSource(spec);
  EXPECT_EQ(s.train.size(), 2);
  ASSERT_EQ(s.validation.size(), 1);
  EXPECT_EQ(s.validation.targets[0].item<int64_t>(), 1);  // class "b" of train's a, b
}

TEST(ImageFolder, JpegDecodesCloseToTheWrittenPixels) {
  TempDir tmp;
  const Tensor pixels = Gradient(24, 32);
  WriteJpeg(tmp.Path("train/a/0.jpg"), pixels, 95);
  WriteJpeg(tmp.Path("test/a/0.JPEG"), pixels, 95);
  const DatasetSplits s = LoadDataSource(FolderSpec(tmp.path()));
  ASSERT_EQ(s.test.inputs.sizes(), (std::vector<int64_t>{1, 3, 24, 32}));
  const Tensor want = pixels.permute({2, 0, 1}).unsqueeze(0).to(torch::kFloat) / 255;
  const Tensor err = (s.test.inputs - want).abs();
  EXPECT_LE(err.max().item<double>(), 10.0 / 255);  // JPEG at quality 95, 4:2:0
  EXPECT_LE(err.mean().item<double>(), 2.0 / 255);
  EXPECT_GT(err.max().item<double>(), 0.0);  // it really went through lossy JPEG
}

TEST(ImageFolder, ConvertsGrayToRgbAndRgbToGray) {
  TempDir tmp;
  const Tensor gray = torch::arange(20).mul(12).view({4, 5, 1}).to(torch::kByte);
  const Tensor rgb = Gradient(4, 5);
  for (const char* split : {"train", "test"}) {
    WritePng(tmp.Path(std::string(split) + "/a/gray.png"), gray);
    WritePng(tmp.Path(std::string(split) + "/b/rgb.png"), rgb);
  }
  const Tensor gray01 = gray.permute({2, 0, 1}).to(torch::kFloat).div(255.0);
  const Tensor rgb01 = rgb.permute({2, 0, 1}).to(torch::kFloat).div(255.0);

  // Default: 3 channels, as some image is in colour; gray planes repeat exactly.
  const DatasetSplits as_rgb = LoadDataSource(FolderSpec(tmp.path()));
  ASSERT_EQ(as_rgb.test.inputs.sizes(), (std::vector<int64_t>{2, 3, 4, 5}));
  for (int c = 0; c < 3; ++c) EXPECT_TRUE(torch::equal(as_rgb.test.inputs[0][c], gray01[0]));
  EXPECT_TRUE(torch::equal(as_rgb.test.inputs[1], rgb01));
  EXPECT_TRUE(torch::equal(as_rgb.test.targets, torch::tensor({0, 1}, torch::kLong)));

  // channels 1: luma 0.2989 R + 0.587 G + 0.114 B (torchvision's Grayscale).
  DataSourceSpec spec = FolderSpec(tmp.path());
  spec.transforms.channels = 1;
  const DatasetSplits as_gray = LoadDataSource(spec);
  ASSERT_EQ(as_gray.test.inputs.sizes(), (std::vector<int64_t>{2, 1, 4, 5}));
  EXPECT_TRUE(torch::equal(as_gray.test.inputs[0], gray01));
  const Tensor r = rgb01[0].to(torch::kDouble), g = rgb01[1].to(torch::kDouble),
               b = rgb01[2].to(torch::kDouble);
  const Tensor luma = (0.2989 * r + 0.587 * g + 0.114 * b).to(torch::kFloat);
  EXPECT_LE((as_gray.test.inputs[1][0] - luma).abs().max().item<double>(), 1e-6);
}

TEST(ImageFolder, ImagesWithoutClassFoldersAreUnlabeled) {
  TempDir tmp;
  WritePng(tmp.Path("train/x.png"), torch::zeros({3, 3, 1}, torch::kByte));
  WritePng(tmp.Path("train/y.png"), torch::ones({3, 3, 1}, torch::kByte));
  WritePng(tmp.Path("test/a/z.png"), torch::ones({3, 3, 1}, torch::kByte));
  const DatasetSplits s = LoadDataSource(FolderSpec(tmp.path()));
  EXPECT_FALSE(s.labeled);
  EXPECT_TRUE(torch::equal(s.train.targets, torch::full({2}, -1, torch::kLong)));
  EXPECT_EQ(s.test.targets[0].item<int64_t>(), 0);  // test keeps its own class folders
}

TEST(ImageFolder, ResizeAndCenterCropMakeMixedSizesOneSize) {
  TempDir tmp;
  WritePng(tmp.Path("train/a/0.png"), torch::full({8, 12, 1}, 100, torch::kByte));
  WritePng(tmp.Path("train/a/1.png"), torch::full({10, 10, 1}, 200, torch::kByte));
  WritePng(tmp.Path("test/a/0.png"), torch::full({6, 9, 1}, 50, torch::kByte));
  DataSourceSpec spec = FolderSpec(tmp.path());
  spec.transforms.resize = {6};
  spec.transforms.center_crop = {5, 6};
  const DatasetSplits s = LoadDataSource(spec);
  EXPECT_EQ(s.train.inputs.sizes(), (std::vector<int64_t>{2, 1, 5, 6}));
  // A constant image stays constant through bilinear resizing and cropping.
  EXPECT_NEAR(s.test.inputs.max().item<double>(), 50 / 255.0, 1e-6);
  EXPECT_NEAR(s.test.inputs.min().item<double>(), 50 / 255.0, 1e-6);
}

// ---- transforms on hand-computed examples ------------------------------------------------

Tensor Image(std::vector<float> values, int64_t h, int64_t w) {
  return torch::tensor(values).view({1, h, w});
}

TEST(Transforms, ResizedSizeKeepsTheAspectOfTheShorterSide) {
  using P = std::pair<int64_t, int64_t>;
  EXPECT_EQ(ResizedSize(4, 6, {2}), (P{2, 3}));
  EXPECT_EQ(ResizedSize(6, 4, {2}), (P{3, 2}));
  EXPECT_EQ(ResizedSize(3, 5, {2}), (P{2, 3}));  // int(2 * 5 / 3) = int(3.33)
  EXPECT_EQ(ResizedSize(5, 5, {7}), (P{7, 7}));
  EXPECT_EQ(ResizedSize(480, 640, {224}), (P{224, 298}));  // int(298.67)
  EXPECT_EQ(ResizedSize(4, 6, {5, 3}), (P{5, 3}));
  ExpectError([] { ResizedSize(4, 6, {0}); }, ErrorKind::kRecipe, "resize: expected a positive size");
  ExpectError([] { ResizedSize(4, 6, {1, 2, 3}); }, ErrorKind::kRecipe, "[1, 2, 3]");
}

TEST(Transforms, ResizeIsBilinearWithHalfPixelCentres) {
  // 2x2 -> 4x4: source coordinate (i + 0.5) / 2 - 0.5, clamped at the border.
  const Tensor up = Resize(Image({0, 1, 2, 3}, 2, 2), {4, 4});
  const Tensor want_up = Image({0, 0.25, 0.75, 1,        //
                                0.5, 0.75, 1.25, 1.5,    //
                                1.5, 1.75, 2.25, 2.5,    //
                                2, 2.25, 2.75, 3}, 4, 4);
  EXPECT_TRUE(torch::allclose(up, want_up, 0, 1e-6)) << up;
  // 4x4 -> 2x2 without antialiasing: each output averages the 2x2 block around (2i + 0.5).
  std::vector<float> ramp(16);
  for (int i = 0; i < 16; ++i) ramp[i] = static_cast<float>(i);
  const Tensor down = Resize(Image(ramp, 4, 4), {2});
  EXPECT_TRUE(torch::allclose(down, Image({2.5, 4.5, 10.5, 12.5}, 2, 2), 0, 1e-6)) << down;
  // Same size: the tensor itself.
  const Tensor same = Image(ramp, 4, 4);
  EXPECT_TRUE(Resize(same, {4}).is_same(same));
}

TEST(Transforms, CenterCropRoundsHalvesToEvenAndPadsSmallImages) {
  std::vector<float> ramp(25);
  for (int i = 0; i < 25; ++i) ramp[i] = static_cast<float>(i);
  // 5x5 -> 3x3: offset round(1) = 1.
  EXPECT_TRUE(torch::equal(CenterCrop(Image(ramp, 5, 5), {3}),
                           Image({6, 7, 8, 11, 12, 13, 16, 17, 18}, 3, 3)));
  const Tensor four = Image(std::vector<float>(ramp.begin(), ramp.begin() + 16), 4, 4);
  // 4x4 -> 1x1: offset round(1.5) = 2; 4x4 -> 3x3: offset round(0.5) = 0.
  EXPECT_EQ(CenterCrop(four, {1}).item<float>(), 10);
  EXPECT_TRUE(torch::equal(CenterCrop(four, {3, 3}), Image({0, 1, 2, 4, 5, 6, 8, 9, 10}, 3, 3)));
  // 2x2 -> 3x4: zero rows 0 above / 1 below, columns 1 left / 1 right.
  EXPECT_TRUE(torch::equal(CenterCrop(Image({1, 2, 3, 4}, 2, 2), {3, 4}),
                           Image({0, 1, 2, 0, 0, 3, 4, 0, 0, 0, 0, 0}, 3, 4)));
  ExpectError([&] { CenterCrop(four, {0, 2}); }, ErrorKind::kRecipe, "center_crop");
}

TEST(Transforms, NormalizeIsPerChannel) {
  const Tensor x = torch::stack({torch::full({2, 2}, 0.5), torch::full({2, 2}, 1.0)});
  const Tensor y = Normalize(x, {0.5, 0.2}, {0.25, 0.4});
  EXPECT_FLOAT_EQ(y[0][1][1].item<float>(), 0.0f);
  EXPECT_FLOAT_EQ(y[1][0][0].item<float>(), 2.0f);
  EXPECT_TRUE(torch::equal(Normalize(x, {0.5}, {0.5}), (x - 0.5) / 0.5));
  EXPECT_TRUE(Normalize(x, {}, {}).is_same(x));
  ExpectError([&] { Normalize(x, {0, 0, 0}, {1, 1, 1}); }, ErrorKind::kRecipe,
              "mean has 3 values and std 3; expected 1 or 2");
  ExpectError([&] { Normalize(x, {0}, {0}); }, ErrorKind::kRecipe, "std must be > 0");
  ExpectError([&] { ConvertChannels(x, 3); }, ErrorKind::kRecipe, "cannot convert 2-channel");
}

// ---- augmentation -----------------------------------------------------------------------

Tensor Batch(int64_t n) {
  return torch::arange(n * 2 * 6 * 6, torch::kFloat).view({n, 2, 6, 6});
}

TEST(Augment, RandomCropCutsAWindowOfThePaddedImagePerSample) {
  const Tensor batch = Batch(16);
  const Tensor ids = torch::arange(100, 116);
  const Tensor out = RandomCrop(batch, ids, {6}, 2, {-1.0, -2.0}, 7, 0);
  ASSERT_EQ(out.sizes(), batch.sizes());
  const Tensor padded = torch::constant_pad_nd(batch, {2, 2, 2, 2}, 0);
  padded.select(1, 0).masked_fill_(padded.select(1, 0) == 0, -1.0);
  padded.select(1, 1).masked_fill_(padded.select(1, 1) == 0, -2.0);
  padded[0][0][2][2] = 0;  // the one genuine zero pixel
  std::set<int64_t> offsets;
  for (int64_t i = 0; i < 16; ++i) {
    int found = -1;
    for (int64_t dy = 0; dy <= 4 && found < 0; ++dy) {
      for (int64_t dx = 0; dx <= 4 && found < 0; ++dx) {
        if (torch::equal(out[i], padded[i].narrow(1, dy, 6).narrow(2, dx, 6))) found = dy * 5 + dx;
      }
    }
    EXPECT_GE(found, 0) << "sample " << i << " is no window of its padded image";
    offsets.insert(found);
  }
  EXPECT_GT(offsets.size(), 4u);  // 16 draws over 25 offsets are not all alike
}

TEST(Augment, DrawsDependOnSeedEpochAndSampleIdOnly) {
  const Tensor batch = Batch(8);
  const Tensor ids = torch::arange(8);
  const Augmentation a{{4, 4}, 1, {}, 0.5};
  const Tensor once = Augment(batch, ids, a, 1, 0);
  EXPECT_TRUE(torch::equal(once, Augment(batch, ids, a, 1, 0)));
  EXPECT_FALSE(torch::equal(once, Augment(batch, ids, a, 1, 1)));  // another epoch
  EXPECT_FALSE(torch::equal(once, Augment(batch, ids, a, 2, 0)));  // another seed
  // The same sample at another batch position gets the same crop and flip.
  const Tensor perm = torch::tensor({5, 2, 7, 0, 1, 3, 6, 4}, torch::kLong);
  const Tensor shuffled = Augment(batch.index_select(0, perm), perm, a, 1, 0);
  EXPECT_TRUE(torch::equal(shuffled, once.index_select(0, perm)));
}

TEST(Augment, HorizontalFlipHasProbabilityP) {
  const Tensor batch = torch::arange(4000, torch::kFloat).view({1000, 1, 1, 4});
  const Tensor ids = torch::arange(1000);
  EXPECT_TRUE(torch::equal(RandomHorizontalFlip(batch, ids, 1.0, 0, 0), batch.flip({3})));
  EXPECT_TRUE(RandomHorizontalFlip(batch, ids, 0.0, 0, 0).is_same(batch));
  const Tensor half = RandomHorizontalFlip(batch, ids, 0.5, 0, 0);
  const double flipped = (half.select(3, 0) != batch.select(3, 0)).to(torch::kDouble).mean().item<double>();
  EXPECT_GT(flipped, 0.44);
  EXPECT_LT(flipped, 0.56);
  ExpectError([&] { RandomCrop(batch, ids, {2, 5}, 0, {}, 0, 0); }, ErrorKind::kRecipe,
              "does not fit");
}

// ---- tensor files -----------------------------------------------------------------------

DataSourceSpec TensorSpec(const std::string& train, const std::string& test) {
  DataSourceSpec spec;
  spec.kind = DataSourceKind::kTensors;
  spec.train_file = train;
  spec.test_file = test;
  spec.validation_size = 2;
  return spec;
}

TEST(TensorFile, RoundTripWithLabels) {
  TempDir tmp;
  const Tensor x = torch::randn({10, 3, 4, 4});
  const Tensor y = torch::arange(10) % 3;
  SaveTensorFile(tmp.Path("train.pt"), x, y.to(torch::kInt));
  SaveTensorFile(tmp.Path("test.pt"), x.narrow(0, 0, 4), y.narrow(0, 0, 4));
  bool labeled = false;
  const TensorDataset back = ReadTensorFile(tmp.Path("train.pt"), &labeled);
  EXPECT_TRUE(labeled);
  EXPECT_TRUE(torch::equal(back.inputs, x));
  EXPECT_TRUE(torch::equal(back.targets, y));
  EXPECT_EQ(back.targets.scalar_type(), torch::kLong);
  const DatasetSplits s = LoadDataSource(TensorSpec(tmp.Path("train.pt"), tmp.Path("test.pt")));
  EXPECT_TRUE(s.labeled);
  EXPECT_EQ(s.train.size(), 8);
  EXPECT_EQ(s.validation.size(), 2);
  EXPECT_TRUE(torch::equal(s.test.inputs, x.narrow(0, 0, 4)));
  // A tuple (inputs, targets), as Python's torch.save((x, y), f) writes it; uint8 inputs
  // are scaled like ToTensor.
  const Tensor bytes = torch::tensor({0, 51, 255}, torch::kByte).view({3, 1});
  WriteBytes(tmp.Path("tuple.pt"), torch::jit::pickle_save(c10::ivalue::Tuple::create(
                                       {bytes, torch::tensor({2, 0, 1}, torch::kLong)})));
  const TensorDataset t = ReadTensorFile(tmp.Path("tuple.pt"));
  EXPECT_TRUE(torch::equal(t.inputs, bytes.to(torch::kFloat).div(255.0)));
  EXPECT_TRUE(torch::equal(t.targets, torch::tensor({2, 0, 1}, torch::kLong)));
}

TEST(TensorFile, WithoutLabelsTargetsAreMinusOne) {
  TempDir tmp;
  const Tensor x = torch::randn({6, 5});
  SaveTensorFile(tmp.Path("train.pt"), x);
  WriteBytes(tmp.Path("test.pt"), torch::jit::pickle_save(x.narrow(0, 0, 2).clone()));  // bare tensor
  DataSourceSpec spec = TensorSpec(tmp.Path("train.pt"), tmp.Path("test.pt"));
  spec.validation_size = 1;
  const DatasetSplits s = LoadDataSource(spec);
  EXPECT_FALSE(s.labeled);
  EXPECT_EQ(s.train.size(), 5);
  EXPECT_TRUE(torch::equal(s.test.targets, torch::full({2}, -1, torch::kLong)));
  EXPECT_TRUE(torch::equal(s.test.inputs, x.narrow(0, 0, 2)));
}

// ---- bad input: one error naming the file ------------------------------------------------

// A valid two-class folder of 4x4 gray PNGs, to break one piece of.
void WriteSmallFolder(const TempDir& tmp) {
  for (const char* f : {"train/a/0.png", "train/b/0.png", "test/a/0.png", "test/b/0.png"}) {
    WritePng(tmp.Path(f), torch::full({4, 4, 1}, 9, torch::kByte));
  }
}

TEST(SourceErrors, EmptyClassFolder) {
  TempDir tmp;
  WriteSmallFolder(tmp);
  fs::create_directories(tmp.path() + "/train/c");
  ExpectError([&] { LoadDataSource(FolderSpec(tmp.path())); }, ErrorKind::kIo,
              tmp.path() + "/train/c: empty class folder");
}

TEST(SourceErrors, UnreadableImage) {
  TempDir tmp;
  WriteSmallFolder(tmp);
  WriteBytes(tmp.Path("train/b/1.png"), {'n', 'o', 't', ' ', 'a', 'n', ' ', 'i', 'm', 'g'});
  ExpectError([&] { LoadDataSource(FolderSpec(tmp.path())); }, ErrorKind::kIo,
              tmp.path() + "/train/b/1.png: unreadable image: not a PNG or JPEG file");
}

TEST(SourceErrors, TruncatedPngAndJpeg) {
  TempDir tmp;
  WriteSmallFolder(tmp);
  WritePng(tmp.Path("scratch/full.png"), Gradient(16, 16));
  std::vector<char> png = ReadBytes(tmp.Path("scratch/full.png"));
  png.resize(png.size() / 2);
  WriteBytes(tmp.Path("test/a/1.png"), png);
  ExpectError([&] { LoadDataSource(FolderSpec(tmp.path())); }, ErrorKind::kIo,
              tmp.path() + "/test/a/1.png: unreadable PNG image: file is truncated");
  fs::remove(tmp.Path("test/a/1.png"));
  WriteJpeg(tmp.Path("scratch/full.jpg"), Gradient(16, 16), 90);
  std::vector<char> jpg = ReadBytes(tmp.Path("scratch/full.jpg"));
  jpg.resize(jpg.size() / 2);
  WriteBytes(tmp.Path("test/a/1.jpg"), jpg);
  ExpectError([&] { LoadDataSource(FolderSpec(tmp.path())); }, ErrorKind::kIo,
              tmp.path() + "/test/a/1.jpg: unreadable JPEG image: Premature end of JPEG file");
}

TEST(SourceErrors, MixedImageSizesWithoutResize) {
  TempDir tmp;
  WriteSmallFolder(tmp);
  WritePng(tmp.Path("train/b/1.png"), torch::zeros({5, 4, 1}, torch::kByte));
  DataSourceSpec spec = FolderSpec(tmp.path());
  ExpectError([&] { LoadDataSource(spec); }, ErrorKind::kIo,
              tmp.path() + "/train/b/1.png: image is 1x5x4 (CxHxW after transforms), but " +
                  tmp.path() + "/train/a/0.png is 1x4x4");
  spec.transforms.resize = {4, 4};
  EXPECT_EQ(LoadDataSource(spec).train.size(), 3);
}

TEST(SourceErrors, IdxLabelsOutOfRange) {
  TempDir tmp;
  const Tensor images = torch::zeros({4, 3, 3}, torch::kByte);
  WriteIdx(tmp.Path("train-images-idx3-ubyte"), tmp.Path("train-labels-idx1-ubyte"), images,
           torch::tensor({0, 1, 2, 1}));
  WriteIdx(tmp.Path("t10k-images-idx3-ubyte"), tmp.Path("t10k-labels-idx1-ubyte"), images,
           torch::tensor({0, 3, 1, 1}));
  DataSourceSpec spec;
  spec.kind = DataSourceKind::kIdx;
  spec.root = tmp.path();
  spec.validation_size = 1;
  ExpectError([&] { LoadDataSource(spec); }, ErrorKind::kIo,
              tmp.Path("t10k-labels-idx1-ubyte") + ": label 3 at index 1 is out of range; "
              "expected 0..2 (the classes in " + tmp.Path("train-labels-idx1-ubyte"));
  spec.num_classes = 2;
  ExpectError([&] { LoadDataSource(spec); }, ErrorKind::kIo,
              tmp.Path("train-labels-idx1-ubyte") + ": label 2 at index 2 is out of range; "
              "expected 0..1");
  spec.num_classes = 4;
  const DatasetSplits s = LoadDataSource(spec);
  EXPECT_EQ(s.train.inputs.sizes(), (std::vector<int64_t>{3, 1, 3, 3}));
}

TEST(SourceErrors, TensorFiles) {
  TempDir tmp;
  const std::string test = tmp.Path("test.pt");
  SaveTensorFile(test, torch::zeros({2, 3}), torch::zeros({2}, torch::kLong));
  const std::string mismatched = tmp.Path("mismatched.pt");
  SaveTensorFile(mismatched, torch::zeros({4, 3}), torch::zeros({3}, torch::kLong));
  ExpectError([&] { LoadDataSource(TensorSpec(mismatched, test)); }, ErrorKind::kIo,
              mismatched + ": has 4 inputs but targets Long [3]");
  const std::string negative = tmp.Path("negative.pt");
  SaveTensorFile(negative, torch::zeros({4, 3}), torch::tensor({0, 1, -1, 0}));
  ExpectError([&] { LoadDataSource(TensorSpec(negative, test)); }, ErrorKind::kIo,
              negative + ": label -1 at index 2 is out of range");
  const std::string nan = tmp.Path("nan.pt");
  Tensor x = torch::zeros({4, 3});
  x[1][2] = std::numeric_limits<float>::quiet_NaN();
  SaveTensorFile(nan, x, torch::zeros({4}, torch::kLong));
  ExpectError([&] { LoadDataSource(TensorSpec(nan, test)); }, ErrorKind::kNumeric,
              nan + ": input data contains 1 non-finite value(s) (NaN/Inf), first in sample 1");
  const std::string garbage = tmp.Path("garbage.pt");
  WriteBytes(garbage, {'P', 'K', 'x', 'y'});
  ExpectError([&] { ReadTensorFile(garbage); }, ErrorKind::kIo,
              garbage + ": not a tensor file written by torch.save or torch::pickle_save");
  const std::string wrong_key = tmp.Path("wrong_key.pt");
  c10::Dict<std::string, at::Tensor> dict;
  dict.insert("labels", torch::zeros({2}));
  WriteBytes(wrong_key, torch::jit::pickle_save(c10::IValue(dict)));
  ExpectError([&] { ReadTensorFile(wrong_key); }, ErrorKind::kIo,
              wrong_key + ": unexpected key \"labels\"");
}

// ---- fingerprints and recipes --------------------------------------------------------------

TEST(Fingerprint, FashionMnistKeepsItsFileNamesAndFoldersFollowTheirFiles) {
  DataSourceSpec fm;
  const auto entries = DataSourceFingerprint(fm);
  ASSERT_EQ(entries.size(), 4u);
  EXPECT_EQ(entries[0].first, "train-images-idx3-ubyte.gz");
  EXPECT_EQ(entries[3].second, FileCrc32(kFashionRoot + "/t10k-labels-idx1-ubyte.gz"));
  TempDir tmp;
  WriteSmallFolder(tmp);
  const auto before = DataSourceFingerprint(FolderSpec(tmp.path()));
  ASSERT_EQ(before.size(), 2u);
  EXPECT_EQ(before[0].first, "train/");
  WritePng(tmp.Path("train/a/1.png"), torch::zeros({4, 4, 1}, torch::kByte));
  const auto after = DataSourceFingerprint(FolderSpec(tmp.path()));
  EXPECT_NE(before[0].second, after[0].second);
  EXPECT_EQ(before[1].second, after[1].second);
}

nlohmann::json RecipeWithData(const nlohmann::json& data) {
  nlohmann::json j = nlohmann::json::parse(R"({
    "model": "zoo:convnet", "seed": 0,
    "stages": [{"pass": "train", "epochs": 1}, {"pass": "evaluate"}]
  })");
  j["data"] = data;
  return j;
}

std::vector<std::string> DataProblems(const nlohmann::json& data) {
  std::vector<std::string> out;
  for (const auto& p : ValidateRecipe(RecipeWithData(data), "")) out.push_back(p.path + ": " + p.message);
  return out;
}

TEST(RecipeData, ImageFolderKeysFillTheDataSpec) {
  TempDir tmp;
  WriteSmallFolder(tmp);
  const Recipe r = ParseRecipe(
      RecipeWithData({{"dataset", "image-folder"}, {"root", tmp.path()}, {"channels", 3},
                      {"resize", 36}, {"center_crop", {32, 30}}, {"validation_size", 1},
                      {"normalize", {{"mean", {0.485, 0.456, 0.406}}, {"std", {0.229, 0.224, 0.225}}}}}),
      "r.json", "");
  EXPECT_EQ(r.data.source.kind, DataSourceKind::kImageFolder);
  EXPECT_EQ(r.data.dataset, "image-folder");
  EXPECT_EQ(r.data.source.transforms.channels, 3);
  EXPECT_EQ(r.data.source.transforms.resize, (std::vector<int64_t>{36}));
  EXPECT_EQ(r.data.source.transforms.center_crop, (std::vector<int64_t>{32, 30}));
  EXPECT_EQ(r.data.source.transforms.std, (std::vector<double>{0.229, 0.224, 0.225}));
}

TEST(RecipeData, EachProblemNamesItsKey) {
  TempDir tmp;
  WriteSmallFolder(tmp);
  EXPECT_EQ(DataProblems({{"dataset", "image-folder"}}),
            std::vector<std::string>{"data.root: missing; expected the folder holding train/ and test/"});
  EXPECT_EQ(DataProblems({{"dataset", "image-folder"}, {"root", tmp.path()}, {"resize", 2.5}}),
            std::vector<std::string>{"data.resize: expected n or [h, w] with positive integers, found 2.5"});
  EXPECT_EQ(DataProblems({{"dataset", "image-folder"}, {"root", tmp.path()}, {"resize", {1, 2, 3}}}),
            std::vector<std::string>{"data.resize: expected n or [h, w] with positive integers, found [1,2,3]"});
  EXPECT_EQ(DataProblems({{"resize", 32}}),
            std::vector<std::string>{"data.resize: applies only to dataset \"idx\", \"image-folder\" or "
                                     "\"tensors\"; this dataset is \"fashion-mnist\""});
  EXPECT_EQ(DataProblems({{"dataset", "tensors"}, {"train", tmp.path() + "/none.pt"}}),
            (std::vector<std::string>{"data.train: file \"" + tmp.path() + "/none.pt\" does not exist",
                                      "data.test: missing; expected the path of a tensor file"}));
  EXPECT_EQ(DataProblems({{"dataset", "idx"}, {"root", tmp.path()}})[0],
            "data.train_images: file \"" + tmp.path() +
                "/train-images-idx3-ubyte\" does not exist (the default under data.root)");
  EXPECT_EQ(DataProblems({{"dataset", "image-folder"}, {"root", tmp.path()}, {"channels", 3},
                          {"normalize", {{"mean", {0.5, 0.5}}, {"std", {0.5, 0.5}}}}}),
            std::vector<std::string>{"data.normalize: has 2 values per key; expected 1 or data.channels (3)"});
  EXPECT_EQ(DataProblems({{"dataset", "idx"}, {"validation_size", 100000}}),
            std::vector<std::string>{});  // only Fashion-MNIST caps it at 59999
}

// ---- streaming ---------------------------------------------------------------------------

DataSourceSpec StreamingSpec(const std::string& root, int64_t workers, int64_t prefetch) {
  DataSourceSpec spec = FolderSpec(root);
  spec.validation_size = 100;
  spec.split_seed = 3;
  spec.transforms.mean = {kFashionMnistMean};
  spec.transforms.std = {kFashionMnistStd};
  spec.streaming = true;
  spec.stream = {workers, prefetch};
  return spec;
}

// Every batch of `a` and `b` over two epochs: the same indices, inputs and labels.
void ExpectSameBatches(const TensorDataset& a, const TensorDataset& b, int64_t batch,
                       bool shuffle, int64_t rank = 0, int64_t world = 1) {
  DataLoader la(a, batch, shuffle, 11), lb(b, batch, shuffle, 11);
  la.Shard(rank, world);
  lb.Shard(rank, world);
  ASSERT_EQ(la.num_batches(), lb.num_batches());
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    la.StartEpoch(epoch);
    lb.StartEpoch(epoch);
    Tensor xa, ya, xb, yb;
    int64_t batches = 0;
    while (la.Next(xa, ya)) {
      ASSERT_TRUE(lb.Next(xb, yb));
      ASSERT_EQ(xa.sizes(), xb.sizes());
      EXPECT_TRUE(torch::equal(xa, xb)) << "epoch " << epoch << " batch " << batches;
      EXPECT_TRUE(torch::equal(ya, yb));
      EXPECT_TRUE(torch::equal(la.last_indices(), lb.last_indices()));
      EXPECT_EQ(la.last_global_count(), lb.last_global_count());
      ++batches;
    }
    EXPECT_FALSE(lb.Next(xb, yb));
    EXPECT_EQ(batches, la.num_batches());
  }
}

TEST(Streaming, BatchesAreTheInMemoryBatchesBitForBit) {
  TempDir tmp;
  const FashionSubset subset = WriteFashionSubset(tmp.path(), 600, 200);
  DataSourceSpec memory = StreamingSpec(subset.png_root, 2, 4);
  memory.streaming = false;
  const DatasetSplits m = LoadDataSource(memory);
  for (const auto [workers, prefetch] : {std::pair{2, 4}, std::pair{3, 1}, std::pair{1, 1}}) {
    const DatasetSplits s = LoadDataSource(StreamingSpec(subset.png_root, workers, prefetch));
    ASSERT_TRUE(s.train.streaming() && s.validation.streaming() && s.test.streaming());
    EXPECT_FALSE(s.train.inputs.defined());  // nothing decoded by loading
    EXPECT_EQ(s.train.size(), 500);
    EXPECT_EQ(s.validation.size(), 100);
    EXPECT_EQ(s.train.sample_sizes(), (std::vector<int64_t>{1, 28, 28}));
    // The same seeded split and the same decoded samples as the in-memory path.
    ExpectSameSplits(m, {s.train.Materialized(), s.validation.Materialized(),
                         s.test.Materialized(), s.labeled});
    ExpectSameBatches(m.train, s.train, 64, /*shuffle=*/true);
    ExpectSameBatches(m.test, s.test, 48, /*shuffle=*/false);
    ExpectSameBatches(m.train, s.train, 64, /*shuffle=*/true, /*rank=*/1, /*world=*/2);
  }
  // Select and Slice pick rows without decoding, and still the same samples.
  const DatasetSplits s = LoadDataSource(StreamingSpec(subset.png_root, 2, 2));
  const Tensor pick = torch::tensor({7, 3, 3, 499}, torch::kLong);
  EXPECT_TRUE(torch::equal(s.train.Select(pick).Materialized().inputs, m.train.Select(pick).inputs));
  EXPECT_TRUE(torch::equal(s.train.Slice(490, 50).Materialized().inputs, m.train.Slice(490, 50).inputs));
  // test_limit cuts the streamed test split as it cuts the loaded one.
  DataSourceSpec limited = StreamingSpec(subset.png_root, 2, 2);
  limited.test_limit = 30;
  memory.test_limit = 30;
  EXPECT_TRUE(torch::equal(LoadDataSource(limited).test.Materialized().inputs,
                           LoadDataSource(memory).test.inputs));
}

TEST(Streaming, TrainingAndTheRecipeGiveTheInMemoryResults) {
  TempDir tmp;
  const FashionSubset subset = WriteFashionSubset(tmp.path(), 400, 200);
  auto run = [&](bool streaming) {
    nlohmann::json j = nlohmann::json::parse(R"({
      "model": "zoo:lenet5",
      "data": {"dataset": "image-folder", "normalize": {"mean": [0.2860], "std": [0.3530]},
               "validation_size": 100, "batch_size": 32, "calibration_samples": 96},
      "device": "cpu", "seed": 2, "threads": 2,
      "stages": [{"pass": "train", "epochs": 1, "optimizer": {"name": "adam", "lr": 0.002}},
                 {"pass": "quantize-sensitivity", "samples": 64},
                 {"pass": "quantize"}],
      "report": {"formats": ["json"], "latency": false}
    })");
    j["data"]["root"] = subset.png_root;
    j["data"]["streaming"] = streaming;
    Recipe recipe = ParseRecipe(j, tmp.path() + "/r.json", tmp.path());
    RunOptions options;
    options.out_dir = tmp.path() + (streaming ? "/stream" : "/memory");
    options.progress = "quiet";
    return RunRecipe(recipe, options).report;
  };
  const Report memory = run(false);
  const Report streamed = run(true);
  ASSERT_EQ(memory.stages.size(), 3u);
  ASSERT_EQ(streamed.stages.size(), 3u);
  // Same batches, same kernels: the trained, calibrated and quantized models measure the
  // same on the same test images, to the last bit of every metric.
  for (size_t i = 0; i < memory.stages.size(); ++i) {
    EXPECT_EQ(memory.stages[i].metrics.top1, streamed.stages[i].metrics.top1) << i;
    EXPECT_EQ(memory.stages[i].metrics.loss, streamed.stages[i].metrics.loss) << i;
  }
  EXPECT_GT(memory.stages[0].metrics.top1, 0.15);  // it learned from the PNGs (chance: 0.1)
}

// A source of n samples [1, 2, 2] with value = index, that counts its decodes: a caller
// of the C++ API streams its own data through one of these.
class CountingSource : public SampleSource {
 public:
  explicit CountingSource(int64_t n) : n_(n) {}
  int64_t size() const override { return n_; }
  const std::vector<int64_t>& sample_sizes() const override { return sizes_; }
  Tensor Decode(int64_t index) const override {
    ++decoded;
    if (index == poison) throw Error(ErrorKind::kIo, "sample " + std::to_string(index) + ": bad");
    return torch::full({1, 2, 2}, static_cast<float>(index));
  }
  mutable std::atomic<int64_t> decoded{0};
  int64_t poison = -1;

 private:
  int64_t n_;
  std::vector<int64_t> sizes_{1, 2, 2};
};

TEST(Streaming, PrefetchStaysAFewBatchesAheadAndErrorsComeInOrder) {
  auto source = std::make_shared<CountingSource>(1000);
  source->settings = {2, 3};
  const TensorDataset data = TensorDataset::Streamed(source, torch::zeros({1000}, torch::kLong));
  DataLoader loader(data, 10, /*shuffle=*/true, 5);
  Tensor x, y;
  ASSERT_TRUE(loader.Next(x, y));
  EXPECT_TRUE(torch::equal(x.select(1, 0).select(1, 0).select(1, 0),
                           loader.last_indices().to(torch::kFloat)));
  // However long the consumer waits, the workers stop 3 batches ahead of what it took
  // (the bound, not a timing: without it all 100 batches would be decoded by now).
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_LE(source->decoded.load(), 10 * (1 + 3));
  EXPECT_GE(source->decoded.load(), 10 * (1 + 1));  // and they did decode ahead
  int64_t batches = 1;
  while (loader.Next(x, y)) ++batches;
  EXPECT_EQ(batches, 100);
  EXPECT_EQ(source->decoded.load(), 1000);

  // A failing sample fails the batch that holds it, when that batch is taken; the batches
  // before it are served.
  source->poison = 123;
  DataLoader plain(data, 10, /*shuffle=*/false, 0);
  for (int i = 0; i < 12; ++i) ASSERT_TRUE(plain.Next(x, y));
  ExpectError([&] { plain.Next(x, y); }, ErrorKind::kIo, "sample 123: bad");
  // A new epoch starts over (the failed one's workers are stopped first).
  plain.StartEpoch(1);
  ASSERT_TRUE(plain.Next(x, y));
  EXPECT_EQ(x[0][0][0][0].item<float>(), 0.0f);
}

TEST(Streaming, DecodingErrorsNameTheFileWhenTheBatchIsRead) {
  TempDir tmp;
  WriteSmallFolder(tmp);
  WriteBytes(tmp.Path("train/b/1.png"), {'n', 'o', 't', ' ', 'a', 'n', ' ', 'i', 'm', 'g'});
  DataSourceSpec spec = FolderSpec(tmp.path());
  spec.streaming = true;
  DatasetSplits s = LoadDataSource(spec);  // lists only: the bad file is not read yet
  ExpectError([&] { s.train.Materialized(); }, ErrorKind::kIo,
              tmp.path() + "/train/b/1.png: unreadable image: not a PNG or JPEG file");
  // A size that differs from the first training image's.
  WritePng(tmp.Path("train/b/1.png"), torch::zeros({5, 4, 1}, torch::kByte));
  s = LoadDataSource(spec);
  DataLoader loader(s.train, 2, /*shuffle=*/false, 0);
  Tensor x, y;
  ExpectError([&] { loader.Next(x, y); }, ErrorKind::kIo,
              tmp.path() + "/train/b/1.png: image is 1x5x4 (CxHxW after transforms), but " +
                  tmp.path() + "/train/a/0.png is 1x4x4");
  // A colour image among grey ones: the in-memory path would make all RGB; streaming
  // cannot know without reading every file, so it asks for data.channels.
  WritePng(tmp.Path("train/b/1.png"), torch::full({4, 4, 3}, 50, torch::kByte));
  ExpectError([&] { LoadDataSource(spec).train.Materialized(); }, ErrorKind::kIo,
              tmp.path() + "/train/b/1.png: is an RGB image, but " + tmp.path() +
                  "/train/a/0.png (the first training image) is grayscale; a streamed folder of "
                  "mixed images needs data.channels (1 or 3)");
  spec.transforms.channels = 3;
  DataSourceSpec memory = spec;
  memory.streaming = false;
  EXPECT_TRUE(torch::equal(LoadDataSource(spec).train.Materialized().inputs,
                           LoadDataSource(memory).train.inputs));
  // Only an image folder streams.
  spec.kind = DataSourceKind::kFashionMnist;
  spec.root = kFashionRoot;
  spec.transforms = {};
  ExpectError([&] { LoadDataSource(spec); }, ErrorKind::kUnsupported,
              "data.streaming: not supported for dataset \"fashion-mnist\"");
  EXPECT_EQ(DataProblems({{"streaming", true}}),
            std::vector<std::string>{"data.streaming: applies only to dataset \"image-folder\"; "
                                     "this dataset is \"fashion-mnist\""});
  EXPECT_EQ(DataProblems({{"dataset", "image-folder"}, {"root", tmp.path()}, {"workers", 0}}).size(), 1u);
}

}  // namespace
}  // namespace compress
