// Typed options from JSON, in one place: a pass declares each option once (name,
// default, range, doc) through an OptionReader, which fills the pass's typed struct,
// records every problem with its JSON path, rejects unknown keys (suggesting the
// nearest valid one) and collects the declarations for `mcompress passes`.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "compress/pass/ramp.h"

namespace compress {

// One problem found in a recipe: where (JSON path like "stages[2].sparsity") and what.
struct Problem {
  std::string path;
  std::string message;
};

// A declared option, as `mcompress passes` lists it.
struct OptionDoc {
  std::string name;
  std::string type;
  std::string default_value;
  std::string doc;
};

// Levenshtein-nearest of `candidates` to `word`, or "" when none is close (distance
// more than half the word's length).
std::string NearestName(const std::string& word, const std::vector<std::string>& candidates);

class OptionReader {
 public:
  // Reads `object` found at `path`; problems go to `problems` (not owned).
  OptionReader(const nlohmann::json& object, std::string path, std::vector<Problem>* problems);

  // Each reads `key` into `value` when present (leaving the default otherwise) and
  // checks type and range. Integers accept only integral numbers.
  void Read(const std::string& key, double& value, double min, double max, const std::string& doc);
  void Read(const std::string& key, int64_t& value, int64_t min, int64_t max,
            const std::string& doc);
  void Read(const std::string& key, uint64_t& value, const std::string& doc);
  void Read(const std::string& key, bool& value, const std::string& doc);
  void Read(const std::string& key, std::string& value, const std::vector<std::string>& choices,
            const std::string& doc);
  // An enum option, parsed once here so a pass's Run never compares strings (STYLE 18):
  // `choices` maps each accepted string to its value, in the order `mcompress passes`
  // lists them; the default shown is the name of `value` as it comes in.
  template <typename E>
  void ReadEnum(const std::string& key, E& value,
                const std::vector<std::pair<std::string, E>>& choices, const std::string& doc) {
    std::vector<std::string> names;
    std::string text;
    for (const auto& [name, v] : choices) {
      names.push_back(name);
      if (v == value && text.empty()) text = name;
    }
    Read(key, text, names, doc);
    for (const auto& [name, v] : choices) {
      if (name == text) value = v;
    }
  }
  // A non-empty array of numbers, each in [min, max].
  void Read(const std::string& key, std::vector<double>& value, double min, double max,
            const std::string& doc);
  // A number that may ramp over the pass's epochs: a plain number (a flat ramp) or
  // {"from": a, "to": b}, each end in [min, max]; problems name "key.from" / "key.to".
  void Read(const std::string& key, Ramp& value, double min, double max, const std::string& doc);
  // Whether the object has `key` (an optional sub-object that switches a feature on).
  bool Contains(const std::string& key) const { return object_.contains(key); }
  // A nested object option; returns a reader for it (an empty object when absent).
  OptionReader Object(const std::string& key, const std::string& doc);
  // An array of objects (e.g. distill's feature pairs): one reader per element, at path
  // "key[i]" (none when the key is absent). The caller declares each element's options
  // and calls its Finish; they are not listed in docs() (describe them in `doc`).
  std::vector<OptionReader> Objects(const std::string& key, const std::string& doc);
  // Keys that belong to the caller (e.g. "pass"): never reported as unknown.
  void Allow(const std::string& key);

  // Reports keys nobody read as unknown, naming the nearest declared key.
  void Finish();

  // Declarations so far, nested objects' options included as "outer.inner".
  const std::vector<OptionDoc>& docs() const { return *docs_; }
  const std::string& path() const { return path_; }
  void AddProblem(const std::string& key, const std::string& message);

 private:
  const nlohmann::json* Find(const std::string& key, const char* type,
                             const std::string& default_value, const std::string& doc);
  std::string KeyPath(const std::string& key) const;

  nlohmann::json object_;  // a copy: readers may outlive temporaries they were given
  std::string path_;
  std::vector<Problem>* problems_;
  std::vector<std::string> known_;
  std::shared_ptr<std::vector<OptionDoc>> docs_;  // shared with nested readers
  std::string doc_prefix_;
  bool valid_object_;
};

// "number", "string", ... of a JSON value, for messages.
const char* JsonTypeName(const nlohmann::json& value);

}  // namespace compress
