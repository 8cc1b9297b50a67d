#!/usr/bin/env bash
# tools/check_layers.sh must fail on an include against the layer order and on a pass
# family including another, and pass on a tree that keeps the order. The distillation
# objective (distill/objective.h) is the one header a family may include from distill/;
# the distill pass (distill/distill.h) is not, and the objective may not include it.
set -u
here=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/compress/ir" "$tmp/compress/engine" "$tmp/pruning" "$tmp/quantization" "$tmp/distill"
printf '#include "compress/ir/graph.h"\n' > "$tmp/compress/engine/engine.h"
printf '#include "compress/ir/graph.h"\n' > "$tmp/pruning/prune.h"
printf '#pragma once\n' > "$tmp/compress/ir/graph.h"
printf '#include "compress/ir/graph.h"\n#include "distill/losses.h"\n' > "$tmp/distill/objective.h"
printf '#pragma once\n' > "$tmp/distill/losses.h"
printf '#include "distill/objective.h"\n' > "$tmp/distill/distill.h"
printf '#include "distill/objective.h"\n' > "$tmp/quantization/qat.h"
out=$(bash "$here/tools/check_layers.sh" "$tmp") || { echo "FAIL: a clean tree was rejected: $out"; exit 1; }
printf '#include "compress/engine/engine.h"\n' >> "$tmp/compress/ir/graph.h"
printf '#include "pruning/prune.h"\n' > "$tmp/quantization/q.h"
printf '#include "distill/distill.h"\n' > "$tmp/pruning/p.h"
printf '#include "distill/distill.h"\n' >> "$tmp/distill/objective.h"
out=$(bash "$here/tools/check_layers.sh" "$tmp") && { echo "FAIL: violations passed"; exit 1; }
grep -q 'compress/ir/graph.h:2 includes "compress/engine/engine.h"' <<<"$out" || { echo "FAIL: upward include not named: $out"; exit 1; }
grep -q 'quantization/q.h:1 includes "pruning/prune.h"' <<<"$out" || { echo "FAIL: sibling family not named: $out"; exit 1; }
grep -q 'pruning/p.h:1 includes "distill/distill.h"' <<<"$out" || { echo "FAIL: the distill pass is not a sibling: $out"; exit 1; }
grep -q 'distill/objective.h:3 includes "distill/distill.h"' <<<"$out" || { echo "FAIL: the objective may include the pass: $out"; exit 1; }
grep -q 'quantization/qat.h' <<<"$out" && { echo "FAIL: a family including the objective was rejected: $out"; exit 1; }
echo "check_layers_test: 1 passed, 0 failed"
