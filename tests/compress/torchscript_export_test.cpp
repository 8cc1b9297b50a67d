// TorchScript export against our Executor: every zoo model and a hand-built graph
// covering the remaining ops (saved, loaded back with torch::jit::load, run at two
// batch sizes), the same files in Python's torch.jit, a QDQ convnet as fake-quant
// (bit-exact) and with real INT8 kernels (INT8 tolerance), and the error cases.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <unistd.h>

#include "compress/zoo/builder.h"
#include "compress/runtime/cpu_info.h"
#include "compress/runtime/executor.h"
#include "compress/io/onnx_io.h"
#include "compress/runtime/ops.h"
#include "compress/io/torchscript_export.h"
#include "compress/io/verify.h"
#include "compress/zoo/zoo.h"
#include "quantization/int8_target.h"
#include "tests/test_util.h"

namespace compress {
namespace {

namespace fs = std::filesystem;
using testing_util::ExpectError;
using Ints = std::vector<int64_t>;

// FP32 and fake-quant exports must match the executor within this fraction of the
// output's scale (max |reference|, at least 1).
constexpr double kRelTol = 1e-5;

// A fresh folder per test process (ctest runs test cases in parallel).
fs::path TempDir(const std::string& name) {
  fs::path dir = fs::temp_directory_path() /
                 ("mcompress_ts_export_" + name + "_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

std::vector<Tensor> RunExecutor(const Graph& g, const std::vector<Tensor>& inputs) {
  torch::NoGradGuard no_grad;
  return Executor(g).Run(inputs);
}

std::vector<Tensor> RunModule(torch::jit::Module& m, const std::vector<Tensor>& inputs) {
  torch::NoGradGuard no_grad;
  std::vector<c10::IValue> args(inputs.begin(), inputs.end());
  c10::IValue out = m.forward(args);
  std::vector<Tensor> result;
  if (out.isTuple()) {
    for (const auto& e : out.toTupleRef().elements()) result.push_back(e.toTensor());
  } else {
    result.push_back(out.toTensor());
  }
  return result;
}

// max |Δ| / max(max |reference|, 1), CompareOutput's FP32 measure: NaN matches only
// NaN (a mismatch counts as an infinite difference, as does a shape mismatch).
double RelDiff(const Tensor& got, const Tensor& want) {
  EXPECT_EQ(got.scalar_type(), want.scalar_type());
  const OutputCheck check = CompareOutput("output", want, got, VerifyTolerance{});
  EXPECT_TRUE(check.failure.rfind("shape", 0) != 0) << check.failure;
  return check.failure.rfind("shape", 0) == 0 ? INFINITY : check.max_rel_diff;
}

// Saves `graph`, loads the file and compares every output with the executor at two
// batch sizes. Returns the largest relative difference.
double SaveLoadCompare(const Graph& graph, const fs::path& file,
                       const TorchScriptExportOptions& options = {}) {
  SaveTorchScript(graph, file.string(), options);
  torch::jit::Module m = torch::jit::load(file.string());
  double worst = 0;
  for (int64_t batch : {2, 7}) {
    const std::vector<Tensor> inputs = RandomInputs(graph, batch, 100 + batch);
    const std::vector<Tensor> want = RunExecutor(graph, inputs);
    const std::vector<Tensor> got = RunModule(m, inputs);
    EXPECT_EQ(got.size(), want.size());
    for (size_t i = 0; i < std::min(got.size(), want.size()); ++i) {
      SCOPED_TRACE(graph.outputs[i].name + " at batch " + std::to_string(batch));
      worst = std::max(worst, RelDiff(got[i], want[i]));
    }
  }
  return worst;
}

// ---- graphs -----------------------------------------------------------------------

// Every op the zoo does not use, with the attribute forms ops.cpp supports:
// auto_pad SAME_*, asymmetric pads, ceil_mode, Reshape 0/-1, negative Slice steps...
Graph AllOpsGraph() {
  torch::manual_seed(5);
  GraphBuilder b("all_ops", 7);
  const std::string x = b.Input("input", {kDynamicDim, 3, 8, 8});
  b.Constant("same.weight", torch::randn({4, 3, 3, 3}) * 0.3);
  b.Constant("same.bias", torch::randn({4}));
  const std::string same = b.Op1("Conv", {x, "same.weight", "same.bias"},
                                 {{"auto_pad", std::string("SAME_LOWER")},
                                  {"strides", Ints{2, 2}}}, "same");  // [N,4,4,4]
  b.Constant("asym.weight", torch::randn({4, 3, 2, 2}) * 0.3);
  const std::string asym = b.Op1("Conv", {x, "asym.weight"},
                                 {{"pads", Ints{0, 1, 1, 0}}}, "asym");  // [N,4,8,8]
  b.Constant("bn.scale", torch::rand({4}) + 0.5);
  b.Constant("bn.bias", torch::randn({4}));
  b.Constant("bn.mean", torch::randn({4}) * 0.1);
  b.Constant("bn.var", torch::rand({4}) + 0.5);
  const std::string bn = b.Op1("BatchNormalization",
                               {asym, "bn.scale", "bn.bias", "bn.mean", "bn.var"},
                               {{"epsilon", 1e-3}}, "bn");
  const std::string mp = b.Op1("MaxPool", {bn},
                               {{"kernel_shape", Ints{3, 3}}, {"strides", Ints{2, 2}},
                                {"auto_pad", std::string("SAME_UPPER")}}, "maxpool");  // [N,4,4,4]
  const std::string ap = b.Op1("AveragePool", {bn},
                               {{"kernel_shape", Ints{2, 2}}, {"strides", Ints{2, 2}},
                                {"pads", Ints{1, 1, 0, 0}}, {"ceil_mode", int64_t{1}}},
                               "avgpool");  // [N,4,5,5]; the ceil window has one real cell
  const std::string ap2 = b.Op1("AveragePool", {mp},
                                {{"kernel_shape", Ints{3, 3}}, {"pads", Ints{1, 1, 1, 1}},
                                 {"count_include_pad", int64_t{1}}}, "avgpool_sym");  // [N,4,4,4]
  const std::string sum = b.Op1("Add", {same, ap2}, {}, "add");
  auto un = [&](const std::string& op, std::map<std::string, AttrValue> attrs = {}) {
    return b.Op1(op, {sum}, attrs, "act_" + op);
  };
  b.Constant("clip.min", torch::tensor(-0.5f));
  b.Constant("clip.max", torch::tensor(0.7f));
  std::vector<std::string> acts = {
      un("LeakyRelu", {{"alpha", 0.1}}), un("HardSigmoid", {{"alpha", 0.3}, {"beta", 0.4}}),
      un("HardSwish"), un("Sigmoid"), un("Tanh"), un("Erf"),
      un("Gelu", {{"approximate", std::string("tanh")}}),
      b.Op1("Clip", {sum, "clip.min", "clip.max"}, {}, "clip"),
      b.Op1("Identity", {sum}, {}, "identity")};
  const std::string two = b.Op("Constant", {}, {{"value", torch::tensor(2.0f)}}, 1, "two")[0];
  acts.push_back(b.Op1("Div", {b.Op1("Sub", {sum, two}, {}, "sub"), two}, {}, "div"));
  acts.push_back(b.Op1("Mul", {sum, two}, {}, "mul"));
  const std::string cat = b.Op1("Concat", acts, {{"axis", int64_t{1}}}, "concat");  // [N,44,4,4]
  b.Constant("split.sizes", torch::tensor({40, 4}, torch::kLong));
  auto parts = b.Op("Split", {cat, "split.sizes"}, {{"axis", int64_t{1}}}, 2, "split");
  b.Constant("slice.starts", torch::tensor({-1}, torch::kLong));
  b.Constant("slice.ends", torch::tensor({std::numeric_limits<int64_t>::min()}, torch::kLong));
  b.Constant("slice.axes", torch::tensor({3}, torch::kLong));
  b.Constant("slice.steps", torch::tensor({-1}, torch::kLong));
  const std::string rev = b.Op1("Slice", {parts[0], "slice.starts", "slice.ends", "slice.axes",
                                          "slice.steps"}, {}, "slice");  // W reversed
  const std::string nhwc = b.Op1("Transpose", {rev}, {{"perm", Ints{0, 2, 3, 1}}}, "transpose");
  b.Constant("ln.scale", torch::rand({40}) + 0.5);
  b.Constant("ln.bias", torch::randn({40}));
  const std::string ln = b.Op1("LayerNormalization", {nhwc, "ln.scale", "ln.bias"},
                               {{"axis", int64_t{-1}}}, "layernorm");
  b.Constant("reshape.shape", torch::tensor({0, -1}, torch::kLong));
  const std::string flat = b.Op1("Reshape", {ln, "reshape.shape"}, {}, "reshape");  // [N,640]
  b.Constant("matmul.weight", torch::randn({640, 12}) * 0.05);
  const std::string mm = b.Op1("MatMul", {flat, "matmul.weight"}, {}, "matmul");
  b.Constant("gemm.weight", torch::randn({6, 12}) * 0.3);
  b.Constant("gemm.c", torch::randn({1, 6}));
  const std::string gemm = b.Op1("Gemm", {mm, "gemm.weight", "gemm.c"},
                                 {{"transB", int64_t{1}}, {"alpha", 0.5}, {"beta", 2.0}}, "gemm");
  const std::string sm = b.Op1("Softmax", {gemm}, {{"axis", int64_t{-1}}}, "softmax");
  b.Output("probs", b.Op("Dropout", {sm}, {}, 1, "dropout")[0]);
  // Second output: global pool of the other split part and of the ceil-mode pool.
  const std::string gap = b.Op1("GlobalAveragePool", {ap}, {}, "gap");  // [N,4,1,1]
  b.Constant("squeeze.axes", torch::tensor({2, 3}, torch::kLong));
  const std::string sq = b.Op1("Squeeze", {gap, "squeeze.axes"}, {}, "squeeze");  // [N,4]
  b.Constant("unsqueeze.axes", torch::tensor({1}, torch::kLong));
  const std::string usq = b.Op1("Unsqueeze", {sq, "unsqueeze.axes"}, {}, "unsqueeze");  // [N,1,4]
  b.Constant("reshape2.shape", torch::tensor({-1, 1, 4, 4}, torch::kLong));
  const std::string other = b.Op1("Reshape", {parts[1], "reshape2.shape"}, {}, "reshape2");
  b.Constant("reshape3.shape", torch::tensor({0, 4, 1}, torch::kLong));
  const std::string col = b.Op1("Reshape", {usq, "reshape3.shape"}, {}, "reshape3");  // [N,4,1]
  const std::string pooled = b.Op1("GlobalAveragePool", {other}, {}, "gap2");  // [N*4,1,1,1]
  b.Constant("reshape4.shape", torch::tensor({-1, 4, 1}, torch::kLong));
  b.Output("features", b.Op1("Add", {col, b.Op1("Reshape", {pooled, "reshape4.shape"}, {}, "reshape4")},
                             {}, "add2"));
  return b.Build();
}

// The ops whose semantics change before opset 13 (attributes instead of inputs,
// Softmax on the coerced 2-D input).
Graph Opset11Graph() {
  GraphBuilder b("opset11", 3, 11);
  const std::string x = b.Input("input", {kDynamicDim, 6, 5});
  const std::string sm = b.Op1("Softmax", {x}, {{"axis", int64_t{1}}}, "softmax");
  auto parts = b.Op("Split", {sm}, {{"axis", int64_t{1}}, {"split", Ints{2, 4}}}, 2, "split");
  const std::string u = b.Op1("Unsqueeze", {parts[0]}, {{"axes", Ints{0, -1}}}, "unsqueeze");
  const std::string s = b.Op1("Squeeze", {u}, {{"axes", Ints{0}}}, "squeeze");  // [N,2,5,1]
  const std::string t = b.Op1("Transpose", {s}, {}, "transpose");                  // [1,5,2,N]
  b.Output("a", t);
  b.Output("b", parts[1]);
  return b.Build();
}

// ---- FP32 -------------------------------------------------------------------------

TEST(TorchScriptExport, ZooModelsMatchExecutorAtTwoBatchSizes) {
  const fs::path dir = TempDir("zoo");
  for (const auto& entry : ZooModels()) {
    SCOPED_TRACE(entry.name);
    const Graph g = BuildZoo(entry.name, 11);
    const double rel = SaveLoadCompare(g, dir / (entry.name + ".pt"));
    std::printf("%-16s max |diff| / scale = %.2e\n", entry.name.c_str(), rel);
    EXPECT_LE(rel, kRelTol);
  }
  fs::remove_all(dir);
}

TEST(TorchScriptExport, AllOpsGraphMatchesExecutor) {
  const fs::path dir = TempDir("ops");
  const Graph g = AllOpsGraph();
  const double rel = SaveLoadCompare(g, dir / "all_ops.pt");
  std::printf("all_ops  max |diff| / scale = %.2e\n", rel);
  EXPECT_LE(rel, kRelTol);
  const Graph g11 = Opset11Graph();
  const double rel11 = SaveLoadCompare(g11, dir / "opset11.pt");
  std::printf("opset11  max |diff| / scale = %.2e\n", rel11);
  EXPECT_LE(rel11, kRelTol);
  fs::remove_all(dir);
}

// The tests of this file together use every op of the registry.
Graph QdqConvnet(at::ScalarType activation, int64_t weight_zp, Graph* float_graph,
                 int64_t weight_qmax = kPortableWeightMax);

TEST(TorchScriptExport, TestsCoverEveryRegisteredOp) {
  std::set<std::string> used;
  auto add = [&](const Graph& g) {
    for (const auto& n : g.nodes) used.insert(n.op_type);
  };
  for (const auto& entry : ZooModels()) add(BuildZoo(entry.name, 0));
  add(AllOpsGraph());
  add(Opset11Graph());
  add(QdqConvnet(at::kByte, 0, nullptr));
  for (const auto& spec : OpRegistry()) EXPECT_TRUE(used.count(spec.op_type)) << spec.op_type;
}

TEST(TorchScriptExport, ModuleNamesInitializersAndKeepsTheirDtypes) {
  const Graph g = BuildZoo("lenet5", 0);
  torch::jit::Module m = GraphToTorchScript(g);
  const auto names = m.attr("mcompress_initializers").toGenericDict();
  int found = 0;
  for (const auto& kv : names) {
    const std::string attr = kv.key().toStringRef(), init = kv.value().toStringRef();
    EXPECT_TRUE(g.IsInitializer(init)) << init;
    EXPECT_TRUE(m.attr(attr).toTensor().equal(g.Weight(init))) << attr;
    found += init == "conv1.weight";
  }
  EXPECT_EQ(found, 1);
  EXPECT_EQ(static_cast<int64_t>(names.size()), static_cast<int64_t>(g.initializers.size()));
  // Trainable floats are parameters; the graph's tensors are not shared.
  int64_t params = 0;
  for (const auto& p : m.parameters()) params += p.numel();
  EXPECT_EQ(params, g.NumParameters());
  EXPECT_FALSE(m.attr("conv1_weight").toTensor().is_same(g.Weight("conv1.weight")));
}

// ---- Python -----------------------------------------------------------------------

// Runs tests/fixtures/check_torchscript.py on (model, input) pairs; returns outputs
// per model (empty on failure, which is reported).
std::vector<std::vector<Tensor>> RunInPython(const fs::path& dir,
                                             const std::vector<std::pair<fs::path, Tensor>>& runs,
                                             bool onednn) {
  const fs::path script = fs::path(MCOMPRESS_SOURCE_DIR) / "tests/fixtures/check_torchscript.py";
  std::string cmd = "/usr/bin/python3 '" + script.string() + "'" + (onednn ? " --onednn" : "");
  for (size_t i = 0; i < runs.size(); ++i) {
    const fs::path in = dir / ("py_in" + std::to_string(i) + ".pb");
    SaveTensorProto(runs[i].second, in.string());
    cmd += " '" + runs[i].first.string() + "' '" + in.string() + "' '" +
           (dir / ("py_out" + std::to_string(i))).string() + "'";
  }
  cmd += " > '" + (dir / "py_log.txt").string() + "' 2>&1";
  std::vector<std::vector<Tensor>> outs(runs.size());
  if (std::system(cmd.c_str()) != 0) {
    std::ifstream log(dir / "py_log.txt");
    std::stringstream ss;
    ss << log.rdbuf();
    ADD_FAILURE() << cmd << "\n" << ss.str();
    return outs;
  }
  for (size_t i = 0; i < runs.size(); ++i) {
    for (int k = 0;; ++k) {
      const fs::path p = dir / ("py_out" + std::to_string(i) + "." + std::to_string(k) + ".pb");
      if (!fs::exists(p)) break;
      outs[i].push_back(LoadTensorProto(p.string()));
    }
  }
  return outs;
}

TEST(TorchScriptExport, PythonTorchJitLoadsAndMatches) {
  ASSERT_TRUE(fs::exists("/usr/bin/python3")) << "/usr/bin/python3 is missing; make test installs it (tools/deps.sh)";
  const fs::path dir = TempDir("python");
  std::vector<std::pair<fs::path, Tensor>> runs;
  std::vector<std::vector<Tensor>> want;
  for (const auto& [name, graph] : std::vector<std::pair<std::string, Graph>>{
           {"resnet8", BuildZoo("resnet8", 2)}, {"all_ops", AllOpsGraph()}}) {
    const fs::path file = dir / (name + ".pt");
    SaveTorchScript(graph, file.string());
    const Tensor input = RandomInputs(graph, 3, 9)[0];
    runs.emplace_back(file, input);
    want.push_back(RunExecutor(graph, {input}));
  }
  const auto got = RunInPython(dir, runs, false);
  for (size_t i = 0; i < runs.size(); ++i) {
    SCOPED_TRACE(runs[i].first.string());
    ASSERT_EQ(got[i].size(), want[i].size());
    for (size_t k = 0; k < got[i].size(); ++k) {
      const double rel = RelDiff(got[i][k], want[i][k]);
      std::printf("python %-12s output %zu: max |diff| / scale = %.2e\n",
                  runs[i].first.filename().c_str(), k, rel);
      EXPECT_LE(rel, kRelTol);
    }
  }
  fs::remove_all(dir);
}

// ---- quantized graphs ------------------------------------------------------------------

struct ActQuant {
  float scale;
  int64_t zp;
};

// Asymmetric per-tensor parameters covering [min, max] (and 0).
ActQuant Calibrate(const Tensor& t, at::ScalarType dtype) {
  const double lo = std::min(t.min().item<double>(), 0.0);
  const double hi = std::max(t.max().item<double>(), 0.0);
  const float scale = static_cast<float>(std::max(hi - lo, 1e-8) / 255.0);
  const double qmin = dtype == at::kByte ? 0 : -128;
  const int64_t zp = static_cast<int64_t>(std::clamp(std::nearbyint(qmin - lo / scale), qmin, qmin + 255));
  return {scale, zp};
}

// Symmetric per-output-channel int8 weights in [-qmax, qmax]: {w_q, scale[O]}. The
// portable range by default, which every x86 INT8 kernel computes exactly
// (quantization/int8_target.h).
std::pair<Tensor, Tensor> QuantizeWeight(const Tensor& w, int64_t qmax = kPortableWeightMax) {
  Tensor amax = w.abs().reshape({w.size(0), -1}).amax(1).clamp_min(1e-8);
  Tensor scale = (amax / static_cast<double>(qmax)).to(torch::kFloat);
  std::vector<int64_t> shape(w.dim(), 1);
  shape[0] = w.size(0);
  Tensor q = torch::round(w / scale.reshape(shape)).clamp(-qmax, qmax).to(torch::kChar);
  return {q, scale};
}

// conv(4->8, 3x3, pad 1) -> relu -> maxpool 2 -> flatten -> fc(512 -> 10) with QDQ
// as the quantization pass lays it out: activations Q->DQ (uint8 or int8, calibrated
// on a float run), per-channel int8 weights (zero points `weight_zp`), int32 biases.
Graph QdqConvnet(at::ScalarType activation, int64_t weight_zp, Graph* float_graph,
                 int64_t weight_qmax) {
  GraphBuilder fb("convnet_fp32", 21);
  {
    const std::string x = fb.Input("input", {kDynamicDim, 4, 16, 16});
    std::string y = fb.Op1("Relu", {fb.Conv(x, 4, 8, 3, 1, 1, 1, true, "conv1")}, {}, "relu1");
    y = fb.Op1("MaxPool", {y}, {{"kernel_shape", Ints{2, 2}}, {"strides", Ints{2, 2}}}, "pool1");
    y = fb.Op1("Flatten", {y}, {{"axis", int64_t{1}}}, "flatten");
    fb.Output("logits", fb.Linear(y, 512, 10, true, "fc"));
  }
  const Graph fg = fb.Build();
  // Calibration on a float run.
  std::map<std::string, Tensor> seen;
  {
    Executor exec(fg);
    exec.SetObserver({"input", "relu1", "flatten", "logits"},
                     [&](const std::string& v, const Tensor& t) { seen[v] = t.detach().clone(); });
    torch::NoGradGuard no_grad;
    exec.Run(RandomInputs(fg, 64, 77));
  }
  for (const char* v : {"input", "relu1", "flatten", "logits"}) {
    if (!seen.count(v)) ADD_FAILURE() << "not observed: " << v;
  }
  GraphBuilder b("convnet_qdq", 21);
  const at::ScalarType zp_type = activation;
  auto qdq = [&](const std::string& name, const std::string& value) {
    const ActQuant q = Calibrate(seen.at(name == "conv1_in" ? "input" : name), activation);
    const std::string s = b.Constant(name + ".scale", torch::scalar_tensor(q.scale, torch::kFloat));
    const std::string z = b.Constant(name + ".zero_point", torch::scalar_tensor(q.zp, zp_type));
    const std::string qv = b.Op1("QuantizeLinear", {value, s, z}, {}, name + ".quantize");
    return std::make_pair(b.Op1("DequantizeLinear", {qv, s, z}, {}, name + ".dequantize"), q);
  };
  auto weights = [&](const std::string& layer, float x_scale, int64_t axis) {
    auto [wq, ws] = QuantizeWeight(fg.Weight(layer + ".weight"), weight_qmax);
    b.Constant(layer + ".weight_q", wq);
    b.Constant(layer + ".weight_scale", ws);
    b.Constant(layer + ".weight_zp", torch::full({wq.size(0)}, weight_zp, torch::kChar));
    const std::string w = b.Op1("DequantizeLinear", {layer + ".weight_q", layer + ".weight_scale", layer + ".weight_zp"},
                                {{"axis", axis}}, layer + ".weight_dq");
    Tensor bias_scale = ws * x_scale;
    Tensor bq = torch::round(fg.Weight(layer + ".bias") / bias_scale).to(torch::kInt);
    b.Constant(layer + ".bias_q", bq);
    b.Constant(layer + ".bias_scale", bias_scale);
    b.Constant(layer + ".bias_zp", torch::zeros({bq.size(0)}, torch::kInt));
    const std::string bias = b.Op1("DequantizeLinear", {layer + ".bias_q", layer + ".bias_scale", layer + ".bias_zp"},
                                   {{"axis", int64_t{0}}}, layer + ".bias_dq");
    return std::make_pair(w, bias);
  };
  const std::string x = b.Input("input", {kDynamicDim, 4, 16, 16});
  auto [xdq, xq] = qdq("conv1_in", x);
  auto [w1, b1] = weights("conv1", xq.scale, 0);
  std::string y = b.Op1("Conv", {xdq, w1, b1}, {{"kernel_shape", Ints{3, 3}}, {"pads", Ints{1, 1, 1, 1}}}, "conv1");
  y = b.Op1("Relu", {y}, {}, "relu1");
  auto [rdq, rq] = qdq("relu1", y);
  y = b.Op1("MaxPool", {rdq}, {{"kernel_shape", Ints{2, 2}}, {"strides", Ints{2, 2}}}, "pool1");
  y = b.Op1("Flatten", {y}, {{"axis", int64_t{1}}}, "flatten");
  auto [fdq, fq] = qdq("flatten", y);
  auto [w2, b2] = weights("fc", fq.scale, 0);
  y = b.Op1("Gemm", {fdq, w2, b2}, {{"transB", int64_t{1}}}, "fc");
  auto [ydq, yq] = qdq("logits", y);
  b.Output("logits", ydq);
  if (float_graph) *float_graph = fg;
  return b.Build();
}

TEST(TorchScriptExport, FakeQuantQdqGraphMatchesExecutor) {
  const fs::path dir = TempDir("fakequant");
  for (at::ScalarType act : {at::kByte, at::kChar}) {
    SCOPED_TRACE(DtypeName(act));
    const Graph g = QdqConvnet(act, 0, nullptr);
    const double rel = SaveLoadCompare(g, dir / "qdq.pt");
    std::printf("fake-quant %-5s max |diff| / scale = %.2e\n", DtypeName(act).c_str(), rel);
    EXPECT_LE(rel, kRelTol);
  }
  {
    // Per-channel parameters computed at run time (not initializers): the broadcast
    // along `axis` is decided by the module.
    GraphBuilder b("runtime_qparams", 0);
    const std::string x = b.Input("input", {kDynamicDim, 3, 4});
    b.Constant("scale", torch::tensor({0.05f, 0.1f, 0.2f}));
    b.Constant("zero_point", torch::tensor({0, -3, 5}, torch::kChar));
    const std::string s = b.Op1("Identity", {"scale"}, {}, "scale_id");
    const std::string z = b.Op1("Identity", {"zero_point"}, {}, "zp_id");
    const std::string q = b.Op1("QuantizeLinear", {x, s, z}, {{"axis", int64_t{1}}}, "q");
    b.Output(b.Op1("DequantizeLinear", {q, s, z}, {{"axis", int64_t{1}}}, "dq"));
    const double rel = SaveLoadCompare(b.Build(), dir / "runtime_qparams.pt");
    std::printf("fake-quant run-time per-channel parameters max |diff| / scale = %.2e\n", rel);
    EXPECT_LE(rel, kRelTol);
  }
  // Quantized values keep their dtypes in the module.
  torch::jit::Module m = GraphToTorchScript(QdqConvnet(at::kByte, 0, nullptr));
  EXPECT_EQ(m.attr("conv1_weight_q").toTensor().scalar_type(), at::kChar);
  EXPECT_EQ(m.attr("conv1_bias_q").toTensor().scalar_type(), at::kInt);
  EXPECT_EQ(m.attr("conv1_in_zero_point").toTensor().scalar_type(), at::kByte);
  fs::remove_all(dir);
}

VerifyTolerance Int8Tolerance() {
  VerifyTolerance tol;
  tol.mode = VerifyTolerance::Mode::kInt8;
  return tol;
}

TEST(TorchScriptExport, RealInt8RunsQuantizedKernelsWithinInt8Tolerance) {
  const fs::path dir = TempDir("int8");
  const Graph g = QdqConvnet(at::kByte, 0, nullptr);
  TorchScriptExportOptions options;
  options.real_int8 = true;
  const fs::path file = dir / "int8.pt";
  const TorchScriptExportResult result = SaveTorchScript(g, file.string(), options);
  EXPECT_EQ(result.int8_layers, (std::vector<std::string>{"conv1", "fc"}));
  EXPECT_TRUE(result.fallback_layers.empty());
  {
    // The file holds packed weights, not the int8 initializers they came from.
    torch::jit::Module in_memory = GraphToTorchScript(g, options);
    EXPECT_TRUE(in_memory.hasattr("conv1_packed"));
    EXPECT_TRUE(in_memory.hasattr("fc_packed"));
    EXPECT_FALSE(in_memory.hasattr("conv1_weight_q"));
    EXPECT_FALSE(in_memory.hasattr("fc_bias_q"));
    // Quantized from the input to the logits: pool and flatten run on the quantized
    // tensor (no float detour), uint8 values are read once, for the output's DQ.
    const std::string ir = in_memory.get_method("forward").graph()->toString();
    auto count = [&](const std::string& what) {
      int n = 0;
      for (size_t at = ir.find(what); at != std::string::npos; at = ir.find(what, at + 1)) ++n;
      return n;
    };
    EXPECT_EQ(count("aten::quantize_per_tensor"), 1) << ir;
    EXPECT_EQ(count("quantized::conv2d_relu"), 1) << ir;
    EXPECT_EQ(count("quantized::linear"), 1) << ir;
    EXPECT_EQ(count("aten::int_repr"), 1) << ir;
    EXPECT_EQ(count("aten::convolution"), 0) << ir;
  }
  // The loader selects the engine the weights were packed for.
  const at::QEngine previous = at::globalContext().qEngine();
  at::globalContext().setQEngine(at::QEngine::ONEDNN);
  torch::jit::Module m = torch::jit::load(file.string());
  for (int64_t batch : {1, 32}) {
    const std::vector<Tensor> inputs = RandomInputs(g, batch, 300 + batch);
    const Tensor want = RunExecutor(g, inputs)[0];
    const Tensor got = RunModule(m, inputs)[0];
    const OutputCheck check = CompareOutput("logits", want, got, Int8Tolerance());
    std::printf("real int8 batch %-2lld max |diff| %.3g (step %.3g), within one step %.4f, top-1 %.4f\n",
                static_cast<long long>(batch), check.max_abs_diff, check.tolerance,
                check.within_step, check.top1_agreement);
    EXPECT_TRUE(check.passed) << check.failure;
  }
  // The same file in Python's torch.jit.
  if (fs::exists("/usr/bin/python3")) {
    const Tensor input = RandomInputs(g, 4, 5)[0];
    const auto got = RunInPython(dir, {{file, input}}, true);
    ASSERT_EQ(got[0].size(), 1u);
    const OutputCheck check = CompareOutput("logits", RunExecutor(g, {input})[0], got[0][0], Int8Tolerance());
    std::printf("real int8 python max |diff| %.3g (step %.3g)\n", check.max_abs_diff, check.tolerance);
    EXPECT_TRUE(check.passed) << check.failure;
  }
  at::globalContext().setQEngine(previous);
  fs::remove_all(dir);
}

// Full-range weights (|q| up to 127) are right only where oneDNN's INT8 kernels have dot
// products; portable ones everywhere. ctest runs this test as it is and again with
// ONEDNN_MAX_CPU_ISA=AVX2 and =AVX512_CORE, so the saturating kernels of CPUs without
// VNNI run (and the divergence shows) on any x86 machine.
TEST(TorchScriptExport, RealInt8FullRangeWeightsAreRightOnlyWithDotProducts) {
  const bool saturates = OnednnInt8PairsSaturate(CpuInt8());
  std::printf("%s\n", CpuInt8Summary().c_str());
  TorchScriptExportOptions options;
  options.real_int8 = true;
  for (int64_t qmax : {kFullRangeWeightMax, kPortableWeightMax}) {
    SCOPED_TRACE("weights within +-" + std::to_string(qmax));
    const Graph g = QdqConvnet(at::kByte, 0, nullptr, qmax);
    torch::jit::Module m = GraphToTorchScript(g, options);
    const std::vector<Tensor> inputs = RandomInputs(g, 32, 332);
    const OutputCheck check = CompareOutput("logits", RunExecutor(g, inputs)[0], RunModule(m, inputs)[0], Int8Tolerance());
    std::printf("oneDNN INT8, weights +-%-3lld: within one step %.4f, top-1 %.4f (%s)\n",
                static_cast<long long>(qmax), check.within_step, check.top1_agreement,
                check.passed ? "passes" : "fails");
    if (qmax == kPortableWeightMax || !saturates) {
      EXPECT_TRUE(check.passed) << check.failure;
    } else {
      EXPECT_FALSE(check.passed) << "full-range weights agreed although oneDNN's ISA ("
                                 << CpuInt8().onednn_isa << ") has no dot products";
    }
  }
}

// `blocks` residual blocks in QDQ form, x <- relu(conv_b(relu(conv_a(x))) + x), uint8
// activations. Block k's layers: conv{2k+1}, conv{2k+2}, relu{2k+1}, add (k = 0) or
// add{k+1}, and its result relu{2k+2} (the last one is the output "out"). From the
// second block on, the Add's operand x is the previous Add's quantized result, which
// the next block's first conv also reads.
Graph QdqResidual(int blocks = 1) {
  auto conv_name = [](int k, int j) { return "conv" + std::to_string(2 * k + j); };
  auto relu_name = [](int k, int j) { return "relu" + std::to_string(2 * k + j); };
  auto add_name = [](int k) { return k == 0 ? std::string("add") : "add" + std::to_string(k + 1); };
  auto block_out = [&](int k) { return k + 1 == blocks ? std::string("out") : relu_name(k, 2); };
  GraphBuilder fb("residual_fp32", 4);
  {
    std::string x = fb.Input("input", {kDynamicDim, 8, 8, 8});
    for (int k = 0; k < blocks; ++k) {
      std::string y = fb.Op1("Relu", {fb.Conv(x, 8, 8, 3, 1, 1, 1, true, conv_name(k, 1))}, {}, relu_name(k, 1));
      y = fb.Conv(y, 8, 8, 3, 1, 1, 1, true, conv_name(k, 2));
      x = fb.Op1("Relu", {fb.Op1("Add", {y, x}, {}, add_name(k))}, {}, relu_name(k, 2));
    }
    fb.Output("out", x);
  }
  const Graph fg = fb.Build();
  std::vector<std::string> stats = {"input"};
  for (int k = 0; k < blocks; ++k) {
    for (const std::string& v : {relu_name(k, 1), conv_name(k, 2), block_out(k)}) stats.push_back(v);
  }
  std::map<std::string, Tensor> seen;
  {
    Executor exec(fg);
    exec.SetObserver(stats, [&](const std::string& v, const Tensor& t) { seen[v] = t.detach().clone(); });
    torch::NoGradGuard no_grad;
    exec.Run(RandomInputs(fg, 64, 5));
  }
  GraphBuilder b("residual_qdq", 4);
  auto qdq = [&](const std::string& stat, const std::string& value) {
    const ActQuant q = Calibrate(seen.at(stat), at::kByte);
    const std::string s = b.Constant(stat + ".scale", torch::scalar_tensor(q.scale, torch::kFloat));
    const std::string z = b.Constant(stat + ".zero_point", torch::scalar_tensor(q.zp, torch::kByte));
    const std::string qv = b.Op1("QuantizeLinear", {value, s, z}, {}, stat + ".quantize");
    return std::make_pair(b.Op1("DequantizeLinear", {qv, s, z}, {}, stat + ".dequantize"), q.scale);
  };
  auto conv = [&](const std::string& layer, const std::string& x, float x_scale) {
    auto [wq, ws] = QuantizeWeight(fg.Weight(layer + ".weight"));
    b.Constant(layer + ".wq", wq);
    b.Constant(layer + ".ws", ws);
    const std::string w = b.Op1("DequantizeLinear", {layer + ".wq", layer + ".ws"}, {{"axis", int64_t{0}}}, layer + ".wdq");
    Tensor bs = ws * x_scale;
    b.Constant(layer + ".bq", torch::round(fg.Weight(layer + ".bias") / bs).to(torch::kInt));
    b.Constant(layer + ".bs", bs);
    const std::string bias = b.Op1("DequantizeLinear", {layer + ".bq", layer + ".bs"}, {{"axis", int64_t{0}}}, layer + ".bdq");
    return b.Op1("Conv", {x, w, bias}, {{"kernel_shape", Ints{3, 3}}, {"pads", Ints{1, 1, 1, 1}}}, layer);
  };
  const std::string input = b.Input("input", {kDynamicDim, 8, 8, 8});
  auto [x, sx] = qdq("input", input);
  for (int k = 0; k < blocks; ++k) {
    auto [x1, s1] = qdq(relu_name(k, 1), b.Op1("Relu", {conv(conv_name(k, 1), x, sx)}, {}, relu_name(k, 1)));
    auto [x2, s2] = qdq(conv_name(k, 2), conv(conv_name(k, 2), x1, s1));
    std::tie(x, sx) = qdq(block_out(k), b.Op1("Relu", {b.Op1("Add", {x2, x}, {}, add_name(k))}, {}, relu_name(k, 2)));
  }
  b.Output("out", x);
  return b.Build();
}

TEST(TorchScriptExport, RealInt8ResidualAddRunsQuantized) {
  const Graph g = QdqResidual();
  TorchScriptExportOptions options;
  options.real_int8 = true;
  TorchScriptExportResult result;
  torch::jit::Module m = GraphToTorchScript(g, options, &result);
  EXPECT_EQ(result.int8_layers, (std::vector<std::string>{"conv1", "conv2", "add"}));
  EXPECT_TRUE(result.fallback_layers.empty());
  const std::string ir = m.get_method("forward").graph()->toString();
  EXPECT_NE(ir.find("quantized::add_relu"), std::string::npos) << ir;
  EXPECT_EQ(ir.find("aten::add("), std::string::npos) << ir;
  for (int64_t batch : {1, 16}) {
    const std::vector<Tensor> inputs = RandomInputs(g, batch, 40 + batch);
    const OutputCheck check = CompareOutput("out", RunExecutor(g, inputs)[0], RunModule(m, inputs)[0], Int8Tolerance());
    std::printf("real int8 residual batch %-2lld max |diff| %.3g (step %.3g), within one step %.4f\n",
                static_cast<long long>(batch), check.max_abs_diff, check.tolerance, check.within_step);
    EXPECT_TRUE(check.passed) << check.failure;
  }
  // Fake-quant export of the same graph stays bit-exact.
  torch::jit::Module fake = GraphToTorchScript(g);
  const std::vector<Tensor> inputs = RandomInputs(g, 3, 8);
  EXPECT_LE(RelDiff(RunModule(fake, inputs)[0], RunExecutor(g, inputs)[0]), kRelTol);
}

// Chained residual blocks (resnet's layout): every Add reads the previous Add's
// quantized result, which the next conv reads too; all of them run quantized.
TEST(TorchScriptExport, RealInt8ChainedResidualAddsRunQuantized) {
  const Graph g = QdqResidual(3);
  TorchScriptExportOptions options;
  options.real_int8 = true;
  TorchScriptExportResult result;
  torch::jit::Module m = GraphToTorchScript(g, options, &result);
  EXPECT_EQ(result.int8_layers, (std::vector<std::string>{"conv1", "conv2", "add", "conv3", "conv4",
                                                          "add2", "conv5", "conv6", "add3"}));
  EXPECT_TRUE(result.fallback_layers.empty()) << result.fallback_layers[0].first << ": "
                                              << result.fallback_layers[0].second;
  const std::string ir = m.get_method("forward").graph()->toString();
  EXPECT_EQ(ir.find("aten::add("), std::string::npos) << ir;
  const std::vector<Tensor> inputs = RandomInputs(g, 16, 41);
  const OutputCheck check = CompareOutput("out", RunExecutor(g, inputs)[0], RunModule(m, inputs)[0], Int8Tolerance());
  EXPECT_TRUE(check.passed) << check.failure;
}

// A quantized Add that cannot run on the quantized kernel is listed with why.
TEST(TorchScriptExport, RealInt8AddFallbackIsListed) {
  Graph g = QdqResidual(1);
  // The Add's result becomes a second graph output: it must stay float.
  const int relu = g.ProducerIndex("relu2");
  ASSERT_GE(relu, 0);
  g.outputs.push_back(ValueInfo{g.nodes[relu].inputs[0], at::kFloat, std::nullopt});
  TorchScriptExportOptions options;
  options.real_int8 = true;
  TorchScriptExportResult result;
  GraphToTorchScript(g, options, &result);
  ASSERT_EQ(result.fallback_layers.size(), 1u);
  EXPECT_EQ(result.fallback_layers[0].first, "add");
  EXPECT_NE(result.fallback_layers[0].second.find("graph output"), std::string::npos)
      << result.fallback_layers[0].second;
}

// x -> MatMul(int8 [K,N] weight, per-channel on axis 1) -> Add(int32 bias) -> Relu,
// in QDQ form, for inputs of rank `rank` (2: [N,16], 3: [N,5,16]).
Graph QdqMatMul(int rank) {
  torch::manual_seed(12);
  const Tensor w = torch::randn({16, 12}) * 0.25;
  const Tensor bias = torch::randn({12}) * 0.1;
  const std::vector<int64_t> shape = rank == 2 ? Ints{kDynamicDim, 16} : Ints{kDynamicDim, 5, 16};
  const float x_scale = 8.0f / 255, y_scale = 6.0f / 255;
  GraphBuilder b("matmul_qdq", 0);
  const std::string x = b.Input("input", shape);
  b.Constant("x.scale", torch::scalar_tensor(x_scale));
  b.Constant("x.zp", torch::scalar_tensor(128, torch::kByte));
  const std::string xq = b.Op1("QuantizeLinear", {x, "x.scale", "x.zp"}, {}, "x.q");
  const std::string xdq = b.Op1("DequantizeLinear", {xq, "x.scale", "x.zp"}, {}, "x.dq");
  auto [wq_t, ws] = QuantizeWeight(w.t().contiguous());  // per output column
  b.Constant("w.q", wq_t.t().contiguous());
  b.Constant("w.scale", ws);
  const std::string wdq = b.Op1("DequantizeLinear", {"w.q", "w.scale"}, {{"axis", int64_t{1}}}, "w.dq");
  b.Constant("b.q", torch::round(bias / (ws * x_scale)).to(torch::kInt));
  b.Constant("b.scale", ws * x_scale);
  const std::string bdq = b.Op1("DequantizeLinear", {"b.q", "b.scale"}, {{"axis", int64_t{0}}}, "b.dq");
  std::string y = b.Op1("MatMul", {xdq, wdq}, {}, "matmul");
  y = b.Op1("Relu", {b.Op1("Add", {y, bdq}, {}, "bias_add")}, {}, "relu");
  b.Constant("y.scale", torch::scalar_tensor(y_scale));
  b.Constant("y.zp", torch::scalar_tensor(0, torch::kByte));
  const std::string yq = b.Op1("QuantizeLinear", {y, "y.scale", "y.zp"}, {}, "y.q");
  b.Output("out", b.Op1("DequantizeLinear", {yq, "y.scale", "y.zp"}, {}, "y.dq"));
  return b.Build();
}

TEST(TorchScriptExport, RealInt8MatMulWithBiasRunsQuantizedLinear) {
  TorchScriptExportOptions options;
  options.real_int8 = true;
  for (int rank : {2, 3}) {
    SCOPED_TRACE("rank " + std::to_string(rank));
    const Graph g = QdqMatMul(rank);
    TorchScriptExportResult result;
    torch::jit::Module m = GraphToTorchScript(g, options, &result);
    EXPECT_EQ(result.int8_layers, std::vector<std::string>{"matmul"});
    EXPECT_TRUE(result.fallback_layers.empty());
    const std::string ir = m.get_method("forward").graph()->toString();
    EXPECT_NE(ir.find("quantized::linear_relu"), std::string::npos) << ir;
    const std::vector<Tensor> inputs = RandomInputs(g, 6, 2);
    const OutputCheck check = CompareOutput("out", RunExecutor(g, inputs)[0], RunModule(m, inputs)[0], Int8Tolerance());
    std::printf("real int8 matmul rank %d max |diff| %.3g (step %.3g), within one step %.4f\n", rank,
                check.max_abs_diff, check.tolerance, check.within_step);
    EXPECT_TRUE(check.passed) << check.failure;
  }
}

TEST(TorchScriptExport, RealInt8FallsBackWithReasons) {
  TorchScriptExportOptions options;
  options.real_int8 = true;
  {
    // int8 activations: the quantized kernels take quint8.
    const Graph g = QdqConvnet(at::kChar, 0, nullptr);
    TorchScriptExportResult result;
    torch::jit::Module m = GraphToTorchScript(g, options, &result);
    EXPECT_TRUE(result.int8_layers.empty());
    ASSERT_EQ(result.fallback_layers.size(), 2u);
    EXPECT_EQ(result.fallback_layers[0].first, "conv1");
    EXPECT_EQ(result.fallback_layers[1].first, "fc");
    EXPECT_NE(result.fallback_layers[0].second.find("activation is int8"), std::string::npos)
        << result.fallback_layers[0].second;
    // Fallback layers are fake-quant: bit-exact with the executor.
    const std::vector<Tensor> in = RandomInputs(g, 3, 1);
    EXPECT_LE(RelDiff(RunModule(m, in)[0], RunExecutor(g, in)[0]), kRelTol);
  }
  {
    // Asymmetric weights.
    const Graph g = QdqConvnet(at::kByte, 3, nullptr);
    TorchScriptExportResult result;
    GraphToTorchScript(g, options, &result);
    ASSERT_EQ(result.fallback_layers.size(), 2u);
    EXPECT_NE(result.fallback_layers[1].second.find("weight zero point is not zero"), std::string::npos)
        << result.fallback_layers[1].second;
  }
  ExpectError([&] {
    TorchScriptExportOptions bad = options;
    bad.qengine = "fbgemm2";
    GraphToTorchScript(QdqConvnet(at::kByte, 0, nullptr), bad);
  }, ErrorKind::kUnsupported, "fbgemm2");
}

// ---- bad input ----------------------------------------------------------------------

TEST(TorchScriptExport, UnwritablePathIsAnIoErrorAndWritesNothing) {
  const fs::path dir = TempDir("io");
  const Graph g = BuildZoo("mlp-300-100", 0);
  const std::string missing = (dir / "no_such_dir" / "m.pt").string();
  ExpectError([&] { SaveTorchScript(g, missing); }, ErrorKind::kIo, missing);
  // The target is a non-empty directory: the rename fails, the temporary goes away.
  const fs::path taken = dir / "taken.pt";
  fs::create_directories(taken);
  std::ofstream(taken / "keep") << "x";
  ExpectError([&] { SaveTorchScript(g, taken.string()); }, ErrorKind::kIo, taken.string());
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(dir)) left.push_back(e.path().filename().string());
  EXPECT_EQ(left, std::vector<std::string>{"taken.pt"});
  fs::remove_all(dir);
}

TEST(TorchScriptExport, UnsupportedOpsAndAttributesNameTheNode) {
  {
    GraphBuilder b("indices", 0);
    const std::string x = b.Input("input", {kDynamicDim, 2, 4, 4});
    auto outs = b.Op("MaxPool", {x}, {{"kernel_shape", Ints{2, 2}}}, 2, "pool");
    b.Output(outs[0]);
    b.Output(outs[1], at::kLong);
    const Graph g = b.Build();
    ExpectError([&] { GraphToTorchScript(g); }, ErrorKind::kUnsupported, "MaxPool 'pool'");
  }
  {
    GraphBuilder b("bn_training", 0);
    const std::string x = b.Input("input", {kDynamicDim, 2, 4, 4});
    const std::string bn = b.BatchNorm(x, 2, "bn");
    b.Output(bn);
    Graph g = b.Build();
    g.nodes.back().attrs["training_mode"] = int64_t{1};
    ExpectError([&] { GraphToTorchScript(g); }, ErrorKind::kUnsupported,
                "BatchNormalization 'bn': TorchScript export does not support training_mode=1");
  }
  {
    Graph g = BuildZoo("mlp-300-100", 0);
    g.nodes[1].domain = "com.example";
    ExpectError([&] { GraphToTorchScript(g); }, ErrorKind::kUnsupported, g.nodes[1].Describe());
  }
}

}  // namespace
}  // namespace compress
