#include "compress/base/limits.h"

#include <cctype>
#include <cstdlib>

#include "compress/base/error.h"

namespace compress {
namespace {

Limits& Current() {
  static Limits limits;
  return limits;
}

}  // namespace

const Limits& CurrentLimits() { return Current(); }

void SetLimits(const Limits& limits) { Current() = limits; }

std::string LimitVariable(const std::string& field) {
  std::string name = "MCOMPRESS_" + field;
  for (char& c : name) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return name;
}

Limits LimitsFromEnvironment(Limits base) {
  auto read = [](const char* field, int64_t& value) {
    const std::string var = LimitVariable(field);
    const char* text = std::getenv(var.c_str());
    if (text == nullptr) return;
    const std::string s = text;
    bool ok = !s.empty() && s.size() <= 18;
    for (char c : s) ok = ok && std::isdigit(static_cast<unsigned char>(c));
    const int64_t v = ok ? std::strtoll(s.c_str(), nullptr, 10) : 0;
    if (v <= 0) {
      throw Error(ErrorKind::kUsage,
                  var + "=\"" + s + "\": expected a positive integer (a count, or bytes)");
    }
    value = v;
  };
  read("max_model_bytes", base.max_model_bytes);
  read("max_tensor_elements", base.max_tensor_elements);
  read("max_graph_nodes", base.max_graph_nodes);
  read("max_graph_depth", base.max_graph_depth);
  return base;
}

void CheckModelBytes(int64_t bytes, const std::string& where) {
  const int64_t max = CurrentLimits().max_model_bytes;
  if (bytes > max) {
    throw Error(ErrorKind::kIo, where + ": the file is " + std::to_string(bytes) +
                                    " bytes, above the limit of " + std::to_string(max) +
                                    " bytes (" + LimitVariable("max_model_bytes") + ")");
  }
}

}  // namespace compress
