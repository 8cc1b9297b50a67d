// Streaming loader benchmark (issue 14, bench/stream.sh). Two commands:
//   bench_stream write IDX_ROOT OUT N_TRAIN N_TEST   Fashion-MNIST as a PNG image folder
//       (OUT/{train,test}/<label>/<index>.png, the first N of each split)
//   bench_stream loader ROOT memory|stream [BATCH [WORKERS [PREFETCH]]]
//       loads ROOT as an image folder and serves one shuffled epoch of its training split,
//       with no model: load seconds, epoch seconds, images/s and this process's peak RSS
//       as one Markdown row.
// The loader row separates the data path's cost from training's; bench/stream.sh runs
// the training epoch itself through `mcompress run` under /usr/bin/time.
#include <png.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "compress/base/error.h"
#include "compress/data/data.h"
#include "compress/data/sources.h"

namespace {

namespace fs = std::filesystem;

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

// VmHWM of this process in MiB (the peak resident set).
double PeakRssMib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  }
  return -1;
}

void WriteSplit(const std::string& idx_root, const std::string& split, const fs::path& out,
                int64_t n) {
  const compress::TensorDataset full =
      compress::ReadIdxPair(idx_root + "/" + split + "-images-idx3-ubyte.gz",
                            idx_root + "/" + split + "-labels-idx1-ubyte.gz", /*normalize=*/false);
  n = std::min(n, full.size());
  const torch::Tensor bytes = full.inputs.narrow(0, 0, n).mul(255).round().to(torch::kByte).contiguous();
  for (int64_t i = 0; i < n; ++i) {
    char name[32];
    std::snprintf(name, sizeof(name), "%05ld.png", static_cast<long>(i));
    const fs::path path = out / std::to_string(full.targets[i].item<int64_t>()) / name;
    fs::create_directories(path.parent_path());
    png_image image{};
    image.version = PNG_IMAGE_VERSION;
    image.height = static_cast<png_uint_32>(bytes.size(2));
    image.width = static_cast<png_uint_32>(bytes.size(3));
    image.format = PNG_FORMAT_GRAY;
    if (png_image_write_to_file(&image, path.c_str(), 0, bytes[i].data_ptr<uint8_t>(), 0, nullptr) == 0) {
      throw compress::Error(compress::ErrorKind::kIo, path.string() + ": " + image.message);
    }
  }
}

int Loader(const std::string& root, bool streaming, int64_t batch, int64_t workers, int64_t prefetch) {
  compress::DataSourceSpec spec;
  spec.kind = compress::DataSourceKind::kImageFolder;
  spec.root = root;
  spec.validation_size = 0;
  spec.transforms.mean = {compress::kFashionMnistMean};
  spec.transforms.std = {compress::kFashionMnistStd};
  spec.streaming = streaming;
  spec.stream = {workers, prefetch};
  const auto load_start = std::chrono::steady_clock::now();
  const compress::DatasetSplits data = compress::LoadDataSource(spec);
  const double load_s = Seconds(load_start);
  compress::DataLoader loader(data.train, batch, /*shuffle=*/true, /*seed=*/1);
  const auto epoch_start = std::chrono::steady_clock::now();
  torch::Tensor x, y;
  double checksum = 0;
  int64_t images = 0;
  while (loader.Next(x, y)) {
    checksum += x.sum().item<double>();  // the batch is really read
    images += x.size(0);
  }
  const double epoch_s = Seconds(epoch_start);
  std::printf("| %s | %lld | %s | %lld/%lld | %.2f | %.2f | %.0f | %.0f | %.6g |\n",
              root.c_str(), static_cast<long long>(data.train.size()), streaming ? "stream" : "memory",
              static_cast<long long>(workers), static_cast<long long>(prefetch), load_s, epoch_s,
              images / epoch_s, PeakRssMib(), checksum);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string cmd = argc > 1 ? argv[1] : "";
    if (cmd == "write" && argc == 6) {
      WriteSplit(argv[2], "train", fs::path(argv[3]) / "train", std::stoll(argv[4]));
      WriteSplit(argv[2], "t10k", fs::path(argv[3]) / "test", std::stoll(argv[5]));
      return 0;
    }
    if (cmd == "loader" && argc >= 4) {
      const std::string mode = argv[3];
      if (mode != "memory" && mode != "stream") throw std::invalid_argument("mode: memory or stream");
      return Loader(argv[2], mode == "stream", argc > 4 ? std::stoll(argv[4]) : 128,
                    argc > 5 ? std::stoll(argv[5]) : 2, argc > 6 ? std::stoll(argv[6]) : 4);
    }
    std::fprintf(stderr, "usage: bench_stream write IDX_ROOT OUT N_TRAIN N_TEST\n"
                         "       bench_stream loader ROOT memory|stream [BATCH [WORKERS [PREFETCH]]]\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_stream: %s\n", e.what());
    return 1;
  }
}
