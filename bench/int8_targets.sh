#!/usr/bin/env bash
# INT8 targets (issue 10): for convnet, lenet5, resnet8 and mobilenet-tiny, FP32 vs
# portable INT8 vs full-range INT8 top-1 on the full Fashion-MNIST test set (our
# executor: the model as the file defines it, which ONNX Runtime matches under the INT8
# rule wherever the recipe's verification passed), then ONNX Runtime latency of the
# three files at batch 1 and 32 (bench/ort_latency.js, medians of 50 runs).
# Usage: bench/int8_targets.sh [BUILD_DIR] [MODEL ...]
set -u
BUILD_DIR=${1:-build}
shift || true
MODELS=("$@")
[[ ${#MODELS[@]} -eq 0 ]] && MODELS=(convnet lenet5 resnet8 mobilenet-tiny)
MC="$BUILD_DIR/bin/mcompress"
OUT=${BENCH_OUT:-$BUILD_DIR/bench-out}/int8_targets
mkdir -p "$OUT"
status=0
echo "$("$MC" cpu | head -1)"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
top1() {  # report.json -> "baseline final" top-1 in %
  node -e 'const r=require(require("path").resolve(process.argv[1])); const f=r.stages[r.stages.length-1];
    console.log((100*r.baseline.metrics.top1).toFixed(2), (100*f.metrics.top1).toFixed(2))' "$1"
}
echo
echo "| model | FP32 top-1 % | portable INT8 top-1 % | full-range INT8 top-1 % | portable - full-range (pt) |"
echo "|---|---:|---:|---:|---:|"
for m in "${MODELS[@]}"; do
  for t in portable full_range; do
    "$MC" run bench/recipes/int8_target.json --out "$OUT/$m.$t" --cache-dir "$BUILD_DIR/cache" \
      --set "model=zoo:$m" --set "stages[1].target=$t" > "$OUT/$m.$t.log" 2>&1 || {
        status=1; echo "($m $t failed: $(tail -1 "$OUT/$m.$t.log"))"; }
  done
  if [[ -f $OUT/$m.portable/report.json && -f $OUT/$m.full_range/report.json ]]; then
    read -r fp32 portable < <(top1 "$OUT/$m.portable/report.json")
    read -r _ full < <(top1 "$OUT/$m.full_range/report.json")
    echo "| $m | $fp32 | $portable | $full | $(awk "BEGIN {printf \"%+.2f\", $portable - $full}") |"
  fi
done
echo
for m in "${MODELS[@]}"; do
  [[ -f $OUT/$m.portable/int8.onnx && -f $OUT/$m.full_range/int8.onnx ]] || continue
  cp "$OUT/$m.portable/int8.onnx" "$OUT/$m.int8_portable.onnx"
  cp "$OUT/$m.full_range/int8.onnx" "$OUT/$m.int8_full_range.onnx"
  echo "### ORT latency, $m (FP32, portable INT8, full-range INT8)"
  node bench/ort_latency.js --batch 1,32 --runs 50 --warmup 10 "$OUT/$m.portable/fp32.onnx" \
    "$OUT/$m.int8_portable.onnx" "$OUT/$m.int8_full_range.onnx" || status=1
  echo
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
exit $status
