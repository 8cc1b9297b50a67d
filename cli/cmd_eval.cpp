// `mcompress eval`: test-set accuracy and loss (and optionally latency) of a model.
#include <cstdio>

#include "cli/commands.h"
#include "compress/data/data.h"
#include "compress/train/eval.h"
#include "compress/engine/model_source.h"
#include "compress/runtime/runtime_config.h"

namespace cli {

void AddEvalCommand(CLI::App& app, const GlobalOptions& global) {
  struct Args {
    std::string model, data_root = "/usr/share/datasets/fashion-mnist", device = "auto";
    int64_t batch_size = 256, test_limit = 0;
    bool latency = false;
    std::vector<std::string> shapes;
  };
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("eval", "Evaluate a model on the Fashion-MNIST test set");
  cmd->add_option("--model,model", args->model, "model.onnx, model.pt or zoo:<name>")->required();
  AddInputShapeOption(cmd, args->shapes);
  cmd->add_option("--batch-size", args->batch_size, "batch size")->capture_default_str();
  cmd->add_option("--data-root", args->data_root, "Fashion-MNIST folder")->capture_default_str();
  cmd->add_option("--test-limit", args->test_limit, "evaluate the first N test samples");
  AddDeviceOption(cmd, args->device);
  cmd->add_flag("--latency", args->latency, "also measure latency at batch 1 and 32");
  cmd->callback([args, &global] {
    compress::ConfigureThreads(global.threads);
    const c10::Device device = ResolveCliDevice(args->device);
    compress::Graph graph = LoadCliModel(args->model, args->shapes);
    compress::FashionMnistOptions data_options;
    data_options.root = args->data_root;
    data_options.test_limit = args->test_limit;
    compress::TensorDataset test = compress::LoadFashionMnist(data_options).test;
    compress::EvalResult r = compress::Evaluate(graph, test, args->batch_size, device);
    std::printf("top1 %.2f%%  top5 %.2f%%  loss %.4f  samples %lld\n", 100 * r.top1,
                100 * r.top5, r.loss, static_cast<long long>(r.samples));
    for (size_t c = 0; c < r.per_class_accuracy.size(); ++c) {
      std::printf("  class %zu: %.2f%%\n", c, 100 * r.per_class_accuracy[c]);
    }
    if (args->latency) {
      std::vector<int64_t> sample(test.inputs.sizes().begin() + 1, test.inputs.sizes().end());
      for (int64_t batch : {1, 32}) {
        compress::LatencyResult l =
            compress::MeasureLatency(graph, sample, batch, 10, 50, device);
        std::printf("latency batch %lld: median %.3f ms  p90 %.3f ms  (%d runs)\n",
                    static_cast<long long>(batch), l.median_ms, l.p90_ms, l.runs);
      }
    }
  });
}

}  // namespace cli
