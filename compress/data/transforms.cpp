// torchvision-compatible image transforms and seeded augmentation on CHW float tensors.
// Everything is whole-tensor ATen ops on the input's device; the only per-sample loop
// draws the augmentation's random numbers, from a hash of (seed, epoch, sample id).
#include "compress/data/transforms.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <sstream>
#include <string>

#include "compress/base/error.h"

namespace compress {

namespace {

std::string FormatSize(const std::vector<int64_t>& size) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < size.size(); ++i) os << (i ? ", " : "") << size[i];
  os << "]";
  return os.str();
}

// {n} -> (n, n), {h, w} -> (h, w); anything else is a recipe error naming `what`.
std::pair<int64_t, int64_t> HeightWidth(const std::vector<int64_t>& size, const char* what) {
  if (size.size() == 1 && size[0] > 0) return {size[0], size[0]};
  if (size.size() == 2 && size[0] > 0 && size[1] > 0) return {size[0], size[1]};
  throw Error(ErrorKind::kRecipe, std::string(what) + ": expected a positive size n or [h, w]; got " +
                                      FormatSize(size));
}

// `images` as a batch [N, C, H, W] (a [C, H, W] image gets N = 1); *batched says which.
Tensor AsBatch(const Tensor& images, const char* what, bool* batched) {
  if (!images.defined() || (images.dim() != 3 && images.dim() != 4) ||
      !images.is_floating_point()) {
    std::ostringstream msg;
    msg << what << ": expected a float image [C, H, W] or batch [N, C, H, W]";
    if (images.defined()) msg << "; got " << images.scalar_type() << " " << images.sizes();
    throw Error(ErrorKind::kRecipe, msg.str());
  }
  *batched = images.dim() == 4;
  return *batched ? images : images.unsqueeze(0);
}

// Python's round(d / 2) for d >= 0: halves go to the even neighbour.
int64_t HalfRoundedEven(int64_t d) {
  const int64_t k = d / 2;
  return (d % 2 == 0 || k % 2 == 0) ? k : k + 1;
}

// ---- random draws for augmentation ----

// SplitMix64's finalizer: a well-mixed 64-bit hash.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// One random 64-bit word per (seed, epoch, sample, stream): streams separate the
// crop's two offsets and the flip.
uint64_t Draw(uint64_t seed, int64_t epoch, int64_t sample, uint64_t stream) {
  return Mix(Mix(Mix(seed ^ Mix(stream)) ^ static_cast<uint64_t>(epoch)) ^
             static_cast<uint64_t>(sample));
}

// Uniform integer in [0, n) (multiply-shift: the same on every platform).
int64_t Below(uint64_t u, int64_t n) {
  return static_cast<int64_t>((static_cast<unsigned __int128>(u) * static_cast<uint64_t>(n)) >> 64);
}

// The batch [N, C, H, W] and its sample ids as host integers.
std::vector<int64_t> SampleIds(const Tensor& batch, const Tensor& sample_ids, const char* what) {
  if (!batch.defined() || batch.dim() != 4 || !batch.is_floating_point()) {
    throw Error(ErrorKind::kRecipe, std::string(what) + ": expected a float batch [N, C, H, W]");
  }
  if (!sample_ids.defined() || sample_ids.dim() != 1 || sample_ids.size(0) != batch.size(0)) {
    throw Error(ErrorKind::kRecipe, std::string(what) + ": expected one sample id per batch "
                                    "sample (DataLoader::last_indices())");
  }
  const Tensor ids = sample_ids.to(at::kCPU, at::kLong).contiguous();
  return std::vector<int64_t>(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + ids.numel());
}

}  // namespace

std::pair<int64_t, int64_t> ResizedSize(int64_t height, int64_t width,
                                        const std::vector<int64_t>& size) {
  if (size.size() != 1) return HeightWidth(size, "resize");
  const int64_t n = HeightWidth(size, "resize").first;
  const int64_t shorter = std::min(height, width);
  const int64_t longer = std::max(height, width);
  // torchvision: int(n * long / short), a true division then truncation.
  const auto new_long =
      static_cast<int64_t>(static_cast<double>(n * longer) / static_cast<double>(shorter));
  return width <= height ? std::make_pair(new_long, n) : std::make_pair(n, new_long);
}

Tensor Resize(const Tensor& images, const std::vector<int64_t>& size) {
  if (size.empty()) return images;
  bool batched = false;
  const Tensor x = AsBatch(images, "resize", &batched);
  const auto [h, w] = ResizedSize(x.size(2), x.size(3), size);
  if (h == x.size(2) && w == x.size(3)) return images;
  const std::vector<int64_t> out_size{h, w};
  const Tensor y = at::upsample_bilinear2d(x, at::IntArrayRef(out_size), /*align_corners=*/false);
  return batched ? y : y.squeeze(0);
}

Tensor CenterCrop(const Tensor& images, const std::vector<int64_t>& size) {
  if (size.empty()) return images;
  const auto [ch, cw] = HeightWidth(size, "center_crop");
  bool batched = false;
  Tensor x = AsBatch(images, "center_crop", &batched);
  if (ch > x.size(2) || cw > x.size(3)) {
    const int64_t dh = std::max<int64_t>(ch - x.size(2), 0);
    const int64_t dw = std::max<int64_t>(cw - x.size(3), 0);
    x = at::constant_pad_nd(x, {dw / 2, (dw + 1) / 2, dh / 2, (dh + 1) / 2}, 0);
  }
  const int64_t top = HalfRoundedEven(x.size(2) - ch);
  const int64_t left = HalfRoundedEven(x.size(3) - cw);
  const Tensor y = x.narrow(2, top, ch).narrow(3, left, cw).contiguous();
  return batched ? y : y.squeeze(0);
}

Tensor ConvertChannels(const Tensor& images, int64_t channels) {
  if (channels == 0) return images;
  if (!images.defined() || images.dim() < 3) {
    throw Error(ErrorKind::kRecipe, "channels: expected images [C, H, W] or [N, C, H, W]");
  }
  const int64_t c = images.size(-3);
  if (c == channels) return images;
  if (c == 1 && channels == 3) return at::cat({images, images, images}, -3);
  if (c == 3 && channels == 1) {
    // torchvision's rgb_to_grayscale on float tensors, term by term.
    const Tensor r = images.select(-3, 0), g = images.select(-3, 1), b = images.select(-3, 2);
    return (r.mul(0.2989) + g.mul(0.587) + b.mul(0.114)).unsqueeze(-3);
  }
  throw Error(ErrorKind::kRecipe, "channels: cannot convert " + std::to_string(c) +
                                      "-channel images to " + std::to_string(channels) +
                                      "; expected 1 or 3 channels on each side");
}

Tensor Normalize(const Tensor& images, const std::vector<double>& mean,
                 const std::vector<double>& std) {
  if (mean.empty() && std.empty()) return images;
  if (!images.defined() || images.dim() < 3 || !images.is_floating_point()) {
    throw Error(ErrorKind::kRecipe, "normalize: expected float images [C, H, W] or [N, C, H, W]");
  }
  const int64_t c = images.size(-3);
  if (mean.size() != std.size() ||
      (mean.size() != 1 && static_cast<int64_t>(mean.size()) != c)) {
    throw Error(ErrorKind::kRecipe, "normalize: mean has " + std::to_string(mean.size()) +
                                        " values and std " + std::to_string(std.size()) +
                                        "; expected 1 or " + std::to_string(c) +
                                        " (the channel count) each");
  }
  for (double s : std) {
    if (!(s > 0)) {
      throw Error(ErrorKind::kRecipe, "normalize: std must be > 0; got " + std::to_string(s));
    }
  }
  // In place on a copy, with double scalars: the very ops ReadIdxPair uses, so the
  // same mean/std give bit-identical results on either path.
  Tensor out = images.clone(at::MemoryFormat::Contiguous);
  if (mean.size() == 1) return out.sub_(mean[0]).div_(std[0]);
  for (int64_t k = 0; k < c; ++k) out.select(-3, k).sub_(mean[k]).div_(std[k]);
  return out;
}

Tensor ApplyImageTransforms(const Tensor& images, const ImageTransforms& transforms) {
  Tensor x = ConvertChannels(images, transforms.channels);
  x = Resize(x, transforms.resize);
  x = CenterCrop(x, transforms.center_crop);
  return Normalize(x, transforms.mean, transforms.std);
}

Tensor RandomCrop(const Tensor& batch, const Tensor& sample_ids, const std::vector<int64_t>& size,
                  int64_t padding, const std::vector<double>& fill, uint64_t seed,
                  int64_t epoch) {
  if (size.empty()) return batch;
  const auto [th, tw] = HeightWidth(size, "random_crop");
  const std::vector<int64_t> ids = SampleIds(batch, sample_ids, "random_crop");
  const int64_t n = batch.size(0), c = batch.size(1);
  const int64_t hp = batch.size(2) + 2 * padding, wp = batch.size(3) + 2 * padding;
  if (padding < 0 || th > hp || tw > wp) {
    throw Error(ErrorKind::kRecipe, "random_crop: a " + std::to_string(th) + "x" +
                                        std::to_string(tw) + " window does not fit " +
                                        std::to_string(batch.size(2)) + "x" +
                                        std::to_string(batch.size(3)) + " images padded by " +
                                        std::to_string(padding));
  }
  if (!fill.empty() && fill.size() != 1 && static_cast<int64_t>(fill.size()) != c) {
    throw Error(ErrorKind::kRecipe, "random_crop: fill has " + std::to_string(fill.size()) +
                                        " values; expected 1 or " + std::to_string(c));
  }
  // Step 1: the padded batch, each channel's border set to its fill value.
  Tensor padded = batch;
  if (padding > 0) {
    std::vector<double> per_channel(static_cast<size_t>(c), fill.empty() ? 0.0 : fill[0]);
    if (static_cast<int64_t>(fill.size()) == c) per_channel = fill;
    const Tensor values = at::tensor(per_channel, at::TensorOptions().dtype(at::kDouble))
                              .to(batch.device(), batch.scalar_type());
    padded = values.view({1, c, 1, 1}).expand({n, c, hp, wp}).clone(at::MemoryFormat::Contiguous);
    padded.narrow(2, padding, batch.size(2)).narrow(3, padding, batch.size(3)).copy_(batch);
  }
  // Step 2: one window offset per sample, then a single gather of every window.
  std::vector<int64_t> tops(static_cast<size_t>(n)), lefts(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    tops[i] = Below(Draw(seed, epoch, ids[i], 1), hp - th + 1);
    lefts[i] = Below(Draw(seed, epoch, ids[i], 2), wp - tw + 1);
  }
  const auto longs = at::TensorOptions().dtype(at::kLong).device(batch.device());
  const Tensor top = at::tensor(tops, at::TensorOptions().dtype(at::kLong)).to(batch.device());
  const Tensor left = at::tensor(lefts, at::TensorOptions().dtype(at::kLong)).to(batch.device());
  const Tensor index = ((top.view({n, 1, 1}) + at::arange(th, longs).view({1, th, 1})) * wp +
                        left.view({n, 1, 1}) + at::arange(tw, longs).view({1, 1, tw}))
                           .view({n, 1, th * tw})
                           .expand({n, c, th * tw});
  return padded.reshape({n, c, hp * wp}).gather(2, index).view({n, c, th, tw});
}

Tensor RandomHorizontalFlip(const Tensor& batch, const Tensor& sample_ids, double p,
                            uint64_t seed, int64_t epoch) {
  if (!(p > 0)) return batch;
  const std::vector<int64_t> ids = SampleIds(batch, sample_ids, "horizontal_flip");
  std::vector<uint8_t> flip(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    const double u = static_cast<double>(Draw(seed, epoch, ids[i], 3) >> 11) * 0x1.0p-53;
    flip[i] = u < p ? 1 : 0;
  }
  const Tensor mask = at::tensor(flip, at::TensorOptions().dtype(at::kByte))
                          .to(batch.device(), at::kBool)
                          .view({batch.size(0), 1, 1, 1});
  return at::where(mask, batch.flip({3}), batch);
}

Tensor Augment(const Tensor& batch, const Tensor& sample_ids, const Augmentation& augmentation,
               uint64_t seed, int64_t epoch) {
  const Tensor cropped = RandomCrop(batch, sample_ids, augmentation.random_crop,
                                    augmentation.padding, augmentation.fill, seed, epoch);
  return RandomHorizontalFlip(cropped, sample_ids, augmentation.horizontal_flip, seed, epoch);
}

}  // namespace compress
