// `mcompress inspect`: the stable text dump of a model and a parameter summary.
#include <cstdio>
#include <iostream>
#include <map>

#include "cli/commands.h"
#include "compress/engine/model_source.h"
#include "compress/runtime/runtime_config.h"

namespace cli {

void AddInspectCommand(CLI::App& app, const GlobalOptions& global) {
  struct Args {
    std::string model;
    std::vector<std::string> shapes;
  };
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("inspect", "Print a model's graph and parameter summary");
  cmd->add_option("model", args->model, "model.onnx, model.pt or zoo:<name>")->required();
  AddInputShapeOption(cmd, args->shapes);
  cmd->callback([args, &global] {
    compress::ConfigureThreads(global.threads);
    compress::Graph graph = LoadCliModel(args->model, args->shapes);
    std::cout << graph.Dump();
    std::map<std::string, int> op_counts;
    for (const auto& node : graph.nodes) ++op_counts[node.op_type];
    int64_t trainable = 0;
    for (const auto& t : graph.Parameters()) trainable += t.numel();
    std::printf("\nnodes: %zu  (", graph.nodes.size());
    bool first = true;
    for (const auto& [op, n] : op_counts) {
      std::printf("%s%s x%d", first ? "" : ", ", op.c_str(), n);
      first = false;
    }
    std::printf(")\nparameters: %lld total, %lld trainable\n",
                static_cast<long long>(graph.NumParameters()),
                static_cast<long long>(trainable));
  });
}

}  // namespace cli
