#!/usr/bin/env bash
# tools/check_layers.sh must fail on an include against the layer order and on a pass
# family including another, and pass on a tree that keeps the order.
set -u
here=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/compress/ir" "$tmp/compress/engine" "$tmp/pruning" "$tmp/quantization"
printf '#include "compress/ir/graph.h"\n' > "$tmp/compress/engine/engine.h"
printf '#include "compress/ir/graph.h"\n' > "$tmp/pruning/prune.h"
printf '#pragma once\n' > "$tmp/compress/ir/graph.h"
out=$(bash "$here/tools/check_layers.sh" "$tmp") || { echo "FAIL: a clean tree was rejected: $out"; exit 1; }
printf '#include "compress/engine/engine.h"\n' >> "$tmp/compress/ir/graph.h"
printf '#include "pruning/prune.h"\n' > "$tmp/quantization/q.h"
out=$(bash "$here/tools/check_layers.sh" "$tmp") && { echo "FAIL: violations passed"; exit 1; }
grep -q 'compress/ir/graph.h:2 includes "compress/engine/engine.h"' <<<"$out" || { echo "FAIL: upward include not named: $out"; exit 1; }
grep -q 'quantization/q.h:1 includes "pruning/prune.h"' <<<"$out" || { echo "FAIL: sibling family not named: $out"; exit 1; }
echo "check_layers_test: 1 passed, 0 failed"
