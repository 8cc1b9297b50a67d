// TorchScript export latency: an FP32 TorchScript file against a real-INT8 one
// (LibTorch quantized kernels on the ONEDNN engine), both run with torch::jit::load
// as a user would. The pair comes from .pt files, from ONNX files (FP32 graph and QDQ
// graph, exported here), or --demo: a QDQ convnet built and calibrated here. Batch
// sizes 1 and 32 by default; each cell is the median over repetitions of N forward
// calls after a warmup. Prints Markdown rows.
#include <CLI/CLI.hpp>
#include <torch/script.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "compress/zoo/builder.h"
#include "compress/base/error.h"
#include "compress/runtime/executor.h"
#include "compress/io/onnx_io.h"
#include "compress/runtime/runtime_config.h"
#include "compress/io/torchscript_export.h"
#include "quantization/int8_target.h"
#include "quantization/quant_math.h"

namespace {

namespace fs = std::filesystem;
using compress::Graph;
using compress::GraphBuilder;
using compress::Tensor;
using Clock = std::chrono::steady_clock;
using Ints = std::vector<int64_t>;

// ---- the demo QDQ convnet ---------------------------------------------------------------

// Asymmetric uint8 parameters covering [min, max] and 0.
std::pair<float, int64_t> Calibrate(const Tensor& t) {
  const double lo = std::min(t.min().item<double>(), 0.0);
  const double hi = std::max(t.max().item<double>(), 0.0);
  const float scale = static_cast<float>(std::max(hi - lo, 1e-8) / 255.0);
  return {scale, static_cast<int64_t>(std::clamp(std::nearbyint(-lo / scale), 0.0, 255.0))};
}

// conv3x3(3->32) relu pool, conv3x3(32->64) relu pool, flatten, fc(4096->256) relu,
// fc(256->10) on 32x32 inputs: the FP32 graph and its QDQ form (per-channel int8
// weights, int32 biases, uint8 activations calibrated on random inputs).
std::pair<Graph, Graph> DemoGraphs() {
  GraphBuilder fb("demo_fp32", 1);
  {
    std::string x = fb.Input("input", {compress::kDynamicDim, 3, 32, 32});
    auto pool = [&](const std::string& v, const std::string& name) {
      return fb.Op1("MaxPool", {v}, {{"kernel_shape", Ints{2, 2}}, {"strides", Ints{2, 2}}}, name);
    };
    x = pool(fb.Op1("Relu", {fb.Conv(x, 3, 32, 3, 1, 1, 1, true, "conv1")}, {}, "relu1"), "pool1");
    x = pool(fb.Op1("Relu", {fb.Conv(x, 32, 64, 3, 1, 1, 1, true, "conv2")}, {}, "relu2"), "pool2");
    x = fb.Op1("Flatten", {x}, {{"axis", int64_t{1}}}, "flatten");
    x = fb.Op1("Relu", {fb.Linear(x, 64 * 8 * 8, 256, true, "fc1")}, {}, "relu3");
    fb.Output("logits", fb.Linear(x, 256, 10, true, "fc2"));
  }
  Graph fg = fb.Build();
  const std::vector<std::string> observed = {"input", "relu1", "pool1", "relu2", "flatten", "relu3", "logits"};
  std::map<std::string, Tensor> seen;
  {
    compress::Executor exec(fg);
    exec.SetObserver(observed, [&](const std::string& v, const Tensor& t) { seen[v] = t.clone(); });
    torch::NoGradGuard no_grad;
    exec.Run({torch::randn({64, 3, 32, 32})});
  }
  GraphBuilder b("demo_qdq", 1);
  auto qdq = [&](const std::string& stat, const std::string& value) {
    auto [scale, zp] = Calibrate(seen.at(stat));
    const std::string s = b.Constant(stat + ".scale", torch::scalar_tensor(scale, torch::kFloat));
    const std::string z = b.Constant(stat + ".zero_point", torch::scalar_tensor(zp, torch::kByte));
    const std::string q = b.Op1("QuantizeLinear", {value, s, z}, {}, stat + ".q");
    return std::make_pair(b.Op1("DequantizeLinear", {q, s, z}, {}, stat + ".dq"), scale);
  };
  auto layer = [&](const std::string& op, const std::string& name, const std::string& x,
                   float x_scale, std::map<std::string, compress::AttrValue> attrs) {
    const Tensor w = fg.Weight(name + ".weight");
    // Portable INT8 weights (quantization/int8_target.h): right on every x86 kernel.
    const compress::WeightQuant wq =
        compress::QuantizeWeightSymmetric(w, 0, Tensor(), compress::kPortableWeightMax);
    const Tensor ws = wq.scale;
    b.Constant(name + ".wq", wq.q);
    b.Constant(name + ".ws", ws);
    b.Constant(name + ".wz", torch::zeros({w.size(0)}, torch::kChar));
    const std::string wdq = b.Op1("DequantizeLinear", {name + ".wq", name + ".ws", name + ".wz"},
                                  {{"axis", int64_t{0}}}, name + ".wdq");
    Tensor bs = ws * x_scale;
    b.Constant(name + ".bq", torch::round(fg.Weight(name + ".bias") / bs).to(torch::kInt));
    b.Constant(name + ".bs", bs);
    b.Constant(name + ".bz", torch::zeros({w.size(0)}, torch::kInt));
    const std::string bdq = b.Op1("DequantizeLinear", {name + ".bq", name + ".bs", name + ".bz"},
                                  {{"axis", int64_t{0}}}, name + ".bdq");
    return b.Op1(op, {x, wdq, bdq}, attrs, name);
  };
  const std::map<std::string, compress::AttrValue> conv = {{"kernel_shape", Ints{3, 3}},
                                                           {"pads", Ints{1, 1, 1, 1}}};
  const std::map<std::string, compress::AttrValue> pool = {{"kernel_shape", Ints{2, 2}},
                                                           {"strides", Ints{2, 2}}};
  std::string x = b.Input("input", {compress::kDynamicDim, 3, 32, 32});
  auto [x0, s0] = qdq("input", x);
  auto [x1, s1] = qdq("relu1", b.Op1("Relu", {layer("Conv", "conv1", x0, s0, conv)}, {}, "relu1"));
  auto [xp, sp] = qdq("pool1", b.Op1("MaxPool", {x1}, pool, "pool1"));
  auto [x2, s2] = qdq("relu2", b.Op1("Relu", {layer("Conv", "conv2", xp, sp, conv)}, {}, "relu2"));
  x = b.Op1("Flatten", {b.Op1("MaxPool", {x2}, pool, "pool2")}, {{"axis", int64_t{1}}}, "flatten");
  auto [x3, s3] = qdq("flatten", x);
  auto [x4, s4] = qdq("relu3", b.Op1("Relu", {layer("Gemm", "fc1", x3, s3, {{"transB", int64_t{1}}})}, {}, "relu3"));
  auto [y, sy] = qdq("logits", layer("Gemm", "fc2", x4, s4, {{"transB", int64_t{1}}}));
  b.Output("logits", y);
  return {fg, b.Build()};
}

// ---- timing -------------------------------------------------------------------------------

// Median milliseconds per forward of each module over `reps` repetitions of `runs`
// calls. Repetitions alternate between the modules, so load from other processes on
// a shared machine hits both alike.
std::pair<double, double> TimePair(torch::jit::Module& a, torch::jit::Module& b, const Tensor& input,
                                   int warmup, int reps, int runs) {
  torch::InferenceMode guard;
  std::vector<c10::IValue> args = {input};
  for (int i = 0; i < warmup; ++i) {
    a.forward(args);
    b.forward(args);
  }
  auto rep = [&](torch::jit::Module& m) {
    const auto start = Clock::now();
    for (int i = 0; i < runs; ++i) m.forward(args);
    return std::chrono::duration<double, std::milli>(Clock::now() - start).count() / runs;
  };
  std::vector<double> ms_a, ms_b;
  for (int r = 0; r < reps; ++r) {
    ms_a.push_back(rep(a));
    ms_b.push_back(rep(b));
  }
  std::sort(ms_a.begin(), ms_a.end());
  std::sort(ms_b.begin(), ms_b.end());
  return {ms_a[ms_a.size() / 2], ms_b[ms_b.size() / 2]};
}

Ints ParseShape(const std::string& text) {
  Ints dims;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) dims.push_back(std::stoll(item));
  return dims;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"FP32 TorchScript vs real-INT8 TorchScript latency (torch::jit::load)"};
  std::string fp32_pt, int8_pt, fp32_onnx, int8_onnx, shape_text, name, out_dir;
  bool demo = false;
  std::vector<int64_t> batches = {1, 32};
  int warmup = 10, reps = 7, runs = 20, threads = 0;
  app.add_option("--fp32", fp32_pt, "FP32 TorchScript file");
  app.add_option("--int8", int8_pt, "real-INT8 TorchScript file (packed for ONEDNN)");
  app.add_option("--onnx", fp32_onnx, "FP32 ONNX file, exported here to TorchScript");
  app.add_option("--onnx-int8", int8_onnx, "QDQ ONNX file, exported here with real INT8");
  app.add_flag("--demo", demo, "build a QDQ convnet here (3x32x32 input) instead of files");
  app.add_option("--shape", shape_text, "input shape without the batch, e.g. 3,32,32 (for .pt)");
  app.add_option("--name", name, "model name in the table");
  app.add_option("--out-dir", out_dir, "where exported files go (default: a temp folder)");
  app.add_option("--batch", batches, "batch sizes (repeatable)")->capture_default_str();
  app.add_option("--warmup", warmup, "untimed forwards first")->capture_default_str();
  app.add_option("--reps", reps, "repetitions (median; at least 5)")->capture_default_str();
  app.add_option("--runs", runs, "forwards per repetition")->capture_default_str();
  app.add_option("--threads", threads, "LibTorch threads (0 = all cores)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    if (reps < 5) throw compress::Error(compress::ErrorKind::kUsage, "--reps must be at least 5");
    const int used_threads = compress::ConfigureThreads(threads);
    at::globalContext().setQEngine(at::QEngine::ONEDNN);
    if (out_dir.empty()) {
      out_dir = (fs::temp_directory_path() / ("bench_torchscript_" + std::to_string(getpid()))).string();
    }
    fs::create_directories(out_dir);
    Ints shape;
    if (!shape_text.empty()) shape = ParseShape(shape_text);
    auto export_pair = [&](const Graph& fp32, const Graph& qdq) {
      fp32_pt = (fs::path(out_dir) / "fp32.pt").string();
      int8_pt = (fs::path(out_dir) / "int8.pt").string();
      compress::SaveTorchScript(fp32, fp32_pt);
      compress::TorchScriptExportOptions options;
      options.real_int8 = true;
      const auto result = compress::SaveTorchScript(qdq, int8_pt, options);
      std::cerr << "int8 layers:";
      for (const auto& l : result.int8_layers) std::cerr << " " << l;
      std::cerr << (result.int8_layers.empty() ? " (none: the INT8 file runs as fake-quant)\n" : "\n");
      for (const auto& [layer, why] : result.fallback_layers) {
        std::cerr << "warning: " << layer << " stays fake-quant: " << why << "\n";
      }
      if (shape.empty() && fp32.inputs.at(0).shape) {
        shape.assign(fp32.inputs[0].shape->begin() + 1, fp32.inputs[0].shape->end());
      }
    };
    if (demo) {
      auto [fp32, qdq] = DemoGraphs();
      export_pair(fp32, qdq);
      if (name.empty()) name = "demo convnet 3x32x32";
    } else if (!fp32_onnx.empty() || !int8_onnx.empty()) {
      if (fp32_onnx.empty() || int8_onnx.empty()) {
        throw compress::Error(compress::ErrorKind::kUsage, "--onnx and --onnx-int8 go together");
      }
      export_pair(compress::LoadOnnx(fp32_onnx), compress::LoadOnnx(int8_onnx));
      if (name.empty()) name = fs::path(fp32_onnx).stem().string();
    } else if (fp32_pt.empty() || int8_pt.empty() || shape.empty()) {
      throw compress::Error(compress::ErrorKind::kUsage,
                            "give --fp32 and --int8 with --shape, or --onnx and --onnx-int8, or --demo");
    } else if (name.empty()) {
      name = fs::path(fp32_pt).stem().string();
    }
    torch::jit::Module fp32_module = torch::jit::load(fp32_pt);
    torch::jit::Module int8_module = torch::jit::load(int8_pt);
    fp32_module.eval();
    int8_module.eval();
    std::printf("<!-- %d threads, qengine onednn, median of %d alternating repetitions of %d forwards after %d warmup -->\n",
                used_threads, reps, runs, warmup);
    std::printf("| model | batch | FP32 TorchScript ms | INT8 TorchScript ms | speedup |\n");
    std::printf("|---|---:|---:|---:|---:|\n");
    for (int64_t batch : batches) {
      Ints dims = {batch};
      dims.insert(dims.end(), shape.begin(), shape.end());
      const Tensor input = torch::randn(dims);
      const auto [fp32_ms, int8_ms] = TimePair(fp32_module, int8_module, input, warmup, reps, runs);
      std::printf("| %s | %lld | %.3f | %.3f | %.2fx |\n", name.c_str(),
                  static_cast<long long>(batch), fp32_ms, int8_ms, fp32_ms / int8_ms);
      std::fflush(stdout);
    }
  } catch (const compress::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return compress::ExitCodeFor(e.kind());
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
