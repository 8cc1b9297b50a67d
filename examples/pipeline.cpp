// A C++ pipeline that compresses its own model on its own data with the installed
// mcompress library (find_package(mcompress); built and run by `make test` through
// tests/consumer):
//   1. the caller's model: a torch::nn::Module, imported into a compress::Graph by
//      tracing (ImportModule);
//   2. the caller's data: here a 2,000-image cut of Fashion-MNIST held as tensors
//      (any [N, C, H, W] float inputs and int64 labels work the same way);
//   3. a recipe written for a pipeline ("model": "caller", "data": {"dataset":
//      "caller"}): train, prune 50% of every layer, fine-tune (the masks hold), INT8;
//   4. RunRecipeOn: the stages, the verified ONNX exports and the report, written
//      atomically to the output folder; the Report comes back to the caller.
// Usage: pipeline [OUT_DIR]   (exit 0 when the run is accepted)
#include <torch/torch.h>

#include <iostream>

#include "compress/data/data.h"
#include "compress/engine/engine.h"
#include "compress/engine/recipe.h"
#include "compress/io/torchscript_import.h"

namespace {

// The caller's own network: a small CNN for 1x28x28 images.
struct NetImpl : torch::nn::Module {
  torch::nn::Conv2d conv1{torch::nn::Conv2dOptions(1, 8, 3).padding(1)};
  torch::nn::Conv2d conv2{torch::nn::Conv2dOptions(8, 16, 3).padding(1)};
  torch::nn::Linear fc{16 * 7 * 7, 10};
  NetImpl() {
    register_module("conv1", conv1);
    register_module("conv2", conv2);
    register_module("fc", fc);
  }
  torch::Tensor forward(torch::Tensor x) {
    x = torch::max_pool2d(torch::relu(conv1(x)), 2);
    x = torch::max_pool2d(torch::relu(conv2(x)), 2);
    return fc(x.flatten(1));
  }
};
TORCH_MODULE(Net);

}  // namespace

int main(int argc, char** argv) {
  const std::string out = argc > 1 ? argv[1] : "pipeline-out";
  try {
    torch::manual_seed(0);
    Net net;
    compress::Graph model = compress::ImportModule(*net, torch::zeros({1, 1, 28, 28}));

    // The caller's data, as tensors (validation is used by the trainer's per-epoch line
    // and by passes that choose on it; test measures every stage).
    compress::FashionMnistOptions fo;
    fo.train_limit = 2000;
    fo.validation_size = 500;
    fo.test_limit = 500;
    const compress::DatasetSplits data = compress::LoadFashionMnist(fo);

    const nlohmann::json recipe_json = nlohmann::json::parse(R"({
      "name": "pipeline example",
      "model": "caller",
      "data": {"dataset": "caller", "batch_size": 64, "calibration_samples": 256},
      "device": "cpu", "seed": 0,
      "stages": [
        {"pass": "train", "epochs": 2, "optimizer": {"name": "adam", "lr": 0.003}},
        {"pass": "prune-magnitude", "sparsity": 0.5},
        {"pass": "train", "epochs": 1, "optimizer": {"name": "adam", "lr": 0.001}},
        {"pass": "quantize"},
        {"pass": "evaluate"}
      ],
      "exports": [{"format": "onnx", "path": "model.onnx"},
                  {"format": "onnx-qdq", "path": "model_int8.onnx"}],
      "report": {"formats": ["json", "md"], "latency": false},
      "acceptance": {"max_accuracy_drop": 0.03}
    })");
    compress::Recipe recipe = compress::ParseRecipe(recipe_json, "pipeline example", "");
    compress::RunOptions options;
    options.out_dir = out;
    options.progress = "quiet";
    const compress::RunOutcome outcome =
        compress::RunRecipeOn(recipe, std::move(model), data, options);

    std::cout << compress::SummaryTable(outcome.report);
    for (const auto& e : outcome.report.exports) {
      std::cout << "export " << e.path << ": " << e.bytes << " bytes, verified "
                << (e.verified ? "yes" : "no") << " (" << e.verified_with << ")\n";
    }
    std::cout << "pipeline " << (outcome.report.accepted ? "accepted" : "rejected") << "\n";
    return outcome.exit_code;
  } catch (const std::exception& e) {
    std::cerr << "pipeline: " << e.what() << "\n";
    return 1;
  }
}
