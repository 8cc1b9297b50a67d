#!/usr/bin/env bash
# QAT vs PTQ (issue 12): per zoo model, FP32 vs PTQ per-tensor vs PTQ per-channel vs
# quantize-qat (fixed scales; learned LSQ scales), validation and test top-1 on full
# Fashion-MNIST, each INT8 file verified in ONNX Runtime by the recipe. The QAT learning
# rate is chosen on the validation split among QAT_LRS.
# Usage: bench/qat.sh [BUILD_DIR] [MODEL ...]
set -u
BUILD_DIR=${1:-build}
shift || true
MODELS=("$@")
[[ ${#MODELS[@]} -eq 0 ]] && MODELS=(mobilenet-tiny convnet)
QAT_EPOCHS=${QAT_EPOCHS:-2}
QAT_LRS=${QAT_LRS:-"0.0001 0.0003"}
MC="$BUILD_DIR/bin/mcompress"
OUT=${BENCH_OUT:-$BUILD_DIR/bench-out}/qat
mkdir -p "$OUT"
status=0
echo "$("$MC" cpu | head -1)"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
# report.json -> "FP32_test INT8_test stage1_val_accuracy stage1_seconds" (% and s)
metrics() {
  node -e 'const r=require(require("path").resolve(process.argv[1]));
    const f=r.stages[r.stages.length-1], q=r.stages[1];
    const pct=x=>(100*x).toFixed(2);
    console.log(pct(r.baseline.metrics.top1), pct(f.metrics.top1),
      q.stats.val_accuracy!==undefined?pct(q.stats.val_accuracy):"-", (q.seconds||0).toFixed(0))' "$1"
}
variant() {  # model name sets...
  local m=$1 name=$2; shift 2
  "$MC" run bench/recipes/qat.json --out "$OUT/$m.$name" --cache-dir "$BUILD_DIR/cache" \
    --set "model=zoo:$m" "$@" > "$OUT/$m.$name.log" 2>&1 || {
      status=1; echo "($m $name failed: $(tail -1 "$OUT/$m.$name.log"))"; return; }
  read -r fp32 top1 val secs < <(metrics "$OUT/$m.$name/report.json")
  echo "| $m | $name | $fp32 | $top1 | $val | $secs |"
}
echo
echo "| model | variant | FP32 test top-1 % | INT8 test top-1 % | QAT last-epoch val top-1 % | stage s |"
echo "|---|---|---:|---:|---:|---:|"
for m in "${MODELS[@]}"; do
  variant "$m" ptq-per-tensor --set 'stages[1].weights=per_tensor'
  variant "$m" ptq-per-channel
  for lr in $QAT_LRS; do
    variant "$m" "qat-lr$lr" --set 'stages[1].pass=quantize-qat' --set "stages[1].epochs=$QAT_EPOCHS" \
      --set "stages[1].optimizer.lr=$lr"
    variant "$m" "qat-lsq-lr$lr" --set 'stages[1].pass=quantize-qat' --set "stages[1].epochs=$QAT_EPOCHS" \
      --set "stages[1].optimizer.lr=$lr" --set 'stages[1].learn_scales=true'
  done
done
echo
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
exit $status
