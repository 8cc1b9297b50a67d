// Data-parallel communication on LibTorch's own distributed engine (c10d): a process
// group (Gloo on CPU, NCCL where the LibTorch build has it) joined through a c10d
// TCPStore or FileStore, and the few collectives training needs. A world of one process
// is a local communicator: every collective is the identity and nothing is connected,
// so callers never branch on "distributed or not".
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace compress {

using at::Tensor;

// How a process joins a job. Rendezvous (init_method):
//   "tcp://HOST:PORT"  a c10d TCPStore; rank 0 serves it on PORT, the others connect;
//   "file://PATH"      a c10d FileStore on PATH (a filesystem every rank sees).
struct DistOptions {
  int64_t rank = 0;
  int64_t world_size = 1;
  std::string init_method;
  std::string backend = "gloo";  // "gloo", or "nccl" on a LibTorch built with it
  // Every collective and the rendezvous give up after this long: a rank that hangs or
  // was killed makes the others fail with a clear error instead of waiting forever.
  double timeout_s = 300;
};

// DistOptions from the environment the usual launchers set: RANK, WORLD_SIZE,
// MASTER_ADDR and MASTER_PORT (init_method "tcp://MASTER_ADDR:MASTER_PORT"), or
// MCOMPRESS_DIST_INIT (an init_method, preferred when set) and MCOMPRESS_DIST_TIMEOUT
// (seconds). Fields the environment does not set keep their value in `base`. Throws
// Error(kUsage) naming the variable for a malformed value.
DistOptions DistOptionsFromEnv(DistOptions base);

// Throws Error(kUsage) naming the field: rank outside [0, world_size), world_size < 1,
// a malformed init_method, an unknown backend, a non-positive timeout, or world_size > 1
// without an init_method.
void ValidateDistOptions(const DistOptions& options);

class Communicator {
 public:
  enum class Op { kSum, kMin, kMax };

  // One process: no process group, collectives are the identity.
  static std::shared_ptr<Communicator> Local();
  // Joins the job `options` describes (Local() when world_size is 1). Blocks until every
  // rank has joined or the timeout passes. Throws Error(kUsage) for bad options,
  // kUnsupported for a backend this LibTorch lacks, kDistributed when the rendezvous
  // fails or times out.
  static std::shared_ptr<Communicator> Connect(const DistOptions& options);

  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int64_t rank() const { return rank_; }
  int64_t world_size() const { return world_size_; }
  bool distributed() const { return world_size_ > 1; }
  bool is_main() const { return rank_ == 0; }
  const std::string& backend() const { return backend_; }

  // In place on every rank. The vector forms pack tensors of one dtype and device into
  // flat buckets of at most kBucketBytes, so a model's gradients cost a few messages,
  // not one per tensor. `what` names the operation in errors ("gradients of step 12").
  // Throw Error(kDistributed) naming `what`, this rank and the cause when a peer failed,
  // exited or timed out.
  void AllReduce(Tensor& tensor, Op op, const std::string& what);
  void AllReduce(std::vector<Tensor>& tensors, Op op, const std::string& what);
  void Broadcast(std::vector<Tensor>& tensors, int64_t root, const std::string& what);
  void Barrier(const std::string& what);

  // The job's key-value store (c10d Store): how ranks report how they finished.
  // GetKey waits up to timeout_s for the key; throws Error(kDistributed) on timeout.
  void SetKey(const std::string& key, const std::string& value);
  std::string GetKey(const std::string& key, double timeout_s);

  static constexpr int64_t kBucketBytes = 16 << 20;

 private:
  struct Impl;
  Communicator(int64_t rank, int64_t world_size, std::string backend, std::unique_ptr<Impl> impl);

  int64_t rank_ = 0, world_size_ = 1;
  std::string backend_ = "local";
  std::unique_ptr<Impl> impl_;
};

// A fingerprint of tensors' bytes (dtype, shape and values), equal on two ranks exactly
// when their tensors are bitwise equal (up to hash collisions).
uint64_t TensorsFingerprint(const std::vector<Tensor>& tensors);

}  // namespace compress
