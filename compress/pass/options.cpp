// OptionReader: typed, range-checked option reading with JSON paths, and the
// nearest-name suggestion used for unknown keys and pass names.
#include "compress/pass/options.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>

namespace compress {

namespace {

const nlohmann::json& EmptyObject() {
  static const nlohmann::json kEmpty = nlohmann::json::object();
  return kEmpty;
}

std::string FormatNumber(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

size_t EditDistance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

}  // namespace

const char* JsonTypeName(const nlohmann::json& value) {
  if (value.is_null()) return "null";
  if (value.is_boolean()) return "boolean";
  if (value.is_number_integer() || value.is_number_unsigned()) return "integer";
  if (value.is_number()) return "number";
  if (value.is_string()) return "string";
  if (value.is_array()) return "array";
  return "object";
}

std::string NearestName(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_distance = std::max<size_t>(2, word.size() / 2) + 1;
  for (const auto& c : candidates) {
    size_t d = EditDistance(word, c);
    if (d < best_distance) {
      best_distance = d;
      best = c;
    }
  }
  return best;
}

OptionReader::OptionReader(const nlohmann::json& object, std::string path,
                           std::vector<Problem>* problems)
    : object_(object.is_object() ? object : EmptyObject()),
      path_(std::move(path)),
      problems_(problems),
      docs_(std::make_shared<std::vector<OptionDoc>>()),
      valid_object_(object.is_object()) {
  if (!valid_object_ && !object.is_null()) {
    problems_->push_back({path_, std::string("expected an object, found ") + JsonTypeName(object)});
  }
}

std::string OptionReader::KeyPath(const std::string& key) const {
  return path_.empty() ? key : path_ + "." + key;
}

void OptionReader::AddProblem(const std::string& key, const std::string& message) {
  problems_->push_back({key.empty() ? path_ : KeyPath(key), message});
}

void OptionReader::Allow(const std::string& key) { known_.push_back(key); }

const nlohmann::json* OptionReader::Find(const std::string& key, const char* type,
                                         const std::string& default_value,
                                         const std::string& doc) {
  known_.push_back(key);
  docs_->push_back({doc_prefix_ + key, type, default_value, doc});
  auto it = object_.find(key);
  return it == object_.end() ? nullptr : &*it;
}

void OptionReader::Read(const std::string& key, double& value, double min, double max,
                        const std::string& doc) {
  const nlohmann::json* v = Find(key, "number", FormatNumber(value), doc);
  if (!v) return;
  if (!v->is_number()) {
    AddProblem(key, std::string("expected a number, found ") + JsonTypeName(*v));
    return;
  }
  double x = v->get<double>();
  if (!(x >= min && x <= max)) {
    AddProblem(key, "value " + FormatNumber(x) + " is out of range; expected " +
                        FormatNumber(min) + " <= value <= " + FormatNumber(max));
    return;
  }
  value = x;
}

void OptionReader::Read(const std::string& key, int64_t& value, int64_t min, int64_t max,
                        const std::string& doc) {
  const nlohmann::json* v = Find(key, "integer", std::to_string(value), doc);
  if (!v) return;
  if (!v->is_number_integer() && !v->is_number_unsigned()) {
    AddProblem(key, std::string("expected an integer, found ") + JsonTypeName(*v));
    return;
  }
  int64_t x = v->get<int64_t>();
  if (x < min || x > max) {
    AddProblem(key, "value " + std::to_string(x) + " is out of range; expected " +
                        std::to_string(min) + " <= value <= " + std::to_string(max));
    return;
  }
  value = x;
}

void OptionReader::Read(const std::string& key, uint64_t& value, const std::string& doc) {
  const nlohmann::json* v = Find(key, "integer", std::to_string(value), doc);
  if (!v) return;
  if (!v->is_number_unsigned() && !(v->is_number_integer() && v->get<int64_t>() >= 0)) {
    AddProblem(key, std::string("expected a non-negative integer, found ") + JsonTypeName(*v) +
                        (v->is_number() ? " " + v->dump() : ""));
    return;
  }
  value = v->get<uint64_t>();
}

void OptionReader::Read(const std::string& key, bool& value, const std::string& doc) {
  const nlohmann::json* v = Find(key, "boolean", value ? "true" : "false", doc);
  if (!v) return;
  if (!v->is_boolean()) {
    AddProblem(key, std::string("expected true or false, found ") + JsonTypeName(*v));
    return;
  }
  value = v->get<bool>();
}

void OptionReader::Read(const std::string& key, std::string& value,
                        const std::vector<std::string>& choices, const std::string& doc) {
  std::string type = "string";
  if (!choices.empty()) {
    type = "";
    for (const auto& c : choices) type += (type.empty() ? "" : "|") + c;
  }
  const nlohmann::json* v = Find(key, type.c_str(), "\"" + value + "\"", doc);
  if (!v) return;
  if (!v->is_string()) {
    AddProblem(key, std::string("expected a string, found ") + JsonTypeName(*v));
    return;
  }
  std::string s = v->get<std::string>();
  if (!choices.empty() && std::find(choices.begin(), choices.end(), s) == choices.end()) {
    std::string near = NearestName(s, choices);
    AddProblem(key, "unknown value \"" + s + "\"; expected one of " + type +
                        (near.empty() ? "" : " (did you mean \"" + near + "\"?)"));
    return;
  }
  value = s;
}

void OptionReader::Read(const std::string& key, std::vector<double>& value, double min,
                        double max, const std::string& doc) {
  std::string shown;
  for (double x : value) shown += (shown.empty() ? "" : ", ") + FormatNumber(x);
  const nlohmann::json* v = Find(key, "array of numbers", "[" + shown + "]", doc);
  if (!v) return;
  if (!v->is_array() || v->empty()) {
    AddProblem(key, std::string("expected a non-empty array of numbers, found ") + JsonTypeName(*v));
    return;
  }
  std::vector<double> out;
  for (size_t i = 0; i < v->size(); ++i) {
    const nlohmann::json& e = (*v)[i];
    const std::string where = key + "[" + std::to_string(i) + "]";
    if (!e.is_number()) {
      AddProblem(where, std::string("expected a number, found ") + JsonTypeName(e));
      return;
    }
    const double x = e.get<double>();
    if (!(x >= min && x <= max)) {
      AddProblem(where, "value " + FormatNumber(x) + " is out of range; expected " +
                            FormatNumber(min) + " <= value <= " + FormatNumber(max));
      return;
    }
    out.push_back(x);
  }
  value = out;
}

void OptionReader::Read(const std::string& key, Ramp& value, double min, double max,
                        const std::string& doc) {
  const std::string shown = value.constant() ? FormatNumber(value.from)
                                             : "{\"from\": " + FormatNumber(value.from) +
                                                   ", \"to\": " + FormatNumber(value.to) + "}";
  const nlohmann::json* v = Find(key, "number or {from, to}", shown, doc);
  if (!v) return;
  if (v->is_number()) {
    const double x = v->get<double>();
    if (!(x >= min && x <= max)) {
      AddProblem(key, "value " + FormatNumber(x) + " is out of range; expected " +
                          FormatNumber(min) + " <= value <= " + FormatNumber(max));
      return;
    }
    value = Ramp(x);
    return;
  }
  if (!v->is_object()) {
    AddProblem(key, std::string("expected a number or {\"from\": a, \"to\": b}, found ") +
                        JsonTypeName(*v));
    return;
  }
  // The ends are read by a reader of their own (its declarations stay out of docs():
  // `mcompress passes` lists the ramp once, under `key`), so their problems carry
  // "key.from" / "key.to" and a misspelt end is an unknown key with a suggestion.
  OptionReader ends(*v, KeyPath(key), problems_);
  const double unset = std::numeric_limits<double>::quiet_NaN();
  Ramp read(unset, unset);
  ends.Read("from", read.from, min, max, "value in the first epoch");
  ends.Read("to", read.to, min, max, "value in the last epoch");
  ends.Finish();
  for (const char* end : {"from", "to"}) {
    if (!v->contains(end)) ends.AddProblem(end, "missing; a ramp is {\"from\": a, \"to\": b}");
  }
  if (std::isnan(read.from) || std::isnan(read.to)) return;
  value = read;
}

OptionReader OptionReader::Object(const std::string& key, const std::string& doc) {
  const nlohmann::json* v = Find(key, "object", "{}", doc);
  if (v && !v->is_object()) {
    AddProblem(key, std::string("expected an object, found ") + JsonTypeName(*v));
    v = nullptr;
  }
  OptionReader child(v ? *v : EmptyObject(), KeyPath(key), problems_);
  child.docs_ = docs_;
  child.doc_prefix_ = doc_prefix_ + key + ".";
  return child;
}

std::vector<OptionReader> OptionReader::Objects(const std::string& key, const std::string& doc) {
  const nlohmann::json* v = Find(key, "array of objects", "[]", doc);
  std::vector<OptionReader> elements;
  if (!v) return elements;
  if (!v->is_array()) {
    AddProblem(key, std::string("expected an array of objects, found ") + JsonTypeName(*v));
    return elements;
  }
  for (size_t i = 0; i < v->size(); ++i) {
    const std::string where = KeyPath(key) + "[" + std::to_string(i) + "]";
    if (!(*v)[i].is_object()) {
      problems_->push_back(
          {where, std::string("expected an object, found ") + JsonTypeName((*v)[i])});
      continue;
    }
    elements.emplace_back((*v)[i], where, problems_);
  }
  return elements;
}

void OptionReader::Finish() {
  for (auto it = object_.begin(); it != object_.end(); ++it) {
    if (std::find(known_.begin(), known_.end(), it.key()) != known_.end()) continue;
    std::string near = NearestName(it.key(), known_);
    AddProblem(it.key(), "unknown option" + (near.empty() ? std::string()
                                                           : " (did you mean \"" + near + "\"?)"));
  }
}

}  // namespace compress
