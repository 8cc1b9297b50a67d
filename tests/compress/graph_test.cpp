// Graph IR: validation errors name the node, deep copy, use-def queries, trainable
// parameters, the stable dump, the observer and shape inference.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "compress/zoo/builder.h"
#include "compress/runtime/executor.h"
#include "compress/zoo/zoo.h"
#include "compress/runtime/ops.h"

namespace compress {
namespace {

Graph TinyGraph() {
  GraphBuilder b("tiny", 3);
  std::string x = b.Input("x", {kDynamicDim, 4});
  std::string h = b.Op1("Relu", {b.Linear(x, 4, 3, true, "fc1")}, {}, "relu1");
  b.Output("y", b.Linear(h, 3, 2, true, "fc2"));
  return b.Build();
}

std::string ValidateError(const Graph& g) {
  try {
    ValidateGraph(g, "model.onnx", ErrorKind::kIo);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Graph, ValidateAcceptsBuiltGraph) { EXPECT_EQ(ValidateError(TinyGraph()), ""); }

TEST(Graph, ValidateNamesUndefinedValue) {
  Graph g = TinyGraph();
  g.nodes[1].inputs[0] = "ghost";
  EXPECT_EQ(ValidateError(g),
            "model.onnx: Relu 'relu1' uses value 'ghost' which no node, input or initializer "
            "defines");
}

TEST(Graph, ValidateDetectsCycle) {
  Graph g = TinyGraph();
  // fc1 now reads relu1's output, which depends on fc1: a cycle.
  g.nodes[0].inputs[0] = "relu1";
  EXPECT_EQ(ValidateError(g),
            "model.onnx: Gemm 'fc1' uses value 'relu1' before Relu 'relu1' produces it (a "
            "cycle, or nodes out of topological order)");
  EXPECT_THROW(g.TopologicalSort(), Error);
}

TEST(Graph, TopologicalSortRepairsOrder) {
  Graph g = TinyGraph();
  std::swap(g.nodes[0], g.nodes[2]);
  EXPECT_NE(ValidateError(g), "");
  g.TopologicalSort();
  EXPECT_EQ(ValidateError(g), "");
  EXPECT_EQ(g.nodes[0].name, "fc1");
}

TEST(Graph, ValidateDetectsDuplicateDefinitionAndArity) {
  Graph g = TinyGraph();
  g.nodes[2].outputs[0] = "relu1";
  EXPECT_EQ(ValidateError(g),
            "model.onnx: Gemm 'fc2' defines value 'relu1' which is already defined");
  Graph h = TinyGraph();
  h.nodes[1].inputs.push_back("x");
  EXPECT_EQ(ValidateError(h), "model.onnx: Relu 'relu1' has 2 inputs, expected 1..1");
}

TEST(Graph, ValidateRejectsUnknownOpAsUnsupported) {
  Graph g = TinyGraph();
  g.nodes[1].op_type = "Swish";
  try {
    ValidateGraph(g);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported);
    EXPECT_EQ(std::string(e.what()), "Swish 'relu1': op 'Swish' is not supported");
  }
}

TEST(Graph, CloneIsDeep) {
  Graph g = TinyGraph();
  Graph c = g.Clone();
  c.Weight("fc1.weight").mul_(0);
  EXPECT_GT(g.Weight("fc1.weight").abs().sum().item<float>(), 0);
  c.nodes[0].name = "renamed";
  EXPECT_EQ(g.nodes[0].name, "fc1");
}

TEST(Graph, UseDefQueries) {
  Graph g = TinyGraph();
  EXPECT_EQ(g.ProducerIndex("relu1"), 1);
  EXPECT_EQ(g.ProducerIndex("x"), -1);
  EXPECT_EQ(g.ConsumerIndices("relu1"), std::vector<int>{2});
  EXPECT_EQ(g.ConsumerIndices("x"), std::vector<int>{0});
  auto v = g.FindValue("relu1");
  ASSERT_TRUE(v.has_value());
  EXPECT_EQ(ShapeString(v->shape), "[N,3]");
}

// The IR's own validation is structural; ops and arity are the runtime's (ValidateGraph).
TEST(Graph, ValidateIsStructuralAndTakesTheRuntimesNodeCheck) {
  Graph g = TinyGraph();
  g.nodes[1].op_type = "Swish";
  EXPECT_NO_THROW(g.Validate());
  EXPECT_THROW(ValidateGraph(g), Error);
  int checked = 0;
  g.Validate("", ErrorKind::kInternal, [&](const Node&, const std::string&) { ++checked; });
  EXPECT_EQ(checked, 3);
}

// Graph surgery shared by the passes: outputs, rewiring, removal, fresh names.
TEST(Graph, SurgeryHelpers) {
  Graph g = TinyGraph();
  EXPECT_TRUE(g.IsOutput("y"));
  EXPECT_FALSE(g.IsOutput("relu1"));
  // Bypass relu1: fc2 reads fc1 directly; relu1 is now dead, fc1 is not.
  g.ReplaceUses("relu1", "fc1");
  EXPECT_EQ(g.nodes[2].inputs[0], "fc1");
  EXPECT_EQ(g.RemoveDeadNodes(), 1);
  ASSERT_EQ(g.nodes.size(), 2u);
  EXPECT_EQ(g.nodes[1].name, "fc2");
  EXPECT_NO_THROW(ValidateGraph(g));
  // A dead chain goes whole, with the initializers only it read.
  Graph h = TinyGraph();
  h.outputs[0].name = "fc1";  // fc2 (and so relu1) feed nothing now
  h.nodes[2].outputs[0] = "fc2_out";
  EXPECT_EQ(h.RemoveDeadNodes(), 2);
  EXPECT_EQ(h.nodes.size(), 1u);
  EXPECT_FALSE(h.IsInitializer("fc2.weight"));
  EXPECT_TRUE(h.IsInitializer("fc1.weight"));
  // RemoveNodes keeps the order and drops candidate initializers nobody reads.
  Graph k = TinyGraph();
  k.ReplaceUses("relu1", "fc1");
  k.RemoveNodes({false, true, false}, {"fc1.weight", "fc1.bias"});
  EXPECT_EQ(k.nodes.size(), 2u);
  EXPECT_TRUE(k.IsInitializer("fc1.weight"));  // still read by fc1
  NameSource names(k);
  EXPECT_EQ(names.Fresh("fc1"), "fc1_1");
  EXPECT_EQ(names.Fresh("fc1"), "fc1_2");
  EXPECT_EQ(names.Fresh("relu1"), "relu1");  // removed with its node: free again
  names.Reserve("q_1");
  EXPECT_EQ(names.Fresh("q"), "q");
  EXPECT_EQ(names.Fresh("q"), "q_2");
}

TEST(Graph, TrainableExcludesStatisticsAndConfiguration) {
  Graph g = BuildZoo("mobilenet-tiny");
  auto names = g.TrainableNames();
  auto has = [&](const std::string& n) {
    return std::find(names.begin(), names.end(), n) != names.end();
  };
  EXPECT_TRUE(has("stem.conv.weight"));
  EXPECT_TRUE(has("stem.bn.weight"));
  EXPECT_FALSE(has("stem.bn.running_mean"));
  EXPECT_FALSE(has("stem.bn.running_var"));
  EXPECT_FALSE(has("relu6.max"));
  int64_t n = 0;
  for (const auto& p : g.Parameters()) n += p.numel();
  EXPECT_EQ(n, 18826);
  EXPECT_EQ(g.NumParameters(), 19788);
}

TEST(Graph, DumpIsStable) {
  EXPECT_EQ(TinyGraph().Dump(), TinyGraph().Dump());  // same seed, same text
  Graph g = TinyGraph();
  g.Weight("fc2.bias").zero_();
  const std::string dump = g.Dump();
  EXPECT_NE(dump, TinyGraph().Dump());  // sparsity shows in the dump
  EXPECT_NE(dump.find("graph tiny (opset 13)\n  input  x: float32[N,4]\n"), std::string::npos);
  EXPECT_NE(dump.find("  init   fc2.bias: float32[2] sparsity=1\n"), std::string::npos);
  EXPECT_NE(dump.find("  relu1 = Relu(fc1) -> relu1:[N,3]\n"), std::string::npos);
  EXPECT_NE(dump.find("  fc2 = Gemm(relu1, fc2.weight, fc2.bias) {transB=1} -> y:[N,2]\n"),
            std::string::npos);
  EXPECT_NE(dump.find("  output y: float32[N,2]\n"), std::string::npos);
}

TEST(Graph, ObserverSeesChosenValues) {
  Graph g = TinyGraph();
  Executor exec(g);
  std::map<std::string, Tensor> seen;
  exec.SetObserver({"relu1", "x"}, [&](const std::string& n, const Tensor& t) { seen[n] = t; });
  Tensor x = torch::randn({5, 4});
  Tensor y = exec.Run({x})[0];
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_TRUE(torch::equal(seen["x"], x));
  Tensor h = torch::relu(torch::linear(x, g.Weight("fc1.weight"), g.Weight("fc1.bias")));
  EXPECT_TRUE(torch::allclose(seen["relu1"], h, 1e-6, 1e-6));
  EXPECT_THROW(exec.SetObserver({"nope"}, nullptr), Error);
}

TEST(Graph, ExecutorAutogradReachesInitializers) {
  Graph g = TinyGraph();
  for (auto& p : g.Parameters()) p.requires_grad_(true);
  Executor exec(g);
  exec.Run({torch::randn({3, 4})})[0].sum().backward();
  for (const auto& p : g.Parameters()) EXPECT_TRUE(p.grad().defined());
}

TEST(Graph, InferShapesMarksBatchDynamic) {
  Graph g = BuildZoo("resnet8");
  auto v = g.FindValue("layer3.add");
  ASSERT_TRUE(v.has_value());
  EXPECT_EQ(ShapeString(v->shape), "[N,64,7,7]");
  EXPECT_EQ(ShapeString(g.outputs[0].shape), "[N,10]");
}

TEST(Graph, ExecutorRejectsWrongInputCount) {
  Graph g = TinyGraph();
  Executor exec(g);
  EXPECT_THROW(exec.Run({}), Error);
}

}  // namespace
}  // namespace compress
