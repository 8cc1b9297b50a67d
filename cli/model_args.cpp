// The arguments subcommands share: the model (a spec: zoo:<name>, .onnx, or
// TorchScript .pt/.pth/.ts, plus --input-shape, which TorchScript files need) and
// --device.
#include "cli/commands.h"
#include "compress/base/error.h"
#include "compress/engine/model_source.h"
#include "compress/runtime/runtime_config.h"

namespace cli {

void AddDeviceOption(CLI::App* cmd, std::string& device) {
  cmd->add_option("--device", device, "auto, cpu, cuda or cuda:N")->capture_default_str();
}

c10::Device ResolveCliDevice(const std::string& device) {
  const std::string problem = compress::DeviceProblem(device);
  if (!problem.empty()) throw compress::Error(compress::ErrorKind::kUsage, "--device: " + problem);
  return compress::ResolveDevice(device);
}

void AddInputShapeOption(CLI::App* cmd, std::vector<std::string>& shapes) {
  cmd->add_option("--input-shape", shapes,
                  "TorchScript models: shape of each forward input, batch first, e.g. "
                  "1,3,224,224 (repeat for several inputs)");
}

compress::Graph LoadCliModel(const std::string& spec, const std::vector<std::string>& shapes,
                             uint64_t seed) {
  compress::ModelLoadOptions options;
  options.seed = seed;
  for (const auto& s : shapes) options.input_shapes.push_back(compress::ParseShape(s));
  return compress::LoadModel(spec, options);
}

}  // namespace cli
