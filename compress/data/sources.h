// The data sources a recipe's `data.dataset` names (docs/data.md): Fashion-MNIST, any
// IDX image/label pair, a torchvision-style image folder (PNG/JPEG), and tensor files
// from torch.save or torch::pickle_save; each loaded into memory as DatasetSplits, with
// the same seeded validation split, and one Error naming the file for bad input.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "compress/data/data.h"
#include "compress/data/transforms.h"

namespace compress {

// kCaller: the data comes from a C++ caller (RunRecipeOn in compress/engine/engine.h);
// nothing is loaded from files.
enum class DataSourceKind { kFashionMnist, kIdx, kImageFolder, kTensors, kCaller };

// The recipe spelling of each kind, in documentation order: "fashion-mnist", "idx",
// "image-folder", "tensors", "caller".
const std::vector<std::pair<std::string, DataSourceKind>>& DataSourceKinds();
const std::string& DataSourceKindName(DataSourceKind kind);

struct DataSourceSpec {
  DataSourceKind kind = DataSourceKind::kFashionMnist;
  // fashion-mnist: the folder with the four .gz files; idx: where files not named below
  // are looked for; image-folder: the folder holding train/, test/ and optionally val/.
  std::string root = "/usr/share/datasets/fashion-mnist";
  // idx: gzip'd or raw IDX files; empty = IdxDefaultPath(root, <MNIST file name>).
  std::string train_images, train_labels, test_images, test_labels;
  // tensors: the files read with ReadTensorFile.
  std::string train_file, test_file;
  // Labels must lie in 0..num_classes-1; 0 = the classes found (idx and tensors: the
  // largest training label + 1; image-folder: the training class folders).
  int64_t num_classes = 0;
  // Applied to idx, image-folder and tensors inputs; fashion-mnist is fixed (1x28x28,
  // normalised with kFashionMnistMean/kFashionMnistStd) and must leave this empty.
  ImageTransforms transforms;
  int64_t validation_size = 5000;  // carved from train by SplitTrainValidation
  int64_t train_limit = 0;         // 0 = all remaining training samples
  int64_t test_limit = 0;          // 0 = all test samples (else the first N)
  uint64_t split_seed = 0;
  // image-folder: the splits stay on disk as streaming datasets (TensorDataset::source):
  // each batch is decoded when a loader serves it, on stream.workers threads, at most
  // stream.prefetch batches ahead. Memory no longer grows with the number of images.
  bool streaming = false;
  StreamSettings stream;
};

// Loads the three splits. fashion-mnist is LoadFashionMnist. Otherwise the validation
// split is root/val/ for an image folder that has one, else the first validation_size
// samples of SeededPermutation(train size, split_seed), as for Fashion-MNIST. A split
// without labels has targets -1 and makes `labeled` false. Throws Error(kIo) naming
// the file or folder for unreadable, corrupt or inconsistent data (an empty class
// folder, a truncated image, mixed image sizes, labels out of range, lengths that
// differ), Error(kRecipe) for options that do not fit the data, Error(kNumeric) for
// NaN/Inf inputs, and for streaming on a source other than an image folder.
DatasetSplits LoadDataSource(const DataSourceSpec& spec);

// root/<name>.gz when that file exists, else root/<name> (`name` as in MNIST:
// "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
// "t10k-labels-idx1-ubyte").
std::string IdxDefaultPath(const std::string& root, const std::string& name);

// (name, CRC-32 as 8 hex digits) of what LoadDataSource reads, for run manifests:
// fashion-mnist the four file names under root (as manifests always had them), idx and
// tensors each file's path, image-folder "train/", "val/" (when present) and "test/",
// each a CRC over the split's sorted image paths and file sizes. Throws Error(kIo).
std::vector<std::pair<std::string, std::string>> DataSourceFingerprint(const DataSourceSpec& spec);

// Reads a file written by torch.save (Python) or torch::pickle_save / SaveTensorFile:
// a dict {"inputs": Tensor, "targets": Tensor}, a tuple or list (inputs, targets), or
// one of them without targets (a bare inputs tensor too). Inputs [N, ...] floating
// point become float32, uint8 ones float32 / 255; targets integer [N] become int64.
// Without targets, targets are -1 and *labeled (when given) is false. Throws Error(kIo)
// naming the file when it is unreadable, not such a file, or has a wrong structure,
// dtype, or inputs and targets of different lengths.
TensorDataset ReadTensorFile(const std::string& path, bool* labeled = nullptr);

// Writes {"inputs": inputs, "targets": targets} (no "targets" when undefined), on the
// CPU, with torch::pickle_save, atomically: ReadTensorFile and Python's torch.load read
// it. Throws Error(kIo) naming the file.
void SaveTensorFile(const std::string& path, const Tensor& inputs, const Tensor& targets = {});

}  // namespace compress
