#!/usr/bin/env bash
# Calibrators (issue 12): minmax, percentile, mse and entropy activation calibration of
# `quantize` on convnet, lenet5 and resnet8 (each trained 3 epochs on full
# Fashion-MNIST, cached), per-channel portable weights, 512 calibration samples. Prints
# FP32 and INT8 validation and test top-1, the quantize stage's seconds (calibration and
# QDQ rewrite), and which calibrator the validation split picks. Every INT8 file is
# verified in ONNX Runtime by the recipe.
# Usage: bench/calibrators.sh [BUILD_DIR] [MODEL ...]
set -u
BUILD_DIR=${1:-build}
shift || true
MODELS=("$@")
[[ ${#MODELS[@]} -eq 0 ]] && MODELS=(convnet lenet5 resnet8)
METHODS=(minmax percentile mse entropy)
MC="$BUILD_DIR/bin/mcompress"
OUT=${BENCH_OUT:-$BUILD_DIR/bench-out}/calibrators
mkdir -p "$OUT"
status=0
echo "$("$MC" cpu | head -1)"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
# report.json -> "INT8_val FP32_test INT8_test quantize_seconds" (% and s)
metrics() {
  node -e 'const r=require(require("path").resolve(process.argv[1]));
    const pct=x=>(100*x).toFixed(2), s=r.stages;
    console.log(pct(s[2].metrics.top1),
      pct(r.baseline.metrics.top1), pct(s[3].metrics.top1), s[1].seconds.toFixed(2))' "$1"
}
echo
echo "| model | calibrator | INT8 val top-1 % | FP32 test top-1 % | INT8 test top-1 % | quantize s |"
echo "|---|---|---:|---:|---:|---:|"
for m in "${MODELS[@]}"; do
  best="" best_val=-1
  for c in "${METHODS[@]}"; do
    "$MC" run bench/recipes/calibrators.json --out "$OUT/$m.$c" --cache-dir "$BUILD_DIR/cache" \
      --set "model=zoo:$m" --set "stages[1].calibration=$c" > "$OUT/$m.$c.log" 2>&1 || {
        status=1; echo "($m $c failed: $(tail -1 "$OUT/$m.$c.log"))"; continue; }
    read -r val fp32 top1 secs < <(metrics "$OUT/$m.$c/report.json")
    echo "| $m | $c | $val | $fp32 | $top1 | $secs |"
    if node -e "process.exit(Number('$val') > Number('$best_val') ? 0 : 1)"; then best=$c best_val=$val; fi
  done
  echo "| $m | **validation picks $best** | $best_val | | | |"
done
echo
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
exit $status
