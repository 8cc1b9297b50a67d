// The zoo networks. Architectures are the usual small references for 28x28 images;
// each comment names its origin.
#include "compress/zoo/zoo.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <sstream>

#include "compress/zoo/builder.h"

namespace compress {

namespace {

constexpr int64_t kClasses = 10;

// A hidden layer's size at width multiplier `w`: round(c * w), at least 1.
struct Width {
  double w = 1.0;
  int64_t operator()(int64_t c) const {
    return std::max<int64_t>(1, static_cast<int64_t>(std::llround(static_cast<double>(c) * w)));
  }
};

std::string Relu6(GraphBuilder& b, const std::string& x) {
  // ReLU6 = Clip(0, 6) (opset 11+ takes the bounds as inputs).
  static const char* kMin = "relu6.min";
  static const char* kMax = "relu6.max";
  return b.Op1("Clip", {x, kMin, kMax});
}

std::string MaxPool2(GraphBuilder& b, const std::string& x) {
  return b.Op1("MaxPool", {x},
               {{"kernel_shape", std::vector<int64_t>{2, 2}},
                {"strides", std::vector<int64_t>{2, 2}}});
}

// LeNet-300-100 (LeCun et al. 1998): two hidden fully connected layers.
void BuildMlp(GraphBuilder& b, const std::string& input, Width W) {
  std::string x = b.Op1("Flatten", {input}, {{"axis", int64_t{1}}});
  x = b.Op1("Relu", {b.Linear(x, 784, W(300), true, "fc1")});
  x = b.Op1("Relu", {b.Linear(x, W(300), W(100), true, "fc2")});
  b.Output("logits", b.Linear(x, W(100), kClasses, true, "fc3"));
}

// LeNet-5 (LeCun et al. 1998) with ReLU and max pooling, padded first conv for 28x28.
void BuildLenet5(GraphBuilder& b, const std::string& input, Width W) {
  std::string x = b.Op1("Relu", {b.Conv(input, 1, W(6), 5, 1, 2, 1, true, "conv1")});
  x = MaxPool2(b, x);
  x = b.Op1("Relu", {b.Conv(x, W(6), W(16), 5, 1, 0, 1, true, "conv2")});
  x = MaxPool2(b, x);
  x = b.Op1("Flatten", {x}, {{"axis", int64_t{1}}});
  x = b.Op1("Relu", {b.Linear(x, W(16) * 5 * 5, W(120), true, "fc1")});
  x = b.Op1("Relu", {b.Linear(x, W(120), W(84), true, "fc2")});
  b.Output("logits", b.Linear(x, W(84), kClasses, true, "fc3"));
}

// A plain CNN: 2x (conv3x3 + BN + ReLU + maxpool) then 2 fully connected layers.
void BuildConvnet(GraphBuilder& b, const std::string& input, Width W) {
  std::string x = b.Conv(input, 1, W(32), 3, 1, 1, 1, false, "conv1");
  x = MaxPool2(b, b.Op1("Relu", {b.BatchNorm(x, W(32), "bn1")}));
  x = b.Conv(x, W(32), W(64), 3, 1, 1, 1, false, "conv2");
  x = MaxPool2(b, b.Op1("Relu", {b.BatchNorm(x, W(64), "bn2")}));
  x = b.Op1("Flatten", {x}, {{"axis", int64_t{1}}});
  x = b.Op1("Relu", {b.Linear(x, W(64) * 7 * 7, W(128), true, "fc1")});
  b.Output("logits", b.Linear(x, W(128), kClasses, true, "fc2"));
}

// ResNet-8 in the style of He et al. 2016 (CIFAR variant): a 3x3 stem, three basic
// blocks of 16/32/64 channels (stride 2 in the last two, 1x1 projection shortcuts),
// global average pooling and a linear classifier: 8 weighted layers on the main path.
void BuildResnet8(GraphBuilder& b, const std::string& input, Width W) {
  std::string x = b.Conv(input, 1, W(16), 3, 1, 1, 1, false, "stem.conv");
  x = b.Op1("Relu", {b.BatchNorm(x, W(16), "stem.bn")});
  int64_t in = W(16);
  const int64_t widths[] = {W(16), W(32), W(64)};
  for (int i = 0; i < 3; ++i) {
    const int64_t out = widths[i];
    const int64_t stride = i == 0 ? 1 : 2;
    const std::string p = "layer" + std::to_string(i + 1);
    std::string y = b.Conv(x, in, out, 3, stride, 1, 1, false, p + ".conv1");
    y = b.Op1("Relu", {b.BatchNorm(y, out, p + ".bn1")});
    y = b.Conv(y, out, out, 3, 1, 1, 1, false, p + ".conv2");
    y = b.BatchNorm(y, out, p + ".bn2");
    std::string shortcut = x;
    if (stride != 1 || in != out) {
      shortcut = b.Conv(x, in, out, 1, stride, 0, 1, false, p + ".down.conv");
      shortcut = b.BatchNorm(shortcut, out, p + ".down.bn");
    }
    x = b.Op1("Relu", {b.Op1("Add", {y, shortcut}, {}, p + ".add")});
    in = out;
  }
  x = b.Op1("Flatten", {b.Op1("GlobalAveragePool", {x})}, {{"axis", int64_t{1}}});
  b.Output("logits", b.Linear(x, in, kClasses, true, "fc"));
}

// MobileNet-style (Howard et al. 2017) depthwise-separable blocks with BN and ReLU6.
void BuildMobilenetTiny(GraphBuilder& b, const std::string& input, Width W) {
  b.Constant("relu6.min", torch::zeros({}));
  b.Constant("relu6.max", torch::full({}, 6.0));
  std::string x = b.Conv(input, 1, W(16), 3, 1, 1, 1, false, "stem.conv");
  x = Relu6(b, b.BatchNorm(x, W(16), "stem.bn"));
  struct Block { int64_t out, stride; };
  const Block blocks[] = {{W(32), 2}, {W(64), 2}, {W(64), 1}, {W(128), 2}};
  int64_t in = W(16);
  int i = 0;
  for (const auto& blk : blocks) {
    const std::string p = "block" + std::to_string(++i);
    x = b.Conv(x, in, in, 3, blk.stride, 1, in, false, p + ".dw");
    x = Relu6(b, b.BatchNorm(x, in, p + ".dw_bn"));
    x = b.Conv(x, in, blk.out, 1, 1, 0, 1, false, p + ".pw");
    x = Relu6(b, b.BatchNorm(x, blk.out, p + ".pw_bn"));
    in = blk.out;
  }
  x = b.Op1("Flatten", {b.Op1("GlobalAveragePool", {x})}, {{"axis", int64_t{1}}});
  b.Output("logits", b.Linear(x, in, kClasses, true, "fc"));
}

struct ZooBuilder {
  ZooEntry entry;
  std::function<void(GraphBuilder&, const std::string&, Width)> build;
};

const std::vector<ZooBuilder>& Builders() {
  static const std::vector<ZooBuilder> kBuilders = {
      {{"mlp-300-100", "LeNet-300-100: 784-300-100-10 fully connected, ReLU (266k params)"},
       BuildMlp},
      {{"lenet5", "LeNet-5: 2 conv (5x5) + max pool, 3 fully connected, ReLU (62k params)"},
       BuildLenet5},
      {{"convnet", "2 conv3x3 + BN + ReLU + max pool, 2 fully connected (421k params)"},
       BuildConvnet},
      {{"resnet8", "ResNet-8: stem + 3 basic residual blocks (16/32/64), GAP, FC (78k params)"},
       BuildResnet8},
      {{"mobilenet-tiny", "4 depthwise-separable blocks with BN + ReLU6, GAP, FC (15k params)"},
       BuildMobilenetTiny},
  };
  return kBuilders;
}

}  // namespace

const std::vector<ZooEntry>& ZooModels() {
  static const std::vector<ZooEntry> kEntries = [] {
    std::vector<ZooEntry> entries;
    for (const auto& b : Builders()) entries.push_back(b.entry);
    return entries;
  }();
  return kEntries;
}

ZooSpec ParseZooSpec(const std::string& text) {
  ZooSpec spec;
  const size_t q = text.find('?');
  spec.name = text.substr(0, q);
  if (q == std::string::npos) return spec;
  const std::string option = text.substr(q + 1);
  const std::string key = "width=";
  size_t used = 0;
  double width = 0;
  bool parsed = option.rfind(key, 0) == 0;
  if (parsed) {
    try {
      width = std::stod(option.substr(key.size()), &used);
    } catch (const std::exception&) {
      parsed = false;
    }
    parsed = parsed && used == option.size() - key.size();
  }
  if (!parsed || !(width > 0 && width <= 8)) {
    throw Error(ErrorKind::kUsage, "zoo model '" + text +
                                       "': expected <name> or <name>?width=W with W in (0, 8], "
                                       "e.g. lenet5?width=0.5");
  }
  spec.width = width;
  return spec;
}

Graph BuildZoo(const std::string& text, uint64_t seed) {
  const ZooSpec spec = ParseZooSpec(text);
  for (const auto& z : Builders()) {
    if (z.entry.name == spec.name) {
      std::ostringstream name;
      name << spec.name;
      if (spec.width != 1.0) name << "_w" << spec.width;  // "lenet5_w0.5"
      GraphBuilder b(name.str(), seed);
      z.build(b, b.Input("input", {kDynamicDim, 1, 28, 28}), Width{spec.width});
      return b.Build();
    }
  }
  std::string valid;
  for (const auto& z : Builders()) valid += (valid.empty() ? "" : ", ") + z.entry.name;
  throw Error(ErrorKind::kUsage, "unknown zoo model '" + spec.name + "'; available: " + valid);
}

}  // namespace compress
