// Model loading by spec, and inference on TensorProto files (the ONNX backend-test
// format) for `mcompress infer`.
#include "compress/base/text.h"
#include "compress/engine/model_source.h"

#include <torch/torch.h>

#include <filesystem>

#include "compress/runtime/executor.h"
#include "compress/io/onnx_io.h"
#include "compress/io/torchscript_import.h"
#include "compress/zoo/zoo.h"

namespace compress {

bool IsTorchScriptPath(const std::string& spec) {
  return EndsWith(spec, ".pt") || EndsWith(spec, ".pth") || EndsWith(spec, ".ts");
}

std::vector<int64_t> ParseShape(const std::string& text) {
  std::vector<int64_t> dims;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find_first_of(",x", start);
    if (end == std::string::npos) end = text.size();
    const std::string part = text.substr(start, end - start);
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(part, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (part.empty() || used != part.size() || v <= 0) {
      throw Error(ErrorKind::kUsage, "input shape '" + text +
                                         "': expected positive integers separated by commas, "
                                         "e.g. 1,3,224,224");
    }
    dims.push_back(v);
    start = end + 1;
  }
  return dims;
}

Graph LoadModel(const std::string& spec, const ModelLoadOptions& options) {
  if (spec == kCallerModel) {
    throw Error(ErrorKind::kUsage, "model \"caller\": the model comes from the C++ program "
                                   "that runs the recipe (RunRecipeOn); there is nothing to load");
  }
  if (spec.rfind("zoo:", 0) == 0) return BuildZoo(spec.substr(4), options.seed);
  if (EndsWith(spec, ".onnx")) return LoadOnnx(spec);
  if (IsTorchScriptPath(spec)) {
    if (options.input_shapes.empty()) {
      throw Error(ErrorKind::kUsage,
                  spec + ": a TorchScript model needs the shape of each input (e.g. "
                         "--input-shape 1,3,224,224, or \"input_shape\": [1, 3, 224, 224] in a "
                         "recipe)");
    }
    return ImportTorchScript(spec, options.input_shapes);
  }
  throw Error(ErrorKind::kUsage, "model '" + spec +
                                     "': expected zoo:<name>, a path ending in .onnx, or a "
                                     "TorchScript file ending in .pt, .pth or .ts");
}

Graph LoadModel(const std::string& spec, uint64_t seed) {
  ModelLoadOptions options;
  options.seed = seed;
  return LoadModel(spec, options);
}

std::vector<std::string> InferTensorFiles(const Graph& graph,
                                          const std::vector<std::string>& input_files,
                                          const std::string& out_dir) {
  if (input_files.size() != graph.inputs.size()) {
    throw Error(ErrorKind::kUsage, "model '" + graph.name + "' has " +
                                       std::to_string(graph.inputs.size()) +
                                       " inputs but " + std::to_string(input_files.size()) +
                                       " input files were given");
  }
  std::vector<Tensor> inputs;
  for (size_t i = 0; i < input_files.size(); ++i) {
    Tensor t = LoadTensorProto(input_files[i]);
    const ValueInfo& want = graph.inputs[i];
    if (t.scalar_type() != want.dtype) {
      throw Error(ErrorKind::kUsage, input_files[i] + ": input '" + want.name + "' expects " +
                                         DtypeName(want.dtype) + ", file holds " +
                                         DtypeName(t.scalar_type()));
    }
    if (want.shape) {
      bool ok = static_cast<int64_t>(want.shape->size()) == t.dim();
      for (int64_t d = 0; ok && d < t.dim(); ++d) {
        ok = (*want.shape)[d] == kDynamicDim || (*want.shape)[d] == t.size(d);
      }
      if (!ok) {
        throw Error(ErrorKind::kUsage,
                    input_files[i] + ": input '" + want.name + "' expects shape " +
                        ShapeString(want.shape) + ", file holds " +
                        ShapeString(t.sizes().vec()));
      }
    }
    inputs.push_back(t);
  }
  Executor exec(graph);
  std::vector<Tensor> outputs;
  {
    torch::NoGradGuard no_grad;
    outputs = exec.Run(inputs);
  }
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec) throw Error(ErrorKind::kIo, out_dir + ": cannot create directory: " + ec.message());
  std::vector<std::string> written;
  for (size_t k = 0; k < outputs.size(); ++k) {
    std::string path = (std::filesystem::path(out_dir) / ("output_" + std::to_string(k) + ".pb")).string();
    SaveTensorProto(outputs[k], path, graph.outputs[k].name);
    written.push_back(path);
  }
  return written;
}

}  // namespace compress
