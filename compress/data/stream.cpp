// DecodeRows, ParallelForEach and the BatchPrefetcher behind streaming datasets.
#include "compress/data/stream.h"

#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <torch/torch.h>

#include <algorithm>
#include <utility>

namespace compress {

void ParallelForEach(int64_t n, const std::function<void(int64_t)>& fn) {
  std::vector<std::string> errors(static_cast<size_t>(std::max<int64_t>(n, 0)));
  std::vector<ErrorKind> kinds(errors.size(), ErrorKind::kIo);
  // OpenMP's workers do not inherit the caller's inference or grad mode (ATen's
  // parallel_for does not carry thread-local state); fn writes into the caller's tensors.
  const at::ThreadLocalState state;
  at::parallel_for(0, n, 8, [&](int64_t begin, int64_t end) {
    const at::ThreadLocalStateGuard guard(state);
    for (int64_t i = begin; i < end; ++i) {
      try {
        fn(i);
      } catch (const Error& e) {
        errors[i] = e.what();
        kinds[i] = e.kind();
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    }
  });
  for (int64_t i = 0; i < n; ++i) {
    if (!errors[i].empty()) throw Error(kinds[i], errors[i]);
  }
}

Tensor DecodeRows(const SampleSource& source, const Tensor& rows, bool parallel) {
  const Tensor r = rows.to(torch::kCPU, torch::kLong).contiguous();
  const int64_t n = r.numel();
  const int64_t* row = r.data_ptr<int64_t>();
  std::vector<int64_t> shape{n};
  const std::vector<int64_t>& sizes = source.sample_sizes();
  shape.insert(shape.end(), sizes.begin(), sizes.end());
  Tensor out = torch::empty(shape, torch::kFloat);
  auto one = [&](int64_t i) {
    if (row[i] < 0 || row[i] >= source.size()) {
      throw Error(ErrorKind::kInternal, "DecodeRows: row " + std::to_string(row[i]) +
                                            " outside a source of " +
                                            std::to_string(source.size()) + " samples");
    }
    out[i].copy_(source.Decode(row[i]));
  };
  if (parallel) {
    ParallelForEach(n, one);
  } else {
    for (int64_t i = 0; i < n; ++i) one(i);
  }
  return out;
}

BatchPrefetcher::BatchPrefetcher(std::shared_ptr<const SampleSource> source,
                                 std::vector<Tensor> batches)
    : source_(std::move(source)), batches_(std::move(batches)),
      prefetch_(std::max<int64_t>(1, source_->settings.prefetch)) {
  const int64_t workers = std::clamp<int64_t>(source_->settings.workers, 1,
                                              std::max<int64_t>(1, static_cast<int64_t>(batches_.size())));
  for (int64_t w = 0; w < workers; ++w) workers_.emplace_back([this] { Work(); });
}

BatchPrefetcher::~BatchPrefetcher() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  space_.notify_all();
  for (auto& t : workers_) t.join();
}

void BatchPrefetcher::Work() {
  const auto total = static_cast<int64_t>(batches_.size());
  while (true) {
    int64_t k;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      space_.wait(lock, [&] { return stop_ || next_ >= total || next_ < taken_ + prefetch_; });
      if (stop_ || next_ >= total) return;
      k = next_++;
    }
    Slot slot;
    try {
      // Decoding reads no autograd state; the tensors are plain data.
      torch::NoGradGuard no_grad;
      slot.x = DecodeRows(*source_, batches_[k], /*parallel=*/false);
    } catch (const Error& e) {
      slot.error = e.what();
      slot.kind = e.kind();
    } catch (const std::exception& e) {
      slot.error = e.what();
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      done_[k] = std::move(slot);
    }
    ready_.notify_all();
  }
}

Tensor BatchPrefetcher::Take(int64_t k) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (k != taken_ || k >= static_cast<int64_t>(batches_.size())) {
    throw Error(ErrorKind::kInternal, "BatchPrefetcher: batch " + std::to_string(k) +
                                          " taken out of order (expected " +
                                          std::to_string(taken_) + ")");
  }
  ready_.wait(lock, [&] { return done_.count(k) != 0; });
  Slot slot = std::move(done_.at(k));
  done_.erase(k);
  ++taken_;
  lock.unlock();
  space_.notify_all();
  if (!slot.error.empty()) throw Error(slot.kind, slot.error);
  return slot.x;
}

}  // namespace compress
