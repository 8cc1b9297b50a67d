// `mcompress train`: trains a model on Fashion-MNIST and saves it as ONNX.
#include <cstdio>
#include <iostream>

#include "cli/commands.h"
#include "compress/data/data.h"
#include "compress/train/eval.h"
#include "compress/engine/model_source.h"
#include "compress/io/onnx_io.h"
#include "compress/runtime/runtime_config.h"
#include "compress/train/train.h"

namespace cli {

void AddTrainCommand(CLI::App& app, const GlobalOptions& global) {
  struct Args {
    std::string model, out, data_root = "/usr/share/datasets/fashion-mnist", device = "auto";
    compress::TrainOptions train;
    int64_t train_limit = 0, test_limit = 0;
  };
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("train", "Train a model on Fashion-MNIST and save it as ONNX");
  cmd->add_option("--model", args->model, "zoo:<name> or model.onnx")->required();
  cmd->add_option("--out,-o", args->out, "output ONNX file")->required();
  cmd->add_option("--epochs", args->train.epochs, "epochs")->capture_default_str();
  cmd->add_option("--batch-size", args->train.batch_size, "batch size")->capture_default_str();
  cmd->add_option("--optimizer", args->train.optimizer.name,
                  "sgd, adam, adamw, rmsprop, adagrad")->capture_default_str();
  cmd->add_option("--lr", args->train.optimizer.lr, "learning rate")->capture_default_str();
  cmd->add_option("--momentum", args->train.optimizer.momentum, "SGD momentum");
  cmd->add_option("--weight-decay", args->train.optimizer.weight_decay, "weight decay");
  cmd->add_option("--lr-schedule", args->train.lr_schedule.name,
                  "none, step, cosine, one-cycle")->capture_default_str();
  cmd->add_option("--label-smoothing", args->train.label_smoothing, "in [0, 1)");
  cmd->add_option("--seed", args->train.seed, "seed for init and shuffling");
  cmd->add_option("--data-root", args->data_root, "Fashion-MNIST folder")->capture_default_str();
  cmd->add_option("--train-limit", args->train_limit, "use the first N training samples");
  cmd->add_option("--test-limit", args->test_limit, "evaluate on the first N test samples");
  AddDeviceOption(cmd, args->device);
  cmd->callback([args, &global] {
    compress::ConfigureThreads(global.threads);
    const c10::Device device = ResolveCliDevice(args->device);
    compress::Graph graph = compress::LoadModel(args->model, args->train.seed);
    compress::FashionMnistOptions data_options;
    data_options.root = args->data_root;
    data_options.train_limit = args->train_limit;
    data_options.test_limit = args->test_limit;
    compress::DatasetSplits data = compress::LoadFashionMnist(data_options);
    compress::Train(graph, data.train, &data.validation, args->train, device);
    compress::EvalResult test = compress::Evaluate(graph, data.test, 256, device);
    // No graph.To(CPU): SaveOnnx copies each tensor to the CPU as it serializes it, so
    // the trained graph is written from wherever it was trained, without a second copy.
    compress::SaveOnnx(graph, args->out);
    std::printf("test: top1 %.2f%%  top5 %.2f%%  loss %.4f  (%lld samples)\nsaved %s\n",
                100 * test.top1, 100 * test.top5, test.loss,
                static_cast<long long>(test.samples), args->out.c_str());
  });
}

}  // namespace cli
