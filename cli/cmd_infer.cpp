// `mcompress infer`: runs a model on TensorProto input files, writes output_<k>.pb.
#include <iostream>

#include "cli/commands.h"
#include "compress/engine/model_source.h"
#include "compress/runtime/runtime_config.h"

namespace cli {

void AddInferCommand(CLI::App& app, const GlobalOptions& global) {
  struct Args {
    std::string model, out_dir;
    std::vector<std::string> inputs, shapes;
  };
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand(
      "infer", "Run a model on ONNX TensorProto inputs and write output_<k>.pb files");
  cmd->add_option("model", args->model, "model.onnx, model.pt or zoo:<name>")->required();
  AddInputShapeOption(cmd, args->shapes);
  cmd->add_option("-i,--input", args->inputs, "input_<k>.pb, one per model input, in order")
      ->required();
  cmd->add_option("-o,--out", args->out_dir, "output directory")->required();
  cmd->callback([args, &global] {
    compress::ConfigureThreads(global.threads);
    compress::Graph graph = LoadCliModel(args->model, args->shapes);
    for (const auto& path : compress::InferTensorFiles(graph, args->inputs, args->out_dir)) {
      std::cout << path << "\n";
    }
  });
}

}  // namespace cli
