// LoadDataSource and its four readers. Image folders are listed in a fixed order
// (classes and files sorted by name), decoded and transformed on LibTorch's intra-op
// threads, and checked for one common size; every problem names its file or folder.
// zlib declares a global function `compress`, which clashes with our namespace: hide
// it behind another name (we never call it) before anything declares the namespace.
#define compress zlib_compress_unused
#include <zlib.h>
#undef compress

#include "compress/data/sources.h"

#include <torch/script.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <tuple>

#include "compress/base/file_util.h"
#include "compress/data/image_decode.h"

namespace compress {

namespace fs = std::filesystem;

namespace {

bool HasTransforms(const ImageTransforms& t) {
  return t.channels != 0 || !t.resize.empty() || !t.center_crop.empty() || !t.mean.empty() ||
         !t.std.empty();
}

std::string ShapeText(at::IntArrayRef sizes) {
  std::string s;
  for (size_t i = 0; i < sizes.size(); ++i) s += (i ? "x" : "") + std::to_string(sizes[i]);
  return s;
}

// Applies `t` to `inputs`, naming `where` in any error.
Tensor Transformed(const Tensor& inputs, const ImageTransforms& t, const std::string& where) {
  if (!HasTransforms(t)) return inputs;
  try {
    return ApplyImageTransforms(inputs, t);
  } catch (const Error& e) {
    throw Error(e.kind(), where + ": " + e.what());
  }
}

// Throws Error(kIo) naming `path` for the first label outside 0..classes-1 (any label
// >= 0 when classes is 0), with `hint` appended.
void CheckLabels(const Tensor& labels, int64_t classes, const std::string& path,
                 const std::string& hint) {
  if (labels.numel() == 0) return;
  Tensor bad = labels < 0;
  if (classes > 0) bad = bad | (labels >= classes);
  const Tensor where = bad.nonzero();
  if (where.numel() == 0) return;
  const int64_t i = where[0][0].item<int64_t>();
  throw Error(ErrorKind::kIo, path + ": label " + std::to_string(labels[i].item<int64_t>()) +
                                  " at index " + std::to_string(i) + " is out of range; expected " +
                                  (classes > 0 ? "0.." + std::to_string(classes - 1)
                                               : std::string("a class index >= 0")) +
                                  hint);
}

// The number of classes: the one given, else the largest training label + 1.
int64_t ClassCount(const TensorDataset& train, bool labeled, int64_t given) {
  if (given > 0) return given;
  if (!labeled || train.targets.numel() == 0) return 0;
  return train.targets.max().item<int64_t>() + 1;
}

// Train/validation from `full` (SplitTrainValidation) and the test split cut to
// test_limit; errors name `train_where`.
DatasetSplits SplitAndLimit(TensorDataset full, TensorDataset test,
                            const DataSourceSpec& spec, const std::string& train_where) {
  if (spec.test_limit < 0) {
    throw Error(ErrorKind::kRecipe,
                "test_limit must be >= 0; got " + std::to_string(spec.test_limit));
  }
  DatasetSplits splits;
  try {
    std::tie(splits.train, splits.validation) =
        SplitTrainValidation(std::move(full), spec.validation_size, spec.split_seed, spec.train_limit);
  } catch (const Error& e) {
    throw Error(e.kind(), train_where + ": " + e.what());
  }
  if (spec.test_limit > 0 && spec.test_limit < test.size()) {
    test = test.Slice(0, spec.test_limit).Clone();
  }
  splits.test = test;
  return splits;
}

// ---- idx ---------------------------------------------------------------------------

std::string PathOr(const std::string& path, const std::string& root, const char* name) {
  return path.empty() ? IdxDefaultPath(root, name) : path;
}

DatasetSplits LoadIdx(const DataSourceSpec& spec) {
  const std::string train_images = PathOr(spec.train_images, spec.root, "train-images-idx3-ubyte");
  const std::string train_labels = PathOr(spec.train_labels, spec.root, "train-labels-idx1-ubyte");
  const std::string test_images = PathOr(spec.test_images, spec.root, "t10k-images-idx3-ubyte");
  const std::string test_labels = PathOr(spec.test_labels, spec.root, "t10k-labels-idx1-ubyte");
  // Every label byte is allowed unless num_classes bounds it; test labels must fall
  // within the classes training has.
  TensorDataset full = ReadIdxPair(train_images, train_labels, /*normalize=*/false,
                                   spec.num_classes > 0 ? spec.num_classes : 256);
  TensorDataset test = ReadIdxPair(test_images, test_labels, /*normalize=*/false, 256);
  const int64_t classes = ClassCount(full, true, spec.num_classes);
  CheckLabels(test.targets, classes, test_labels,
              spec.num_classes > 0 ? "" : " (the classes in " + train_labels +
                                              "; set data.num_classes to allow more)");
  if (test.inputs.sizes().slice(1) != full.inputs.sizes().slice(1)) {
    throw Error(ErrorKind::kIo, test_images + ": images are " +
                                    ShapeText(test.inputs.sizes().slice(2)) + ", but " +
                                    train_images + " has " +
                                    ShapeText(full.inputs.sizes().slice(2)));
  }
  full.inputs = Transformed(full.inputs, spec.transforms, train_images);
  test.inputs = Transformed(test.inputs, spec.transforms, test_images);
  return SplitAndLimit(std::move(full), test, spec, train_images);
}

// ---- image-folder: listing ------------------------------------------------------------

bool IsImageName(const fs::path& path) {
  std::string ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}

bool IsHidden(const fs::path& path) {
  const std::string name = path.filename().string();
  return !name.empty() && name[0] == '.';
}

// One split folder: class subfolders (labeled) or images directly in it (unlabeled).
struct ImageSplit {
  std::vector<std::string> files;    // full paths, in load order
  std::vector<int64_t> labels;       // class index per file; -1 when unlabeled
  std::vector<std::string> classes;  // class names by index; empty when unlabeled
  bool labeled = false;
};

// The images under `dir`, recursively (hidden entries skipped), sorted by path.
std::vector<std::string> ImagesUnder(const fs::path& dir) {
  std::vector<std::string> relative;
  const auto options = fs::directory_options::follow_directory_symlink;
  for (auto it = fs::recursive_directory_iterator(dir, options);
       it != fs::recursive_directory_iterator(); ++it) {
    if (IsHidden(it->path())) {
      if (it->is_directory()) it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file() && IsImageName(it->path())) {
      relative.push_back(fs::relative(it->path(), dir).string());
    }
  }
  std::sort(relative.begin(), relative.end());
  for (auto& r : relative) r = (dir / r).string();
  return relative;
}

// Lists `dir`. A labeled split takes its class indices from `known` (the training
// classes) when given, else from its own sorted class folders.
ImageSplit ListImageSplitOf(const fs::path& dir, const std::vector<std::string>& known) {
  if (!fs::is_directory(dir)) {
    throw Error(ErrorKind::kIo, dir.string() + ": no such folder; an image folder needs "
                                               "train/ and test/ (and may have val/)");
  }
  std::vector<std::string> subdirs, images;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (IsHidden(entry.path())) continue;
    if (entry.is_directory()) subdirs.push_back(entry.path().filename().string());
    if (entry.is_regular_file() && IsImageName(entry.path())) {
      images.push_back(entry.path().filename().string());
    }
  }
  std::sort(subdirs.begin(), subdirs.end());
  std::sort(images.begin(), images.end());
  if (!subdirs.empty() && !images.empty()) {
    throw Error(ErrorKind::kIo, dir.string() + ": holds both class folders (" + subdirs[0] +
                                    "/ ...) and images (" + images[0] +
                                    " ...); expected one class folder per class, or only "
                                    "images for unlabeled data");
  }
  ImageSplit split;
  if (subdirs.empty()) {
    if (images.empty()) {
      throw Error(ErrorKind::kIo, dir.string() + ": no class folders and no .png/.jpg/.jpeg "
                                                 "images");
    }
    for (const auto& name : images) split.files.push_back((dir / name).string());
    split.labels.assign(split.files.size(), -1);
    return split;
  }
  split.labeled = true;
  split.classes = known.empty() ? subdirs : known;
  for (const auto& name : subdirs) {
    const auto pos = std::find(split.classes.begin(), split.classes.end(), name);
    if (pos == split.classes.end()) {
      throw Error(ErrorKind::kIo, (dir / name).string() + ": class \"" + name +
                                      "\" has no folder in the training split");
    }
    const std::vector<std::string> files = ImagesUnder(dir / name);
    if (files.empty()) {
      throw Error(ErrorKind::kIo, (dir / name).string() + ": empty class folder: no "
                                                          ".png/.jpg/.jpeg image in it");
    }
    split.files.insert(split.files.end(), files.begin(), files.end());
    split.labels.insert(split.labels.end(), files.size(), pos - split.classes.begin());
  }
  return split;
}

// ListImageSplitOf, with file system errors (permissions, a vanishing file) as Error(kIo).
ImageSplit ListImageSplit(const fs::path& dir, const std::vector<std::string>& known) {
  try {
    return ListImageSplitOf(dir, known);
  } catch (const fs::filesystem_error& e) {
    throw Error(ErrorKind::kIo, e.path1().string() + ": cannot list: " + e.code().message());
  }
}

// ---- image-folder: decoding ------------------------------------------------------------

std::vector<DecodedImage> DecodeFiles(const std::vector<std::string>& files) {
  std::vector<DecodedImage> images(files.size());
  ParallelForEach(static_cast<int64_t>(files.size()),
                  [&](int64_t i) { images[i] = DecodeImageFile(files[i]); });
  return images;
}

// The size every image must have after the transforms, and the file that set it.
struct CommonShape {
  std::vector<int64_t> sizes;
  std::string file;
};

// One decoded image as ToTensor gives it ([0, 1] floats, CHW), then the transforms.
Tensor ToSample(DecodedImage& im, const ImageTransforms& t, const std::string& file) {
  const Tensor pixels = at::from_blob(im.pixels.data(), {im.height, im.width, im.channels}, at::kByte);
  return Transformed(pixels.permute({2, 0, 1}).contiguous().to(at::kFloat).div_(255.0), t, file);
}

// Throws Error(kIo) naming `file` when its sample's sizes differ from `shape`'s.
void CheckCommonShape(const std::vector<int64_t>& sizes, const std::string& file,
                      const CommonShape& shape) {
  if (sizes == shape.sizes) return;
  throw Error(ErrorKind::kIo, file + ": image is " + ShapeText(sizes) +
                                  " (CxHxW after transforms), but " + shape.file + " is " +
                                  ShapeText(shape.sizes) +
                                  "; images of mixed sizes need data.resize [h, w] or "
                                  "data.center_crop");
}

// Decoded images -> samples, stacked into one dataset with the split's labels. Frees
// each image's pixels once converted.
TensorDataset ToDataset(std::vector<DecodedImage>& images, const ImageSplit& split,
                        const ImageTransforms& t, CommonShape* shape) {
  const auto n = static_cast<int64_t>(images.size());
  std::vector<Tensor> tensors(images.size());
  ParallelForEach(n, [&](int64_t i) {
    tensors[i] = ToSample(images[i], t, split.files[i]);
    images[i] = DecodedImage{};
  });
  for (int64_t i = 0; i < n; ++i) {
    const std::vector<int64_t> sizes = tensors[i].sizes().vec();
    if (shape->sizes.empty()) *shape = {sizes, split.files[i]};
    CheckCommonShape(sizes, split.files[i], *shape);
  }
  return {at::stack(tensors), at::tensor(split.labels, at::TensorOptions().dtype(at::kLong))};
}

// A split's images decoded one at a time, as a streaming dataset reads them: each gives
// exactly the sample ToDataset stacks, and the same errors.
class ImageFileSource : public SampleSource {
 public:
  // `channels_from` names the image whose channel count set t.channels (empty when the
  // recipe set data.channels): a colour image among grey ones is then refused, since
  // the in-memory path would have made every image RGB.
  ImageFileSource(std::vector<std::string> files, ImageTransforms t, CommonShape shape,
                  std::string channels_from, StreamSettings settings)
      : files_(std::move(files)), t_(std::move(t)), shape_(std::move(shape)),
        channels_from_(std::move(channels_from)) {
    this->settings = settings;
  }
  int64_t size() const override { return static_cast<int64_t>(files_.size()); }
  const std::vector<int64_t>& sample_sizes() const override { return shape_.sizes; }
  Tensor Decode(int64_t index) const override {
    const std::string& file = files_.at(static_cast<size_t>(index));
    DecodedImage im = DecodeImageFile(file);
    if (!channels_from_.empty() && im.channels > t_.channels) {
      throw Error(ErrorKind::kIo, file + ": is an RGB image, but " + channels_from_ +
                                      " (the first training image) is grayscale; a streamed "
                                      "folder of mixed images needs data.channels (1 or 3)");
    }
    Tensor x = ToSample(im, t_, file);
    CheckCommonShape(x.sizes().vec(), file, shape_);
    return x;
  }

 private:
  std::vector<std::string> files_;
  ImageTransforms t_;
  CommonShape shape_;
  std::string channels_from_;
};

// data.streaming: the splits as streaming datasets. Only the first training image is
// decoded here; it sets the sample shape (and the channel count, unless given).
DatasetSplits StreamImageFolder(const DataSourceSpec& spec, const fs::path& root,
                                const ImageSplit& train_split, const ImageSplit* val_split,
                                const ImageSplit& test_split) {
  ImageTransforms t = spec.transforms;
  DecodedImage first = DecodeImageFile(train_split.files.at(0));
  std::string channels_from;
  if (t.channels == 0) {
    t.channels = first.channels;
    channels_from = train_split.files[0];
  }
  const CommonShape shape{ToSample(first, t, train_split.files[0]).sizes().vec(),
                          train_split.files[0]};
  auto streamed = [&](const ImageSplit& split) {
    auto source = std::make_shared<ImageFileSource>(split.files, t, shape, channels_from, spec.stream);
    return TensorDataset::Streamed(std::move(source),
                                   at::tensor(split.labels, at::TensorOptions().dtype(at::kLong)));
  };
  DataSourceSpec split_spec = spec;
  if (val_split != nullptr) split_spec.validation_size = 0;
  DatasetSplits splits =
      SplitAndLimit(streamed(train_split), streamed(test_split), split_spec, (root / "train").string());
  if (val_split != nullptr) splits.validation = streamed(*val_split);
  return splits;
}

DatasetSplits LoadImageFolder(const DataSourceSpec& spec) {
  // Step 1: list every split, so a bad folder fails before anything is decoded.
  const fs::path root(spec.root);
  const ImageSplit train_split = ListImageSplit(root / "train", {});
  if (spec.num_classes > 0 && train_split.labeled &&
      static_cast<int64_t>(train_split.classes.size()) != spec.num_classes) {
    throw Error(ErrorKind::kRecipe, (root / "train").string() + ": has " +
                                        std::to_string(train_split.classes.size()) +
                                        " class folders, but data.num_classes is " +
                                        std::to_string(spec.num_classes));
  }
  const bool has_val = fs::is_directory(root / "val");
  const ImageSplit val_split = has_val ? ListImageSplit(root / "val", train_split.classes)
                                       : ImageSplit{};
  const ImageSplit test_split = ListImageSplit(root / "test", train_split.classes);
  if (spec.streaming) {
    DatasetSplits splits = StreamImageFolder(spec, root, train_split, has_val ? &val_split : nullptr,
                                             test_split);
    splits.labeled = train_split.labeled && test_split.labeled && (!has_val || val_split.labeled);
    return splits;
  }

  // Step 2: decode; channels default to 3 when any training image is in colour.
  std::vector<DecodedImage> images = DecodeFiles(train_split.files);
  ImageTransforms t = spec.transforms;
  if (t.channels == 0) {
    t.channels = std::any_of(images.begin(), images.end(),
                             [](const DecodedImage& im) { return im.channels == 3; })
                     ? 3
                     : 1;
  }
  CommonShape shape;
  const TensorDataset full = ToDataset(images, train_split, t, &shape);
  TensorDataset validation;
  if (has_val) {
    images = DecodeFiles(val_split.files);
    validation = ToDataset(images, val_split, t, &shape);
  }
  images = DecodeFiles(test_split.files);
  const TensorDataset test = ToDataset(images, test_split, t, &shape);

  // Step 3: the splits; an existing val/ replaces the carved validation set.
  DataSourceSpec split_spec = spec;
  if (has_val) split_spec.validation_size = 0;
  DatasetSplits splits = SplitAndLimit(std::move(full), test, split_spec, (root / "train").string());
  if (has_val) splits.validation = validation;
  splits.labeled = train_split.labeled && test_split.labeled && (!has_val || val_split.labeled);
  return splits;
}

// ---- tensors ---------------------------------------------------------------------------

std::vector<char> ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(ErrorKind::kIo, path + ": cannot read tensor file: " + std::strerror(errno));
  return std::vector<char>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

Tensor TensorOf(const c10::IValue& value, const std::string& path, const char* what) {
  if (value.isNone()) return {};
  if (!value.isTensor()) {
    throw Error(ErrorKind::kIo, path + ": " + what + " is a " + value.tagKind() +
                                    "; expected a tensor");
  }
  return value.toTensor();
}

// inputs and targets from the unpickled value (see ReadTensorFile for the forms).
std::pair<Tensor, Tensor> Unpack(const c10::IValue& value, const std::string& path) {
  const std::string expected = "; expected a dict {\"inputs\": Tensor, \"targets\": Tensor}, a "
                               "tuple (inputs, targets) or an inputs tensor";
  if (value.isTensor()) return {value.toTensor(), Tensor()};
  Tensor inputs, targets;
  if (value.isGenericDict()) {
    for (const auto& entry : value.toGenericDict()) {
      const std::string key = entry.key().isString() ? entry.key().toStringRef() : "";
      if (key == "inputs") {
        inputs = TensorOf(entry.value(), path, "\"inputs\"");
      } else if (key == "targets") {
        targets = TensorOf(entry.value(), path, "\"targets\"");
      } else {
        throw Error(ErrorKind::kIo, path + ": unexpected key " +
                                        (key.empty() ? entry.key().tagKind() : "\"" + key + "\"") +
                                        expected);
      }
    }
  } else if (value.isTuple() || value.isList()) {
    std::vector<c10::IValue> items;
    if (value.isTuple()) {
      for (const auto& item : value.toTupleRef().elements()) items.push_back(item);
    } else {
      items = value.toListRef().vec();
    }
    if (items.empty() || items.size() > 2) {
      throw Error(ErrorKind::kIo, path + ": holds " + std::to_string(items.size()) +
                                      " items" + expected);
    }
    inputs = TensorOf(items[0], path, "the first item");
    if (items.size() == 2) targets = TensorOf(items[1], path, "the second item");
  } else {
    throw Error(ErrorKind::kIo, path + ": holds a " + value.tagKind() + expected);
  }
  if (!inputs.defined()) throw Error(ErrorKind::kIo, path + ": no inputs tensor" + expected);
  return {inputs, targets};
}

DatasetSplits LoadTensors(const DataSourceSpec& spec) {
  bool train_labeled = true, test_labeled = true;
  TensorDataset full = ReadTensorFile(spec.train_file, &train_labeled);
  TensorDataset test = ReadTensorFile(spec.test_file, &test_labeled);
  if (test.inputs.sizes().slice(1) != full.inputs.sizes().slice(1)) {
    throw Error(ErrorKind::kIo, spec.test_file + ": samples are " +
                                    ShapeText(test.inputs.sizes().slice(1)) + ", but " +
                                    spec.train_file + " has " +
                                    ShapeText(full.inputs.sizes().slice(1)));
  }
  if (train_labeled) CheckLabels(full.targets, spec.num_classes, spec.train_file, "");
  const int64_t classes = ClassCount(full, train_labeled, spec.num_classes);
  if (test_labeled) {
    CheckLabels(test.targets, classes, spec.test_file,
                spec.num_classes > 0 ? "" : " (the classes in " + spec.train_file +
                                                "; set data.num_classes to allow more)");
  }
  CheckFinite(full, spec.train_file);
  CheckFinite(test, spec.test_file);
  full.inputs = Transformed(full.inputs, spec.transforms, spec.train_file);
  test.inputs = Transformed(test.inputs, spec.transforms, spec.test_file);
  DatasetSplits splits = SplitAndLimit(std::move(full), test, spec, spec.train_file);
  splits.labeled = train_labeled && test_labeled;
  return splits;
}

// ---- fingerprints ------------------------------------------------------------------------

std::string Crc32Hex(const std::string& text) {
  uLong crc = crc32(0L, Z_NULL, 0);
  crc = crc32(crc, reinterpret_cast<const Bytef*>(text.data()), static_cast<uInt>(text.size()));
  char hex[9];
  std::snprintf(hex, sizeof(hex), "%08lx", static_cast<unsigned long>(crc));
  return hex;
}

// A CRC over "<path relative to root>\t<size>\n" for every image of a split.
std::string ImageSplitCrc(const fs::path& root, const ImageSplit& split) {
  std::string listing;
  for (const auto& file : split.files) {
    std::error_code ec;
    const auto size = fs::file_size(file, ec);
    if (ec) throw Error(ErrorKind::kIo, file + ": cannot read: " + ec.message());
    listing += fs::relative(file, root).string() + "\t" + std::to_string(size) + "\n";
  }
  return Crc32Hex(listing);
}

}  // namespace

const std::vector<std::pair<std::string, DataSourceKind>>& DataSourceKinds() {
  static const std::vector<std::pair<std::string, DataSourceKind>> kKinds = {
      {"fashion-mnist", DataSourceKind::kFashionMnist},
      {"idx", DataSourceKind::kIdx},
      {"image-folder", DataSourceKind::kImageFolder},
      {"tensors", DataSourceKind::kTensors},
      {"caller", DataSourceKind::kCaller},
  };
  return kKinds;
}

const std::string& DataSourceKindName(DataSourceKind kind) {
  for (const auto& [name, k] : DataSourceKinds()) {
    if (k == kind) return name;
  }
  throw Error(ErrorKind::kInternal, "unknown data source kind");
}

std::string IdxDefaultPath(const std::string& root, const std::string& name) {
  const fs::path gz = fs::path(root) / (name + ".gz");
  return fs::exists(gz) ? gz.string() : (fs::path(root) / name).string();
}

DatasetSplits LoadDataSource(const DataSourceSpec& spec) {
  if (spec.streaming && spec.kind != DataSourceKind::kImageFolder) {
    throw Error(ErrorKind::kUnsupported,
                "data.streaming: not supported for dataset \"" + DataSourceKindName(spec.kind) +
                    "\" (its files are read whole); it streams an \"image-folder\"");
  }
  if (spec.stream.workers < 1 || spec.stream.prefetch < 1) {
    throw Error(ErrorKind::kRecipe, "data.workers and data.prefetch must be >= 1");
  }
  switch (spec.kind) {
    case DataSourceKind::kFashionMnist: {
      if (HasTransforms(spec.transforms)) {
        throw Error(ErrorKind::kRecipe,
                    "fashion-mnist: channels, resize, center_crop and normalize do not apply "
                    "(it is 1x28x28, normalised with mean 0.2860 and std 0.3530); use the "
                    "\"idx\" source on its files to transform it");
      }
      FashionMnistOptions options;
      options.root = spec.root;
      options.validation_size = spec.validation_size;
      options.split_seed = spec.split_seed;
      options.train_limit = spec.train_limit;
      options.test_limit = spec.test_limit;
      return LoadFashionMnist(options);
    }
    case DataSourceKind::kIdx:
      return LoadIdx(spec);
    case DataSourceKind::kImageFolder:
      return LoadImageFolder(spec);
    case DataSourceKind::kTensors:
      return LoadTensors(spec);
    case DataSourceKind::kCaller:
      throw Error(ErrorKind::kUsage,
                  "data.dataset \"caller\": the data comes from the C++ program that runs the "
                  "recipe (RunRecipeOn); there is nothing to load here");
  }
  throw Error(ErrorKind::kInternal, "unknown data source kind");
}

std::vector<std::pair<std::string, std::string>> DataSourceFingerprint(const DataSourceSpec& spec) {
  std::vector<std::pair<std::string, std::string>> out;
  switch (spec.kind) {
    case DataSourceKind::kFashionMnist:
      for (const char* f : {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                            "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}) {
        out.emplace_back(f, FileCrc32((fs::path(spec.root) / f).string()));
      }
      break;
    case DataSourceKind::kIdx:
      for (const auto& path :
           {PathOr(spec.train_images, spec.root, "train-images-idx3-ubyte"),
            PathOr(spec.train_labels, spec.root, "train-labels-idx1-ubyte"),
            PathOr(spec.test_images, spec.root, "t10k-images-idx3-ubyte"),
            PathOr(spec.test_labels, spec.root, "t10k-labels-idx1-ubyte")}) {
        out.emplace_back(path, FileCrc32(path));
      }
      break;
    case DataSourceKind::kImageFolder: {
      const fs::path root(spec.root);
      const ImageSplit train = ListImageSplit(root / "train", {});
      out.emplace_back("train/", ImageSplitCrc(root, train));
      if (fs::is_directory(root / "val")) {
        out.emplace_back("val/", ImageSplitCrc(root, ListImageSplit(root / "val", train.classes)));
      }
      out.emplace_back("test/", ImageSplitCrc(root, ListImageSplit(root / "test", train.classes)));
      break;
    }
    case DataSourceKind::kTensors:
      out.emplace_back(spec.train_file, FileCrc32(spec.train_file));
      out.emplace_back(spec.test_file, FileCrc32(spec.test_file));
      break;
    case DataSourceKind::kCaller:
      break;  // RunRecipeOn records what the caller passed
  }
  return out;
}

TensorDataset ReadTensorFile(const std::string& path, bool* labeled) {
  const std::vector<char> bytes = ReadBytes(path);
  c10::IValue value;
  try {
    value = torch::jit::pickle_load(bytes);
  } catch (const std::exception& e) {
    std::string why = e.what();
    if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e)) {
      why = c10_error->what_without_backtrace();
    }
    // LibTorch 1.13's unpickler lacks the opcodes Python uses for one-entry containers.
    const std::string hint = why.find("Unknown opcode") == std::string::npos
                                 ? ""
                                 : " (LibTorch 1.13 cannot read a one-entry dict or list: save "
                                   "{\"inputs\": x, \"targets\": None}, (x,) or x itself)";
    throw Error(ErrorKind::kIo, path + ": not a tensor file written by torch.save or "
                                       "torch::pickle_save: " + why.substr(0, why.find('\n')) +
                                       hint);
  }
  auto [inputs, targets] = Unpack(value, path);
  // Step 2: dtypes and lengths.
  if (inputs.dim() < 1 || inputs.size(0) == 0) {
    throw Error(ErrorKind::kIo, path + ": inputs have no samples (shape [" +
                                    ShapeText(inputs.sizes()) + "])");
  }
  if (inputs.scalar_type() == at::kByte) {
    inputs = inputs.to(at::kFloat).div_(255.0);
  } else if (inputs.is_floating_point()) {
    inputs = inputs.to(at::kFloat).contiguous();
  } else {
    std::ostringstream msg;
    msg << path << ": inputs are " << inputs.scalar_type() << "; expected floating point or uint8";
    throw Error(ErrorKind::kIo, msg.str());
  }
  const int64_t n = inputs.size(0);
  if (labeled != nullptr) *labeled = targets.defined();
  if (!targets.defined()) return {inputs, at::full({n}, -1, at::TensorOptions().dtype(at::kLong))};
  if (!at::isIntegralType(targets.scalar_type(), /*includeBool=*/false) || targets.dim() != 1 ||
      targets.size(0) != n) {
    std::ostringstream msg;
    msg << path << ": has " << n << " inputs but targets " << targets.scalar_type() << " ["
        << ShapeText(targets.sizes()) << "]; expected integer class indices of shape [" << n
        << "]";
    throw Error(ErrorKind::kIo, msg.str());
  }
  return {inputs, targets.to(at::kLong).contiguous()};
}

void SaveTensorFile(const std::string& path, const Tensor& inputs, const Tensor& targets) {
  if (!inputs.defined()) {
    throw Error(ErrorKind::kUsage, path + ": SaveTensorFile needs defined inputs");
  }
  c10::Dict<std::string, at::Tensor> dict;
  // Compact CPU copies: a view would drag its whole storage into the file.
  dict.insert("inputs", inputs.detach().to(at::kCPU).clone(at::MemoryFormat::Contiguous));
  if (targets.defined()) {
    dict.insert("targets", targets.detach().to(at::kCPU).clone(at::MemoryFormat::Contiguous));
  }
  const std::vector<char> bytes = torch::jit::pickle_save(c10::IValue(dict));
  WriteFileAtomic(path, std::string(bytes.begin(), bytes.end()));
}

}  // namespace compress
