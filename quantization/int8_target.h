// The INT8 deployment target: which integer ranges a quantized model may use so that
// the runtimes it is deployed to compute what it says.
//
// x86 CPUs without a dot-product instruction (no AVX512-VNNI, AVX-VNNI or AMX) run
// ONNX Runtime's and oneDNN's u8 x s8 kernels with vpmaddubsw, which adds two adjacent
// u8*s8 products into a saturating int16 before widening to int32 (Intel SDM, PMADDUBSW;
// ONNX Runtime's quantization docs advise reduced-range weights there). Activations
// reach the kernel as u8 codes 0..255 (int8 activations are shifted by 128), and a
// QuantizeLinear saturates out-of-range inputs to 255, so only the weights can keep a
// pair within int16: 255 * (|q1| + |q2|) <= 32,767, i.e. |q| <= 64.
//   portable    weights in [-64, 64]: exact on every x86 kernel (AVX2, AVX512, VNNI,
//               AMX) and on ARM; the default.
//   full_range  weights in [-127, 127]: one more bit, right only where the kernels
//               have dot products (VNNI, AMX, ARM, GPUs/TensorRT).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "compress/ir/graph.h"

namespace compress {

enum class Int8Target { kPortable, kFullRange };

constexpr int64_t kPortableWeightMax = 64;    // 255 * 64 * 2 = 32,640 <= 32,767
constexpr int64_t kFullRangeWeightMax = 127;  // symmetric: negation stays exact
constexpr int64_t kU8CodeMax = 255;           // largest activation code a kernel sees
constexpr int64_t kInt16Max = 32767;
// Graph metadata key (ONNX metadata_props, the TorchScript file's mcompress.json).
inline constexpr const char* kInt8TargetKey = "mcompress.int8_target";

// The recipe/CLI names ("portable", "full_range"), in listing order: one table that
// the names, the parser and the option reader all use.
const std::vector<std::pair<std::string, Int8Target>>& Int8Targets();
const char* Int8TargetName(Int8Target target);
std::vector<std::string> Int8TargetNames();
// Throws compress::Error(kUsage) naming the choices.
Int8Target ParseInt8Target(const std::string& name);
int64_t WeightQmax(Int8Target target);

// One integer layer of a QDQ graph: a Conv, Gemm or MatMul whose data input and weight
// are both DequantizeLinear outputs (of an activation QuantizeLinear and of an int8
// initializer), the pattern ONNX Runtime fuses into QLinearConv/QGemm/MatMulInteger and
// our TorchScript exporter into oneDNN kernels.
struct Int8Layer {
  int node = -1;            // index in graph.nodes
  int weight_dq = -1;       // the weight's DequantizeLinear node
  int input_dq = -1;        // the data input's DequantizeLinear node
  std::string weight;       // the int8 initializer
  int64_t channel_axis = 0;  // output-channel axis of the weight
};
std::vector<Int8Layer> FindInt8Layers(const Graph& graph);

// The static proof: for each integer layer, the largest |q1| + |q2| of two weights in
// one output channel (whatever order a kernel pairs them in) and the largest pair sum a
// saturating kernel can see, kU8CodeMax * that.
struct PairBound {
  std::string layer;  // node name
  int64_t channel = 0;
  int64_t weight_pair = 0;  // max |q1| + |q2| within the channel
  int64_t worst_sum = 0;    // kU8CodeMax * weight_pair
  bool saturates() const { return worst_sum > kInt16Max; }
  std::string Describe() const;  // "conv1 channel 3: 255 x (127 + 120) = 62,985 > 32,767"
};
std::vector<PairBound> Int8PairBounds(const Graph& graph);

// What a QDQ graph declares (metadata kInt8TargetKey) and what its weights prove.
struct Int8TargetCheck {
  Int8Target target = Int8Target::kPortable;  // declared, else inferred from the weights
  bool declared = false;
  int64_t layers = 0;                 // integer layers checked
  std::vector<PairBound> saturating;  // layers whose pairs can exceed int16
  // "full_range: 2 of 3 integer layers can saturate ... (conv1 ...; fc ...)"; empty
  // when nothing can saturate.
  std::string Warning() const;
};
// Throws compress::Error(kNumeric) prefixed with `where` when the graph declares the
// portable target but a layer's weights can saturate (names the layer), or kIo when
// the declared target is not a known name.
Int8TargetCheck CheckInt8Target(const Graph& graph, const std::string& where);

// Text to append to a failed INT8 verification in `runtime_saturates` conditions (the
// CPU's kernels add pairs into int16) when `check` found saturating layers: says so and
// names the option that fixes it. Empty otherwise.
std::string SaturationHint(const Int8TargetCheck& check, bool runtime_saturates);

// Re-quantizes, in place, every integer layer's weights whose codes exceed the target's
// range: per output channel (or tensor) the scale grows by max|q| / qmax and the codes
// are re-rounded from the dequantized values; int32 biases read by those layers follow
// (scale input_scale * new weight scale). Records the target in graph.metadata. Returns
// the number of weight initializers changed.
int64_t RetargetInt8(Graph& graph, Int8Target target);

// Reference of x86 u8 x s8 integer GEMM: codes `a` [M, K] (0..255, any integer dtype)
// times int8 `w` [N, K], accumulated in int32 -> [M, N]. With `saturate_pairs`, adjacent
// products (k, k+1) are first added into a saturating int16 as vpmaddubsw does (the
// non-VNNI kernels); without, exactly (VNNI vpdpbusd, AMX, ARM). K is padded to even.
Tensor U8S8GemmReference(const Tensor& a, const Tensor& w, bool saturate_pairs);

}  // namespace compress
