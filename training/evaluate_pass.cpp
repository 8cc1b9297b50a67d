// The evaluate pass: Evaluate() on the chosen split.
#include "training/evaluate_pass.h"

#include "compress/train/eval.h"

namespace compress {

std::unique_ptr<Pass> EvaluatePass::Create(OptionReader& r) {
  std::string split = "test";
  r.Read("split", split, {"test", "validation"}, "which split to measure");
  return std::make_unique<EvaluatePass>(split);
}

PassResult EvaluatePass::Run(Graph& graph, PassContext& ctx) {
  if (ctx.data == nullptr) throw Error(ErrorKind::kInternal, "evaluate: no dataset in the context");
  const TensorDataset& data = split_ == "test" ? ctx.data->test : ctx.data->validation;
  if (!ctx.data->labeled) {
    throw Error(ErrorKind::kRecipe,
                "the data has no labels, so there is no accuracy to evaluate; without an "
                "evaluate stage the engine still compares the final model's outputs with the "
                "baseline's (agreement, SQNR; acceptance.min_agreement / min_sqnr_db)");
  }
  EvalResult e = Evaluate(graph, data, std::max<int64_t>(ctx.batch_size, 256), ctx.device);
  PassResult result;
  result.metrics = Metrics{e.top1, e.top5, e.loss, e.samples};
  result.stats["top1"] = e.top1;
  result.stats["top5"] = e.top5;
  result.stats["loss"] = e.loss;
  return result;
}

}  // namespace compress
