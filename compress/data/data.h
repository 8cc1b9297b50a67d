// Datasets for training, evaluation and calibration: an in-memory tensor dataset, a
// reader for gzip'd IDX files (Fashion-MNIST) with a seeded validation split, and a
// batch loader whose shuffling depends only on (seed, epoch), never on global RNG state.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "compress/base/error.h"
#include "compress/data/stream.h"

namespace compress {

using Tensor = at::Tensor;

// Samples along dimension 0: inputs float (e.g. NCHW), targets int64 class indices [N].
// A streaming dataset (compress/data/stream.h) leaves `inputs` undefined: sample i is
// source->Decode(rows[i]), decoded when a DataLoader serves it or Materialized() asks.
struct TensorDataset {
  Tensor inputs;
  Tensor targets;
  std::shared_ptr<const SampleSource> source{};  // streaming only
  Tensor rows{};  // streaming only: int64 [N] on the CPU, the source row of each sample

  // A streaming dataset over all of `source`'s samples with these targets (int64 [N]).
  static TensorDataset Streamed(std::shared_ptr<const SampleSource> source, Tensor targets);

  bool streaming() const { return source != nullptr; }
  // Number of samples (0 for an empty or undefined dataset).
  int64_t size() const;
  // Where the batches of this dataset live: the inputs' device (streaming: the targets').
  c10::Device device() const;
  // The shape of one sample (inputs.sizes() without the first dim). Throws
  // Error(kRecipe) for an in-memory dataset without inputs.
  std::vector<int64_t> sample_sizes() const;
  // The samples at `indices` (an integer tensor, any device), in that order. A streaming
  // dataset selects rows and targets only; nothing is decoded.
  TensorDataset Select(const Tensor& indices) const;
  // Samples [start, start + count), clamped to the dataset; shares storage.
  TensorDataset Slice(int64_t start, int64_t count) const;
  // Both tensors moved to `device` (no copy when already there); a streaming dataset
  // moves its targets, and its loaders put decoded batches there.
  TensorDataset To(const c10::Device& device) const;
  // The same samples sharing no storage with this dataset (a small view of a large
  // buffer no longer keeps it alive).
  TensorDataset Clone() const;
  // The same samples in memory: a streaming dataset's inputs decoded on the intra-op
  // threads onto device(); an in-memory dataset is returned as it is.
  TensorDataset Materialized() const;
};

// Throws Error(kNumeric) naming `where` and the first offending sample when the
// floating-point inputs contain NaN or Inf. A streaming dataset is not read: its
// sources decode finite values only (pixels / 255, normalised by std > 0).
void CheckFinite(const TensorDataset& dataset, const std::string& where);

// Structural checks for data handed to Train/Evaluate, then CheckFinite: both tensors
// defined, inputs floating point with a leading sample dim, targets int64 of shape [N]
// with the same N and, when `labels`, no negative label (-1 marks an unlabeled sample).
// Throws Error(kRecipe / kNumeric) naming `where`.
void CheckDataset(const TensorDataset& dataset, const std::string& where, bool labels = true);

// Whether every sample has a class label (targets defined, one per sample, none
// negative); true for an empty dataset.
bool HasLabels(const TensorDataset& dataset);

// A permutation of 0..n-1 (int64, CPU) that depends only on `seed`: the same on
// every platform and LibTorch version (a Fisher-Yates shuffle driven by mt19937_64).
Tensor SeededPermutation(int64_t n, uint64_t seed);

// CRC-32 (zlib) of a file's bytes as 8 hex digits, for run manifests. Throws kIo.
std::string FileCrc32(const std::string& path);

// ---- IDX files (http://yann.lecun.com/exdb/mnist/ format, optionally gzip'd) -------

// Fashion-MNIST pixel statistics over the 60k training images after scaling to [0,1]
// (the values used throughout the literature, e.g. the torchvision examples).
constexpr double kFashionMnistMean = 0.2860;
constexpr double kFashionMnistStd = 0.3530;

// Reads an IDX3 ubyte image file (magic 0x00000803) and its IDX1 ubyte label file
// (magic 0x00000801), gzip'd or plain. Returns inputs float [N,1,rows,cols] scaled to
// [0,1] and, when `normalize`, standardized with kFashionMnistMean/kFashionMnistStd;
// targets int64 [N]. Throws Error(kIo) naming the file for a missing file, a wrong
// magic number, zero dims, differing counts, truncated or trailing data, and labels
// outside 0..num_classes-1 (256 accepts every label byte).
TensorDataset ReadIdxPair(const std::string& images_path, const std::string& labels_path,
                          bool normalize = true, int64_t num_classes = 10);

// Splits `full` into {train, validation}: validation is the first validation_size
// entries of SeededPermutation(full.size(), seed), train the rest in that permuted
// order, cut to its first train_limit samples when train_limit > 0. Same seed, same
// split; the two never share a sample. Throws Error(kRecipe) when validation_size < 0
// or leaves no training sample, or train_limit < 0. When every sample is used and the
// caller moved in the only reference to contiguous CPU inputs, they are reordered in
// place and both splits are views of them (no second copy); otherwise copies.
std::pair<TensorDataset, TensorDataset> SplitTrainValidation(TensorDataset full,
                                                             int64_t validation_size,
                                                             uint64_t seed,
                                                             int64_t train_limit = 0);

struct FashionMnistOptions {
  std::string root = "/usr/share/datasets/fashion-mnist";
  int64_t validation_size = 5000;  // carved from the 60k training images
  uint64_t split_seed = 0;
  int64_t train_limit = 0;         // 0 = all remaining training samples
  int64_t test_limit = 0;          // 0 = all 10k test samples (else the first N)
};

struct DatasetSplits {
  TensorDataset train, validation, test;
  // False when a split came without labels (an image folder without class folders, a
  // tensor file without targets): that split's targets are all -1.
  bool labeled = true;
};

// Loads root/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz (normalized) and carves
// the validation set from the 60k training images with SplitTrainValidation, so the
// same split_seed gives the same disjoint split. Throws Error(kRecipe) for negative or
// too large sizes, Error(kIo) for unreadable or corrupt files.
DatasetSplits LoadFashionMnist(const FashionMnistOptions& options = {});

// A deterministic random subset of min(n, size) samples (for calibration).
// Throws Error(kRecipe) when n < 0.
TensorDataset CalibrationSubset(const TensorDataset& dataset, int64_t n, uint64_t seed);
// The indices CalibrationSubset selects, for callers that gather batch by batch (so
// memory does not grow with n).
Tensor CalibrationIndices(const TensorDataset& dataset, int64_t n, uint64_t seed);

// Iterates a dataset in batches. Batches are on the dataset's device. With `shuffle`,
// each epoch's order is SeededPermutation(size, f(seed, epoch)); otherwise the stored
// order. Every sample appears exactly once per epoch (the last, smaller batch is
// dropped only when drop_last). The loader keeps shallow copies of the tensors. A
// streaming dataset's batches are decoded by a BatchPrefetcher (its source's
// StreamSettings: workers, batches ahead), started at the epoch's first Next: the same
// indices give the same batches as the dataset's Materialized() copy would.
class DataLoader {
 public:
  // Throws Error(kRecipe) when batch_size < 1.
  DataLoader(const TensorDataset& dataset, int64_t batch_size, bool shuffle, uint64_t seed,
             bool drop_last = false);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  int64_t num_batches() const;
  int64_t batch_size() const { return batch_size_; }
  // Resets to the first batch of `epoch` (the constructor starts epoch 0).
  void StartEpoch(int64_t epoch);
  // Fills the next batch and returns true, or returns false at the end of the epoch.
  bool Next(Tensor& x, Tensor& y);
  // The dataset indices (int64, on the dataset's device) of the batch Next last served:
  // per-sample caches (distillation's teacher logits) are keyed by them.
  const Tensor& last_indices() const { return last_indices_; }

  // Data parallelism: every rank walks the same global order and batches (same seed),
  // and Next serves rank `rank` of `world` its slice of each global batch: samples
  // [rank*n/world, (rank+1)*n/world) of a batch of n. All ranks step the same number of
  // times; a slice may be empty (n < world), with x and y of 0 rows. Throws
  // Error(kInternal) for rank outside [0, world).
  void Shard(int64_t rank, int64_t world);
  // The size of the global batch the last Next took its slice from.
  int64_t last_global_count() const { return last_global_count_; }

 private:
  TensorDataset dataset_;
  int64_t batch_size_;
  bool shuffle_;
  uint64_t seed_;
  bool drop_last_;
  Tensor order_;  // on the dataset's device; undefined when not shuffling
  int64_t cursor_ = 0;
  int64_t end_ = 0;  // one past the last sample served this epoch
  Tensor last_indices_;
  int64_t rank_ = 0, world_ = 1;
  int64_t last_global_count_ = 0;
  // Streaming: the epoch's decoder (made by the first Next) and the batches it served.
  std::unique_ptr<BatchPrefetcher> prefetcher_;
  int64_t served_ = 0;

  // This rank's dataset indices of the batch that starts at `cursor`, and the global
  // batch's size.
  std::pair<Tensor, int64_t> BatchAt(int64_t cursor) const;
};

}  // namespace compress
