// Writes the fuzzers' seed corpora from what the tests use (`make fuzz` runs it first):
//   onnx/         small zoo models and every tests/bad_inputs/onnx/*.textproto
//   recipe/       recipes/*.json and the catalog's recipe files
//   torchscript/  a TorchScript file of our exporter, a torch.save-like zip, a plain zip
//   idx/          image/label pairs, plain and gzip'd, in fuzz_idx's split format
// Usage: fuzz_seeds SOURCE_DIR OUT_DIR
#include <caffe2/serialize/inline_container.h>
#include <google/protobuf/text_format.h>
#include <onnx/onnx_pb.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "compress/io/onnx_io.h"
#include "compress/io/torchscript_export.h"
#include "compress/zoo/zoo.h"
#include "tests/file_bytes.h"

namespace fs = std::filesystem;

namespace {

std::string ReadAll(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void Write(const fs::path& p, const std::string& bytes) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << bytes;
}

// fuzz_idx's input: one byte giving the images file's share, then both files.
std::string IdxSeed(const std::string& images, const std::string& labels) {
  const size_t total = images.size() + labels.size();
  const auto share = static_cast<unsigned char>((images.size() * 255 + total - 1) / total);
  return std::string(1, static_cast<char>(share)) + images + labels;
}

// Writes every seed under `out`; returns how many.
int WriteSeeds(const fs::path& src, const fs::path& out) {
  int count = 0;

  for (const char* zoo : {"lenet5", "mobilenet-tiny", "resnet8"}) {
    const fs::path p = out / "onnx" / (std::string(zoo) + ".onnx");
    fs::create_directories(p.parent_path());
    compress::SaveOnnx(compress::BuildZoo(zoo), p.string());
    ++count;
  }
  for (const auto& e : fs::directory_iterator(src / "tests" / "bad_inputs" / "onnx")) {
    onnx::ModelProto m;
    if (!google::protobuf::TextFormat::ParseFromString(ReadAll(e.path()), &m)) {
      throw std::runtime_error(e.path().string() + ": does not parse");
    }
    Write(out / "onnx" / e.path().stem().concat(".onnx"), m.SerializeAsString());
    ++count;
  }

  for (const auto& e : fs::directory_iterator(src / "recipes")) {
    if (e.path().extension() == ".json") {
      Write(out / "recipe" / e.path().filename(), ReadAll(e.path()));
      ++count;
    }
  }
  const auto catalog = nlohmann::json::parse(ReadAll(src / "tests" / "bad_inputs" / "cases.json"),
                                             nullptr, true, true);
  for (const auto& c : catalog.at("cases")) {
    const nlohmann::json files = c.value("files", nlohmann::json::object());  // not a temporary
    for (const auto& [name, spec] : files.items()) {
      if (fs::path(name).extension() != ".json") continue;
      std::string text = spec.is_string()          ? spec.get<std::string>()
                         : spec.contains("json")   ? spec.at("json").dump(2)
                         : spec.contains("text")   ? spec.at("text").get<std::string>()
                                                   : std::string();
      if (text.empty()) continue;
      Write(out / "recipe" / (c.at("name").get<std::string>() + "_" + fs::path(name).filename().string()),
            text);
      ++count;
    }
  }

  fs::create_directories(out / "torchscript");
  compress::SaveTorchScript(compress::BuildZoo("mobilenet-tiny"), (out / "torchscript" / "mobilenet.pt").string());
  ++count;
  auto zip = [&](const std::string& file, const std::vector<std::pair<std::string, std::string>>& records) {
    caffe2::serialize::PyTorchStreamWriter writer((out / "torchscript" / file).string());
    for (const auto& [name, content] : records) writer.writeRecord(name, content.data(), content.size());
    writer.writeEndOfFile();
    ++count;
  };
  zip("torch_save.pt", {{"data.pkl", std::string("\x80\x02}q\x00.", 6)}, {"version", "3\n"}});
  zip("notes.pt", {{"readme.txt", "not a model"}});

  using compress::testing_util::GzipBytes;
  using compress::testing_util::IdxBytes;
  const std::string images = IdxBytes(0x803, {4, 3, 3}), labels = IdxBytes(0x801, {4}, 10);
  Write(out / "idx" / "plain", IdxSeed(images, labels));
  Write(out / "idx" / "gzip", IdxSeed(GzipBytes(images), GzipBytes(labels)));
  Write(out / "idx" / "mismatch", IdxSeed(images, IdxBytes(0x801, {3}, 10)));
  count += 3;
  return count;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: fuzz_seeds SOURCE_DIR OUT_DIR\n";
    return 2;
  }
  try {
    const int count = WriteSeeds(argv[1], argv[2]);
    std::cout << "fuzz_seeds: " << count << " seeds under " << argv[2] << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "fuzz_seeds: " << e.what() << "\n";
    return 1;
  }
}
