// Image transforms with torchvision's names and semantics, on float tensors in CHW
// layout (one image [C, H, W] or a batch [N, C, H, W]) on any device: channel
// conversion, Resize, CenterCrop, Normalize; and seeded training augmentation
// (RandomCrop with padding, RandomHorizontalFlip) on batches.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <utility>
#include <vector>

namespace compress {

using Tensor = at::Tensor;

// What a data source applies to every image, in this order: channels, resize and
// center_crop on the [0, 1] values ToTensor gives, then normalize.
struct ImageTransforms {
  int64_t channels = 0;              // 1 or 3; 0 = as stored
  std::vector<int64_t> resize;       // {} none; {n}: shorter side to n; {h, w}
  std::vector<int64_t> center_crop;  // {} none; {n} means {n, n}; {h, w}
  std::vector<double> mean, std;     // {} none; one value for all channels, or one each
};

// torchvision's Resize output size for a height x width image: {n} makes the shorter
// side n and the longer int(n * longer / shorter); {h, w} is exact. Throws
// Error(kRecipe) unless `size` has 1 or 2 positive entries.
std::pair<int64_t, int64_t> ResizedSize(int64_t height, int64_t width,
                                        const std::vector<int64_t>& size);

// torchvision.transforms.Resize(size, BILINEAR, antialias=False) on a float tensor:
// bilinear with half-pixel centres (align_corners=False), no antialiasing when
// shrinking. Returns `images` itself when the size does not change.
Tensor Resize(const Tensor& images, const std::vector<int64_t>& size);

// torchvision.transforms.CenterCrop(size): the top/left offset is
// round((H - h) / 2) with Python's round-half-to-even; an image smaller than the crop
// is first padded with zeros, (h - H) / 2 rows on top and the rest below (the same for
// columns). `size` is {n} or {h, w}; throws Error(kRecipe) otherwise.
Tensor CenterCrop(const Tensor& images, const std::vector<int64_t>& size);

// 1 -> 3 channels repeats the gray plane; 3 -> 1 is torchvision's Grayscale on float
// tensors (0.2989 R + 0.587 G + 0.114 B); the same count returns `images`. Throws
// Error(kRecipe) for other conversions.
Tensor ConvertChannels(const Tensor& images, int64_t channels);

// torchvision.transforms.Normalize: (x - mean[c]) / std[c] per channel (dim -3), one
// value applying to every channel. Returns `images` when both are empty. Throws
// Error(kRecipe) when the counts differ from 1 and the channel count, or a std <= 0.
Tensor Normalize(const Tensor& images, const std::vector<double>& mean,
                 const std::vector<double>& std);

// All of `transforms` on `images` (float [C, H, W] or [N, C, H, W]), in the order the
// struct lists them.
Tensor ApplyImageTransforms(const Tensor& images, const ImageTransforms& transforms);

// ---- Training augmentation --------------------------------------------------------
// Random choices depend only on (seed, epoch, sample id), never on batch composition or
// global RNG state: pass DataLoader::last_indices() as `sample_ids`, so a sample gets
// the same crop and flip in an epoch whichever loader serves it.

struct Augmentation {
  std::vector<int64_t> random_crop;  // {} off; {n} or {h, w}
  int64_t padding = 0;               // zero padding on every side before the crop
  std::vector<double> fill;          // padding value per channel (or one); {} = 0
  double horizontal_flip = 0;        // flip probability; 0 = off (torchvision's p is 0.5)
};

// torchvision.transforms.RandomCrop(size, padding, fill): pads `batch` [N, C, H, W] by
// `padding` on each side with `fill`, then cuts an h x w window at a uniformly drawn
// offset per sample. Data normalised before the crop should pad with
// fill[c] = -mean[c] / std[c] to match torchvision's crop-then-normalise order.
// Throws Error(kRecipe) when the window does not fit.
Tensor RandomCrop(const Tensor& batch, const Tensor& sample_ids, const std::vector<int64_t>& size,
                  int64_t padding, const std::vector<double>& fill, uint64_t seed,
                  int64_t epoch);

// torchvision.transforms.RandomHorizontalFlip(p): mirrors each sample of `batch`
// [N, C, H, W] along W with probability p.
Tensor RandomHorizontalFlip(const Tensor& batch, const Tensor& sample_ids, double p,
                            uint64_t seed, int64_t epoch);

// Whether `augmentation` changes anything (a crop size is set, or p > 0).
inline bool Augmenting(const Augmentation& augmentation) {
  return !augmentation.random_crop.empty() || augmentation.horizontal_flip > 0;
}

// RandomCrop (when random_crop is set), then RandomHorizontalFlip (when p > 0).
Tensor Augment(const Tensor& batch, const Tensor& sample_ids, const Augmentation& augmentation,
               uint64_t seed, int64_t epoch);

}  // namespace compress
