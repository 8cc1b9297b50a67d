#!/usr/bin/env bash
# Pruning benchmarks (issue 5): runs the recipes in bench/recipes/prune_*.json on full
# Fashion-MNIST with `mcompress run` and prints each report's stage table. The trained
# baselines are cached in BUILD_DIR/cache, so a second run only redoes the pruning.
# Usage: bench/prune.sh [BUILD_DIR] [RECIPE...]   Exit status: non-zero when a recipe's
# acceptance criteria fail (mcompress exit 3) or a run fails.
set -u
BUILD_DIR=${1:-build}
shift || true
MC="$BUILD_DIR/bin/mcompress"
OUT=${BENCH_OUT:-$BUILD_DIR/bench-out}
recipes=("$@")
[[ ${#recipes[@]} -eq 0 ]] && recipes=(bench/recipes/prune_*.json)
status=0
for r in "${recipes[@]}"; do
  name=$(basename "$r" .json)
  echo "\$ $MC run $r --out $OUT/$name --cache-dir $BUILD_DIR/cache"
  start=$SECONDS
  "$MC" run "$r" --out "$OUT/$name" --cache-dir "$BUILD_DIR/cache" > "$OUT.$name.log" 2>&1
  rc=$?
  echo "(exit $rc, $((SECONDS - start)) s wall; load $(cut -d' ' -f1-3 /proc/loadavg))"
  [[ -f "$OUT/$name/report.md" ]] && sed -n '/^## Stages/,/^## Latency/p' "$OUT/$name/report.md" | sed '$d'
  tail -3 "$OUT.$name.log"
  echo
  [[ $rc -ne 0 ]] && status=1
done
exit $status
