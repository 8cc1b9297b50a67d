// `mcompress import`: converts a TorchScript model (.pt) into ONNX through our graph.
#include <iostream>

#include "cli/commands.h"
#include "compress/engine/model_source.h"
#include "compress/io/onnx_io.h"
#include "compress/runtime/runtime_config.h"
#include "compress/io/torchscript_import.h"

namespace cli {

void AddImportCommand(CLI::App& app, const GlobalOptions& global) {
  struct Args {
    std::string model, out;
    std::vector<std::string> shapes;
    bool static_batch = false;
  };
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand(
      "import", "Import a TorchScript model (.pt/.pth/.ts) and write it as ONNX");
  cmd->add_option("model", args->model, "TorchScript file (torch.jit.script/trace(...).save)")
      ->required();
  cmd->add_option("--input-shape", args->shapes,
                  "shape of each forward input, batch first, e.g. 1,3,224,224 (repeat for "
                  "several inputs)")
      ->required();
  cmd->add_flag("--static-batch", args->static_batch,
                "keep the batch dimension fixed (default: dynamic)");
  cmd->add_option("-o,--output", args->out, "ONNX file to write")->required();
  cmd->footer(
      "Supported: the aten ops of torchvision classifiers (conv, batch norm, pooling, "
      "activations, linear, concat, split, reshape) and transformer encoders (matmul, "
      "softmax, layer norm, gelu). Unsupported ops are listed in one error.");
  cmd->callback([args, &global] {
    compress::ConfigureThreads(global.threads);
    std::vector<std::vector<int64_t>> shapes;
    for (const auto& s : args->shapes) shapes.push_back(compress::ParseShape(s));
    compress::TorchScriptImportOptions options;
    options.dynamic_batch = !args->static_batch;
    compress::Graph graph = compress::ImportTorchScript(args->model, shapes, options);
    compress::SaveOnnx(graph, args->out);
    std::cout << args->out << ": " << graph.nodes.size() << " nodes, "
              << graph.NumParameters() << " parameters\n";
  });
}

}  // namespace cli
