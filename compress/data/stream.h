// Streaming data: a dataset whose inputs stay in their files and are decoded batch by
// batch (docs/data.md, "Streaming"). A SampleSource decodes one sample by index; a
// TensorDataset that holds one (TensorDataset::source) keeps only its targets and the
// source row of each sample, so Select, Slice and the seeded splits cost no decoding,
// and DataLoader decodes each batch on worker threads a bounded number of batches
// ahead. A sample decodes to exactly the tensor the in-memory path stacks, so the
// batches are the same bits whichever path serves them.
#pragma once

#include <ATen/core/Tensor.h>

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "compress/base/error.h"

namespace compress {

using Tensor = at::Tensor;

struct StreamSettings {
  int64_t workers = 2;   // decoding threads per loader
  int64_t prefetch = 4;  // batches decoded (or being decoded) ahead of the one trained on
};

// Decodes samples of a fixed shape. Implementations must be safe to call from several
// threads at once.
class SampleSource {
 public:
  virtual ~SampleSource() = default;
  // Number of samples.
  virtual int64_t size() const = 0;
  // The shape of one decoded sample (e.g. {C, H, W}).
  virtual const std::vector<int64_t>& sample_sizes() const = 0;
  // Sample `index` as a float32 CPU tensor of sample_sizes(). Throws Error naming the
  // file for unreadable or inconsistent data.
  virtual Tensor Decode(int64_t index) const = 0;

  StreamSettings settings;
};

// Samples rows[0..n) of `source` (rows int64, any device) stacked as float32 [n, ...]
// on the CPU. With `parallel` the rows are spread over LibTorch's intra-op threads,
// else decoded on the calling thread. Rethrows the error of the first failing row, so
// the message does not depend on thread timing.
Tensor DecodeRows(const SampleSource& source, const Tensor& rows, bool parallel);

// Runs fn(i) for i in [0, n) on LibTorch's intra-op threads; rethrows (as Error) the
// error of the lowest failing i.
void ParallelForEach(int64_t n, const std::function<void(int64_t)>& fn);

// Decodes a fixed list of batches (each an int64 CPU tensor of source rows) on
// `workers` threads, at most `prefetch` batches ahead of the last one taken: memory
// holds a few batches whatever the dataset's size. Batches are taken in order; the
// destructor stops and joins the workers.
class BatchPrefetcher {
 public:
  BatchPrefetcher(std::shared_ptr<const SampleSource> source, std::vector<Tensor> batches);
  ~BatchPrefetcher();
  BatchPrefetcher(const BatchPrefetcher&) = delete;
  BatchPrefetcher& operator=(const BatchPrefetcher&) = delete;

  // Batch `k` (the one after the last taken), waiting for it; rethrows its decoding
  // error. Throws Error(kInternal) when taken out of order.
  Tensor Take(int64_t k);

 private:
  struct Slot {
    Tensor x;
    std::string error;
    ErrorKind kind = ErrorKind::kIo;
  };
  void Work();

  std::shared_ptr<const SampleSource> source_;
  std::vector<Tensor> batches_;
  int64_t prefetch_;
  std::mutex mutex_;
  std::condition_variable space_, ready_;
  std::map<int64_t, Slot> done_;
  int64_t next_ = 0;   // the next batch a worker starts
  int64_t taken_ = 0;  // batches taken so far
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace compress
