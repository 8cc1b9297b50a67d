// QDQ form of a quantized graph, the layout ONNX Runtime and TensorRT fuse into integer
// kernels (ONNX Runtime docs, "Quantize ONNX models": QDQ format; the QLinearConv /
// QGemm / QLinearAdd fusions match DequantizeLinear -> op -> QuantizeLinear):
//   - each quantized activation value v gets QuantizeLinear -> DequantizeLinear right
//     after its producer (per-tensor scale and zero point, uint8 or int8); every
//     consumer reads the dequantized value;
//   - a quantized layer's weight is held as an int8 initializer (same name) read through
//     DequantizeLinear with per-channel scales (axis 0 for Conv and Gemm transB=1, the
//     output-column axis otherwise) and zero point 0;
//   - its bias is an int32 initializer (same name) read through DequantizeLinear with
//     scale input_scale * weight_scale and zero point 0;
//   - a layer's output is quantized after the Relu/Clip that follows it (so the runtime
//     fuses the activation), except graph outputs, which stay float.
// Our executor runs this graph as written: that is the fake-quant reference every
// integer runtime is compared with.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "compress/ir/graph.h"
#include "compress/report/report.h"
#include "compress/pass/layer_select.h"
#include "quantization/int8_target.h"
#include "quantization/quant_math.h"

namespace compress {

// One activation value to quantize. `share` names an earlier planned value whose
// parameters it reuses (outputs of MaxPool, Flatten, Reshape, Transpose, Squeeze,
// Unsqueeze: order-preserving ops whose output range is the input's), else empty and
// the value is calibrated itself.
struct PlannedActivation {
  std::string value;
  std::string share;
};

struct QdqPlan {
  std::vector<WeightedLayer> layers;           // layers whose weights are quantized
  std::vector<PlannedActivation> activations;  // in node order
  std::vector<SkippedLayer> skipped;           // weighted layers left in float, with why
};

// Decides, from structure only, which layers and values are quantized. Layers are
// Conv, Gemm (transA=0, alpha=beta=1) and MatMul with a floating-point weight
// initializer, filtered by `filter`; Add of two quantized values and Global/Average
// pools of a quantized value quantize their outputs too, so residual blocks stay in
// integers. Values that are graph outputs are never quantized.
QdqPlan PlanQdq(const Graph& graph, const LayerFilter& filter);

// `full` (a PlanQdq of `graph`) with the layers named in `fp32_layers` left in float
// (added to `skipped` with `reason`) and the activations planned for the rest. Every
// value it plans is planned in `full` too (planning is monotonic in the layer set),
// though a value `full` shares may be calibrated on its own here.
QdqPlan PlanQdqWithout(const Graph& graph, const QdqPlan& full,
                       const std::set<std::string>& fp32_layers, const std::string& reason);

struct QdqOptions {
  at::ScalarType activation_type = at::kByte;  // kByte (uint8) or kChar (int8)
  bool per_channel = true;                     // weights: per output channel or per tensor
  Int8Target target = Int8Target::kPortable;   // weight range: [-64, 64] or [-127, 127]
  // Weight scales to use instead of max|w| / qmax (QAT's learned scales), by weight
  // initializer name: one per channel along WeightAxis, or one for per-tensor weights.
  // A bias that needs a larger scale still raises it.
  std::map<std::string, Tensor> weight_scales;
};

// The per-channel axis of a quantized layer's weight `w`: the output channels (axis 0
// for Conv and Gemm transB=1, 1 for Gemm transB=0, the last for MatMul).
int64_t WeightAxis(const Node& node, const Tensor& w);

// The largest float32 scale an activation `value` may have when a Clip with constant
// bounds produces it: the quantized range [(qmin - z) s, (qmax - z) s], computed in
// float32 as ONNX Runtime does, must lie within the clip's [min, max], or ONNX Runtime's
// ClipQuantFusion keeps the Clip and the producing layer cannot fuse into an integer
// kernel (with a Clip left between a Conv and its Q, ONNX Runtime 1.30 even rejects the
// model at the extended optimization level). 0 when `value` is not such a Clip's
// output or no scale can satisfy it (z > qmin over a clip with min >= 0).
float ClipScaleBound(const Graph& graph, const std::string& value, int64_t zero_point,
                     QuantRange range);

// Rewrites `graph` into QDQ form following `plan`, with `params` holding the calibrated
// parameters of every planned value whose `share` is empty (an activation scale above
// its ClipScaleBound is lowered to it). Pruning masks are applied
// and dropped (zeros stay exact: the weight zero point is 0). Weights use the range of
// `options.target`, which is recorded in graph.metadata[kInt8TargetKey]. Returns the number of
// Q/DQ nodes inserted. Throws compress::Error(kInternal) when a planned value has no
// parameters, kNumeric when a bias cannot be represented.
int64_t ApplyQdq(Graph& graph, const QdqPlan& plan,
                 const std::map<std::string, AffineParams>& params, const QdqOptions& options);

// Whether the graph holds any QuantizeLinear or DequantizeLinear node.
bool HasQuantization(const Graph& graph);

// The float equivalent of a QDQ graph: weights and biases read through
// DequantizeLinear become float initializers holding the dequantized values (so the
// model keeps the rounding it was quantized with), and activation Q->DQ pairs are
// removed. Throws compress::Error(kUnsupported) naming a QuantizeLinear whose output is
// read by something other than DequantizeLinear.
void StripQuantization(Graph& graph);

}  // namespace compress
