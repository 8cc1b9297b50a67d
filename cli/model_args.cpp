// The model argument every model-reading subcommand shares: a spec (zoo:<name>, .onnx,
// or TorchScript .pt/.pth/.ts) plus --input-shape, which TorchScript files need.
#include "cli/commands.h"
#include "compress/engine/model_source.h"

namespace cli {

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
