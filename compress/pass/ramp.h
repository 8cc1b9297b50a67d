// A number that moves linearly over a pass's epochs (a loss weight ramped from one value
// to another). A recipe writes it as a plain number (constant) or {"from": a, "to": b};
// OptionReader::Read(key, Ramp&, ...) reads both forms.
#pragma once

#include <algorithm>
#include <cstdint>

namespace compress {

struct Ramp {
  double from = 0;
  double to = 0;
  Ramp() = default;
  // A plain number is a flat ramp, so C++ callers keep writing `alpha = 0.9`.
  Ramp(double value) : from(value), to(value) {}  // NOLINT(google-explicit-constructor)
  Ramp(double from_value, double to_value) : from(from_value), to(to_value) {}
  bool constant() const { return from == to; }
};

// The value in epoch `epoch` (0-based) of `epochs`: from + (to - from) · e / max(1, E - 1),
// so epoch 0 uses `from` and epoch E - 1 uses `to`. Epochs outside [0, E - 1] are clamped
// (a ramp never extrapolates). Pure.
inline double RampAt(const Ramp& ramp, int64_t epoch, int64_t epochs) {
  const int64_t last = std::max<int64_t>(1, epochs - 1);
  const int64_t e = std::clamp<int64_t>(epoch, 0, last);
  return ramp.from + (ramp.to - ramp.from) * static_cast<double>(e) / static_cast<double>(last);
}

}  // namespace compress
