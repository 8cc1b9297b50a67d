// ONNX import/export: round trips of a hand-built graph (every attribute and initializer
// type, dynamic batch, metadata), deterministic bytes, checker failures, and the errors
// for corrupt files, unsupported ops and unwritable paths; TensorProto files.
#include "compress/io/onnx_io.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <functional>
#include <fstream>
#include <random>

#include "compress/base/error.h"
#include "compress/ir/graph.h"

namespace compress {
namespace {

namespace fs = std::filesystem;

// A fresh directory per test, removed afterwards.
class OnnxIo : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) /
           ("onnx_io_" + std::string(info->name()) + "_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
void WriteAll(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

// Same dtype, shape and bytes (bit-exact, so -0.0 and NaN payloads count).
bool BitEqual(const Tensor& a, const Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  if (a.numel() == 0) return true;  // (an empty tensor's data pointer may be null)
  Tensor ca = a.cpu().contiguous(), cb = b.cpu().contiguous();
  return std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.numel() * ca.element_size()) == 0;
}

bool AttrEqual(const AttrValue& a, const AttrValue& b) {
  if (a.index() != b.index()) return false;
  return std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, Tensor>) {
          return BitEqual(x, std::get<Tensor>(b));
        } else {
          return x == std::get<T>(b);
        }
      },
      a);
}

void ExpectValueInfoEq(const ValueInfo& a, const ValueInfo& b) {
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.dtype, b.dtype) << a.name;
  EXPECT_EQ(a.shape, b.shape) << a.name;
}

void ExpectGraphsEqual(const Graph& a, const Graph& b) {
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(a.opset, b.opset);
  ASSERT_EQ(a.nodes.size(), b.nodes.size());
  for (size_t i = 0; i < a.nodes.size(); ++i) {
    const Node& x = a.nodes[i];
    const Node& y = b.nodes[i];
    EXPECT_EQ(x.name, y.name);
    EXPECT_EQ(x.op_type, y.op_type);
    EXPECT_EQ(x.domain, y.domain);
    EXPECT_EQ(x.inputs, y.inputs) << x.name;
    EXPECT_EQ(x.outputs, y.outputs) << x.name;
    ASSERT_EQ(x.attrs.size(), y.attrs.size()) << x.name;
    for (const auto& [key, value] : x.attrs) {
      ASSERT_TRUE(y.HasAttr(key)) << x.name << "." << key;
      EXPECT_TRUE(AttrEqual(value, y.attrs.at(key))) << x.name << "." << key;
    }
  }
  ASSERT_EQ(a.initializers.size(), b.initializers.size());
  for (const auto& [name, init] : a.initializers) {
    ASSERT_TRUE(b.IsInitializer(name)) << name;
    EXPECT_TRUE(BitEqual(init.value, b.initializers.at(name).value)) << name;
  }
  ASSERT_EQ(a.inputs.size(), b.inputs.size());
  for (size_t i = 0; i < a.inputs.size(); ++i) ExpectValueInfoEq(a.inputs[i], b.inputs[i]);
  ASSERT_EQ(a.outputs.size(), b.outputs.size());
  for (size_t i = 0; i < a.outputs.size(); ++i) ExpectValueInfoEq(a.outputs[i], b.outputs[i]);
  ASSERT_EQ(a.value_info.size(), b.value_info.size());
  for (const auto& [name, v] : a.value_info) {
    ASSERT_TRUE(b.value_info.count(name)) << name;
    EXPECT_EQ(v.dtype, b.value_info.at(name).dtype) << name;
    EXPECT_EQ(v.shape, b.value_info.at(name).shape) << name;
  }
  EXPECT_EQ(a.metadata, b.metadata);
}

Node MakeNode(const std::string& name, const std::string& op, std::vector<std::string> in,
              std::vector<std::string> out, std::map<std::string, AttrValue> attrs = {}) {
  Node n;
  n.name = name;
  n.op_type = op;
  n.inputs = std::move(in);
  n.outputs = std::move(out);
  n.attrs = std::move(attrs);
  return n;
}

ValueInfo MakeValue(const std::string& name, at::ScalarType dtype,
                    std::optional<std::vector<int64_t>> shape) {
  ValueInfo v;
  v.name = name;
  v.dtype = dtype;
  v.shape = std::move(shape);
  return v;
}

// x[N,3,8,8] -> Conv -> Relu -> Flatten -> Gemm -> y[N,10], plus unused initializers of
// every dtype ONNX and LibTorch share. Valid for the ONNX checker.
Graph SmallCnn() {
  torch::manual_seed(7);
  Graph g;
  g.name = "small_cnn";
  g.opset = 13;
  g.inputs.push_back(MakeValue("x", at::kFloat, std::vector<int64_t>{kDynamicDim, 3, 8, 8}));
  g.outputs.push_back(MakeValue("y", at::kFloat, std::vector<int64_t>{kDynamicDim, 10}));
  g.initializers["conv.w"].value = torch::randn({4, 3, 3, 3});
  g.initializers["conv.b"].value = torch::randn({4});
  g.initializers["fc.w"].value = torch::randn({10, 256});
  g.initializers["fc.b"].value = torch::randn({10});
  g.initializers["i64"].value =
      torch::tensor({INT64_MIN, int64_t{-1}, int64_t{0}, INT64_MAX}, torch::kLong);
  g.initializers["i8"].value = torch::tensor({-128, -1, 0, 127}, torch::kChar).reshape({2, 2});
  g.initializers["u8"].value = torch::tensor({0, 1, 255}, torch::kByte);
  g.initializers["i16"].value = torch::tensor({-32768, 7, 32767}, torch::kShort);
  g.initializers["i32"].value = torch::tensor({INT32_MIN, 0, INT32_MAX}, torch::kInt);
  g.initializers["f16"].value = torch::tensor({-0.0, 1.5, 65504.0, 1e-7}).to(torch::kHalf);
  g.initializers["bf16"].value = torch::tensor({-2.5, 3.0}).to(torch::kBFloat16);
  g.initializers["f64"].value = torch::tensor({3.141592653589793, -0.0}, torch::kDouble);
  g.initializers["flag"].value = torch::tensor({true, false, true, true});
  g.initializers["scalar"].value = torch::tensor(2.5f);  // rank 0
  g.initializers["empty"].value = torch::zeros({0, 3});
  g.nodes.push_back(MakeNode("conv1", "Conv", {"x", "conv.w", "conv.b"}, {"c"},
                             {{"kernel_shape", std::vector<int64_t>{3, 3}},
                              {"pads", std::vector<int64_t>{1, 1, 1, 1}},
                              {"strides", std::vector<int64_t>{1, 1}},
                              {"group", int64_t{1}},
                              {"auto_pad", std::string("NOTSET")}}));
  g.nodes.push_back(MakeNode("relu1", "Relu", {"c"}, {"r"}));
  g.nodes.push_back(MakeNode("flat", "Flatten", {"r"}, {"f"}, {{"axis", int64_t{1}}}));
  g.nodes.push_back(MakeNode("fc", "Gemm", {"f", "fc.w", "fc.b"}, {"y"},
                             {{"alpha", 1.0}, {"beta", 0.5}, {"transB", int64_t{1}}}));
  g.value_info["r"] = MakeValue("r", at::kFloat, std::vector<int64_t>{kDynamicDim, 4, 8, 8});
  g.value_info["f"] = MakeValue("f", at::kFloat, std::vector<int64_t>{kDynamicDim, 256});
  g.metadata["author"] = "onnx_io_test";
  g.metadata["recipe"] = "{\"stages\": []}";
  return g;
}

TEST_F(OnnxIo, SaveLoadRoundTripIsExact) {
  const Graph g = SmallCnn();
  SaveOnnx(g, Path("m.onnx"));
  const Graph back = LoadOnnx(Path("m.onnx"));
  ExpectGraphsEqual(g, back);
  // Nothing but the model is left in the directory (the temporary was renamed).
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);
  // Overwriting an existing file works the same way.
  SaveOnnx(g, Path("m.onnx"));
  ExpectGraphsEqual(g, LoadOnnx(Path("m.onnx")));
}

TEST_F(OnnxIo, EveryAttributeTypeRoundTrips) {
  Graph g;
  g.inputs.push_back(MakeValue("x", at::kFloat, std::vector<int64_t>{2}));
  g.outputs.push_back(MakeValue("y", at::kFloat, std::vector<int64_t>{2}));
  g.nodes.push_back(MakeNode(
      "n", "Relu", {"x"}, {"y"},
      {{"int", int64_t{-42}},
       {"float", 0.25},  // exactly representable as float32
       {"string", std::string("hello")},
       {"ints", std::vector<int64_t>{1, -2, INT64_MAX}},
       {"floats", std::vector<double>{0.5, -1.0}},
       {"strings", std::vector<std::string>{"a", "", "c"}},
       {"tensor_i64", torch::tensor({int64_t{5}, int64_t{-6}})},
       {"tensor_f16", torch::tensor({1.0, -2.0}).to(torch::kHalf)}}));
  OnnxExportOptions options;
  options.check = false;  // Relu has none of these attributes; the checker would refuse
  const Graph back = ParseOnnx(SerializeOnnx(g, options), "attrs");
  ExpectGraphsEqual(g, back);
}

TEST_F(OnnxIo, SerializeIsDeterministic) {
  const Graph g = SmallCnn();
  const std::string a = SerializeOnnx(g);
  const std::string b = SerializeOnnx(g);
  const std::string c = SerializeOnnx(g.Clone());
  EXPECT_EQ(a, b);
  EXPECT_EQ(a, c);
  // Non-contiguous initializers export their logical values.
  Graph t = g.Clone();
  t.initializers["fc.w"].value = g.initializers.at("fc.w").value.t().contiguous().t();
  EXPECT_EQ(SerializeOnnx(t), a);
}

TEST_F(OnnxIo, ExportWritesOpsetAndKeepsGraphOpset) {
  Graph g = SmallCnn();
  g.opset = 17;
  const Graph back = ParseOnnx(SerializeOnnx(g), "opset17");
  EXPECT_EQ(back.opset, 17);  // never below the graph's opset
  OnnxExportOptions options;
  options.opset = 15;
  g.opset = 13;
  EXPECT_EQ(ParseOnnx(SerializeOnnx(g, options), "opset15").opset, 15);
}

TEST_F(OnnxIo, CheckerRejectsInvalidGraph) {
  Graph g = SmallCnn();
  g.nodes[1].attrs["bogus"] = int64_t{1};  // Relu has no such attribute
  try {
    SerializeOnnx(g);
    FAIL() << "expected the checker to reject the graph";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInternal);
    EXPECT_NE(std::string(e.what()).find("exported ONNX fails the checker"), std::string::npos)
        << e.what();
  }
  // Shape errors surface too: the declared output shape contradicts the inferred one.
  Graph h = SmallCnn();
  h.outputs[0].shape = std::vector<int64_t>{kDynamicDim, 11};
  try {
    SaveOnnx(h, Path("bad.onnx"));
    FAIL() << "expected the checker to reject the graph";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInternal) << e.what();
  }
  EXPECT_FALSE(fs::exists(Path("bad.onnx")));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 0);
}

void ExpectIoError(const std::string& path, const std::string& needle) {
  try {
    LoadOnnx(path);
    FAIL() << "expected an error loading " << path;
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kIo) << e.what();
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST_F(OnnxIo, TruncatedOrCorruptFileIsIoError) {
  const std::string bytes = SerializeOnnx(SmallCnn());
  WriteAll(Path("half.onnx"), bytes.substr(0, bytes.size() / 2));
  ExpectIoError(Path("half.onnx"), "truncated or corrupt");

  std::mt19937 rng(1234);
  std::string noise(4096, '\0');
  for (char& c : noise) c = static_cast<char>(rng());
  WriteAll(Path("noise.onnx"), noise);
  ExpectIoError(Path("noise.onnx"), "not a valid ONNX model");

  WriteAll(Path("empty.onnx"), "");
  ExpectIoError(Path("empty.onnx"), "the file is empty (0 bytes)");
  ExpectIoError(Path("missing.onnx"), "cannot read");
}

// ListOnnxNodes reads what other runtimes write: names, domains and op types as in the
// file, ops outside the registry and other domains included.
TEST_F(OnnxIo, ListOnnxNodesReadsEveryNodeWithoutCheckingOps) {
  SaveOnnx(SmallCnn(), Path("m.onnx"));
  const std::vector<OnnxNodeInfo> nodes = ListOnnxNodes(Path("m.onnx"));
  ASSERT_EQ(nodes.size(), 4u);
  const std::vector<std::pair<std::string, std::string>> want = {
      {"conv1", "Conv"}, {"relu1", "Relu"}, {"flat", "Flatten"}, {"fc", "Gemm"}};
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(nodes[i].name, want[i].first);
    EXPECT_EQ(nodes[i].op_type, want[i].second);
    EXPECT_EQ(nodes[i].domain, "");
  }

  Graph g;
  g.inputs.push_back(MakeValue("x", at::kFloat, std::vector<int64_t>{2}));
  g.outputs.push_back(MakeValue("y", at::kFloat, std::vector<int64_t>{2}));
  Node fused = MakeNode("fc", "QGemm", {"x"}, {"y"});
  fused.domain = "com.microsoft";
  g.nodes.push_back(fused);
  OnnxExportOptions options;
  options.check = false;
  SaveOnnx(g, Path("ort.onnx"), options);
  EXPECT_THROW(LoadOnnx(Path("ort.onnx")), Error);
  const std::vector<OnnxNodeInfo> ort = ListOnnxNodes(Path("ort.onnx"));
  ASSERT_EQ(ort.size(), 1u);
  EXPECT_EQ(ort[0].name, "fc");
  EXPECT_EQ(ort[0].domain, "com.microsoft");
  EXPECT_EQ(ort[0].op_type, "QGemm");
}

TEST_F(OnnxIo, ListOnnxNodesOfATruncatedFileIsIoError) {
  const std::string bytes = SerializeOnnx(SmallCnn());
  WriteAll(Path("half.onnx"), bytes.substr(0, bytes.size() / 2));
  for (const std::string name : {"half.onnx", "missing.onnx"}) {
    try {
      ListOnnxNodes(Path(name));
      ADD_FAILURE() << "expected an error listing " << name;
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::kIo) << e.what();
      const std::string want = name == "half.onnx"
                                   ? Path(name) + ": not a valid ONNX model (truncated or corrupt protobuf)"
                                   : "cannot read " + Path(name);
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    }
  }
}

TEST_F(OnnxIo, UnsupportedOpsAreListedInOneError) {
  Graph g;
  g.inputs.push_back(MakeValue("x", at::kFloat, std::vector<int64_t>{2}));
  g.outputs.push_back(MakeValue("y", at::kFloat, std::vector<int64_t>{2}));
  g.nodes.push_back(MakeNode("n0", "Relu", {"x"}, {"a"}));
  g.nodes.push_back(MakeNode("n3", "FooBar", {"a"}, {"b"}));
  g.nodes.push_back(MakeNode("n4", "FooBar", {"b"}, {"c"}));
  g.nodes.push_back(MakeNode("n7", "BarBaz", {"c"}, {"d"}));
  g.nodes.push_back(MakeNode("", "Quux", {"d"}, {"y"}));
  OnnxExportOptions options;
  options.check = false;
  SaveOnnx(g, Path("unsupported.onnx"), options);
  try {
    LoadOnnx(Path("unsupported.onnx"));
    FAIL() << "expected kUnsupported";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported) << msg;
    EXPECT_NE(msg.find(Path("unsupported.onnx") + ": unsupported ops: FooBar (node 'n3'), "
                                                  "BarBaz (node 'n7'), Quux (node 'Quux_4')"),
              std::string::npos)
        << msg;
    EXPECT_EQ(msg.find("node 'n4'"), std::string::npos) << "one node per op type: " << msg;
    EXPECT_NE(msg.find("; supported: "), std::string::npos) << msg;
    EXPECT_NE(msg.find("Relu"), std::string::npos) << msg;
  }
}

TEST_F(OnnxIo, EmptyNodeNamesAreSynthesized) {
  Graph g;
  g.inputs.push_back(MakeValue("x", at::kFloat, std::vector<int64_t>{kDynamicDim, 2}));
  g.outputs.push_back(MakeValue("y", at::kFloat, std::vector<int64_t>{kDynamicDim, 2}));
  g.nodes.push_back(MakeNode("", "Relu", {"x"}, {"a"}));
  g.nodes.push_back(MakeNode("Relu_0", "Relu", {"a"}, {"b"}));  // takes the obvious name
  g.nodes.push_back(MakeNode("", "Relu", {"b"}, {"y"}));
  const Graph back = ParseOnnx(SerializeOnnx(g), "names");
  ASSERT_EQ(back.nodes.size(), 3u);
  EXPECT_EQ(back.nodes[0].name, "Relu_0_1");
  EXPECT_EQ(back.nodes[1].name, "Relu_0");
  EXPECT_EQ(back.nodes[2].name, "Relu_2");
  EXPECT_EQ(back.inputs[0].shape, (std::vector<int64_t>{kDynamicDim, 2}));
}

void ExpectWriteFails(const std::function<void()>& write, const std::string& path) {
  try {
    write();
    FAIL() << "expected an error writing " << path;
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kIo) << e.what();
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

TEST_F(OnnxIo, UnwritablePathIsIoErrorAndLeavesNoFile) {
  const Graph g = SmallCnn();
  ExpectWriteFails([&] { SaveOnnx(g, "/proc/nope/x.onnx"); }, "/proc/nope/x.onnx");
  WriteAll(Path("regular"), "x");
  const std::string under_file = Path("regular") + "/x.onnx";
  ExpectWriteFails([&] { SaveOnnx(g, under_file); }, under_file);
  ExpectWriteFails([&] { SaveTensorProto(torch::ones({2}), under_file); }, under_file);
  // Only the regular file remains.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);
  // A directory in the way: the rename fails, the temporary is removed.
  fs::create_directories(Path("adir"));
  ExpectWriteFails([&] { SaveOnnx(g, Path("adir")); }, Path("adir"));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 2);
}

TEST_F(OnnxIo, TensorProtoFilesRoundTrip) {
  const std::vector<Tensor> tensors = {
      torch::randn({2, 3, 4}),
      torch::randn({3, 5}).t(),  // non-contiguous
      torch::tensor({INT64_MIN, int64_t{3}}),
      torch::tensor({-3, 4}, torch::kChar),
      torch::tensor({0.5, -1.0}).to(torch::kHalf),
      torch::tensor({true, false}),
      torch::tensor(7.0, torch::kDouble),
      torch::zeros({0}, torch::kInt),
  };
  for (size_t i = 0; i < tensors.size(); ++i) {
    const std::string path = Path("t" + std::to_string(i) + ".pb");
    SaveTensorProto(tensors[i], path, "t");
    EXPECT_TRUE(BitEqual(tensors[i].contiguous(), LoadTensorProto(path))) << i;
  }
  WriteAll(Path("bad.pb"), std::string("\x0a\xff\xff", 3));
  try {
    LoadTensorProto(Path("bad.pb"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kIo) << e.what();
  }
}

// Typed *_data fields (not raw_data), as older exporters write them. The bytes are a
// hand-encoded TensorProto: dims=1, data_type=2, float_data=4, int32_data=5, int64_data=7.
TEST_F(OnnxIo, TensorProtoTypedFields) {
  // dims [3], INT64, int64_data {1, 2, 300}
  WriteAll(Path("i64.pb"), std::string("\x08\x03\x10\x07\x3a\x04\x01\x02\xac\x02", 10));
  Tensor t = LoadTensorProto(Path("i64.pb"));
  EXPECT_TRUE(BitEqual(t, torch::tensor({int64_t{1}, int64_t{2}, int64_t{300}})));
  // dims [2], FLOAT16, int32_data {0x3C00 (1.0), 0xC000 (-2.0)}
  WriteAll(Path("f16.pb"), std::string("\x08\x02\x10\x0a\x2a\x05\x80\x78\x80\x80\x03", 11));
  t = LoadTensorProto(Path("f16.pb"));
  EXPECT_TRUE(BitEqual(t, torch::tensor({1.0, -2.0}).to(torch::kHalf)));
  // dims [1,2], FLOAT, float_data {1.0f, -0.5f}
  std::string f32("\x08\x01\x08\x02\x10\x01\x22\x08", 8);
  const float values[2] = {1.0f, -0.5f};
  f32.append(reinterpret_cast<const char*>(values), sizeof(values));
  WriteAll(Path("f32.pb"), f32);
  t = LoadTensorProto(Path("f32.pb"));
  EXPECT_TRUE(BitEqual(t, torch::tensor({{1.0f, -0.5f}})));
  // dims [4] but only 3 int64 values: a clear kIo error naming the counts.
  WriteAll(Path("short.pb"), std::string("\x08\x04\x10\x07\x3a\x03\x01\x02\x03", 9));
  try {
    LoadTensorProto(Path("short.pb"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kIo) << e.what();
    EXPECT_NE(std::string(e.what()).find("3 values"), std::string::npos) << e.what();
  }
  // STRING tensors have no LibTorch dtype.
  WriteAll(Path("str.pb"), std::string("\x08\x01\x10\x08\x32\x01z", 7));
  try {
    LoadTensorProto(Path("str.pb"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kUnsupported) << e.what();
  }
}

}  // namespace
}  // namespace compress
