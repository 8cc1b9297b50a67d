// c10d behind the Communicator: store and process-group setup, bucketed collectives and
// the translation of c10d's failures into one clear Error(kDistributed) line.
#include "compress/dist/dist.h"

#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/torch.h>
#if defined(MCOMPRESS_WITH_NCCL)
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <sstream>
#include <utility>

#include "compress/base/error.h"

namespace compress {
namespace {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? std::string() : std::string(v);
}

// A whole decimal number in [lo, hi], or Error(kUsage) naming `what`.
int64_t ParseInt(const std::string& text, const std::string& what, int64_t lo, int64_t hi) {
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || errno != 0 || end == nullptr || *end != '\0' || v < lo || v > hi) {
    throw Error(ErrorKind::kUsage, what + ": \"" + text + "\" is not a whole number in [" +
                                       std::to_string(lo) + ", " + std::to_string(hi) + "]");
  }
  return v;
}

struct Endpoint {
  std::string scheme, host, path;
  int64_t port = 0;
};

// "tcp://HOST:PORT" or "file://PATH"; Error(kUsage) otherwise.
Endpoint ParseInitMethod(const std::string& init) {
  Endpoint e;
  const auto bad = [&](const std::string& why) {
    return Error(ErrorKind::kUsage, "distributed init_method \"" + init + "\": " + why +
                                        "; expected tcp://HOST:PORT or file://PATH");
  };
  if (init.rfind("tcp://", 0) == 0) {
    e.scheme = "tcp";
    const std::string rest = init.substr(6);
    const size_t colon = rest.rfind(':');
    if (colon == std::string::npos || colon == 0) throw bad("no HOST:PORT");
    e.host = rest.substr(0, colon);
    e.port = ParseInt(rest.substr(colon + 1), "distributed init_method port", 1, 65535);
  } else if (init.rfind("file://", 0) == 0) {
    e.scheme = "file";
    e.path = init.substr(7);
    if (e.path.empty()) throw bad("empty path");
  } else {
    throw bad("unknown scheme");
  }
  return e;
}

bool IsLoopback(const std::string& host) {
  return host == "127.0.0.1" || host == "localhost" || host == "::1";
}

// c10::Error carries a C++ backtrace after its message; the first line says it all.
std::string Cause(const std::exception& e) {
  std::string what;
  if (const auto* c10 = dynamic_cast<const c10::Error*>(&e)) {
    what = c10->what_without_backtrace();
  } else {
    what = e.what();
  }
  const size_t nl = what.find('\n');
  if (nl != std::string::npos) what.resize(nl);
  return what;
}

c10d::ReduceOp ToC10d(Communicator::Op op) {
  switch (op) {
    case Communicator::Op::kSum: return c10d::ReduceOp::SUM;
    case Communicator::Op::kMin: return c10d::ReduceOp::MIN;
    case Communicator::Op::kMax: return c10d::ReduceOp::MAX;
  }
  return c10d::ReduceOp::SUM;
}

// Tensors grouped into flat buckets: consecutive tensors of one dtype and device, at
// most Communicator::kBucketBytes each (a larger tensor is a bucket of its own).
std::vector<std::vector<size_t>> Buckets(const std::vector<Tensor>& tensors) {
  std::vector<std::vector<size_t>> buckets;
  std::map<std::pair<int, std::string>, size_t> open;  // (dtype, device) -> bucket index
  std::vector<int64_t> bytes;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i];
    const auto key = std::make_pair(static_cast<int>(t.scalar_type()), t.device().str());
    const int64_t size = static_cast<int64_t>(t.numel() * t.element_size());
    auto it = open.find(key);
    if (it == open.end() || bytes[it->second] + size > Communicator::kBucketBytes) {
      open[key] = buckets.size();
      buckets.emplace_back();
      bytes.push_back(0);
      it = open.find(key);
    }
    buckets[it->second].push_back(i);
    bytes[it->second] += size;
  }
  return buckets;
}

}  // namespace

struct Communicator::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroup> group;
  double timeout_s = 300;

  // Runs one c10d call; its failure becomes Error(kDistributed) with the context.
  template <typename F>
  void Guard(const Communicator& self, const std::string& what, F&& call) const {
    try {
      call();
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      std::ostringstream msg;
      msg << "distributed: " << what << " failed on rank " << self.rank() << " of "
          << self.world_size() << " (a peer rank failed, exited, or did not answer within "
          << timeout_s << " s): " << Cause(e);
      throw Error(ErrorKind::kDistributed, msg.str());
    }
  }

  // Runs `collective` on each bucket of `tensors` packed flat, then unpacks.
  template <typename F>
  void Bucketed(std::vector<Tensor>& tensors, F&& collective) const {
    for (const auto& bucket : Buckets(tensors)) {
      std::vector<Tensor> flat_parts;
      for (size_t i : bucket) flat_parts.push_back(tensors[i].detach().reshape({-1}));
      std::vector<Tensor> flat{torch::cat(flat_parts)};
      // Gloo has no bool: masks travel as bytes (max = or, min = and).
      if (flat[0].scalar_type() == at::kBool) flat[0] = flat[0].to(at::kByte);
      collective(flat);
      int64_t offset = 0;
      for (size_t i : bucket) {
        Tensor& t = tensors[i];
        const int64_t n = t.numel();
        torch::NoGradGuard no_grad;
        t.copy_(flat[0].narrow(0, offset, n).view(t.sizes()));
        offset += n;
      }
    }
  }
};

DistOptions DistOptionsFromEnv(DistOptions base) {
  const std::string world = Env("WORLD_SIZE"), rank = Env("RANK");
  if (!world.empty()) base.world_size = ParseInt(world, "environment WORLD_SIZE", 1, 1 << 16);
  if (!rank.empty()) base.rank = ParseInt(rank, "environment RANK", 0, (1 << 16) - 1);
  const std::string init = Env("MCOMPRESS_DIST_INIT");
  const std::string addr = Env("MASTER_ADDR"), port = Env("MASTER_PORT");
  if (!init.empty()) {
    base.init_method = init;
  } else if (!addr.empty() || !port.empty()) {
    const int64_t p = port.empty() ? 29500 : ParseInt(port, "environment MASTER_PORT", 1, 65535);
    base.init_method = "tcp://" + (addr.empty() ? std::string("127.0.0.1") : addr) + ":" +
                       std::to_string(p);
  }
  const std::string timeout = Env("MCOMPRESS_DIST_TIMEOUT");
  if (!timeout.empty()) {
    base.timeout_s = static_cast<double>(
        ParseInt(timeout, "environment MCOMPRESS_DIST_TIMEOUT (seconds)", 1, 24 * 3600));
  }
  return base;
}

void ValidateDistOptions(const DistOptions& o) {
  if (o.world_size < 1) {
    throw Error(ErrorKind::kUsage, "distributed world_size must be >= 1; got " +
                                       std::to_string(o.world_size));
  }
  if (o.rank < 0 || o.rank >= o.world_size) {
    throw Error(ErrorKind::kUsage, "distributed rank " + std::to_string(o.rank) +
                                       " is outside [0, " + std::to_string(o.world_size) +
                                       ") for world_size " + std::to_string(o.world_size));
  }
  if (o.backend != "gloo" && o.backend != "nccl") {
    throw Error(ErrorKind::kUsage, "distributed backend \"" + o.backend +
                                       "\" is unknown; expected gloo or nccl");
  }
  if (!(o.timeout_s > 0)) {
    throw Error(ErrorKind::kUsage, "distributed timeout_s must be > 0; got " +
                                       std::to_string(o.timeout_s));
  }
  if (o.world_size > 1) {
    if (o.init_method.empty()) {
      throw Error(ErrorKind::kUsage,
                  "distributed: world_size " + std::to_string(o.world_size) +
                      " needs a rendezvous; expected MASTER_ADDR/MASTER_PORT, "
                      "MCOMPRESS_DIST_INIT, --dist-init or mcompress run --nproc N");
    }
    ParseInitMethod(o.init_method);
  }
}

std::shared_ptr<Communicator> Communicator::Local() {
  return std::shared_ptr<Communicator>(new Communicator(0, 1, "local", nullptr));
}

std::shared_ptr<Communicator> Communicator::Connect(const DistOptions& options) {
  ValidateDistOptions(options);
  if (options.world_size == 1) return Local();
  const Endpoint at = ParseInitMethod(options.init_method);
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(options.timeout_s * 1000));
  auto impl = std::make_unique<Impl>();
  impl->timeout_s = options.timeout_s;
  auto self = std::shared_ptr<Communicator>(
      new Communicator(options.rank, options.world_size, options.backend, nullptr));
  const std::string where = "joining " + options.init_method + " (" + options.backend + ")";
  impl->Guard(*self, where, [&] {
    if (at.scheme == "tcp") {
      c10d::TCPStoreOptions so;
      so.port = static_cast<std::uint16_t>(at.port);
      so.isServer = options.rank == 0;
      so.numWorkers = static_cast<size_t>(options.world_size);
      so.waitWorkers = true;
      so.timeout = timeout;
      impl->store = c10::make_intrusive<c10d::TCPStore>(at.host, so);
    } else {
      impl->store =
          c10::make_intrusive<c10d::FileStore>(at.path, static_cast<int>(options.world_size));
      impl->store->setTimeout(timeout);
    }
    if (options.backend == "gloo") {
      auto go = c10d::ProcessGroupGloo::Options::create(timeout);
      const std::string ifname = Env("GLOO_SOCKET_IFNAME");
      if (!ifname.empty()) {
        go->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
      } else if (at.scheme == "file" || IsLoopback(at.host)) {
        // One machine (the --nproc launcher, tests): loopback needs no resolvable hostname.
        go->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      } else {
        go->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      }
      impl->group = c10::make_intrusive<c10d::ProcessGroupGloo>(
          impl->store, static_cast<int>(options.rank), static_cast<int>(options.world_size), go);
    } else {
#if defined(MCOMPRESS_WITH_NCCL)
      auto no = c10d::ProcessGroupNCCL::Options::create();
      no->timeout = timeout;
      impl->group = c10::make_intrusive<c10d::ProcessGroupNCCL>(
          impl->store, static_cast<int>(options.rank), static_cast<int>(options.world_size), no);
#else
      throw Error(ErrorKind::kUnsupported,
                  "distributed backend \"nccl\" is not supported by this build (LibTorch "
                  "without CUDA, or mcompress built without MCOMPRESS_CUDA); expected gloo");
#endif
    }
  });
  self->impl_ = std::move(impl);
  return self;
}

Communicator::Communicator(int64_t rank, int64_t world_size, std::string backend,
                           std::unique_ptr<Impl> impl)
    : rank_(rank), world_size_(world_size), backend_(std::move(backend)), impl_(std::move(impl)) {}

Communicator::~Communicator() {
  if (impl_) impl_->group.reset();  // the group talks through the store: it goes first
}

void Communicator::AllReduce(Tensor& tensor, Op op, const std::string& what) {
  std::vector<Tensor> one{tensor};
  AllReduce(one, op, what);
}

void Communicator::AllReduce(std::vector<Tensor>& tensors, Op op, const std::string& what) {
  if (!distributed() || tensors.empty()) return;
  c10d::AllreduceOptions o;
  o.reduceOp = ToC10d(op);
  o.timeout = std::chrono::milliseconds(static_cast<int64_t>(impl_->timeout_s * 1000));
  impl_->Guard(*this, "all-reduce of " + what, [&] {
    impl_->Bucketed(tensors, [&](std::vector<Tensor>& flat) {
      impl_->group->allreduce(flat, o)->wait();
    });
  });
}

void Communicator::Broadcast(std::vector<Tensor>& tensors, int64_t root, const std::string& what) {
  if (!distributed() || tensors.empty()) return;
  c10d::BroadcastOptions o;
  o.rootRank = root;
  o.timeout = std::chrono::milliseconds(static_cast<int64_t>(impl_->timeout_s * 1000));
  impl_->Guard(*this, "broadcast of " + what, [&] {
    impl_->Bucketed(tensors, [&](std::vector<Tensor>& flat) {
      impl_->group->broadcast(flat, o)->wait();
    });
  });
}

void Communicator::Barrier(const std::string& what) {
  if (!distributed()) return;
  c10d::BarrierOptions o;
  o.timeout = std::chrono::milliseconds(static_cast<int64_t>(impl_->timeout_s * 1000));
  impl_->Guard(*this, "barrier at " + what, [&] { impl_->group->barrier(o)->wait(); });
}

void Communicator::SetKey(const std::string& key, const std::string& value) {
  if (!distributed()) return;
  impl_->Guard(*this, "setting key " + key, [&] {
    impl_->store->set(key, std::vector<uint8_t>(value.begin(), value.end()));
  });
}

std::string Communicator::GetKey(const std::string& key, double timeout_s) {
  if (!distributed()) {
    throw Error(ErrorKind::kInternal, "Communicator::GetKey on a local communicator");
  }
  std::string value;
  const auto timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
  impl_->Guard(*this, "waiting for key " + key, [&] {
    impl_->store->wait({key}, timeout);
    const std::vector<uint8_t> bytes = impl_->store->get(key);
    value.assign(bytes.begin(), bytes.end());
  });
  return value;
}

uint64_t TensorsFingerprint(const std::vector<Tensor>& tensors) {
  // FNV-1a, 64 bit.
  uint64_t h = 1469598103934665603ull;
  const auto mix = [&h](const void* data, size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < n; ++i) {
      h ^= p[i];
      h *= 1099511628211ull;
    }
  };
  for (const Tensor& t : tensors) {
    const int dtype = t.defined() ? static_cast<int>(t.scalar_type()) : -1;
    mix(&dtype, sizeof(dtype));
    if (!t.defined()) continue;
    for (int64_t s : t.sizes()) mix(&s, sizeof(s));
    const Tensor c = t.detach().to(at::kCPU).contiguous();
    mix(c.data_ptr(), static_cast<size_t>(c.numel() * c.element_size()));
  }
  return h;
}

}  // namespace compress
