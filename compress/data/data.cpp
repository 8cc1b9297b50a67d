// Tensor datasets, the gzip'd IDX reader behind Fashion-MNIST, seeded splits and the
// batch loader. Randomness here comes only from explicit seeds (mt19937_64), so a run
// is reproducible whatever else touched LibTorch's global generator.
// zlib declares a global function `compress`, which clashes with our namespace: hide
// it behind another name (we never call it) before anything declares the namespace.
#define compress zlib_compress_unused
#include <zlib.h>
#undef compress

#include "compress/data/data.h"

#include <torch/torch.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <sstream>
#include <tuple>
#include <utility>
#include <vector>

namespace compress {

// ---- TensorDataset -----------------------------------------------------------------

TensorDataset TensorDataset::Streamed(std::shared_ptr<const SampleSource> source, Tensor targets) {
  if (source == nullptr || !targets.defined() || targets.dim() != 1 ||
      targets.size(0) != source->size()) {
    throw Error(ErrorKind::kInternal, "TensorDataset::Streamed: one target per source sample "
                                      "is needed");
  }
  TensorDataset d;
  d.rows = torch::arange(source->size(), torch::kLong);
  d.targets = std::move(targets);
  d.source = std::move(source);
  return d;
}

int64_t TensorDataset::size() const {
  if (streaming()) return rows.defined() ? rows.size(0) : 0;
  if (!inputs.defined() || inputs.dim() == 0) return 0;
  return inputs.size(0);
}

c10::Device TensorDataset::device() const {
  if (inputs.defined()) return inputs.device();
  if (targets.defined()) return targets.device();
  return c10::Device(c10::kCPU);
}

std::vector<int64_t> TensorDataset::sample_sizes() const {
  if (streaming()) return source->sample_sizes();
  if (!inputs.defined() || inputs.dim() < 1) {
    throw Error(ErrorKind::kRecipe, "dataset has no inputs; expected a tensor [N, ...]");
  }
  return inputs.sizes().slice(1).vec();
}

TensorDataset TensorDataset::Select(const Tensor& indices) const {
  const Tensor idx = indices.to(torch::kLong);
  if (streaming()) {
    TensorDataset d = *this;
    d.rows = rows.index_select(0, idx.to(torch::kCPU));
    d.targets = targets.index_select(0, idx.to(targets.device()));
    return d;
  }
  return {inputs.index_select(0, idx.to(inputs.device())),
          targets.index_select(0, idx.to(targets.device()))};
}

TensorDataset TensorDataset::Slice(int64_t start, int64_t count) const {
  const int64_t n = size();
  start = std::clamp<int64_t>(start, 0, n);
  count = std::clamp<int64_t>(count, 0, n - start);
  if (streaming()) {
    TensorDataset d = *this;
    d.rows = rows.narrow(0, start, count);
    d.targets = targets.narrow(0, start, count);
    return d;
  }
  return {inputs.narrow(0, start, count), targets.narrow(0, start, count)};
}

TensorDataset TensorDataset::To(const c10::Device& device) const {
  TensorDataset d = *this;
  if (inputs.defined()) d.inputs = inputs.to(device);
  if (targets.defined()) d.targets = targets.to(device);
  return d;
}

TensorDataset TensorDataset::Clone() const {
  TensorDataset d = *this;
  if (inputs.defined()) d.inputs = inputs.clone();
  if (targets.defined()) d.targets = targets.clone();
  if (rows.defined()) d.rows = rows.clone();
  return d;
}

TensorDataset TensorDataset::Materialized() const {
  if (!streaming()) return *this;
  return {DecodeRows(*source, rows, /*parallel=*/true).to(device()), targets};
}

void CheckFinite(const TensorDataset& dataset, const std::string& where) {
  if (dataset.streaming() || !dataset.inputs.defined() || !dataset.inputs.is_floating_point() ||
      dataset.inputs.numel() == 0) {
    return;
  }
  torch::NoGradGuard no_grad;
  // Fast path, one reduction: a NaN or an infinity among the values makes their sum NaN or
  // infinite, so a finite sum proves every value finite. Evaluate runs this on every call
  // (each epoch's validation), where the elementwise check below was ~10 ms per 10k
  // Fashion-MNIST images; only a non-finite sum (a bad value, or an overflow of large
  // ones) pays for it.
  if (std::isfinite(dataset.inputs.sum().item<double>())) return;
  const Tensor bad = ~torch::isfinite(dataset.inputs);
  const int64_t count = bad.sum().item<int64_t>();
  if (count == 0) return;
  const int64_t first = bad.reshape({dataset.inputs.size(0), -1})
                            .any(1).to(torch::kInt).argmax().item<int64_t>();
  std::ostringstream msg;
  msg << where << ": input data contains " << count
      << " non-finite value(s) (NaN/Inf), first in sample " << first
      << "; expected finite inputs";
  throw Error(ErrorKind::kNumeric, msg.str());
}

bool HasLabels(const TensorDataset& dataset) {
  const Tensor& y = dataset.targets;
  return y.defined() && y.numel() == dataset.size() &&
         (y.numel() == 0 || y.min().item<int64_t>() >= 0);
}

void CheckDataset(const TensorDataset& dataset, const std::string& where, bool labels) {
  const Tensor& x = dataset.inputs;
  const Tensor& y = dataset.targets;
  if (!(x.defined() || dataset.streaming()) || !y.defined()) {
    throw Error(ErrorKind::kRecipe, where + ": dataset has undefined inputs or targets");
  }
  // A streaming source decodes float samples of one shape (SampleSource::Decode).
  if (!dataset.streaming() && (!x.is_floating_point() || x.dim() < 1)) {
    std::ostringstream msg;
    msg << where << ": inputs must be a floating-point tensor [N, ...]; got "
        << x.scalar_type() << " of rank " << x.dim();
    throw Error(ErrorKind::kRecipe, msg.str());
  }
  const int64_t n = dataset.size();
  if (y.scalar_type() != torch::kLong || y.dim() != 1 || y.size(0) != n) {
    std::ostringstream msg;
    msg << where << ": targets must be int64 of shape [" << n
        << "] (one class index per input sample); got " << y.scalar_type() << " "
        << y.sizes();
    throw Error(ErrorKind::kRecipe, msg.str());
  }
  if (labels && y.numel() > 0) {
    const int64_t lowest = y.min().item<int64_t>();
    if (lowest == -1) {
      throw Error(ErrorKind::kRecipe, where + ": targets must be class indices >= 0; found -1 "
                                              "(unlabeled data: distill with alpha 1 trains "
                                              "without labels)");
    }
    if (lowest < 0) {
      throw Error(ErrorKind::kRecipe, where + ": targets must be class indices >= 0; found " +
                                          std::to_string(lowest));
    }
  }
  CheckFinite(dataset, where);
}

Tensor SeededPermutation(int64_t n, uint64_t seed) {
  // Fisher-Yates with our own index draw: std::shuffle and uniform_int_distribution
  // are implementation-defined, mt19937_64's raw output is not.
  std::vector<int64_t> perm(static_cast<size_t>(std::max<int64_t>(n, 0)));
  for (int64_t i = 0; i < n; ++i) perm[i] = i;
  std::mt19937_64 rng(seed);
  for (int64_t i = n - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(
        (static_cast<unsigned __int128>(rng()) * static_cast<uint64_t>(i + 1)) >> 64);
    std::swap(perm[i], perm[j]);
  }
  return torch::tensor(perm, torch::kLong);
}

// ---- IDX reader --------------------------------------------------------------------

namespace {

constexpr uint32_t kIdxImagesMagic = 0x00000803;  // unsigned byte, 3 dims
constexpr uint32_t kIdxLabelsMagic = 0x00000801;  // unsigned byte, 1 dim

std::string Hex(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%08x", v);
  return buf;
}

// A gzip (or plain: zlib reads those transparently) file, closed on scope exit.
class GzFile {
 public:
  explicit GzFile(const std::string& path) : path_(path) {
    errno = 0;
    file_ = gzopen(path.c_str(), "rb");
    if (file_ == nullptr) {
      throw Error(ErrorKind::kIo, path + ": cannot open: " +
                                      (errno != 0 ? std::strerror(errno) : "gzopen failed"));
    }
  }
  ~GzFile() {
    if (file_ != nullptr) gzclose(file_);
  }
  GzFile(const GzFile&) = delete;
  GzFile& operator=(const GzFile&) = delete;

  // Reads up to `len` bytes; returns how many were read (short at end of data).
  size_t Read(void* buf, size_t len) {
    size_t done = 0;
    auto* out = static_cast<unsigned char*>(buf);
    while (done < len) {
      const auto chunk = static_cast<unsigned>(std::min<size_t>(len - done, 1u << 24));
      const int got = gzread(file_, out + done, chunk);
      if (got < 0) {
        int errnum = 0;
        const char* msg = gzerror(file_, &errnum);
        throw Error(ErrorKind::kIo, path_ + ": corrupt gzip data: " + (msg ? msg : "?"));
      }
      if (got == 0) break;
      done += static_cast<size_t>(got);
    }
    return done;
  }

  uint32_t ReadBigEndian32(const char* what) {
    unsigned char b[4];
    const size_t got = Read(b, 4);
    if (got != 4) {
      throw Error(ErrorKind::kIo, path_ + ": truncated IDX header: expected 4 bytes of " +
                                      what + ", got " + std::to_string(got));
    }
    return (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | b[3];
  }

  // Reads exactly `n` payload bytes (in chunks, so a corrupt header claiming a huge
  // count fails on the short read instead of allocating it) and checks nothing follows.
  std::vector<uint8_t> ReadPayload(uint64_t n, const char* what) {
    std::vector<uint8_t> data;
    data.reserve(static_cast<size_t>(std::min<uint64_t>(n, uint64_t{1} << 26)));
    constexpr size_t kChunk = size_t{1} << 22;
    while (data.size() < n) {
      const size_t want = static_cast<size_t>(std::min<uint64_t>(n - data.size(), kChunk));
      const size_t old = data.size();
      data.resize(old + want);
      const size_t got = Read(data.data() + old, want);
      data.resize(old + got);
      if (got < want) break;
    }
    if (data.size() != n) {
      throw Error(ErrorKind::kIo, path_ + ": truncated IDX data: expected " + std::to_string(n) +
                                      " bytes of " + what + ", got " +
                                      std::to_string(data.size()));
    }
    unsigned char extra;
    if (Read(&extra, 1) != 0) {
      throw Error(ErrorKind::kIo, path_ + ": unexpected trailing data after " +
                                      std::to_string(n) + " bytes of " + what +
                                      "; the header's dims do not match the file");
    }
    return data;
  }

 private:
  std::string path_;
  gzFile file_ = nullptr;
};

void CheckMagic(const std::string& path, uint32_t magic, uint32_t expected, const char* kind) {
  if (magic != expected) {
    throw Error(ErrorKind::kIo, path + ": not an IDX " + kind + " file: magic number " +
                                    Hex(magic) + ", expected " + Hex(expected));
  }
}

}  // namespace

TensorDataset ReadIdxPair(const std::string& images_path, const std::string& labels_path,
                          bool normalize, int64_t num_classes) {
  // Step 1: images. Header: magic, count, rows, cols (big-endian uint32), then bytes.
  Tensor images;
  uint32_t count = 0;
  {
    GzFile file(images_path);
    CheckMagic(images_path, file.ReadBigEndian32("magic number"), kIdxImagesMagic,
               "ubyte image (idx3)");
    count = file.ReadBigEndian32("image count");
    const uint32_t rows = file.ReadBigEndian32("row count");
    const uint32_t cols = file.ReadBigEndian32("column count");
    if (count == 0 || rows == 0 || cols == 0) {
      throw Error(ErrorKind::kIo, images_path + ": IDX header has a zero dimension (" +
                                      std::to_string(count) + " x " + std::to_string(rows) +
                                      " x " + std::to_string(cols) +
                                      "); expected a non-empty image set");
    }
    // count x rows x cols can exceed 64 bits (fuzz_idx): such a header is corrupt, since
    // no file holds 2^63 bytes, and must not wrap around to a small payload.
    const uint64_t per_image = uint64_t{rows} * cols;  // < 2^64: two 32-bit factors
    if (per_image > static_cast<uint64_t>(INT64_MAX) / count) {
      throw Error(ErrorKind::kIo, images_path + ": IDX header declares " + std::to_string(count) +
                                      " x " + std::to_string(rows) + " x " + std::to_string(cols) +
                                      " bytes, more than 2^63; the header is corrupt");
    }
    const uint64_t n = per_image * count;
    std::vector<uint8_t> bytes = file.ReadPayload(n, "images");
    images = torch::from_blob(bytes.data(),
                              {static_cast<int64_t>(count), 1, static_cast<int64_t>(rows),
                               static_cast<int64_t>(cols)},
                              torch::kUInt8)
                 .to(torch::kFloat)
                 .div_(255.0);
  }
  if (normalize) images.sub_(kFashionMnistMean).div_(kFashionMnistStd);

  // Step 2: labels. Header: magic, count, then one byte per label.
  GzFile file(labels_path);
  CheckMagic(labels_path, file.ReadBigEndian32("magic number"), kIdxLabelsMagic,
             "ubyte label (idx1)");
  const uint32_t label_count = file.ReadBigEndian32("label count");
  if (label_count != count) {
    throw Error(ErrorKind::kIo, labels_path + ": has " + std::to_string(label_count) +
                                    " labels, expected " + std::to_string(count) +
                                    " to match " + images_path);
  }
  std::vector<uint8_t> bytes = file.ReadPayload(label_count, "labels");
  Tensor labels = torch::from_blob(bytes.data(), {static_cast<int64_t>(label_count)},
                                   torch::kUInt8)
                      .to(torch::kLong);
  const Tensor bad = (labels >= num_classes).nonzero();
  if (bad.numel() > 0) {
    const int64_t i = bad[0][0].item<int64_t>();
    throw Error(ErrorKind::kIo, labels_path + ": label " +
                                    std::to_string(labels[i].item<int64_t>()) + " at index " +
                                    std::to_string(i) + " is out of range; expected 0.." +
                                    std::to_string(num_classes - 1));
  }
  return {images, labels};
}

namespace {

// Rows of a contiguous CPU tensor reordered in place so that row i becomes the old row
// perm[i] (a permutation of 0..n-1), following its cycles with one row of scratch: the
// same values as index_select(0, perm) without a second copy of the data.
void PermuteRowsInPlace(Tensor& t, const Tensor& perm) {
  const int64_t n = t.size(0);
  if (n == 0) return;
  const size_t row = static_cast<size_t>(t.numel() / n) * t.element_size();
  auto* base = static_cast<unsigned char*>(t.data_ptr());
  const Tensor p = perm.to(torch::kLong).contiguous();
  const int64_t* to = p.data_ptr<int64_t>();
  std::vector<unsigned char> scratch(row);
  std::vector<bool> done(static_cast<size_t>(n), false);
  for (int64_t start = 0; start < n; ++start) {
    if (done[static_cast<size_t>(start)]) continue;
    std::memcpy(scratch.data(), base + start * row, row);
    int64_t j = start;
    while (true) {
      done[static_cast<size_t>(j)] = true;
      const int64_t k = to[j];
      if (k == start) {
        std::memcpy(base + j * row, scratch.data(), row);
        break;
      }
      std::memcpy(base + j * row, base + k * row, row);
      j = k;
    }
  }
}

}  // namespace

std::pair<TensorDataset, TensorDataset> SplitTrainValidation(TensorDataset full,
                                                             int64_t validation_size,
                                                             uint64_t seed,
                                                             int64_t train_limit) {
  if (validation_size < 0 || train_limit < 0) {
    throw Error(ErrorKind::kRecipe, "validation split: validation_size (" +
                                        std::to_string(validation_size) + ") and train_limit (" +
                                        std::to_string(train_limit) + ") must be >= 0");
  }
  const int64_t n = full.size();
  if (validation_size >= n) {
    throw Error(ErrorKind::kRecipe, "validation split: validation_size " +
                                        std::to_string(validation_size) +
                                        " leaves no training data; expected fewer than " +
                                        std::to_string(n));
  }
  const Tensor perm = SeededPermutation(n, seed);
  Tensor rest = perm.narrow(0, validation_size, n - validation_size);
  if (train_limit > 0 && train_limit < rest.size(0)) rest = rest.narrow(0, 0, train_limit);
  // Every sample is used and nothing else holds the inputs: reorder them in place and
  // hand out two views (validation first), instead of copies beside the original — the
  // peak of loading Fashion-MNIST was the 60k images twice (188 MB more).
  const bool whole = rest.size(0) == n - validation_size;
  if (whole && !full.streaming() && full.inputs.defined() && full.inputs.device().is_cpu() &&
      full.inputs.is_contiguous() && full.inputs.use_count() == 1 &&
      full.inputs.storage().use_count() == 1) {
    PermuteRowsInPlace(full.inputs, perm);
    const Tensor targets = full.targets.index_select(0, perm.to(full.targets.device()));
    const TensorDataset reordered{full.inputs, targets};
    return {reordered.Slice(validation_size, n - validation_size),
            reordered.Slice(0, validation_size)};
  }
  return {full.Select(rest), full.Select(perm.narrow(0, 0, validation_size))};
}

DatasetSplits LoadFashionMnist(const FashionMnistOptions& options) {
  if (options.test_limit < 0) {
    throw Error(ErrorKind::kRecipe, "Fashion-MNIST: test_limit must be >= 0; got " +
                                        std::to_string(options.test_limit));
  }
  const std::string& root = options.root;
  TensorDataset full = ReadIdxPair(root + "/train-images-idx3-ubyte.gz",
                                   root + "/train-labels-idx1-ubyte.gz");
  DatasetSplits splits;
  std::tie(splits.train, splits.validation) = SplitTrainValidation(
      std::move(full), options.validation_size, options.split_seed, options.train_limit);
  splits.test = ReadIdxPair(root + "/t10k-images-idx3-ubyte.gz",
                            root + "/t10k-labels-idx1-ubyte.gz");
  if (options.test_limit > 0 && options.test_limit < splits.test.size()) {
    // clone() so the 10k-image buffer is not kept alive by a small view
    TensorDataset head = splits.test.Slice(0, options.test_limit);
    splits.test = {head.inputs.clone(), head.targets.clone()};
  }
  return splits;
}

Tensor CalibrationIndices(const TensorDataset& dataset, int64_t n, uint64_t seed) {
  if (n < 0) {
    throw Error(ErrorKind::kRecipe,
                "calibration subset size must be >= 0; got " + std::to_string(n));
  }
  n = std::min(n, dataset.size());
  return SeededPermutation(dataset.size(), seed).narrow(0, 0, n);
}

TensorDataset CalibrationSubset(const TensorDataset& dataset, int64_t n, uint64_t seed) {
  return dataset.Select(CalibrationIndices(dataset, n, seed));
}

// ---- DataLoader --------------------------------------------------------------------

namespace {

// SplitMix64 finalizer: decorrelates (seed, epoch) pairs before they seed mt19937_64.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

DataLoader::DataLoader(const TensorDataset& dataset, int64_t batch_size, bool shuffle,
                       uint64_t seed, bool drop_last)
    : dataset_(dataset), batch_size_(batch_size), shuffle_(shuffle), seed_(seed),
      drop_last_(drop_last) {
  if (batch_size < 1) {
    throw Error(ErrorKind::kRecipe, "batch_size must be >= 1; got " + std::to_string(batch_size));
  }
  StartEpoch(0);
}

DataLoader::~DataLoader() = default;

int64_t DataLoader::num_batches() const {
  const int64_t n = dataset_.size();
  return drop_last_ ? n / batch_size_ : (n + batch_size_ - 1) / batch_size_;
}

void DataLoader::StartEpoch(int64_t epoch) {
  const int64_t n = dataset_.size();
  cursor_ = 0;
  end_ = drop_last_ ? (n / batch_size_) * batch_size_ : n;
  prefetcher_.reset();  // stops the last epoch's decoding
  served_ = 0;
  if (shuffle_) {
    order_ = SeededPermutation(n, Mix(seed_ ^ Mix(static_cast<uint64_t>(epoch))))
                 .to(dataset_.device());
  }
}

void DataLoader::Shard(int64_t rank, int64_t world) {
  if (world < 1 || rank < 0 || rank >= world) {
    throw Error(ErrorKind::kInternal, "DataLoader::Shard: rank " + std::to_string(rank) +
                                          " of world " + std::to_string(world));
  }
  rank_ = rank;
  world_ = world;
  prefetcher_.reset();
}

std::pair<Tensor, int64_t> DataLoader::BatchAt(int64_t cursor) const {
  const int64_t count = std::min(batch_size_, end_ - cursor);
  // This rank's slice of the global batch (all of it in one process).
  const int64_t begin = cursor + rank_ * count / world_;
  const int64_t local = cursor + (rank_ + 1) * count / world_ - begin;
  if (shuffle_) return {order_.narrow(0, begin, local), count};
  return {torch::arange(begin, begin + local,
                        torch::TensorOptions().dtype(torch::kLong).device(dataset_.device())),
          count};
}

bool DataLoader::Next(Tensor& x, Tensor& y) {
  if (cursor_ >= end_) return false;
  auto [idx, count] = BatchAt(cursor_);
  if (dataset_.streaming()) {
    if (prefetcher_ == nullptr) {
      // The rest of the epoch's batches, as source rows, for the workers to decode.
      std::vector<Tensor> batches;
      for (int64_t at = cursor_; at < end_; at += batch_size_) {
        batches.push_back(dataset_.rows.index_select(0, BatchAt(at).first.to(torch::kCPU)));
      }
      prefetcher_ = std::make_unique<BatchPrefetcher>(dataset_.source, std::move(batches));
      served_ = 0;
    }
    x = prefetcher_->Take(served_++).to(dataset_.device());
    y = dataset_.targets.index_select(0, idx.to(dataset_.targets.device()));
  } else if (shuffle_) {
    x = dataset_.inputs.index_select(0, idx);
    y = dataset_.targets.index_select(0, idx.to(dataset_.targets.device()));
  } else {
    const int64_t begin = cursor_ + rank_ * count / world_;
    x = dataset_.inputs.narrow(0, begin, idx.numel());
    y = dataset_.targets.narrow(0, begin, idx.numel());
  }
  last_indices_ = idx;
  last_global_count_ = count;
  cursor_ += count;
  return true;
}

std::string FileCrc32(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) throw Error(ErrorKind::kIo, path + ": cannot read: " + std::strerror(errno));
  uLong crc = crc32(0L, Z_NULL, 0);
  std::vector<unsigned char> buf(1 << 16);
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), f)) > 0) {
    crc = crc32(crc, buf.data(), static_cast<uInt>(n));
  }
  std::fclose(f);
  char hex[9];
  std::snprintf(hex, sizeof(hex), "%08lx", static_cast<unsigned long>(crc));
  return hex;
}

}  // namespace compress
